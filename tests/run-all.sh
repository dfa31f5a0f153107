#!/usr/bin/env bash
# The whole test suite, Rust and Python: README's test command. Works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust, the library and the CLI crate (the workspace's default members): unit, integration
# (golden files, kill -9, power-loss model, faults, CLI, relay), doc tests.
cargo test --features nats

# Python: build the package into a private virtual environment, then pytest.
if [ -d python ]; then
  bash python/run-tests.sh
fi
