//! `record --container` and container labels with real podman containers
//! and pods (root): only the named container is recorded, by its cgroup,
//! with the processes that join it later; `[Pod]`/`[Con]` frames in every
//! mode and pprof labels that convert and report keep; memleak inside a
//! container; errors that list what runs; a container that stops; the pid
//! fallback for a container without a cgroup of its own.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;

use flameprobe::container::{self, cgroup};
use flameprobe::output::pprof::proto;

use crate::containers_util::{
    fake_container_cgroup, fake_container_id, v1_hierarchy, Podman, TestCgroup,
};
use crate::memleak::assert_exact_leaks;
use crate::record_cpu::assert_ratio_and_chains;
use crate::util::*;

const STATIC_FLAGS: &[&str] = &["-O1", "-g", "-fno-omit-frame-pointer", "-static"];

/// tests/targets/ratio.c, static, so it runs in the busybox image.
pub(crate) fn ratio_static() -> PathBuf {
    ratio_target("ratio-static", STATIC_FLAGS)
}

/// The stacks whose frames include `frame` (e.g. `[123]ratio-static`).
pub(crate) fn stacks_with(folded: &BTreeMap<String, u64>, frame: &str) -> BTreeMap<String, u64> {
    folded
        .iter()
        .filter(|(s, _)| s.split(';').any(|f| f == frame))
        .map(|(s, w)| (s.clone(), *w))
        .collect()
}

pub(crate) fn assert_all_start_with(folded: &BTreeMap<String, u64>, prefix: &str) {
    assert!(!folded.is_empty(), "no stacks");
    let other: Vec<&String> = folded.keys().filter(|s| !s.starts_with(prefix)).collect();
    assert!(other.is_empty(), "stacks without {prefix}: {other:#?}");
}

/// The unified-hierarchy directory of a running podman container's cgroup.
fn cgroup_dir(name: &str) -> PathBuf {
    let listed = container::list();
    let c = listed
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("{name} is not listed"));
    let mount = cgroup::unified_mount().expect("a cgroup2 mount");
    mount.join(c.cgroup_path.trim_start_matches('/'))
}

#[test]
fn container_is_recorded_alone_and_apart_from_the_rest() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    // Three busy processes of its own on the CPUs.
    let _cpu = exclusive_cpu();
    let bin = ratio_static();
    let image = podman.image(&[&bin]);
    let web = podman.run("web", &image, None, &["ratio-static", "600"]);
    let db = podman.run("db", &image, None, &["ratio-static", "600"]);
    let host = Target::start(&bin, &["600"]);
    let (web_pid, db_pid) = (web.pid(), db.pid());
    let dir = tempfile::tempdir().unwrap();

    let out = dir.path().join("web.folded");
    run_ok(&[
        "record",
        "--container",
        &web.name,
        "-d",
        "3s",
        "-F",
        "999",
        "-o",
        out.to_str().unwrap(),
    ]);
    let folded = read_folded(&out);
    assert_all_start_with(
        &folded,
        &format!("[Con]{};[{web_pid}]ratio-static;", web.name),
    );
    assert_ratio_and_chains(&folded, 0.95);

    // The whole machine: each container's process under its own frame,
    // the same program on the host under none.
    let out = dir.path().join("all.folded");
    run_ok(&[
        "record",
        "-a",
        "--group-by",
        "pid",
        "-d",
        "2s",
        "-F",
        "499",
        "-o",
        out.to_str().unwrap(),
    ]);
    let all = read_folded(&out);
    for (name, pid) in [(&web.name, web_pid), (&db.name, db_pid)] {
        let theirs = stacks_with(&all, &format!("[{pid}]ratio-static"));
        assert_all_start_with(&theirs, &format!("[Con]{name};[{pid}]ratio-static;"));
        assert!(leaf_weight(&theirs, "hot_a") > 0, "{theirs:#?}");
    }
    let on_host = stacks_with(&all, &format!("[{}]ratio-static", host.pid()));
    assert_all_start_with(&on_host, &format!("[{}]ratio-static;", host.pid()));
    assert!(leaf_weight(&on_host, "hot_a") > 0, "{on_host:#?}");
}

#[test]
fn processes_that_join_the_container_later_are_recorded() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    // Two busy processes of its own on the CPUs.
    let _cpu = exclusive_cpu();
    let bin = ratio_static();
    let image = podman.image(&[&bin]);
    let ctr = podman.run("later", &image, None, &["sleep", "600"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("later.folded");
    let rec = Recording::start(&[
        "--container",
        &ctr.name,
        "-d",
        "120s",
        "-o",
        out.to_str().unwrap(),
    ]);
    // Started in the container by its runtime (kept running, so that it is
    // still there when flameprobe, maybe busy, first sees it)...
    podman.ok(&["exec", "-d", &ctr.name, "ratio-static", "600"]);
    // ...and moved into a cgroup below the container's.
    let sub = TestCgroup::create(&cgroup_dir(&ctr.name), "fpt-sub");
    let moved = Target::start(&bin, &["600"]);
    sub.add(moved.pid());
    std::thread::sleep(Duration::from_millis(1500));
    let (_, err) = rec.stop();

    let folded = read_folded(&out);
    assert_all_start_with(&folded, &format!("[Con]{};", ctr.name));
    let moved_frame = format!("[{}]ratio-static", moved.pid());
    let exec: BTreeMap<String, u64> = folded
        .iter()
        .filter(|(s, _)| s.contains("]ratio-static;") && !s.contains(&moved_frame))
        .map(|(s, w)| (s.clone(), *w))
        .collect();
    assert!(
        leaf_weight(&exec, "hot_a") > 0,
        "podman exec'd process missing: {folded:#?}\n{err}"
    );
    let below = stacks_with(&folded, &moved_frame);
    assert!(
        leaf_weight(&below, "hot_a") > 0,
        "process in a sub-cgroup missing: {folded:#?}\n{err}"
    );
}

/// The sample labels of a gzipped pprof file, as key=value strings.
fn pprof_labels(path: &Path) -> Vec<Vec<String>> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let p = proto::Profile::decode(bytes.as_slice()).unwrap();
    let s = |i: i64| p.string_table[i as usize].clone();
    p.sample
        .iter()
        .map(|sample| {
            let mut l: Vec<String> = sample
                .label
                .iter()
                .filter(|l| l.str != 0)
                .map(|l| format!("{}={}", s(l.key), s(l.str)))
                .collect();
            l.sort();
            l
        })
        .collect()
}

#[test]
fn pod_members_carry_pod_and_container_frames_and_labels() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let _cpu = shared_cpu();
    let bin = ratio_static();
    let image = podman.image(&[&bin]);
    let pod = podman.pod("shop");
    let ctr = podman.run("cart", &image, Some(&pod), &["ratio-static", "600"]);
    let (id, pid) = (ctr.id(), ctr.pid());
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("cart.pb.gz");
    run_ok(&[
        "record",
        "--container",
        &ctr.name,
        "-d",
        "2s",
        "-F",
        "499",
        "-o",
        pb.to_str().unwrap(),
    ]);

    // pprof labels (podman pods have no namespace).
    let want = [
        format!("container={}", ctr.name),
        format!("container_id={id}"),
        format!("pod={}", pod.name),
    ];
    for labels in pprof_labels(&pb) {
        for w in &want {
            assert!(labels.contains(w), "{w} missing: {labels:?}");
        }
        assert!(
            !labels.iter().any(|l| l.starts_with("namespace=")),
            "{labels:?}"
        );
    }
    // go tool pprof selects by them.
    let tag = format!("container={}", ctr.name);
    let top = crate::pprof_go::go_pprof(&["-tagfocus", &tag, "-top"], &pb);
    assert!(top.contains("hot_a"), "{top}");

    // convert and report keep them as frames.
    let out = run_ok(&["convert", pb.to_str().unwrap(), "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    assert_all_start_with(
        &folded,
        &format!("[Pod]{};[Con]{};[{pid}]ratio-static;", pod.name, ctr.name),
    );
    assert!(leaf_weight(&folded, "hot_a") > 0, "{folded:#?}");
    let out = run_ok(&["report", "--tree", pb.to_str().unwrap()]);
    let report = String::from_utf8(out.stdout).unwrap();
    for frame in [format!("[Pod]{}", pod.name), format!("[Con]{}", ctr.name)] {
        assert!(report.contains(&frame), "{frame} missing:\n{report}");
    }
}

#[test]
fn memleak_in_a_container_reports_exact_leaks() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let mut flags = FP_FLAGS.to_vec();
    flags.push("-static");
    let bin = build_c("leaks.c", "leaks-static", &flags);
    let image = podman.image(&[&bin]);
    let (ctr, cmd) = podman.run_interactive("leaky", &image, &["leaks-static", "wait"]);
    let mut target = Handshake::spawn(cmd);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("leak.folded");
    let rec = Recording::start(&[
        "--probe",
        "memleak",
        "--container",
        &ctr.name,
        "-d",
        "120s",
        "--min-age",
        "0",
        "-o",
        out.to_str().unwrap(),
    ]);
    target.go();
    let (_, err) = rec.stop();
    let folded = read_folded(&out);
    assert_all_start_with(&folded, &format!("[Con]{};", ctr.name));
    assert_exact_leaks(&folded, &err);
}

#[test]
fn unknown_or_ambiguous_containers_are_errors_listing_containers() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let image = podman.image(&[]);
    let ctr = podman.run("listed", &image, None, &["sleep", "600"]);
    let id = ctr.id();

    let out = run(&["record", "--container", "fpt-no-such-container", "-o", "-"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fpt-no-such-container"), "{err}");
    for part in [ctr.name.as_str(), &id[..12], "podman"] {
        assert!(err.contains(part), "{part} missing from:\n{err}");
    }

    // Two containers whose ids share a prefix: podman cannot be asked for
    // ids, so these are processes in cgroups named as docker names its
    // containers (no runtime knows them: they are named by short id).
    let mount = cgroup::unified_mount().expect("a cgroup2 mount");
    let (a_id, b_id) = (fake_container_id("fee1", 1), fake_container_id("fee1", 2));
    let a = TestCgroup::create(&mount, &fake_container_cgroup("amb", &a_id));
    let b = TestCgroup::create(&mount, &fake_container_cgroup("amb", &b_id));
    let a_proc = Target::start(Path::new("sleep"), &["600"]);
    let b_proc = Target::start(Path::new("sleep"), &["600"]);
    a.add(a_proc.pid());
    b.add(b_proc.pid());
    // An id prefix, and the short id both are named by.
    for spec in [&a_id[..10], &a_id[..12]] {
        assert!(b_id.starts_with(spec));
        let out = run(&["record", "--container", spec, "-o", "-"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("`{spec}` matches 2 containers")),
            "{err}"
        );
        assert!(err.contains(&a_id[..12]) && err.contains("docker"), "{err}");
        assert!(
            !err.contains(&ctr.name),
            "only the matches are listed: {err}"
        );
    }
}

#[test]
fn a_container_that_stops_ends_the_recording_with_what_was_sampled() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let _cpu = shared_cpu();
    let bin = ratio_static();
    let image = podman.image(&[&bin]);
    let ctr = podman.run("stops", &image, None, &["ratio-static", "600"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stops.folded");
    let rec = Recording::start(&[
        "--container",
        &ctr.name,
        "-d",
        "120s",
        "-o",
        out.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_secs(2));
    ctr.kill();
    // Ends by itself, with success.
    let (_, err) = rec.finish();
    assert!(
        err.contains(&format!("container {} stopped", ctr.name)),
        "{err}"
    );
    let folded = read_folded(&out);
    assert_all_start_with(&folded, &format!("[Con]{};", ctr.name));
    assert!(leaf_weight(&folded, "hot_a") > 0, "{folded:#?}");
}

#[test]
fn a_container_without_its_own_cgroup_is_followed_by_pid() {
    require_root!();
    let Some(v1) = v1_hierarchy() else {
        eprintln!("skipped: no cgroup v1 hierarchy to make such a container in");
        return;
    };
    // Two busy processes of its own on the CPUs.
    let _cpu = exclusive_cpu();
    let bin = ratio_static();
    // In a cgroup v1 hierarchy only: in the unified one the process stays
    // where it was (a shared cgroup), as with docker's cgroupfs driver.
    let id = fake_container_id("c0de", 1);
    let cg = TestCgroup::create(&v1, &fake_container_cgroup("v1", &id));
    let first = Target::start(&bin, &["600"]);
    cg.add(first.pid());
    let short = &id[..12];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("v1.folded");
    let rec = Recording::start(&[
        "--container",
        short,
        "-d",
        "120s",
        "-o",
        out.to_str().unwrap(),
    ]);
    // A process that joins the container later is found and followed too.
    let second = Target::start(&bin, &["600"]);
    cg.add(second.pid());
    std::thread::sleep(Duration::from_secs(3));
    let (_, err) = rec.stop();
    assert!(err.contains("has no cgroup of its own"), "{err}");
    let folded = read_folded(&out);
    assert_all_start_with(&folded, &format!("[Con]{short};"));
    for t in [&first, &second] {
        let theirs = stacks_with(&folded, &format!("[{}]ratio-static", t.pid()));
        assert!(
            leaf_weight(&theirs, "hot_a") > 0,
            "pid {} missing: {folded:#?}\n{err}",
            t.pid()
        );
    }
}

/// A container whose work is short-lived programs (a build, a shell
/// loop): each lives 10-20 ms and is gone before its cgroup can be read,
/// yet every stack keeps its `[Con]` frame (the container of the process
/// that started it), and is symbolized.
#[test]
fn short_lived_processes_keep_their_container() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    // Alone: a test churning through 100,000 threads at the same time
    // overflows the kernel's record buffers (said in the summary).
    let _cpu = exclusive_cpu();
    let bin = build_c("brief.c", "brief-static", STATIC_FLAGS);
    let image = podman.image(&[&bin]);
    let ctr = podman.run(
        "brief",
        &image,
        None,
        &["sh", "-c", "while :; do brief-static; done"],
    );
    let out = run_ok(&["record", "-a", "-F", "999", "-d", "3s", "-o", "-"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let brief: BTreeMap<String, u64> = folded
        .into_iter()
        .filter(|(s, _)| s.split(';').any(|f| f == "brief-static"))
        .collect();
    let all: u64 = brief.values().sum();
    assert!(all > 500, "{all} samples of the short programs: {brief:#?}");
    let prefix = format!("[Con]{};brief-static;", ctr.name);
    let other: Vec<&String> = brief.keys().filter(|s| !s.starts_with(&prefix)).collect();
    assert!(
        other.is_empty(),
        "stacks without {prefix}: {other:#?}\n{err}"
    );
    let named: u64 = brief
        .iter()
        .filter(|(s, _)| s.contains(";main;brief_work"))
        .map(|(_, w)| w)
        .sum();
    assert!(
        named as f64 >= 0.9 * all as f64,
        "{named} of {all} samples symbolized: {brief:#?}"
    );
}
