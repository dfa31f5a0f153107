#!/usr/bin/env bash
# Builds the Python package into a private venv and runs its tests (with the CLI from this tree).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${RINGQ_PYVENV:-/tmp/ringq-pyvenv}
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q maturin==1.16.0 pytest==9.2.0 pytest-asyncio==1.5.0
cargo build --bin ringq
(cd python && rm -rf dist && "$venv/bin/maturin" build --release -o dist \
   && "$venv/bin/pip" install -q --force-reinstall dist/ringq-*.whl)
root=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
(cd python && RINGQ_REQUIRE_CLI=1 RINGQ_BIN="$root/debug/ringq" "$venv/bin/pytest" -q tests)
