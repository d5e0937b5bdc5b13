#!/usr/bin/env bash
# Quick start: install what is missing, build flameprobe, and profile the
# bundled demo workload (demo/demo.c) for 5 seconds into demo.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --locked
mkdir -p target/demo
gcc -O2 -g -o target/demo/demo demo/demo.c
./target/release/flameprobe record -o demo.svg -- target/demo/demo 5
echo "flame graph: $(pwd)/demo.svg (open it in a browser)" >&2
