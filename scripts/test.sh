#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests.
# Run as root so the BPF tests run (they skip otherwise, and fail instead
# when FLAMEPROBE_REQUIRE_ROOT_TESTS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
