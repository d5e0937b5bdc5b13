#!/usr/bin/env python3
"""Time to live probes, per probe kind, measured side by side in one run.

For each probe kind, flameprobe records an idle target (`sleep`) by pid
with -v; the time from starting the flameprobe process to its "attached
to" line (measured here, from outside) is the time a user waits before
events are recorded. flameprobe's own -v report gives the same from its
process start, the BPF load time and the verifier's time and processed
instructions per program. Medians over ROUNDS runs, kinds interleaved.

Usage: sudo python3 bench/attach.py [--rounds N] [--against BINARY [--label TEXT]]
  --against: another flameprobe binary (e.g. an older build) measured in
             the same run, for before/after figures; --label names it in
             the table (e.g. "before the pipeline (35362d0)").
Writes its table between the attach-bench markers of docs/benchmarks.md.
"""
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FP = os.path.join(ROOT, "target/release/flameprobe")
ROUNDS = 5
AGAINST = None
LABEL = None
args = sys.argv[1:]
while args:
    a = args.pop(0)
    if a == "--rounds":
        ROUNDS = int(args.pop(0))
    elif a == "--against":
        AGAINST = args.pop(0)
    elif a == "--label":
        LABEL = args.pop(0)

KINDS = [
    ("cpu", []),
    ("memleak (exact)", ["--probe", "memleak"]),
    ("memleak --sample-bytes 512k", ["--probe", "memleak", "--sample-bytes", "512k"]),
    ("kmemleak", ["--probe", "kmemleak"]),
    ("offcpu", ["--probe", "offcpu"]),
    ("wall", ["--probe", "wall"]),
]


def one(binary, extra, target_pid):
    """Seconds from exec to the 'attached to' line, and the -v details."""
    start = time.monotonic()
    p = subprocess.Popen(
        [binary, "record", "-v", "-p", str(target_pid), "-d", "300ms", "-o", os.devnull,
         "-f", "folded"] + extra,
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    attached = None
    lines = []
    for line in p.stderr:
        lines.append(line)
        if attached is None and "attached to" in line:
            attached = time.monotonic() - start
    p.wait()
    if attached is None:
        sys.exit("no 'attached to' line:\n" + "".join(lines))
    text = "".join(lines)
    own = re.search(r"attached to .* \((\d+) ms after flameprobe started\)", text)
    loads = re.findall(r"BPF programs loaded in ([\d.]+) ms \(verifier: ([^)]*)\)", text)
    return attached, (int(own.group(1)) if own else None), loads


def main():
    target = subprocess.Popen(["sleep", "3600"])
    try:
        binaries = [("flameprobe", FP)] + ([("--against", AGAINST)] if AGAINST else [])
        results = {}
        for _ in range(ROUNDS):
            for bname, binary in binaries:
                for kind, extra in KINDS:
                    if bname != "flameprobe" and kind in ("offcpu", "wall"):
                        continue  # older builds have no such probe
                    try:
                        r = one(binary, extra, target.pid)
                    except SystemExit as e:
                        print(f"{bname} {kind}: {e}", file=sys.stderr)
                        continue
                    results.setdefault((bname, kind), []).append(r)
    finally:
        target.kill()

    rows = []
    for (bname, kind), runs in results.items():
        outside = statistics.median(r[0] for r in runs)
        own = [r[1] for r in runs if r[1] is not None]
        loads = runs[-1][2]
        verifier = "; ".join(v for _, v in loads) if loads else "(not reported)"
        load_ms = statistics.median(float(r[2][0][0]) for r in runs if r[2]) if loads else None
        rows.append((bname, kind, outside, statistics.median(own) if own else None, load_ms,
                     verifier))
    date = time.strftime("%Y-%m-%d")
    kernel = os.uname().release
    out = [f"Measured {date} on {os.cpu_count()} CPUs, kernel {kernel}, median of {ROUNDS} runs "
           "per probe kind (kinds interleaved), target: an idle process by pid.", "",
           "| binary | probe | exec -> attached (measured outside) | flameprobe's own figure | "
           "BPF load | verifier time / instructions per program (last run) |",
           "|---|---|---|---|---|---|"]
    for bname, kind, outside, own, load_ms, verifier in rows:
        binary = "this build" if bname == "flameprobe" else (LABEL or f"`{AGAINST}`")
        own_s = f"{own} ms" if own is not None else "-"
        load_s = f"{load_ms:.0f} ms" if load_ms is not None else "-"
        out.append(f"| {binary} | {kind} | {outside * 1000:.0f} ms | {own_s} | {load_s} | {verifier} |")
    table = "\n".join(out)
    print(table)
    doc = os.path.join(ROOT, "docs/benchmarks.md")
    begin, end = "<!-- attach-bench:begin -->", "<!-- attach-bench:end -->"
    text = open(doc).read()
    if begin not in text:
        text += ("\n## Time to live probes (`sudo python3 bench/attach.py`)\n\n"
                 f"{begin}\n{end}\n")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    open(doc, "w").write(head + begin + "\n" + table + "\n" + end + tail)


main()
