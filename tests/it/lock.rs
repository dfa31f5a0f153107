//! Tests: lock (to be written).
