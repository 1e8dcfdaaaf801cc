#!/usr/bin/env bash
# README's test command: installs what the tests need when it is missing
# (scripts/install-deps.sh --tests), then runs every test against the real
# binary. Extra arguments go to `cargo test` (e.g. `--test reload`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --tests
cargo test --release "$@"
