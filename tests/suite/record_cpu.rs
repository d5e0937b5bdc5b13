//! `record` on real processes (needs root): on-CPU ratios, complete chains,
//! kernel frames, command mode, signals and error paths.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::*;

pub(crate) fn assert_ratio_and_chains(
    folded: &std::collections::BTreeMap<String, u64>,
    min_complete: f64,
) {
    let a = leaf_weight(folded, "hot_a") as f64;
    let b = leaf_weight(folded, "hot_b") as f64;
    assert!(a + b > 100.0, "too few samples: {folded:?}");
    let share_a = 100.0 * a / (a + b);
    assert!(
        (share_a - 75.0).abs() <= 3.0,
        "hot_a has {share_a:.1}% of the hot samples, expected 75 +- 3: {folded:#?}"
    );
    let full_a = chain_weight(folded, "main;run;path_a1;path_a2;path_a3;hot_a") as f64;
    let full_b = chain_weight(folded, "main;run;path_b1;hot_b") as f64;
    let complete = (full_a + full_b) / (a + b);
    assert!(
        complete >= min_complete,
        "only {:.1}% of samples have the complete chain: {folded:#?}",
        100.0 * complete
    );
}

#[test]
fn pid_profile_shows_75_25_with_complete_chains() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.folded");
    let pid = target.pid().to_string();
    run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "3s",
        "-F",
        "999",
        "-o",
        out.to_str().unwrap(),
    ]);
    let folded = read_folded(&out);
    // Every stack starts with the process frame and the thread name.
    let prefix = format!("[{pid}]ratio-fp;ratio-fp;");
    assert!(folded.keys().all(|s| s.starts_with(&prefix)), "{folded:#?}");
    assert_ratio_and_chains(&folded, 0.95);
}

#[test]
fn no_threads_drops_thread_frame_and_svg_is_valid() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("flame.svg");
    let pid = target.pid().to_string();
    let out = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "2s",
        "--no-threads",
        "--bpf-stats",
        "-o",
        svg.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_xml(&text);
    assert!(text.contains("hot_a") && text.contains("hot_b"));
    assert!(text.contains("CPU Flame Graph"));
    assert!(
        text.contains(&format!("pid {pid}")),
        "subtitle names the target"
    );
    assert!(text.contains("99 Hz"), "subtitle names the frequency");
    // Summary on stderr names the top functions and the output.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hot_a") && err.contains("wrote"), "{err}");
    // --bpf-stats: the kernel measured the sampling program's run time.
    let cost = err
        .split_once(" ns per recorded sample")
        .and_then(|(before, _)| before.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no BPF cost in summary: {err}"));
    assert!(cost > 0, "{err}");
}

#[test]
fn folded_output_is_accepted_by_inferno() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let out = run_ok(&["record", "-p", &pid, "-d", "1s", "-q", "-o", "-"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.stderr.is_empty(), "-q keeps stderr quiet");
    // Only folded lines on stdout, sorted, one `stack count` each.
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty());
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted, "folded lines are sorted");
    for line in &lines {
        let (stack, count) = line.rsplit_once(' ').expect("stack count");
        assert!(count.parse::<u64>().is_ok() && !stack.is_empty(), "{line}");
    }
    let mut svg = Vec::new();
    let mut opts = inferno::flamegraph::Options::default();
    inferno::flamegraph::from_reader(&mut opts, text.as_bytes(), &mut svg).unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains("hot_a"));
    assert!(svg.contains(&format!("{} samples", total(&parse_folded(&text)))));
}

#[test]
fn syscall_heavy_target_shows_kernel_frames() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("syscalls.c", "syscalls", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let out = run_ok(&["record", "-p", &pid, "-d", "2s", "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    // (Frame-pointer unwinding loses read_loop: libc's read() keeps no
    // frame pointer. The DWARF tests check the full user chain.)
    let kernel: u64 = folded
        .iter()
        .filter(|(s, _)| {
            s.contains(";main;")
                && s.contains("entry_SYSCALL_64")
                && s.rsplit(';')
                    .next()
                    .is_some_and(|leaf| leaf.ends_with("_[k]"))
        })
        .map(|(_, w)| w)
        .sum();
    let share = kernel as f64 / total(&folded) as f64;
    assert!(share > 0.5, "kernel share {share:.2}: {folded:#?}");
    // The kernel part sits under the syscall entry, below the user frames.
    let (stack, _) = folded.iter().max_by_key(|(_, w)| **w).unwrap();
    let user = stack.find(";main;").unwrap();
    let entry = stack.find("entry_SYSCALL_64").unwrap();
    assert!(user < entry, "{stack}");
}

#[test]
fn command_mode_profiles_until_exit() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmd.folded");
    let started = Instant::now();
    let res = run_ok(&[
        "record",
        "-d",
        "30s",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "1.5",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped when the command exited"
    );
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("the command exited"), "{err}");
    let folded = read_folded(&out);
    assert!(leaf_weight(&folded, "hot_a") > 10, "{folded:#?}");
    assert!(total(&folded) >= 20, "{} samples", total(&folded));
}

#[test]
fn command_mode_follows_children() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let script = format!("{} 1 & {} 1; wait", bin.display(), bin.display());
    let out = run_ok(&["record", "-d", "30s", "-o", "-", "--", "sh", "-c", &script]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let pids: std::collections::BTreeSet<&str> = folded
        .keys()
        .filter(|s| s.ends_with("hot_a"))
        .map(|s| s.split(';').next().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "both children profiled: {pids:?}");
}

#[test]
fn sigint_still_writes_output() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("int.svg");
    let mut child = flameprobe()
        .args(["record", "-p", &target.pid().to_string(), "-d", "60s", "-o"])
        .arg(&svg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_xml(&text);
    assert!(text.contains("hot_a"));
}

#[test]
fn target_exit_keeps_what_was_sampled() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["1.5"]);
    let pid = target.pid().to_string();
    let started = Instant::now();
    let out = run_ok(&["record", "-p", &pid, "-d", "30s", "-o", "-"]);
    assert!(started.elapsed() < Duration::from_secs(15));
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    // Symbolized although the process is gone by now.
    assert!(leaf_weight(&folded, "hot_a") > 10, "{folded:#?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited"), "{err}");
}

#[test]
fn unwritable_output_fails_before_attaching() {
    require_root!();
    let _cpu = shared_cpu();
    let out = run(&["record", "-v", "-d", "1s", "-o", "/nonexistent-dir/x.svg"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write output '/nonexistent-dir/x.svg'"),
        "{err}"
    );
    assert!(!err.contains("attached"), "nothing was attached: {err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

#[test]
fn missing_pid_is_a_clear_error() {
    require_root!();
    let _cpu = shared_cpu();
    let out = run(&["record", "-p", "999999999", "-d", "1s", "-o", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such process: 999999999"), "{err}");
}

#[test]
fn missing_capabilities_are_named() {
    require_root!();
    let _cpu = shared_cpu();
    // Drop to an unprivileged user without capabilities.
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_flameprobe"))
        .args(["record", "-d", "1s", "-o", "-"])
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON") && err.contains("sudo"),
        "{err}"
    );
}

#[test]
fn whole_system_excludes_idle_by_default() {
    require_root!();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let out = run_ok(&["record", "-a", "--group-by", "pid", "-d", "1s", "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    assert!(folded.keys().any(|s| s.ends_with("hot_a")));
    assert!(
        !folded.keys().any(|s| s.starts_with("[0]")),
        "idle excluded"
    );
    // By default the whole machine groups processes by name: one tower
    // per program, however many processes ran it.
    let out = run_ok(&["record", "-a", "-d", "1s", "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    assert!(
        folded
            .keys()
            .any(|s| s.starts_with("ratio-fp;") && s.ends_with("hot_a")),
        "{folded:#?}"
    );
    assert!(
        !folded
            .keys()
            .any(|s| s.starts_with(&format!("[{}]", target.pid()))),
        "no pid frames"
    );
    drop(target);
    // Idle samples need an idle CPU: keep the other tests' targets away.
    let _alone = exclusive_cpu();
    let out = run_ok(&[
        "record",
        "-a",
        "--group-by",
        "pid",
        "--include-idle",
        "-d",
        "1s",
        "-o",
        "-",
    ]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    assert!(
        folded.keys().any(|s| s.starts_with("[0]")),
        "idle included: {folded:#?}"
    );
}

/// 100,000 threads and 70,000 processes come and go before the command
/// starts its last child: the in-kernel target table keeps room for it
/// (threads need no entry, dead processes leave), so it is profiled.
#[test]
fn children_are_followed_after_thread_and_process_churn() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("churn.c", "churn", FP_FLAGS);
    let out = run_ok(&[
        "record",
        "-F",
        "199",
        "-o",
        "-",
        "--",
        bin.to_str().unwrap(),
        "100000",
        "70000",
    ]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        chain_weight(&folded, "main;child_spin;spin") > 20,
        "the last child was profiled: {folded:#?}\n{err}"
    );
    assert!(
        chain_weight(&folded, "main;parent_spin;spin") > 20,
        "{folded:#?}"
    );
    assert!(!err.contains("not followed"), "{err}");
}

/// Far more samples than flameprobe can take in (`-a -F 50000` on a loaded
/// machine): the recording still ends at `-d` (a hang would take minutes:
/// the bound here only catches that), writes its output, says what was
/// lost and how to avoid it, and its memory stays bounded (README:
/// "Overload").
#[test]
fn overload_ends_on_time_with_bounded_memory_and_reported_losses() {
    require_root!();
    let _alone = exclusive_cpu();
    let load: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("stress.svg");
    let mut child = flameprobe()
        .args(["record", "-a", "-F", "50000", "-d", "2s", "-o"])
        .arg(&svg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A hang would go on for minutes: end it (the test then fails).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, pid) = (done.clone(), child.id() as i32);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        if !flag.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: plain kill(2) of our still-running child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut err = String::new();
    {
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
    }
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = child.try_wait(); // reaped by wait4 above
    for mut l in load {
        let _ = l.kill();
        let _ = l.wait();
    }
    assert_eq!(rc, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{err}"
    );
    assert_well_formed_xml(&std::fs::read_to_string(&svg).unwrap());
    let lost: u64 = err
        .split(" lost)")
        .next()
        .and_then(|h| h.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("headline with losses: {err}"));
    if lost > 0 {
        assert!(err.contains("lower -F"), "{err}");
    }
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 512, "peak RSS {peak_mib} MiB: {err}");
}

/// 200 programs of 10-20 ms each, started by the command: gone before
/// flameprobe reads their memory maps, they are still unwound and
/// symbolized (the kernel's mmap records say what they mapped).
#[test]
fn short_lived_processes_are_symbolized() {
    require_root!();
    // Alone: a test churning through 100,000 threads at the same time
    // overflows the kernel's record buffers (said in the summary).
    let _cpu = exclusive_cpu();
    let bin = build_c("brief.c", "brief", NOFP_FLAGS);
    let script = format!("for i in $(seq 200); do {}; done", bin.display());
    let out = run_ok(&["record", "-F", "999", "-o", "-", "--", "sh", "-c", &script]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let brief: Vec<(&String, &u64)> = folded
        .iter()
        .filter(|(s, _)| s.split(';').next().is_some_and(|p| p.ends_with("]brief")))
        .collect();
    let all: u64 = brief.iter().map(|(_, w)| **w).sum();
    let named: u64 = brief
        .iter()
        .filter(|(s, _)| s.contains(";main;brief_work"))
        .map(|(_, w)| **w)
        .sum();
    assert!(all > 500, "{all} samples of the short programs");
    let share = named as f64 / all as f64;
    assert!(
        share >= 0.9,
        "only {:.1}% of their samples are symbolized: {brief:#?}",
        100.0 * share
    );
}

/// The command itself runs for 50 ms: it has exited (a zombie until
/// flameprobe reaps it, with empty maps) before its samples are read; they
/// are still symbolized, from the kernel's mmap records.
#[test]
fn a_brief_command_is_symbolized() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("brief.c", "brief", NOFP_FLAGS);
    let out = run_ok(&[
        "record",
        "-F",
        "999",
        "-o",
        "-",
        "--",
        bin.to_str().unwrap(),
        "50",
    ]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let all = total(&folded);
    let named: u64 = folded
        .iter()
        .filter(|(s, _)| s.contains(";main;brief_work"))
        .map(|(_, w)| w)
        .sum();
    assert!(all >= 20, "{all} samples: {folded:#?}");
    assert!(
        named as f64 >= 0.9 * all as f64,
        "{named} of {all} samples symbolized: {folded:#?}"
    );
}
