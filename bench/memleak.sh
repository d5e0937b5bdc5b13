#!/usr/bin/env bash
# Cost of --probe memleak per malloc+free pair: the same malloc+free loop
# unprofiled, under exact tracking and under --sample-bytes, side by side.
# Run as root. Writes the table into docs/benchmarks.md (its own section)
# and prints it. Usage: bash bench/memleak.sh [seconds-per-run] [sample-bytes]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3}
sample=${2:-512k}
out=target/bench-memleak
mkdir -p "$out"
cargo build --release --quiet
gcc -O2 -o "$out/malloc_loop" bench/malloc_loop.c
fp=target/release/flameprobe

# One run: start the loop (held until "go"), optionally attach flameprobe
# to it by pid and wait until it says it is attached, then let it run.
run() {
	local mode=$1
	coproc LOOP { exec "$out/malloc_loop" "$secs"; }
	local pid=$LOOP_PID line fp_pid=""
	read -r -u "${LOOP[0]}" line # ready
	if [ "$mode" != none ]; then
		local extra=()
		[ "$mode" = sampled ] && extra=(--sample-bytes "$sample")
		"$fp" record --probe memleak -p "$pid" -d 120s -v -q "${extra[@]}" \
			-o "$out/$mode.folded" 2>"$out/$mode.log" &
		fp_pid=$!
		until grep -q "attached to" "$out/$mode.log" 2>/dev/null; do
			kill -0 "$fp_pid" 2>/dev/null || { cat "$out/$mode.log" >&2; exit 1; }
			sleep 0.1
		done
	fi
	echo go >&"${LOOP[1]}"
	read -r -u "${LOOP[0]}" line # pairs_per_sec N
	wait "$pid" 2>/dev/null || true
	[ -n "$fp_pid" ] && wait "$fp_pid"
	echo "${line#pairs_per_sec }"
}

base=$(run none)
exact=$(run exact)
sampled=$(run sampled)

row() { # name pairs/s
	awk -v n="$1" -v r="$2" -v b="$base" 'BEGIN {
		printf "| %s | %.3g | %.3f | %s |\n", n, r, 1e6 / r,
			(n ~ /unprofiled/) ? "-" : sprintf("+%.2f", 1e6 / r - 1e6 / b) }'
}
table=$(
	echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, kernel $(uname -r), $secs s per run, glibc $(ldd --version | head -1 | awk '{print $NF}'):"
	echo
	echo "| run | malloc+free pairs/s | µs per pair | µs added per pair |"
	echo "|---|---|---|---|"
	row "unprofiled" "$base"
	row "\`--probe memleak\` (exact)" "$exact"
	row "\`--probe memleak --sample-bytes $sample\`" "$sampled"
)
echo "$table"

doc=docs/benchmarks.md
begin='<!-- memleak-bench:begin -->'
end='<!-- memleak-bench:end -->'
[ -f "$doc" ] || printf '# flameprobe benchmarks\n' >"$doc"
if ! grep -qF "$begin" "$doc"; then
	printf '\n## Memory leaks (`--probe memleak`)\n\nRegenerate with `sudo bash bench/memleak.sh`.\n\n%s\n%s\n' "$begin" "$end" >>"$doc"
fi
python3 - "$doc" "$begin" "$end" "$table" <<'PY'
import sys
path, begin, end, table = sys.argv[1:]
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + table + "\n" + end + tail)
PY
