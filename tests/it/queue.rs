//! Tests: queue (to be written).
