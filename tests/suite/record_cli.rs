//! How `record` treats odd targets and interruptions (needs root): thread
//! ids, kernel threads, repeated pids, commands that fail or outlive the
//! recording, a second interrupt, a command whose probes cannot attach.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::*;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_thread_id_stands_for_its_process_and_pids_count_once() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("threads.c", "threads", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid();
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&t| t != pid)
        .expect("a worker thread");
    let (pid_s, tid_s) = (pid.to_string(), tid.to_string());
    let list = format!("{tid_s},{pid_s},{pid_s}");
    let out = run_ok(&["record", "-p", &list, "-d", "1s", "-o", "-"]);
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("{tid} is a thread of process {pid}")),
        "{err}"
    );
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    assert!(!folded.is_empty());
    let prefix = format!("[{pid}]threads;");
    assert!(folded.keys().all(|s| s.starts_with(&prefix)), "{folded:#?}");
    assert!(
        err.contains(&format!("from pid {pid} in")),
        "the process once: {err}"
    );
}

#[test]
fn a_kernel_thread_is_said_to_be_one() {
    require_root!();
    let out = run(&["record", "-p", "2", "-d", "500ms", "-o", "-"]);
    let err = stderr_of(&out);
    assert!(err.contains("pid 2 (kthreadd) is a kernel thread"), "{err}");
    let out = run(&[
        "record", "--probe", "memleak", "-p", "2", "-d", "500ms", "-o", "-",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("no user-space allocator"), "{err}");
}

#[test]
fn a_commands_failure_and_survival_are_reported() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let script = format!("{} 0.5; exit 3", bin.display());
    let out = run_ok(&["record", "-o", "-", "--", "sh", "-c", &script]);
    let err = stderr_of(&out);
    assert!(err.contains("the command exited with status 3"), "{err}");

    let out = run_ok(&[
        "record",
        "-d",
        "500ms",
        "-o",
        "-",
        "--",
        bin.to_str().unwrap(),
        "30",
    ]);
    let err = stderr_of(&out);
    let pid: u32 = err
        .split("the command (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("names the running command: {err}"));
    assert!(err.contains("is still running"), "{err}");
    // SAFETY: plain kill(2) of the command we launched.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[test]
fn a_second_interrupt_stops_at_once_and_says_so() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("never.svg");
    let mut child = flameprobe()
        .args([
            "record",
            "-v",
            "-p",
            &target.pid().to_string(),
            "-d",
            "60s",
            "-o",
        ])
        .arg(&svg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // Two different signals: both are delivered (two SIGINTs sent at once
    // could merge into one pending signal).
    // SAFETY: plain kill(2) on our child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("nothing was written"), "{err}");
    assert!(!svg.exists());
}

#[test]
fn a_held_command_is_not_left_behind_when_attaching_fails() {
    require_root!();
    // A static program without symbols: memleak finds no allocator to
    // probe, after the command was forked and held.
    let bin = build_c(
        "ratio.c",
        "ratio-static-stripped",
        &["-O1", "-static", "-s"],
    );
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("held-marker.folded");
    let out = run(&[
        "record",
        "--probe",
        "memleak",
        "-o",
        marker.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    // The held child is a copy of flameprobe (it never exec'd): no process
    // may still run with this command line.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).into_owned())
        .filter(|c| c.contains("held-marker.folded"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// stderr that cannot be written (`2>/dev/full`): the summary is lost, not
/// the recording: the output is written and the exit code is 0, not a
/// panic's 101 ("failed printing to stderr").
#[test]
fn an_unwritable_stderr_is_no_panic() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.folded");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = flameprobe()
        .args(["record", "-v", "-d", "500ms", "-o"])
        .arg(&path)
        .args(["--", bin.to_str().unwrap(), "1"])
        .stderr(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let folded = read_folded(&path);
    assert!(leaf_weight(&folded, "hot_a") > 0, "{folded:?}");
}

/// Running out of file descriptors is named as what it is. With a hard
/// limit too low for the BPF objects, `record` refuses to start and says
/// "too many open files" (not libbpf's "Invalid argument"); with a low
/// soft limit, the soft limit is raised to the hard one (and the launched
/// command still gets the original); with room for the BPF objects but not
/// for every binary (many distinct copies of a program), the recording
/// finishes and the summary says how many binaries were not opened, and
/// why.
#[test]
fn running_out_of_descriptors_is_named() {
    require_root!();
    let _cpu = shared_cpu();
    let prlimit = |limit: String, args: &[&str]| {
        Command::new("prlimit")
            .arg(format!("--nofile={limit}"))
            .arg(env!("CARGO_BIN_EXE_flameprobe"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = prlimit(
        "16:16".into(),
        &["record", "-d", "1s", "-o", "-", "--", "true"],
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("too many open files ("), "{err}");
    assert!(!err.contains("Invalid argument"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("limit");
    let script = format!("ulimit -n > '{}'; sleep 0.2", seen.display());
    let out = prlimit(
        "16:20000".into(),
        &[
            "record", "--probe", "wall", "-d", "1s", "-o", "-", "--", "sh", "-c", &script,
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "16");

    // Many distinct binaries, a limit with room for the BPF objects only.
    let bin = build_c("blips.c", "blips", FP_FLAGS);
    let copies = 150;
    let mut targets = Vec::new();
    for i in 0..copies {
        let copy = dir.path().join(format!("blips{i}"));
        std::fs::copy(&bin, &copy).unwrap();
        let child = Command::new(&copy).stdout(Stdio::null()).spawn().unwrap();
        targets.push(Target { child });
    }
    let pids: Vec<String> = targets.iter().map(|t| t.pid().to_string()).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit = flameprobe::limits::bpf_needs(cpus) + 16;
    let path = dir.path().join("many.folded");
    let out = prlimit(
        format!("{limit}:{limit}"),
        &[
            "record",
            "-p",
            &pids.join(","),
            "-d",
            "3s",
            "-o",
            path.to_str().unwrap(),
        ],
    );
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    assert!(!read_folded(&path).is_empty());
    let line = err
        .lines()
        .find(|l| l.contains("binaries were not opened"))
        .unwrap_or_else(|| panic!("no line says binaries were not opened: {err}"));
    assert!(line.contains("too many open files ("), "{line}");
}
