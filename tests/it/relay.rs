//! Tests: relay (to be written).
