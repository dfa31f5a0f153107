//! Where the `ringq` binary is: it lives in the `ringq-cli` crate of this workspace, so this
//! test binary cannot name it with `CARGO_BIN_EXE_ringq`. `cargo test` at the workspace root
//! builds it beside this test binary (`target/<profile>/ringq`); `RINGQ_BIN` overrides.

use std::path::PathBuf;

/// The `ringq` binary to run, or a panic that says how to build it.
pub fn ringq_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RINGQ_BIN") {
        return PathBuf::from(bin);
    }
    // This test binary is target/<profile>/deps/it-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("ringq"))
        .expect("target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p ringq-cli` (with `--features kafka` for \
         the Kafka tests), or run `cargo test` at the workspace root, or set RINGQ_BIN",
        bin.display()
    );
    bin
}
