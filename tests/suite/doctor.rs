//! `flameprobe doctor` on this machine: as root it says `record` can run
//! (BTF, perf events, the probes), as an unprivileged user it names the
//! missing capabilities with the setcap fix and exits 1, `--json` is JSON
//! that agrees with the exit status, and running containers and JVMs are
//! listed with how they would be recorded (without attaching to a JVM).

use std::process::{Command, Output};

use crate::containers_util::Podman;
use crate::jit::Program;
use crate::util::*;

/// The check lines of a text report, as (status, line).
fn lines(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("probes: "))
        .map(|l| {
            let status = l.split_whitespace().next().unwrap_or("").to_string();
            (status, l.to_string())
        })
        .collect()
}

/// The line of check `name` (the second column), e.g. `perf events`.
fn line_of<'a>(lines: &'a [(String, String)], name: &str) -> &'a (String, String) {
    lines
        .iter()
        .find(|(status, l)| {
            l[status.len()..]
                .trim_start()
                .starts_with(&format!("{name} "))
        })
        .unwrap_or_else(|| panic!("no {name:?} line in {lines:#?}"))
}

fn probes_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("probes: "),
        "the last line is not the probes': {text}"
    );
    last
}

#[test]
fn as_root_record_can_run_and_the_kernel_checks_pass() {
    require_root!();
    let out = run(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines(&out);
    for name in [
        "kernel",
        "BTF",
        "ring buffer",
        "perf events",
        "CAP_BPF",
        "CAP_PERFMON",
    ] {
        let (status, line) = line_of(&lines, name);
        assert_eq!(status, "ok", "{line}");
    }
    assert!(
        line_of(&lines, "perf events")
            .1
            .contains("software cpu-clock"),
        "{text}"
    );
    // Every line that is not ok says how to fix it.
    for (status, line) in &lines {
        if status == "missing" || status == "warn" {
            assert!(line.contains("; fix: "), "{line}");
        } else {
            assert!(status == "ok" || status == "info", "{line}");
        }
    }
    // This kernel (6.18) has uprobe sessions and BTF tracepoints, tested
    // directly as root.
    let (status, line) = line_of(&lines, "uprobe sessions");
    assert_eq!(status, "ok", "{line}");
    assert!(!line.contains("not tested"), "{line}");
    let probes = probes_line(&out);
    assert!(
        probes.starts_with("probes: cpu yes, memleak yes"),
        "{probes}"
    );
    for probe in ["kmemleak", "offcpu", "wall", "containers", "JIT attach"] {
        assert!(probes.contains(&format!("{probe} yes")), "{probes}");
    }
}

#[test]
fn without_capabilities_it_names_them_with_the_setcap_fix_and_exits_1() {
    require_root!();
    // Drop to an unprivileged user without capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_flameprobe"))
        .arg("doctor")
        .output()
        .expect("setpriv (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines = lines(&out);
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        let (status, line) = line_of(&lines, cap);
        assert_eq!(status, "missing", "{line}");
        assert!(line.contains("missing CAP_BPF and CAP_PERFMON"), "{line}");
        assert!(
            line.contains("fix: run it as root (sudo), or `sudo setcap cap_bpf,cap_perfmon,"),
            "{line}"
        );
    }
    let (status, line) = line_of(&lines, "perf events");
    assert_eq!(status, "missing", "{line}");
    assert!(
        line.contains("CAP_PERFMON") && line.contains("setcap"),
        "{line}"
    );
    // What it could not test it judges by the kernel version, and says so.
    let (status, line) = line_of(&lines, "uprobe sessions");
    assert_eq!(status, "ok", "{line}");
    assert!(line.contains("not tested"), "{line}");
    let probes = probes_line(&out);
    assert!(
        probes.starts_with("probes: cpu no (missing CAP_BPF and CAP_PERFMON)"),
        "{probes}"
    );
}

#[test]
fn json_parses_and_agrees_with_the_exit_status() {
    let out = run(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let can_run = report["record_can_run"].as_bool().expect("record_can_run");
    assert_eq!(out.status.code(), Some(if can_run { 0 } else { 1 }));
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.len() > 10, "{report:#}");
    for c in checks {
        let status = c["status"].as_str().expect("status");
        assert!(["ok", "missing", "warn", "info"].contains(&status), "{c}");
        assert!(c["check"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
        assert!(c["finding"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
        assert_eq!(
            c["fix"].is_string(),
            status == "missing" || status == "warn",
            "a fix for what is not ok, and only there: {c}"
        );
    }
    let probes: Vec<&str> = report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|p| p["probe"].as_str().unwrap())
        .collect();
    assert_eq!(
        probes,
        [
            "cpu",
            "memleak",
            "kmemleak",
            "offcpu",
            "wall",
            "containers",
            "JIT attach"
        ]
    );
    assert_eq!(report["probes"][0]["available"].as_bool(), Some(can_run));
}

#[test]
fn lists_jvms_and_whether_they_would_accept_the_attach_without_attaching() {
    require_root!();
    let classes = build_java("Idle.java");
    let java = |options: &[&str]| {
        let mut c = Command::new("java");
        c.args(options).arg("-cp").arg(&classes).arg("Idle");
        c
    };
    let mut plain = Program::start(&mut java(&["-XX:+PreserveFramePointer"]));
    let mut disabled = Program::start(&mut java(&[
        "-XX:+DisableAttachMechanism",
        "-XX:+PreserveFramePointer",
    ]));
    // -Xrs: no SIGQUIT handler, the attach listener runs from the start.
    let mut xrs = Program::start(&mut java(&["-Xrs"]));
    let out = run(&["doctor"]);
    let lines = lines(&out);
    let jvm = |pid: u32| line_of(&lines, &format!("JVM {pid}")).clone();

    let (status, line) = jvm(plain.pid());
    assert_eq!(status, "ok", "{line}");
    assert!(line.contains("Java 17"), "{line}");
    assert!(line.contains("would accept the attach"), "{line}");
    assert!(!line.contains("fix:"), "{line}");
    let (status, line) = jvm(disabled.pid());
    assert_eq!(status, "warn", "{line}");
    assert!(line.contains("would refuse the attach"), "{line}");
    assert!(
        line.contains("fix: JVM") && line.contains("-XX:+DisableAttachMechanism"),
        "{line}"
    );
    // It would accept, but its stacks through JIT code are cut short.
    let (status, line) = jvm(xrs.pid());
    assert_eq!(status, "warn", "{line}");
    assert!(line.contains("would accept the attach"), "{line}");
    assert!(
        line.contains("runs without -XX:+PreserveFramePointer")
            && line.ends_with("fix: restart it with -XX:+PreserveFramePointer"),
        "{line}"
    );

    // Nothing was attached: no attach socket appeared, no thread dump.
    let socket = format!("/tmp/.java_pid{}", plain.pid());
    assert!(!std::path::Path::new(&socket).exists(), "{socket} exists");
    for jvm in [&mut plain, &mut disabled, &mut xrs] {
        let said = jvm.finish();
        assert!(
            !said.iter().any(|l| l.contains("Full thread dump")),
            "the JVM was signalled: {said:?}"
        );
    }
}

#[test]
fn lists_running_containers_with_their_cgroup_id() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let image = podman.image(&[]);
    let ctr = podman.run("doctor", &image, None, &["sleep", "600"]);
    // The container's cgroup id, found independently: the inode of its
    // cgroup directory in the unified hierarchy.
    let full_id = ctr.id();
    let text = std::fs::read_to_string(format!("/proc/{}/cgroup", ctr.pid())).unwrap();
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a unified-hierarchy line");
    // The container's own cgroup: the path up to the component naming it.
    let at = path
        .find(&full_id)
        .expect("the cgroup path names the container");
    let end = path[at..].find('/').map_or(path.len(), |i| at + i);
    let path = &path[..end];
    let mount = flameprobe::container::cgroup::unified_mount().unwrap();
    use std::os::unix::fs::MetadataExt;
    let id = std::fs::metadata(mount.join(path.trim_start_matches('/')))
        .unwrap()
        .ino();

    let out = run(&["doctor"]);
    let lines = lines(&out);
    let (status, line) = line_of(&lines, &format!("container {}", ctr.name));
    assert_eq!(status, "ok", "{line}");
    assert!(line.contains(&full_id[..12]), "{line}");
    assert!(line.contains("podman"), "{line}");
    assert!(
        line.ends_with(&format!("filtered in the kernel by cgroup id {id}")),
        "{line}"
    );
    let probes = probes_line(&out);
    assert!(
        probes.contains("containers yes (cgroup filter)"),
        "{probes}"
    );
}
