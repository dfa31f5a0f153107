//! Tests: faults (to be written).
