#!/usr/bin/env bash
# Cost of --probe offcpu per context switch, side by side with bcc's
# offcputime, on a switch-heavy workload (bench/pingpong.c: two threads
# ping-ponging a byte over pipes, pinned to one CPU so every round trip is
# two context switches there). bcc's tools compile their C at run time and
# need kernel headers; where they cannot (this kernel ships none), the
# same logic in bpftrace (bench/offcputime.bt) stands in for it. With
# bpftool installed, each program's own run time per context switch is
# measured too (kernel.bpf_stats_enabled during the run). Run as root
# (apt-get install bpfcc-tools bpftrace bpftool). Writes its table into
# docs/benchmarks.md. Usage: sudo bash bench/offcpu.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}
rounds=${2:-3}
out=target/bench-offcpu
mkdir -p "$out"
cargo build --release --quiet
gcc -O2 -pthread -o "$out/pingpong" bench/pingpong.c
fp=target/release/flameprobe
bcc=$(command -v offcputime-bpfcc || true)
bt=$(command -v bpftrace || true)
if [ -n "$bcc" ] && ! timeout 60 "$bcc" -f 1 >/dev/null 2>"$out/bcc-check.log"; then
	echo "bench: bcc's offcputime cannot run here ($(grep -m1 -iE 'header|error|failed|build' "$out/bcc-check.log")); skipped" >&2
	bcc=""
fi
# Waits (at most 30 s) until pattern $1 shows up in one of the files.
wait_for() {
	local pat=$1 tries=0
	shift
	until grep -qs "$pat" "$@"; do
		sleep 0.05
		tries=$((tries + 1))
		if [ "$tries" -ge 600 ]; then
			echo "bench: no '$pat' after 30 s in $*:" >&2
			cat "$@" >&2
			exit 1
		fi
	done
}
bpf_stats_on() { [ -n "$(command -v bpftool)" ] && sysctl -qw kernel.bpf_stats_enabled=1; }
bpf_stats_off() { sysctl -qw kernel.bpf_stats_enabled=0 2>/dev/null || true; }
# ns per run of the programs whose name matches $1, from bpftool.
prog_cost() {
	command -v bpftool >/dev/null || return 0
	bpftool prog show 2>/dev/null | awk -v pat="$1" '$0 ~ pat {
		for (i = 1; i <= NF; i++) { if ($i == "run_time_ns") t += $(i+1); if ($i == "run_cnt") c += $(i+1) } }
		END { if (c) printf "%.0f", t / c }'
}

# One run: the workload (held until "go"), optionally a profiler attached
# to it by pid; prints round trips per second, and the profiler's log.
run() {
	local mode=$1 log=$out/$1.log
	coproc PP { exec taskset -c 1 "$out/pingpong" "$secs"; }
	local pid=$PP_PID line prof=""
	read -r -u "${PP[0]}" line # ready
	case $mode in
	flameprobe)
		taskset -c 0 "$fp" record --probe offcpu -p "$pid" -d 120s -v -q -o "$out/off.folded" 2>"$log" &
		prof=$!
		wait_for "attached to" "$log"
		;;
	bcc)
		# -f: folded output; kernel and user stacks, the same target.
		taskset -c 0 "$bcc" -f -p "$pid" 120 >"$out/bcc.folded" 2>"$log" &
		prof=$!
		sleep 3 # bcc compiles its program first; it prints nothing when ready
		;;
	bpftrace)
		taskset -c 0 "$bt" bench/offcputime.bt "$pid" >"$out/bpftrace.out" 2>"$log" &
		prof=$!
		# "Attaching N probes..." goes to stdout or stderr depending on the version.
		wait_for "Attaching" "$log" "$out/bpftrace.out"
		sleep 0.5
		;;
	esac
	bpf_stats_on
	echo go >&"${PP[1]}"
	read -r -u "${PP[0]}" line # trips_per_sec N
	case $mode in
	flameprobe) prog_cost "name on_switch" >"$out/$mode.cost" ;;
	bpftrace) prog_cost "name sched_switch" >"$out/$mode.cost" ;;
	bcc) prog_cost "name oncpu" >"$out/$mode.cost" ;;
	esac
	bpf_stats_off
	wait "$pid" 2>/dev/null || true
	if [ -n "$prof" ]; then
		kill -INT "$prof" 2>/dev/null || true
		wait "$prof" 2>/dev/null || true
	fi
	echo "${line#trips_per_sec }"
}

declare -A sum
modes=(none flameprobe)
[ -n "$bcc" ] && modes+=(bcc)
[ -n "$bt" ] && modes+=(bpftrace)
for _ in $(seq "$rounds"); do
	for m in "${modes[@]}"; do
		r=$(run "$m")
		sum[$m]="${sum[$m]:-} $r"
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
base=$(echo "${sum[none]}" | median)
row() { # name trips/s program-cost-ns
	awk -v n="$1" -v r="$2" -v b="$base" -v c="${3:-}" 'BEGIN {
		# both threads on one CPU: two context switches per round trip
		printf "| %s | %.0f | %.0f | %s | %s |\n", n, r, 2 * r,
			(n ~ /unprofiled/) ? "-" : sprintf("%.2f", (1e6 / r - 1e6 / b) / 2),
			(c == "") ? "-" : c " ns" }'
}
lost=$(grep -o "([0-9]* lost)" "$out/flameprobe.log" | tr -dc 0-9 || true)
table=$(
	echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPUs, kernel $(uname -r): \`bench/pingpong.c\` pinned to CPU 1, the profiler to CPU 0, $secs s per run, median of $rounds interleaved rounds."
	echo
	echo "| run | round trips/s | context switches/s | µs added per context switch | BPF program per switch (last run) |"
	echo "|---|---|---|---|---|"
	row "unprofiled" "$base"
	row "flameprobe \`--probe offcpu\` (CFI user stacks)" "$(echo "${sum[flameprobe]}" | median)" "$(cat "$out/flameprobe.cost" 2>/dev/null)"
	[ -n "$bcc" ] && row "bcc \`offcputime -f\`" "$(echo "${sum[bcc]}" | median)" "$(cat "$out/bcc.cost" 2>/dev/null)"
	[ -n "$bt" ] && row "bpftrace \`bench/offcputime.bt\` (offcputime's logic, frame-pointer user stacks)" "$(echo "${sum[bpftrace]}" | median)" "$(cat "$out/bpftrace.cost" 2>/dev/null)"
	echo
	echo "flameprobe lost ${lost:-0} events in its last run (every switch is recorded: the time is summed in the kernel, nothing per event goes through a buffer that could fill)."
)
echo "$table"

doc=docs/benchmarks.md
begin='<!-- offcpu-bench:begin -->'
end='<!-- offcpu-bench:end -->'
if ! grep -qF "$begin" "$doc"; then
	printf '\n## Off-CPU time (`sudo bash bench/offcpu.sh`)\n\n%s\n%s\n' "$begin" "$end" >>"$doc"
fi
python3 - "$doc" "$begin" "$end" "$table" <<'PY'
import sys
path, begin, end, table = sys.argv[1:]
text = open(path).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(path, "w").write(head + begin + "\n" + table + "\n" + end + tail)
PY
