//! Tests: power_model (to be written).
