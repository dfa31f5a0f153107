//! Tests: recovery (to be written).
