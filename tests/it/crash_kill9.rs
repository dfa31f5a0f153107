//! Tests: crash_kill9 (to be written).
