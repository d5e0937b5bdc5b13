//! JIT frames in real recordings (root): Java (also in a podman container
//! and exiting during the recording), Node and Python programs profiled by
//! pid with no other step, named in the same stacks as their native
//! frames; a perf map planted as a symbolic link is not read.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::containers_util::Podman;
use crate::jit::{python312, Program};
use crate::util::*;

/// The JVM options every Java test target runs with: every method of
/// JitSplit keeps its own frame, compilations finish before the method
/// runs on.
fn jit_split_java(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "-XX:CompileCommand=quiet",
            "-XX:CompileCommand=dontinline,JitSplit::*",
            "-XX:-BackgroundCompilation",
        ]
        .map(String::from),
    );
    args
}

/// Records `pid` for `secs` at 999 Hz into a folded file; returns the
/// stacks and flameprobe's stderr.
fn record_folded(pids: &str, secs: u32, extra: &[&str]) -> (BTreeMap<String, u64>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.folded");
    let duration = format!("{secs}s");
    let mut args = vec![
        "record",
        "-p",
        pids,
        "-d",
        &duration,
        "-F",
        "999",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let run = run_ok(&args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    (read_folded(&out), stderr)
}

/// Shares of a recording of the JitSplit programs: leaves in the two hot
/// functions, and stacks with the complete chain from `root` (a frame
/// that must be somewhere below the chain) through `main` to the leaf.
struct Split {
    total: u64,
    hot_a: u64,
    hot_b: u64,
    complete: u64,
}

/// `frame(name)` is how the runtime's function `name` is displayed.
fn split(folded: &BTreeMap<String, u64>, frame: &dyn Fn(&str) -> String, roots: &[&str]) -> Split {
    let chain_a: Vec<String> = ["main", "a1", "a2", "a3", "hotA"].map(frame).to_vec();
    let chain_b: Vec<String> = ["main", "b1", "hotB"].map(frame).to_vec();
    let mut s = Split {
        total: total(folded),
        hot_a: leaf_weight(folded, &frame("hotA")),
        hot_b: leaf_weight(folded, &frame("hotB")),
        complete: 0,
    };
    for (stack, &n) in folded {
        let frames: Vec<&str> = stack.split(';').collect();
        let ends_with = |chain: &[String]| {
            frames.len() > chain.len()
                && frames[frames.len() - chain.len()..]
                    .iter()
                    .zip(chain)
                    .all(|(f, c)| f == c)
        };
        let below = &frames[..frames
            .len()
            .saturating_sub(chain_a.len().min(chain_b.len()))];
        let rooted = roots.iter().all(|r| below.iter().any(|f| f.starts_with(r)));
        if rooted && (ends_with(&chain_a) || ends_with(&chain_b)) {
            s.complete += n;
        }
    }
    s
}

/// The assertions shared by the Java and Node tests.
fn assert_split(s: &Split, folded: &BTreeMap<String, u64>, stderr: &str) {
    let top: Vec<_> = {
        let mut v: Vec<_> = folded.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.into_iter().take(5).collect()
    };
    let ctx = || format!("{stderr}\nheaviest stacks: {top:#?}");
    assert!(s.total >= 200, "only {} samples; {}", s.total, ctx());
    let hot = s.hot_a + s.hot_b;
    assert!(
        hot * 10 >= s.total * 9,
        "{hot} of {} samples end in the hot functions; {}",
        s.total,
        ctx()
    );
    let pct_a = 100.0 * s.hot_a as f64 / hot as f64;
    assert!(
        (70.0..=80.0).contains(&pct_a),
        "hotA has {pct_a:.1}% of the hot samples, not 75 +- 5; {}",
        ctx()
    );
    assert!(
        s.complete * 10 >= s.total * 9,
        "{} of {} samples have the complete chain; {}",
        s.complete,
        s.total,
        ctx()
    );
}

#[test]
fn java_frames_are_named_in_complete_stacks() {
    require_root!();
    let _cpu = exclusive_cpu();
    let classes = build_java("JitSplit.java");
    let mut cmd = Command::new("java");
    cmd.args(jit_split_java(&["-XX:+PreserveFramePointer"]))
        .arg("-cp")
        .arg(&classes)
        .arg("JitSplit");
    let mut jvm = Program::start(&mut cmd);
    let pid = jvm.pid();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));

    // pprof, so the system names are checked too; folded from it.
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("out.pb.gz");
    let run = run_ok(&[
        "record",
        "-p",
        &pid.to_string(),
        "-d",
        "5s",
        "-F",
        "999",
        "-o",
        pb.to_str().unwrap(),
    ]);
    jvm.kill();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!stderr.contains("PreserveFramePointer"), "{stderr}");
    let folded_path = dir.path().join("out.folded");
    run_ok(&[
        "convert",
        pb.to_str().unwrap(),
        "-o",
        folded_path.to_str().unwrap(),
    ]);
    let folded = read_folded(&folded_path);
    let frame = |f: &str| format!("JitSplit.{f}_[j]");
    let s = split(
        &folded,
        &frame,
        &["start_thread", "JavaMain", "JavaCalls::call_helper"],
    );
    assert_split(&s, &folded, &stderr);

    // pprof: the JIT functions' system names are the JVM's, with the
    // signature; their locations are in the [jit] mapping.
    let profile = flameprobe::input::read(&pb).unwrap();
    let hot_a = profile
        .locations
        .iter()
        .find(|l| l.lines[0].function == "JitSplit.hotA")
        .expect("a location of hotA");
    assert_eq!(hot_a.kind, flameprobe::profile::FrameKind::Jit);
    assert_eq!(
        hot_a.lines[0].system_name.as_deref(),
        Some("long JitSplit.hotA(int)")
    );
    let bytes = std::fs::read(&pb).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains(flameprobe::output::pprof::JIT_MAPPING),
        "no [jit] mapping"
    );
}

#[test]
fn node_frames_are_named_in_complete_stacks() {
    require_root!();
    let _cpu = exclusive_cpu();
    let script = repo_root().join("tests/targets/jit_split.js");
    let cwd = tempfile::tempdir().unwrap();
    let mut node = Program::start(
        Command::new("node")
            .args(["--perf-basic-prof", "--no-turbo-inlining"])
            .arg(&script)
            .current_dir(cwd.path()),
    );
    let pid = node.pid();
    let (folded, stderr) = record_folded(&pid.to_string(), 5, &[]);
    node.kill();
    let lines: BTreeMap<&str, u32> = [
        ("main", 40),
        ("a1", 32),
        ("a2", 28),
        ("a3", 24),
        ("hotA", 12),
        ("b1", 36),
        ("hotB", 18),
    ]
    .into();
    let s = script.display().to_string();
    let frame = |f: &str| format!("{f} {s}:{}_[j]", lines[f]);
    let split = split(&folded, &frame, &["node::Start", "Builtins_JSEntry"]);
    assert_split(&split, &folded, &stderr);
    assert!(!stderr.contains("unnamed JIT frames"), "{stderr}");
}

#[test]
fn python_functions_are_named() {
    require_root!();
    let Some(python) = python312() else {
        eprintln!("skipped: no Python 3.12 at ~/.pyenv/versions/3.12*/bin/python3");
        return;
    };
    let _cpu = exclusive_cpu();
    let script = repo_root().join("tests/targets/jit_split.py");
    let mut py = Program::start(Command::new(&python).args(["-X", "perf"]).arg(&script));
    let (folded, stderr) = record_folded(&py.pid().to_string(), 4, &[]);
    py.kill();
    let s = script.display();
    let named = |f: &str| -> u64 {
        let frame = format!("{f} ({s})_[j]");
        folded
            .iter()
            .filter(|(stack, _)| stack.split(';').any(|x| x == frame))
            .map(|(_, n)| n)
            .sum()
    };
    let (a, b, all) = (named("hot_a"), named("hot_b"), total(&folded));
    assert!(
        (a + b) * 10 >= all * 8,
        "{a} + {b} of {all} samples are in hot_a or hot_b by name\n{stderr}"
    );
    assert!(a > b, "hot_a {a}, hot_b {b}\n{stderr}");
    // Callers are not asserted: Python 3.12's perf trampoline keeps no
    // frame pointer and has no CFI, so unwinding usually ends at it.
}

/// A JVM run by podman, with the host's JDK bind-mounted: its perf map is
/// written into the container's /tmp under its own pid (1) and read there.
#[test]
fn java_in_a_container_is_named() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let _cpu = exclusive_cpu();
    let classes = build_java("JitSplit.java");
    let java_home = std::fs::canonicalize("/usr/bin/java")
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let image = podman.image(&[]);
    let app = format!("{}:/app:ro", classes.display());
    let mut options = vec![
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/usr/lib64:/lib64:ro",
        "-v",
        &app,
    ];
    // The JDK's configuration is linked into /etc on Debian.
    let etc = "/etc/java-17-openjdk:/etc/java-17-openjdk:ro";
    if Path::new("/etc/java-17-openjdk").exists() {
        options.extend(["-v", etc]);
    }
    let java = java_home.join("bin/java");
    let mut cmd = vec![java.to_str().unwrap().to_string()];
    cmd.extend(jit_split_java(&["-XX:+PreserveFramePointer"]));
    cmd.extend(["-cp", "/app", "JitSplit"].map(String::from));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let jvm = podman.run_with("jvm", &image, None, &options, &cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !podman.ok(&["logs", &jvm.name]).contains("ready") {
        assert!(Instant::now() < deadline, "the JVM did not get ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = jvm.pid();
    let status = flameprobe::proc::read_status(pid).unwrap();
    assert_eq!(status.ns_tgid(), 1, "the JVM is its container's pid 1");

    let (folded, stderr) = record_folded(&pid.to_string(), 5, &[]);
    let frame = |f: &str| format!("JitSplit.{f}_[j]");
    let s = split(&folded, &frame, &["start_thread", "JavaMain"]);
    assert_split(&s, &folded, &stderr);
    // Written in the container's /tmp, not the host's.
    assert!(Path::new(&format!("/proc/{pid}/root/tmp/perf-1.map")).exists());
    assert!(!Path::new(&format!("/tmp/perf-{pid}.map")).exists());
}

/// A perf map that is a symbolic link to a host file is not read: the
/// recording finishes, the frames stay unnamed and the summary says why.
#[test]
fn a_perf_map_planted_as_a_symlink_is_not_read() {
    require_root!();
    let _cpu = shared_cpu();
    let script = repo_root().join("tests/targets/jit_split.js");
    let cwd = tempfile::tempdir().unwrap();
    // No --perf-basic-prof: node writes no map of its own.
    let mut node = Program::start(Command::new("node").arg(&script).current_dir(cwd.path()));
    let pid = node.pid();
    // The host file names every anonymous executable mapping of node.
    let maps = flameprobe::proc::read_maps(pid).unwrap();
    let planted: String = maps
        .iter()
        .filter(|m| m.executable && m.path.is_empty())
        .map(|m| {
            format!(
                "{:x} {:x} planted\n",
                m.start,
                (m.end - m.start).min(u32::MAX as u64)
            )
        })
        .collect();
    assert!(!planted.is_empty(), "node has no anonymous code");
    let host = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host.path(), &planted).unwrap();
    let link = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(host.path(), &link).unwrap();
    let (folded, stderr) = record_folded(&pid.to_string(), 2, &[]);
    node.kill();
    let _ = std::fs::remove_file(&link);
    assert!(
        !folded.keys().any(|s| s.contains("planted")),
        "the linked file was read"
    );
    assert!(
        folded.keys().any(|s| s.contains("[anon]+0x")),
        "no unnamed JIT frames: {folded:?}"
    );
    assert!(
        stderr.contains(&format!("samples of pid {pid} (node): perf map"))
            && stderr.contains("symbolic link"),
        "{stderr}"
    );
}

/// A JVM that exits during the recording (started with DumpPerfMapAtExit,
/// as the hint says): its map is read when it exits, so its frames are
/// named even though the file is gone by the end. It runs without
/// -XX:+PreserveFramePointer, which the summary points out.
#[test]
fn a_jvm_that_exits_during_the_recording_keeps_its_names() {
    require_root!();
    let _cpu = exclusive_cpu();
    let classes = build_java("JitSplit.java");
    let mut cmd = Command::new("java");
    cmd.args(jit_split_java(&[
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:+DumpPerfMapAtExit",
    ]))
    .arg("-cp")
    .arg(&classes)
    .args(["JitSplit", "2"]);
    let jvm = Program::start(&mut cmd);
    let pid = jvm.pid();
    let map = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let _ = std::fs::remove_file(&map);
    // Keeps the recording going after the JVM exited.
    let sleeper = Target::start(Path::new("/bin/sleep"), &["60"]);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.folded");
    let mut fp = flameprobe()
        .args(["record", "-v", "-F", "999", "-d", "8s", "-o"])
        .arg(&out)
        .arg("-p")
        .arg(format!("{pid},{}", sleeper.pid()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    let mut lines = BufReader::new(fp.stderr.take().unwrap()).lines();
    let exited = format!("pid {pid} exited; read its perf map");
    for line in lines.by_ref() {
        let line = line.unwrap();
        stderr.push_str(&line);
        stderr.push('\n');
        if line.contains(&exited) {
            // Gone from /tmp: only the snapshot taken at exit has it.
            std::fs::remove_file(&map).unwrap();
            break;
        }
    }
    for line in lines {
        stderr.push_str(&line.unwrap());
        stderr.push('\n');
    }
    let status = wait_timeout(&mut fp, Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains(&exited), "{stderr}");
    let folded = read_folded(&out);
    let prefix = format!("[{pid}]");
    let jvm_samples: BTreeMap<String, u64> = folded
        .into_iter()
        .filter(|(s, _)| s.starts_with(&prefix))
        .collect();
    let hot = leaf_weight(&jvm_samples, "JitSplit.hotA_[j]")
        + leaf_weight(&jvm_samples, "JitSplit.hotB_[j]");
    assert!(
        hot * 10 >= total(&jvm_samples) * 8,
        "{hot} of {} JVM samples end in named hot methods\n{stderr}",
        total(&jvm_samples)
    );
    // Exited: no attach was tried; no frame pointers: said once.
    assert!(!stderr.contains("warning"), "{stderr}");
    assert_eq!(
        stderr
            .matches(&format!(
                "JVM {pid} (java) runs without -XX:+PreserveFramePointer"
            ))
            .count(),
        1,
        "{stderr}"
    );
}

/// `--no-jit-attach`: the JVM is not asked; its frames stay unnamed and
/// the summary says how to get names.
#[test]
fn no_jit_attach_leaves_the_jvm_alone() {
    require_root!();
    let _cpu = shared_cpu();
    let classes = build_java("JitSplit.java");
    let mut cmd = Command::new("java");
    cmd.args(jit_split_java(&["-XX:+PreserveFramePointer"]))
        .arg("-cp")
        .arg(&classes)
        .arg("JitSplit");
    let mut jvm = Program::start(&mut cmd);
    let pid = jvm.pid();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let (folded, stderr) = record_folded(&pid.to_string(), 2, &["--no-jit-attach"]);
    jvm.kill();
    assert!(!folded.keys().any(|s| s.contains("JitSplit.")), "{stderr}");
    assert!(!Path::new(&format!("/tmp/perf-{pid}.map")).exists());
    assert!(!Path::new(&format!("/tmp/.java_pid{pid}")).exists());
    assert!(
        stderr.contains(&format!("samples of pid {pid} (java): no perf map"))
            && stderr.contains("-XX:+DumpPerfMapAtExit"),
        "{stderr}"
    );
}

/// Files in /tmp removed when dropped.
struct RemoveAll(Vec<PathBuf>);
impl Drop for RemoveAll {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Eight processes that look like JVMs to anyone (comm `java`, a
/// `libjvm.so` mapped, JIT code running, a `/tmp/.java_pid<pid>` socket
/// that accepts and never answers), which any user can start: a
/// whole-machine recording of 2 s still ends about a second after its
/// duration (one deadline for all end-of-recording work, instead of 10 s
/// of reply timeout per batch), and one summary line names them all.
#[test]
fn fake_jvms_that_never_answer_cannot_hold_a_recording() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("fakejit.c", "fakejit", FP_FLAGS);
    let home = tempfile::tempdir().unwrap();
    let server = home.path().join("lib/server");
    std::fs::create_dir_all(&server).unwrap();
    std::fs::copy(&bin, server.join("libjvm.so")).unwrap();
    let jvms: Vec<Handshake> = (0..8)
        .map(|_| Handshake::start(&bin, &["jvm", server.to_str().unwrap()]))
        .collect();
    let pids: Vec<String> = jvms.iter().map(Handshake::pid).collect();
    let _sockets = RemoveAll(
        pids.iter()
            .flat_map(|p| {
                [
                    PathBuf::from(format!("/tmp/.java_pid{p}")),
                    PathBuf::from(format!("/tmp/.attach_pid{p}")),
                ]
            })
            .collect(),
    );
    for p in &pids {
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .unwrap()
                .trim(),
            "java"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.folded");
    let started = Instant::now();
    let out = run(&["record", "-a", "-d", "2s", "-o", path.to_str().unwrap()]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    // Generous: 2 s recorded, 1 s for the end, slack for a loaded machine
    // (it took 12 s and more).
    let bound =
        Duration::from_secs(2) + flameprobe::jit::tracker::END_BUDGET + Duration::from_secs(4);
    assert!(took < bound, "took {took:?}: {err}");
    let line = err
        .lines()
        .find(|l| l.contains("JVMs did not answer"))
        .unwrap_or_else(|| panic!("no summary line names the JVMs: {err}"));
    for p in &pids {
        assert!(line.contains(p.as_str()), "pid {p} not named: {line}");
    }
    assert_eq!(
        err.matches("did not answer").count(),
        1,
        "one line for all of them: {err}"
    );
}

/// One big perf map hard-linked into several processes (each its own
/// `/tmp/perf-<pid>.map`): it is read once (the -v count of files read),
/// and every process's JIT frames are named from it.
#[test]
fn a_perf_map_hard_linked_into_many_processes_is_read_once() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("fakejit.c", "fakejit", FP_FLAGS);
    let procs: Vec<Handshake> = (0..4).map(|_| Handshake::start(&bin, &[])).collect();
    let pids: Vec<String> = procs.iter().map(Handshake::pid).collect();
    // About 4 MiB of other entries (parsed well within the end's time in
    // a debug build), and the code all of them run.
    let map = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(map.as_file());
        for i in 0..100_000u64 {
            writeln!(
                w,
                "{:x} 10 filler_function_number_{i}",
                0x2000_0000_0000u64 + i * 16
            )
            .unwrap();
        }
        writeln!(w, "10000000000 c spin_jit").unwrap();
        w.flush().unwrap();
    }
    let links: Vec<PathBuf> = pids
        .iter()
        .map(|p| PathBuf::from(format!("/tmp/perf-{p}.map")))
        .collect();
    let _links = RemoveAll(links.clone());
    for l in &links {
        let _ = std::fs::remove_file(l);
        std::fs::hard_link(map.path(), l).unwrap();
    }
    let (folded, stderr) = record_folded(&pids.join(","), 2, &["-v"]);
    let line = stderr
        .lines()
        .find(|l| l.contains("perf maps of"))
        .unwrap_or_else(|| panic!("no perf-map line with -v: {stderr}"));
    assert!(line.contains("perf maps of 4 processes"), "{line}");
    assert!(
        line.contains(": 1 files read"),
        "read more than once: {line}"
    );
    assert!(line.contains("3 reads shared by dev/inode"), "{line}");
    for p in &pids {
        assert!(
            folded
                .keys()
                .any(|s| s.starts_with(&format!("[{p}]")) && s.contains("spin_jit")),
            "pid {p}: no JIT frame named from the map: {folded:?}"
        );
    }
    let unnamed: u64 = folded
        .iter()
        .filter(|(s, _)| s.contains("[anon]"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        unnamed * 10 < total(&folded),
        "JIT frames unnamed: {folded:?}"
    );
}
