#!/usr/bin/env python3
"""Side-by-side CPU profiling overhead, measured in one run.

For each profiler configuration the same CPU-bound workload (bench/workload.c,
pinned to CPU 1) runs for a fixed time while the profiler records it; its
throughput is compared with unprofiled runs interleaved with the profiled
ones (rounds alternate, medians reported), so drift affects all alike.
Also measures flameprobe's per-sample BPF cost (kernel BPF run-time stats,
scoped to the run), its own CPU time and peak RSS over a 20 s recording, and
the time from the end of recording to the output being written.
"""
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP = os.path.join(ROOT, "target/release/flameprobe")
WORK = os.path.join(ROOT, "target/bench/workload")
QUICK = "--quick" in sys.argv
SECS = 4 if QUICK else 8
ROUNDS = 2 if QUICK else 5
HAVE_BPFTRACE = shutil.which("bpftrace") is not None and shutil.which("bpftool") is not None


def workload(profiler):
    """Runs the workload with `profiler` (a function taking its pid and
    returning a Popen, or None); returns rounds per second."""
    w = subprocess.Popen(["taskset", "-c", "1", WORK, str(SECS)], stdout=subprocess.PIPE)
    p = profiler(w.pid) if profiler else None
    out, _ = w.communicate()
    if p:
        p.send_signal(2)
        p.wait()
    rounds = int(out.split()[0])
    return rounds / SECS


def flameprobe(unwind, hz):
    def start(pid):
        return subprocess.Popen(
            ["taskset", "-c", "0", FP, "record", "-q", "-p", str(pid), "-F", str(hz),
             "--unwind", unwind, "-d", f"{SECS + 5}s", "-o", os.devnull, "-f", "folded"],
            stderr=subprocess.DEVNULL)
    return start


def perf(hz):
    def start(pid):
        return subprocess.Popen(
            ["taskset", "-c", "0", "perf", "record", "-q", "-g", "-F", str(hz), "-p", str(pid),
             "-o", tempfile.mktemp(prefix="perf-", suffix=".data")],
            stderr=subprocess.DEVNULL)
    return start


def bpftrace(hz):
    """The bpftrace equivalent of bcc's `profile`: kernel+user stacks counted
    in BPF maps (frame pointers only)."""
    def start(pid):
        return subprocess.Popen(
            ["taskset", "-c", "0", "bpftrace", "-e",
             f"profile:hz:{hz} /pid == {pid}/ {{ @[kstack, ustack] = count(); }}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return start


def bpftrace_cost(hz):
    """bpftrace's BPF cost per run (kernel run-time statistics, read with
    bpftool while it records the workload)."""
    import json
    w = subprocess.Popen(["taskset", "-c", "1", WORK, "5"], stdout=subprocess.DEVNULL)
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        p = bpftrace(hz)(w.pid)
        time.sleep(4)
        progs = json.loads(subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True,
                                          text=True, check=True).stdout)
        p.send_signal(2)
        p.wait()
    finally:
        subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"], check=True)
    w.wait()
    runs = [(q.get("run_cnt", 0), q.get("run_time_ns", 0)) for q in progs
            if q.get("type") == "perf_event" and q.get("name") != "on_cpu_sample"]
    cnt, ns = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return f"{ns // cnt} ns" if cnt else "?"


def bpf_cost(unwind, hz):
    w = subprocess.Popen(["taskset", "-c", "1", WORK, "4"], stdout=subprocess.DEVNULL)
    r = subprocess.run(
        [FP, "record", "-p", str(w.pid), "-F", str(hz), "--unwind", unwind, "--bpf-stats",
         "-d", "3s", "-o", os.devnull, "-f", "folded"],
        stderr=subprocess.PIPE, text=True)
    w.wait()
    m = re.search(r"(\d+) ns per run, (\d+) ns per recorded sample", r.stderr)
    return f"{m.group(1)} ns ({m.group(2)} ns)" if m else "?"


def own_cost(unwind):
    w = subprocess.Popen([WORK, "30"], stdout=subprocess.DEVNULL)
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(
        [FP, "record", "-v", "-p", str(w.pid), "-F", "999", "--unwind", unwind, "-d", "20s",
         "-o", os.path.join(tempfile.gettempdir(), "bench-flame.svg")],
        stderr=err)
    # wait4: the resource usage of this one child (RUSAGE_CHILDREN would
    # report the largest RSS of every child so far, bpftrace included).
    _, _, usage = os.wait4(p.pid, 0)
    p.returncode = 0
    w.kill()
    w.wait()
    err.seek(0)
    m = re.search(r"output written (\d+) ms after recording stopped", err.read())
    cpu = usage.ru_utime + usage.ru_stime
    return cpu, usage.ru_maxrss / 1024, int(m.group(1)) if m else None


def main():
    configs = []
    for hz in (99, 999):
        configs += [(f"flameprobe --unwind fp, {hz} Hz", flameprobe("fp", hz)),
                    (f"flameprobe --unwind dwarf, {hz} Hz", flameprobe("dwarf", hz)),
                    (f"flameprobe --unwind auto, {hz} Hz", flameprobe("auto", hz)),
                    (f"perf record -g, {hz} Hz", perf(hz))]
        if HAVE_BPFTRACE:
            configs.append((f"bpftrace profile (kernel+user stacks), {hz} Hz", bpftrace(hz)))
    base, results = [], {name: [] for name, _ in configs}
    for r in range(ROUNDS):
        for name, prof in configs:
            base.append(workload(None))
            results[name].append(workload(prof))
            print(f"round {r + 1}/{ROUNDS}: {name}: {results[name][-1]:.0f} rounds/s", file=sys.stderr)
    b = statistics.median(base)
    lines = ["| configuration | throughput vs. unprofiled | overhead |", "|---|---|---|"]
    for name, _ in configs:
        ratio = statistics.median(results[name]) / b
        lines.append(f"| {name} | {ratio:.4f} | {100 * (1 - ratio):.2f}% |")
    cost = ["| program | 99 Hz | 999 Hz |", "|---|---|---|"]
    for unwind in ("fp", "dwarf", "auto"):
        cost.append(f"| flameprobe `--unwind {unwind}` | {bpf_cost(unwind, 99)} | {bpf_cost(unwind, 999)} |")
    if HAVE_BPFTRACE:
        cost.append(f"| bpftrace `profile` (@[kstack, ustack] = count()) | {bpftrace_cost(99)} | "
                    f"{bpftrace_cost(999)} |")
    own = ["| unwind | CPU time (user+sys) | peak RSS | end of recording -> output written |",
           "|---|---|---|---|"]
    for unwind in ("fp", "auto"):
        cpu, rss, ms = own_cost(unwind)
        own.append(f"| {unwind} | {cpu:.2f} s ({100 * cpu / 20:.1f}% of one CPU) | {rss:.0f} MiB | {ms} ms |")
    write_report(b, lines, cost, own)


def write_report(base, overhead, cost, own):
    path = os.path.join(ROOT, "docs/benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# flameprobe benchmarks\n"
    start, end = "<!-- cpu-bench:start -->", "<!-- cpu-bench:end -->"
    kernel = os.uname().release
    section = "\n".join([
        start,
        "## CPU profiling overhead (`bash bench/run.sh`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs, kernel {kernel}; "
        f"workload `bench/workload.c` (-O2, no frame pointers) pinned to CPU 1, profiler on CPU 0, "
        f"{SECS} s per run, {ROUNDS} interleaved rounds, medians. Unprofiled: {base:.0f} rounds/s.",
        "",
        "Target throughput with each profiler attached, as a ratio to unprofiled runs:",
        "",
        *overhead,
        "",
        "BPF program cost per run, and in parentheses per recorded sample (kernel BPF run-time "
        "statistics, enabled only for the recording with BPF_ENABLE_STATS; per recorded sample "
        "charges the runs the target filter rejected, on the other CPU, to the samples):",
        "",
        *cost,
        "",
        "flameprobe's own cost for a 20 s recording of the workload at 999 Hz (SVG output):",
        "",
        *own,
        end,
    ])
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
