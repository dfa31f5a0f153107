//! ringq's integration tests: one binary, one module per area.

mod crash_kill9;
mod faults;
mod golden;
#[cfg(feature = "kafka")]
mod kafka;
mod limits;
mod lock;
mod power_model;
mod queue;
mod queue_accounting;
mod queue_model;
mod queue_review;
mod recovery;
mod recovery_cost;
#[cfg(feature = "nats")]
mod relay;
mod ringq_bin;
mod stats;
