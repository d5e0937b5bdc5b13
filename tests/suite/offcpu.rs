//! `record --probe offcpu|wall` on real processes (needs root): where
//! threads wait, per stack and thread, the split of wall-clock time into
//! on-CPU and off-CPU, and the filters (--state, --thread).

use std::collections::BTreeMap;

use crate::util::*;

/// The share (percent) of `chain`'s weight among the stacks through `parent`.
fn share(folded: &BTreeMap<String, u64>, parent: &str, chain: &str) -> f64 {
    let through = |frag: &str| -> u64 {
        folded
            .iter()
            .filter(|(s, _)| s.contains(frag))
            .map(|(_, w)| w)
            .sum()
    };
    100.0 * through(chain) as f64 / through(parent).max(1) as f64
}

/// SkyWalking's slow endpoint: handle_request's time off the CPU splits
/// 3.85 / 38.46 / 57.69 % over its three methods, each with its complete
/// chain and the kernel frames of the sleep; --thread leaves the ticker out.
#[test]
fn slow_request_splits_its_blocked_time_by_method() {
    require_root!();
    let bin = build_c("slowreq.c", "slowreq", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["3"]);
    let pid = target.pid();
    let rec = Recording::start(&[
        "--probe",
        "offcpu",
        "-p",
        &pid,
        "-d",
        "60s",
        "--thread",
        "^slowreq$",
        "-o",
        "-",
    ]);
    target.go(); // three requests: 7.8 s
    let (out, err) = rec.stop();
    let folded = parse_folded(&out);
    let parent = "main;serve;handle_request;";
    for (method, expected) in [
        ("fast_method", 100.0 / 26.0),
        ("slow_method1", 1000.0 / 26.0),
        ("slow_method2", 1500.0 / 26.0),
    ] {
        let got = share(&folded, parent, &format!("{parent}{method};"));
        assert!(
            (got - expected).abs() <= 3.0,
            "{method}: {got:.2}% of handle_request's blocked time, expected {expected:.2}: {folded:#?}\n{err}"
        );
        let complete = folded.keys().any(|s| {
            s.contains(&format!("_start;__libc_start_main_impl;__libc_start_call_main;main;serve;handle_request;{method};sleep_ms;"))
                && s.contains("do_nanosleep_[k]")
                && s.ends_with("_[k]")
        });
        assert!(
            complete,
            "{method} down to main and the sleep's kernel frames: {folded:#?}"
        );
    }
    // Three requests of 2.6 s each, in microseconds.
    let blocked: u64 = folded
        .iter()
        .filter(|(s, _)| s.contains(parent))
        .map(|(_, w)| w)
        .sum();
    assert!(
        (blocked as f64 / 7.8e6 - 1.0).abs() < 0.05,
        "{blocked} us off the CPU in handle_request: {err}"
    );
    assert!(
        !folded.keys().any(|s| s.contains("ticker")),
        "--thread left the ticker out: {folded:#?}"
    );
    // The summary names the code that waited, not the scheduler: the
    // longest wait is slow_method2's (4.5 s in three requests).
    let waits: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.contains("largest stacks by offcpu"))
        .skip(1)
        .take_while(|l| l.contains(" <- "))
        .collect();
    assert!(
        waits
            .first()
            .is_some_and(|l| l.contains("sleep_ms <- slow_method2") && !l.contains("_[k]")),
        "{err}"
    );
}

/// Wall-clock time of a thread that computes 30 ms (of CPU time) and sleeps
/// 70 ms per cycle: its time splits into on-CPU (computing) and off-CPU
/// (resting) as the program measures it itself, 30/70 on an idle machine.
#[test]
fn wall_clock_splits_computing_from_waiting() {
    require_root!();
    let _alone = exclusive_cpu();
    let bin = build_c("waits.c", "waits", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["split", "30", "30", "70"]);
    let pid = target.pid();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("wall.pb.gz");
    let rec = Recording::start(&[
        "--probe",
        "wall",
        "-F",
        "999",
        "-p",
        &pid,
        "-d",
        "60s",
        "-o",
        pb.to_str().unwrap(),
    ]);
    target.go();
    let measured = target.line();
    rec.stop();
    let (cpu_ns, rest_ns) = measured
        .split_once(' ')
        .map(|(a, b)| (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap()))
        .unwrap();
    let thread = |focus: &str| -> (f64, f64, f64) {
        let out = run_ok(&[
            "report",
            "--by-thread",
            "--focus",
            focus,
            "--json",
            pb.to_str().unwrap(),
        ]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let columns: Vec<&str> = json["thread_columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["wall/nanoseconds", "cpu/nanoseconds", "offcpu/nanoseconds"]
        );
        let v = |i: usize| json["threads"][0]["values"][i].as_u64().unwrap() as f64;
        (v(0), v(1), v(2))
    };
    let (_, on, _) = thread("^compute$");
    let (_, _, off) = thread("^rest$");
    assert!(
        (on / cpu_ns - 1.0).abs() < 0.1,
        "on-CPU {on} ns, computed {cpu_ns} ns"
    );
    assert!(
        (off / rest_ns - 1.0).abs() < 0.05,
        "off-CPU {off} ns, rested {rest_ns} ns"
    );
    let expected = 100.0 * cpu_ns / (cpu_ns + rest_ns);
    let got = 100.0 * on / (on + off);
    assert!(
        (got - expected).abs() <= 5.0,
        "on-CPU share {got:.1}%, the program's own {expected:.1}%"
    );
    // wall = cpu + offcpu, and the text table says the same per thread.
    let (wall, on, off) = thread("^(compute|rest)$");
    assert!((on + off - wall).abs() < 1.0, "wall = cpu + offcpu");
    let out = run_ok(&["report", "--by-thread", pb.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Per thread:") && text.contains("offcpu"),
        "{text}"
    );
    // The on-CPU half is sampled at 999 Hz: the header gives its period.
    assert!(text.contains("999 Hz (period 1.0 ms)"), "{text}");
    // Off-CPU stacks end in the scheduler, on-CPU ones in compute.
    let out = run_ok(&["convert", pb.to_str().unwrap(), "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    assert!(
        folded
            .keys()
            .any(|s| s.contains(";main;rest;") && s.ends_with("schedule_[k]")),
        "{folded:#?}"
    );
    assert!(
        folded.keys().any(|s| s.contains(";main;compute")),
        "{folded:#?}"
    );
}

/// A thread blocked on a pipe for the whole recording, blocked before it
/// started: its time off the CPU is the recording's length.
#[test]
fn a_thread_blocked_throughout_counts_the_whole_recording() {
    require_root!();
    let bin = build_c("waits.c", "waits", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["pipe"]);
    target.release();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pid = target.pid();
    let out = run_ok(&[
        "record", "--probe", "offcpu", "-p", &pid, "-d", "2s", "-o", "-",
    ]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    let blocked = chain_weight(&folded, "main;wait_input;__GI___libc_read") as f64;
    let (_, rest) = folded
        .iter()
        .find(|(s, _)| s.contains("main;wait_input;__GI___libc_read;"))
        .unwrap_or_else(|| panic!("the pipe read: {folded:#?}\n{err}"));
    let total = *rest as f64 + blocked;
    assert!(
        (total / 2.0e6 - 1.0).abs() <= 0.05,
        "{total} us blocked in 2 s: {folded:#?}\n{err}"
    );
    // The flame graph says what it shows: time off the CPU, in us.
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("off.svg");
    run_ok(&[
        "record",
        "--probe",
        "offcpu",
        "-p",
        &pid,
        "-d",
        "500ms",
        "-o",
        svg.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_xml(&text);
    assert!(text.contains("Off-CPU Time Flame Graph"), "title");
    assert!(text.contains(" us, "), "widths in microseconds");
}

/// --state disk keeps the thread waiting for the disk (fsync, D state) and
/// leaves out the sleeping one; --state sleep the other way round.
#[test]
fn state_filters_separate_disk_waits_from_sleep() {
    require_root!();
    let bin = build_c("waits.c", "waits", FP_FLAGS);
    let dir = tempfile::tempdir_in(repo_root().join("target")).unwrap();
    let file = dir.path().join("sync.dat");
    let mut target = Handshake::start(&bin, &["states", file.to_str().unwrap()]);
    target.release();
    let pid = target.pid();
    let record = |state: &str| {
        let out = run_ok(&[
            "record", "--probe", "offcpu", "--state", state, "-p", &pid, "-d", "2s", "-o", "-",
        ]);
        (
            parse_folded(&String::from_utf8(out.stdout).unwrap()),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let through = |f: &BTreeMap<String, u64>, frag: &str| -> u64 {
        f.iter()
            .filter(|(s, _)| s.contains(frag))
            .map(|(_, w)| w)
            .sum()
    };
    let (disk, err) = record("disk");
    assert!(through(&disk, ";flush_disk;") > 0, "{disk:#?}\n{err}");
    assert_eq!(through(&disk, ";nap;"), 0, "{disk:#?}");
    assert!(err.contains("left out by --state"), "{err}");
    let (sleep, err) = record("sleep");
    assert!(through(&sleep, ";nap;") > 0, "{sleep:#?}\n{err}");
    assert_eq!(through(&sleep, ";flush_disk;"), 0, "{sleep:#?}");
}

/// A thread that exits and a process that exits during the recording keep
/// their time off the CPU, and the recording still writes its output.
#[test]
fn exited_threads_and_processes_keep_their_time() {
    require_root!();
    let bin = build_c("waits.c", "waits", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["exits"]);
    let pid = target.pid();
    let rec = Recording::start(&["--probe", "offcpu", "-p", &pid, "-d", "30s", "-o", "-"]);
    target.release();
    let (out, err) = rec.finish(); // ends when the target exits
    assert!(err.contains("exited"), "{err}");
    let folded = parse_folded(&out);
    let us = |frag: &str| -> u64 {
        folded
            .iter()
            .filter(|(s, _)| s.contains(frag))
            .map(|(_, w)| w)
            .sum()
    };
    let short = us(";short_wait;") as f64;
    let long = us(";long_wait;") as f64;
    assert!(
        (short / 300e3 - 1.0).abs() < 0.2,
        "short_wait {short} us: {folded:#?}"
    );
    assert!(
        (long / 600e3 - 1.0).abs() < 0.2,
        "long_wait {long} us: {folded:#?}"
    );
    assert!(
        folded.keys().any(|s| s.contains(";brief;")),
        "thread label kept"
    );
}
