#!/usr/bin/env bash
# Time from the end of a recording to the flame graph written, with JIT
# runtimes running: a JVM (-XX:+PreserveFramePointer), Node
# (--perf-basic-prof) and a C program, recorded machine-wide for 10 s at
# 99 Hz, side by side:
# - flameprobe: `record -a -d 10s -o x.svg`; its own log says how long it
#   took from the end of sampling to the SVG written, the JVM attach
#   (Compiler.perfmap) and the perf-map reads included;
# - perf: `perf record -a -g -F 99 -- sleep 10`, then `jcmd PID
#   Compiler.perfmap` and `perf script | inferno-collapse-perf |
#   inferno-flamegraph > x.svg`, timed from the end of `perf record`.
#   inferno's binaries (the version flameprobe links) are installed with
#   `cargo install` under target/bench-jit/inferno on the first run: the
#   real command-line pipeline people run, not a re-implementation.
# Run as root. Writes its table into docs/benchmarks.md (its own section)
# and prints it. Usage: bash bench/jit.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
for tool in perf java javac jcmd node; do
	command -v "$tool" >/dev/null || { echo "bench: needs $tool" >&2; exit 1; }
done
out=target/bench-jit
mkdir -p "$out"
cargo build --release --locked --quiet
fp=${CARGO_TARGET_DIR:-target}/release/flameprobe
inferno_version=$(sed -n 's/^inferno = { version = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
if [ ! -x "$out/inferno/bin/inferno-flamegraph" ]; then
	cargo install --quiet --locked --root "$out/inferno" "inferno@$inferno_version"
fi
gcc -O2 -g -o "$out/workload" bench/workload.c
javac -d "$out/classes" tests/targets/JitSplit.java

pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	for p in "${pids[@]}"; do rm -f "/tmp/perf-$p.map"; done
}
trap cleanup EXIT

# The programs run for the whole benchmark (two recordings and their
# post-processing); each prints "ready" once warm.
life=$((secs * 2 + 120))
java -XX:+PreserveFramePointer -cp "$out/classes" JitSplit "$life" >"$out/jvm.out" &
jvm=$!
pids+=("$jvm")
# In $out: node writes an isolate-*-v8.log into its working directory.
script=$PWD/tests/targets/jit_split.js
(cd "$out" && exec node --perf-basic-prof "$script" "$life" >node.out) &
pids+=("$!")
"$out/workload" "$life" >/dev/null &
pids+=("$!")
for f in jvm node; do
	until grep -q ready "$out/$f.out"; do sleep 0.2; done
done

# flameprobe, machine-wide.
rm -f "/tmp/perf-$jvm.map"
/usr/bin/time -f "%e %M" -o "$out/fp.time" \
	"$fp" record -a -d "${secs}s" -o "$out/flameprobe.svg" -v 2>"$out/flameprobe.log"
fp_ms=$(sed -n 's/.*output written \([0-9]*\) ms after recording stopped.*/\1/p' "$out/flameprobe.log")
fp_rss=$(awk '{print int($2 / 1024)}' "$out/fp.time")
fp_jit_ms=$(sed -n 's/.*perf maps of .* read in \([0-9]*\) ms.*/\1/p' "$out/flameprobe.log")
# inferno shows JIT frames without their `_[j]` suffix (it colours them).
fp_named=$(grep -o '<title>JitSplit\.' "$out/flameprobe.svg" | wc -l)

# perf, machine-wide, then its post-processing.
rm -f "/tmp/perf-$jvm.map"
perf record -q -a -g -F 99 -o "$out/perf.data" -- sleep "$secs" 2>"$out/perf-record.log"
t0=$(date +%s%N)
jcmd "$jvm" Compiler.perfmap >/dev/null
perf script -i "$out/perf.data" 2>/dev/null |
	"$out/inferno/bin/inferno-collapse-perf" |
	"$out/inferno/bin/inferno-flamegraph" >"$out/perf.svg"
t1=$(date +%s%N)
perf_ms=$(((t1 - t0) / 1000000))

table=$(
	echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, kernel $(uname -r); ${secs} s whole-machine recordings at 99 Hz of a JVM (\`tests/targets/JitSplit.java\`, JDK $(java -version 2>&1 | awk -F'"' 'NR==1{print $2}'), -XX:+PreserveFramePointer), Node $(node --version) (\`tests/targets/jit_split.js\`, --perf-basic-prof) and a C program (\`bench/workload.c\`), all busy:"
	echo
	echo "| pipeline | end of recording -> SVG written |"
	echo "|---|---|"
	echo "| flameprobe \`record -a\` (peak RSS ${fp_rss} MiB), of which ${fp_jit_ms} ms for the JVM attach and the perf-map reads | ${fp_ms} ms |"
	echo "| \`perf record -a -g\`, then \`jcmd PID Compiler.perfmap\` + \`perf script \\| inferno-collapse-perf \\| inferno-flamegraph\` (inferno $inferno_version) | ${perf_ms} ms |"
)
echo "$table"
echo "(flameprobe's SVG has $fp_named JitSplit frames; logs and SVGs in $out/)"

doc=docs/benchmarks.md
begin='<!-- jit-bench:begin -->'
end='<!-- jit-bench:end -->'
[ -f "$doc" ] || printf '# flameprobe benchmarks\n' >"$doc"
if ! grep -qF "$begin" "$doc"; then
	printf '\n## JIT runtimes: end of recording to output (`bash bench/jit.sh`)\n\n%s\n%s\n' "$begin" "$end" >>"$doc"
fi
python3 - "$doc" "$begin" "$end" "$table" <<'PY'
import sys
path, begin, end, table = sys.argv[1:]
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + table + "\n" + end + tail)
PY
