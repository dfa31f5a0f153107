//! Tests: cli (to be written).
