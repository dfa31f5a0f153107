//! ringq's integration tests: one binary, one module per area.

mod crash_kill9;
mod faults;
mod golden;
#[cfg(feature = "kafka")]
mod kafka;
mod lock;
mod power_model;
mod queue;
mod recovery;
#[cfg(feature = "nats")]
mod relay;
#[cfg(any(feature = "nats", feature = "kafka"))]
mod ringq_bin;
