#!/usr/bin/env bash
# CPU-profiling overhead benchmark (run as root). Writes docs/benchmarks.md.
# Usage: bash bench/run.sh [--quick]
# With bpftrace (and bpftool) installed, bpftrace's `profile` (what bcc's
# profile does) is measured side by side too: apt-get install bpftrace.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "bench: needs perf (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --locked
mkdir -p target/bench
gcc -O2 -g -o target/bench/workload bench/workload.c
python3 bench/cpu.py "$@"
