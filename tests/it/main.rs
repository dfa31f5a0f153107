//! ringq's integration tests: one binary, one module per area.

mod cli;
mod crash_kill9;
mod faults;
#[cfg(feature = "kafka")]
mod kafka;
mod limits;
mod lock;
mod power_model;
mod queue;
mod recovery;
#[cfg(feature = "nats")]
mod relay;
