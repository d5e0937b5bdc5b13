//! How `record` treats odd targets and interruptions (needs root): thread
//! ids, kernel threads, repeated pids, commands that fail or outlive the
//! recording, a second interrupt, a command whose probes cannot attach.

use std::process::Stdio;
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
