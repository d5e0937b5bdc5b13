//! `record --probe memleak|kmemleak` on real processes (needs root): exact
//! leaked bytes and allocation counts per call chain, static builds,
//! command mode, cross-thread frees, sampling, and kernel allocations held
//! versus released.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use crate::util::*;

/// Leaked bytes and allocation counts of tests/targets/leaks.c, per chain
/// (root first, ending at the function that called the allocator).
pub(crate) const LEAKS: &[(&str, u64, u64)] = &[
    ("main;run_leaks;via_malloc;leak_malloc", 3000, 3),
    ("main;run_leaks;leak_calloc", 400, 2),
    ("main;run_leaks;leak_realloc", 300, 1),
    ("main;run_leaks;leak_posix_memalign", 777, 1),
    ("main;run_leaks;leak_aligned_alloc", 1024, 2),
    ("main;run_leaks;leak_strdup;strdup", 64, 1),
];

/// glibc's strdup has aliases (__strdup, __GI___strdup); any may be chosen.
fn normalize(s: &str) -> String {
    s.replace("__GI___strdup", "strdup")
        .replace("__strdup", "strdup")
}

/// Allocation counts from the summary lines `bytes count  leaf <- ... <- root`
/// whose innermost frames are `chain` (root first, `;`-separated).
fn summary_count(stderr: &str, chain: &str) -> u64 {
    let want: Vec<&str> = chain.rsplit(';').collect();
    stderr
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let bytes: u64 = it.next()?.parse().ok()?;
            let count: u64 = it.next()?.parse().ok()?;
            let frames: Vec<&str> = it.filter(|w| *w != "<-").collect();
            let _ = bytes;
            frames.starts_with(&want).then_some(count)
        })
        .sum()
}

pub(crate) fn assert_exact_leaks(folded: &BTreeMap<String, u64>, stderr: &str) {
    let mut normalized = BTreeMap::new();
    for (k, v) in folded {
        *normalized.entry(normalize(k)).or_insert(0) += v;
    }
    let folded = &normalized;
    let stderr = &normalize(stderr);
    for (chain, bytes, count) in LEAKS {
        assert_eq!(
            chain_weight(folded, chain),
            *bytes,
            "bytes leaked through {chain}: {folded:#?}\n{stderr}"
        );
        assert_eq!(
            summary_count(stderr, chain),
            *count,
            "allocations leaked through {chain}:\n{stderr}"
        );
    }
    let churn: Vec<_> = folded.keys().filter(|s| s.contains("churn")).collect();
    assert!(churn.is_empty(), "freed churn reported: {churn:#?}");
    let leaked: u64 = LEAKS.iter().map(|l| l.1).sum();
    assert_eq!(
        total(folded),
        leaked,
        "nothing else outstanding: {folded:#?}"
    );
}

/// Records the leaks target (built with `flags`) by pid and checks the
/// exact result. The target does its work (and leaks) only when told, right
/// after flameprobe says it is attached: every allocation made after that
/// line must be seen (nothing is missed while the probes go live).
fn exact_leaks_by_pid(name: &str, flags: &[&str]) {
    let bin = build_c("leaks.c", name, flags);
    let mut target = Handshake::start(&bin, &["wait"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("leak.folded");
    let pid = target.pid();
    let rec = Recording::start(&[
        "--probe",
        "memleak",
        "-p",
        &pid,
        "-d",
        "120s",
        "--min-age",
        "0",
        "-o",
        out.to_str().unwrap(),
        "--report",
    ]);
    target.go();
    let (report, err) = rec.stop();
    // --report: the top table, in bytes, on stdout (the profile is in a file).
    assert!(report.contains("Top functions by self"), "{report}");
    assert!(
        report.contains("leak_malloc") && report.contains("KiB"),
        "{report}"
    );
    let folded = read_folded(&out);
    let prefix = format!("[{pid}]{name};");
    assert!(folded.keys().all(|s| s.starts_with(&prefix)), "{folded:#?}");
    assert_exact_leaks(&folded, &err);
}

#[test]
fn memleak_reports_exact_leaks_per_chain() {
    require_root!();
    exact_leaks_by_pid("leaks", FP_FLAGS);
}

#[test]
fn memleak_without_frame_pointers_reports_complete_chains() {
    require_root!();
    exact_leaks_by_pid("leaks-nofp", NOFP_FLAGS);
}

#[test]
fn memleak_static_binary_reports_exact_leaks() {
    require_root!();
    let mut flags = FP_FLAGS.to_vec();
    flags.push("-static");
    exact_leaks_by_pid("leaks-static", &flags);
}

#[test]
fn memleak_command_mode_attaches_before_the_command_runs() {
    require_root!();
    let bin = build_c("leaks.c", "leaks", FP_FLAGS);
    let out = run_ok(&[
        "record",
        "--probe",
        "memleak",
        "--min-age",
        "0",
        "-d",
        "60s",
        "-o",
        "-",
        "--",
        bin.to_str().unwrap(),
        "cmd",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the command exited"), "{err}");
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    // Exactly the leaks (the target allocates nothing else once main runs;
    // the dynamic loader's allocations before main go through its own
    // allocator).
    assert_exact_leaks(&folded, &err);
}

/// The command execs the leaking program with another allocator preloaded
/// (`env LD_PRELOAD=libjemalloc.so.2 leaks`): the new program's allocator
/// is probed when it execs, so its exact leaks are seen, not env's.
#[test]
fn memleak_follows_exec_to_a_preloaded_allocator() {
    require_root!();
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        std::path::Path::new(jemalloc).exists(),
        "{jemalloc} (apt-get install libjemalloc2; scripts/install-deps.sh does)"
    );
    let bin = build_c("leaks.c", "leaks", FP_FLAGS);
    let preload = format!("LD_PRELOAD={jemalloc}");
    let out = run_ok(&[
        "record",
        "--probe",
        "memleak",
        "--min-age",
        "0",
        "-d",
        "60s",
        "-o",
        "-",
        "--",
        "env",
        &preload,
        bin.to_str().unwrap(),
        "cmd",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    // jemalloc's own bookkeeping aside, exactly the leaks of the program.
    let ours: std::collections::BTreeMap<String, u64> = folded
        .into_iter()
        .filter(|(s, _)| s.contains(";main;"))
        .collect();
    assert_exact_leaks(&ours, &err);
}

/// A program without an allocator flameprobe can probe, exec'd by the
/// command: the summary says its allocations are missing instead of
/// "0 lost".
#[test]
fn memleak_says_when_a_program_could_not_be_probed() {
    require_root!();
    let stripped = build_c(
        "leaks.c",
        "leaks-static-stripped",
        &["-O1", "-static", "-s"],
    );
    let out = run_ok(&[
        "record",
        "--probe",
        "memleak",
        "-d",
        "60s",
        "-o",
        "-",
        "--",
        "sh",
        "-c",
        &format!("{} cmd", stripped.display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("had no allocator flameprobe could probe")
            && err.contains("leaks-static-stripped"),
        "{err}"
    );
}

#[test]
fn memleak_cross_thread_frees_leave_nothing() {
    require_root!();
    let bin = build_c("leaks.c", "leaks", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["xthread"]);
    let pid = target.pid();
    let rec = Recording::start(&[
        "--probe",
        "memleak",
        "-p",
        &pid,
        "-d",
        "120s",
        "--min-age",
        "0",
        "-o",
        "-",
    ]);
    target.go();
    let (stdout, err) = rec.stop();
    assert!(stdout.is_empty(), "nothing outstanding: {stdout}\n{err}");
    assert!(err.contains("nothing outstanding"), "{err}");
    // The producer's 3000 allocations were seen and all freed by the consumer.
    assert!(err.contains("3000 allocations, 3000 frees"), "{err}");
}

#[test]
fn memleak_sampling_every_byte_matches_exact_and_svg_says_bytes() {
    require_root!();
    let bin = build_c("leaks.c", "leaks", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["wait"]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("leak.svg");
    let pid = target.pid();
    // Sampling each byte with probability 1 samples every allocation and
    // scales by 1: the estimate is the exact answer.
    let rec = Recording::start(&[
        "--probe",
        "memleak",
        "--sample-bytes",
        "1",
        "-p",
        &pid,
        "-d",
        "120s",
        "--min-age",
        "0",
        "-o",
        svg.to_str().unwrap(),
    ]);
    target.go();
    let (_, err) = rec.stop();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_xml(&text);
    assert!(text.contains("leak_posix_memalign"), "{text}");
    assert!(text.contains("5565 bytes in 10 allocations"), "{err}");
    assert!(text.contains("Memory Flame Graph"));
    assert!(
        summary_count(&err, "main;run_leaks;via_malloc;leak_malloc") == 3,
        "{err}"
    );
}

#[test]
fn memleak_sampled_estimates_are_unbiased() {
    require_root!();
    let bin = build_c("leaks.c", "leaks", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["many"]);
    let pid = target.pid();
    // 20000 blocks of 100 bytes leaked (and as many freed), each byte
    // sampled with probability 1/16384: about 122 samples, so the
    // estimates have a relative standard deviation near 9%; 40% is more
    // than four of them.
    let rec = Recording::start(&[
        "--probe",
        "memleak",
        "--sample-bytes",
        "16k",
        "-p",
        &pid,
        "-d",
        "120s",
        "--min-age",
        "0",
        "-o",
        "-",
    ]);
    target.go();
    let (stdout, err) = rec.stop();
    let folded = parse_folded(&stdout);
    let bytes = chain_weight(&folded, "main;run_many;leak_many") as f64;
    let count = summary_count(&err, "main;run_many;leak_many") as f64;
    assert!(
        (bytes / 2_000_000.0 - 1.0).abs() < 0.4,
        "estimated {bytes} leaked bytes, 2000000 true: {folded:#?}\n{err}"
    );
    assert!(
        (count / 20_000.0 - 1.0).abs() < 0.4,
        "estimated {count} leaked allocations, 20000 true\n{err}"
    );
}

#[test]
fn memleak_without_a_target_is_a_usage_error() {
    let out = run(&["record", "--probe", "memleak", "-d", "1s", "-o", "-"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pid") && err.lines().count() == 1, "{err}");
}

#[test]
fn kmemleak_shows_held_kernel_memory_not_released() {
    require_root!();
    let bin = build_c("kheld.c", "kheld", FP_FLAGS);
    let mut target = Handshake::start(&bin, &[]);
    let pid = target.pid();
    // The recording ends by its duration, well after the target is done,
    // so that frees the kernel defers (RCU) have happened; allocations are
    // older than the default --min-age by then.
    let rec = Recording::start(&["--probe", "kmemleak", "-p", &pid, "-d", "4s", "-o", "-"]);
    target.go();
    let (stdout, err) = rec.finish();
    let folded = parse_folded(&stdout);
    let weight = |want: &[&str], avoid: &[&str]| -> u64 {
        folded
            .iter()
            .filter(|(s, _)| want.iter().all(|w| s.contains(w)))
            .filter(|(s, _)| !avoid.iter().any(|a| s.contains(a)))
            .map(|(_, w)| w)
            .sum()
    };
    // 64 socket pairs held open: 128 sockets, each with its struct sock.
    let held = weight(&["__sys_socketpair_[k]"], &[]);
    let socks = weight(&["__sys_socketpair_[k]", "sk_alloc_[k]"], &[]);
    assert!(socks >= 128 * 512, "held sockets: {socks} bytes\n{err}");
    // 1280 pipes created and closed: their objects were freed (kept, they
    // would hold several MB). What may stay is memory the kernel keeps for
    // reuse (new slab pages, a grown file-descriptor table) and a few
    // objects whose free RCU defers lazily (seconds), not the pipes.
    let released = weight(
        &["do_pipe2_[k]"],
        &[
            "allocate_slab_[k]",
            "alloc_slab_obj_exts",
            "expand_files_[k]",
        ],
    );
    assert!(
        released * 10 < held,
        "released pipes still hold {released} bytes (held sockets {held}): {folded:#?}"
    );
    // Kernel frames sit under the user frames of the target.
    assert!(
        folded
            .keys()
            .any(|s| s.starts_with(&format!("[{pid}]kheld;")) && s.contains(";main;")),
        "{folded:#?}"
    );
}

/// Runs `bin` pinned to CPU `cpu` (taskset), stdout piped; killed when
/// dropped (also when the test fails).
fn pinned(cpu: u32, bin: &std::path::Path) -> Target {
    let child = std::process::Command::new("taskset")
        .args(["-c", &cpu.to_string()])
        .arg(bin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running taskset (util-linux)");
    Target { child }
}

/// memleak and kmemleak on the same process, at the same time: the kernel
/// refilling BPF's memory caches (irq_work) for one probe's maps must not
/// feed the other's kmem tracepoints (which stalled the CPU for seconds),
/// and neither may stall a CPU-bound process beside the target.
#[test]
fn memleak_and_kmemleak_together_never_stall_a_cpu() {
    require_root!();
    let _cpu = exclusive_cpu();
    let churn = build_c("kchurn.c", "kchurn", NOFP_FLAGS);
    let burner_bin = build_c("burner.c", "burner", NOFP_FLAGS);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = if cpus > 1 { 1 } else { 0 };
    let target = pinned(cpu, &churn);
    let mut burner = pinned(cpu, &burner_bin);
    let rates = burner.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(rates).lines().map_while(Result::ok) {
            if let Ok(r) = line.trim().parse::<f64>() {
                let _ = tx.send((std::time::Instant::now(), r));
            }
        }
    });
    // The burner's rate beside the target, before any probe.
    let before: Vec<f64> = (0..4).map(|_| rx.recv().unwrap().1).collect();
    let pid = target.pid().to_string();
    let start = std::time::Instant::now();
    let user = Recording::start(&["--probe", "memleak", "-p", &pid, "-d", "5s", "-o", "-"]);
    let kernel = Recording::start(&["--probe", "kmemleak", "-p", &pid, "-d", "5s", "-o", "-"]);
    let (_, user_err) = user.finish();
    let (kernel_out, kernel_err) = kernel.finish();
    let end = std::time::Instant::now();
    let during: Vec<f64> = rx
        .try_iter()
        .filter(|(t, _)| *t > start && *t <= end)
        .map(|(_, r)| r)
        .collect();
    drop((burner, target));
    let mut sorted = before.clone();
    sorted.sort_by(f64::total_cmp);
    let usual = sorted[sorted.len() / 2];
    let slowest = during.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        during.len() >= 3 && slowest > usual / 2.0,
        "the burner beside the target ran at {during:?} per second while both probes \
         recorded (before: {before:?})\nmemleak: {user_err}\nkmemleak: {kernel_err}"
    );
    // kmemleak left BPF's own allocations (memleak's maps) out.
    assert!(
        !kernel_out.contains("bpf_mem_refill_[k]") && !kernel_out.contains("alloc_bulk_[k]"),
        "{kernel_out}"
    );
}
