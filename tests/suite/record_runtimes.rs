//! `record --container` and `--pod` against real docker and containerd
//! daemons (root; see runtimes_util.rs): a docker container, a Kubernetes
//! pod as cri-dockerd runs it on docker, and one as containerd's CRI
//! plugin lays it out. Each test burns CPU inside the containers (and
//! outside them) and checks that the recorded stacks carry
//! `[Pod]namespace/name;[Con]name;[pid]comm` with complete chains, and that
//! only the named container's or pod's processes are recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use flameprobe::container::{self, cgroup, Container, Runtime, Selection};

use crate::containers_util::{rootfs, unique};
use crate::record_containers::{assert_all_start_with, ratio_static, stacks_with};
use crate::record_cpu::assert_ratio_and_chains;
use crate::runtimes_util::{Containerd, Docker, KubePod};
use crate::util::*;

/// The chain tests/targets/ratio.c runs 75% of its time in.
const CHAIN_A: &str = "main;run;path_a1;path_a2;path_a3;hot_a";
const CHAIN_B: &str = "main;run;path_b1;hot_b";

fn listed(all: &[Container], id: &str) -> Container {
    all.iter().find(|c| c.id == id).cloned().unwrap_or_else(|| {
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        panic!("container {id} not listed; listed: {names:?}")
    })
}

/// Records `target_args` (e.g. `--pod prod/shop`) for `seconds`; the
/// folded stacks and stderr.
fn record(target_args: &[&str], seconds: u32) -> (BTreeMap<String, u64>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.folded");
    let duration = format!("{seconds}s");
    let mut args = vec!["record"];
    args.extend(target_args);
    args.extend(["-d", &duration, "-F", "999", "-o", out.to_str().unwrap()]);
    let result = run_ok(&args);
    (
        read_folded(&out),
        String::from_utf8_lossy(&result.stderr).into_owned(),
    )
}

/// `pid`'s stacks in `folded` all start with `prefix` (`[Pod]..;[Con]..;`
/// then the process frame) and hold both of ratio.c's complete chains.
fn assert_burner(folded: &BTreeMap<String, u64>, pid: u32, prefix: &str, err: &str) {
    let theirs = stacks_with(folded, &format!("[{pid}]ratio-static"));
    assert!(
        !theirs.is_empty(),
        "no stacks of pid {pid}: {folded:#?}\n{err}"
    );
    assert_all_start_with(&theirs, &format!("{prefix}[{pid}]ratio-static;"));
    for chain in [CHAIN_A, CHAIN_B] {
        assert!(
            chain_weight(&theirs, chain) > 0,
            "pid {pid}: no complete {chain}: {theirs:#?}"
        );
    }
}

/// Runs flameprobe expecting exit code 1; its stderr.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

#[test]
fn docker_container_is_recorded_by_name_alone() {
    require_root!();
    // Two busy containers of its own on the CPUs (and the daemons' start,
    // if they are started here, away from other tests' measurements).
    let _cpu = exclusive_cpu();
    let Some(docker) = Docker::get() else { return };
    let bin = ratio_static();
    let image = docker.image(&[&bin]);
    let web = docker.run(&unique("dweb"), &[], &image, &["ratio-static", "600"]);
    let db = docker.run(&unique("ddb"), &[], &image, &["ratio-static", "600"]);
    let (web_pid, db_pid) = (web.pid(), db.pid());

    // Named from docker's state, in a cgroup of its own in the unified
    // hierarchy (runc places it there beside the v1 ones).
    let all = container::list();
    let c = listed(&all, &web.id);
    assert_eq!(
        (c.name.as_str(), c.runtime, &c.pod),
        (web.name.as_str(), Some(Runtime::Docker), &None)
    );
    assert_eq!(c.cgroup_path, format!("/docker/{}", web.id));
    assert!(c.cgroup_id.is_some() && c.pids.contains(&web_pid), "{c:?}");
    assert_eq!(
        container::resolve(&[web.id[..12].to_string()]).unwrap()[0].name,
        web.name
    );

    let (folded, _) = record(&["--container", &web.name], 3);
    assert_all_start_with(
        &folded,
        &format!("[Con]{};[{web_pid}]ratio-static;", web.name),
    );
    assert_ratio_and_chains(&folded, 0.95);
    assert!(stacks_with(&folded, &format!("[{db_pid}]ratio-static")).is_empty());
}

/// A pod as cri-dockerd runs it: the sandbox `k8s_POD_...`, containers
/// named `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>` with the
/// kubelet's labels (and one without labels: its name says it all), in the
/// pod's cgroup `/kubepods/besteffort/pod<uid>`.
#[test]
fn cri_dockerd_pod_is_recorded_by_pod_and_by_container() {
    require_root!();
    // Three busy containers of its own on the CPUs (and the daemons' start).
    let _cpu = exclusive_cpu();
    let Some(docker) = Docker::get() else { return };
    let bin = ratio_static();
    let image = docker.image(&[&bin]);
    let pod = KubePod::new("dshop", "prod");
    let sandbox = docker.run_kubernetes(&pod, "POD", 0, true, &image, &["sleep", "600"]);
    let (web_name, worker_name) = (unique("web"), unique("worker"));
    let web = docker.run_kubernetes(&pod, &web_name, 0, true, &image, &["ratio-static", "600"]);
    let worker = docker.run_kubernetes(
        &pod,
        &worker_name,
        1,
        false,
        &image,
        &["ratio-static", "600"],
    );
    let outside = docker.run(&unique("outside"), &[], &image, &["ratio-static", "600"]);
    let (web_pid, worker_pid, outside_pid) = (web.pid(), worker.pid(), outside.pid());

    let all = container::list();
    for (ctr, name) in [
        (&sandbox, "POD"),
        (&web, &web_name),
        (&worker, &worker_name),
    ] {
        let c = listed(&all, &ctr.id);
        assert_eq!((c.name.as_str(), c.runtime), (name, Some(Runtime::Docker)));
        let p = c.pod.as_ref().expect("in a pod");
        assert_eq!(
            (p.name.as_str(), p.namespace.as_deref(), p.id.as_str()),
            (pod.name.as_str(), Some("prod"), pod.uid.as_str())
        );
        assert_eq!(c.cgroup_path, format!("{}/{}", pod.cgroup_parent(), ctr.id));
        assert!(c.cgroup_id.is_some(), "{c:?}");
    }
    // By name alone too: the pod's three containers.
    let by_name = container::resolve_selection(&Selection {
        containers: vec![],
        pods: vec![pod.name.clone()],
    })
    .unwrap();
    assert_eq!(by_name.containers.len(), 3, "{by_name:#?}");

    let in_pod = format!("[Pod]{};", pod.display());
    let (folded, err) = record(&["--pod", &pod.display()], 3);
    assert_all_start_with(&folded, &in_pod);
    assert_burner(&folded, web_pid, &format!("{in_pod}[Con]{web_name};"), &err);
    assert_burner(
        &folded,
        worker_pid,
        &format!("{in_pod}[Con]{worker_name};"),
        &err,
    );
    assert!(stacks_with(&folded, &format!("[{outside_pid}]ratio-static")).is_empty());

    let (folded, err) = record(&["--container", &worker_name], 2);
    let prefix = format!("{in_pod}[Con]{worker_name};");
    assert_all_start_with(&folded, &prefix);
    assert_burner(&folded, worker_pid, &prefix, &err);

    // The whole machine: each under its own frames.
    let (all, err) = record(&["-a", "--group-by", "pid"], 2);
    assert_burner(&all, web_pid, &format!("{in_pod}[Con]{web_name};"), &err);
    assert_burner(&all, outside_pid, &format!("[Con]{};", outside.name), &err);
}

/// A pod as containerd's CRI plugin lays it out (namespace `k8s.io`, the
/// sandbox and containers as tasks with `io.kubernetes.cri.*` annotations,
/// cgroups under `/kubepods`), as `ctr` can make it without a kubelet.
#[test]
fn containerd_cri_pod_is_recorded_by_pod_and_by_container() {
    require_root!();
    // Three busy processes of its own on the CPUs (and the daemon's start).
    let _cpu = exclusive_cpu();
    let Some(ctrd) = Containerd::get() else {
        return;
    };
    let bin = ratio_static();
    let fs = rootfs(&[&bin]);
    let pod = KubePod::new("cshop", "prod");
    // The same pod name in another namespace.
    let staging = KubePod::new("cshop", "staging");
    let sandbox = ctrd.cri_sandbox(&pod, &fs);
    let (cart_name, db_name) = (unique("cart"), unique("db"));
    let cart = ctrd.cri_container(&pod, &sandbox, &cart_name, &fs, &["ratio-static", "600"]);
    let db = ctrd.cri_container(&pod, &sandbox, &db_name, &fs, &["ratio-static", "600"]);
    let staging_sandbox = ctrd.cri_sandbox(&staging, &fs);
    let host = Target::start(&bin, &["600"]);
    let (cart_pid, db_pid) = (cart.pid(), db.pid());

    let all = container::list();
    for task in [&sandbox, &cart, &db] {
        let c = listed(&all, &task.id);
        assert_eq!(
            (c.name.as_str(), c.runtime),
            (task.name.as_str(), Some(Runtime::Containerd))
        );
        let p = c.pod.as_ref().expect("in a pod");
        assert_eq!(
            (p.name.as_str(), p.namespace.as_deref(), p.id.as_str()),
            (pod.name.as_str(), Some("prod"), pod.uid.as_str())
        );
        assert_eq!(
            c.cgroup_path,
            format!("{}/{}", pod.cgroup_parent(), task.id)
        );
        let mount = cgroup::unified_mount().expect("a cgroup2 mount");
        use std::os::unix::fs::MetadataExt;
        let dir = mount.join(c.cgroup_path.trim_start_matches('/'));
        assert_eq!(c.cgroup_id, Some(std::fs::metadata(&dir).unwrap().ino()));
    }
    assert_eq!(sandbox.name, "POD");
    assert_eq!(
        listed(&all, &staging_sandbox.id)
            .pod
            .unwrap()
            .namespace
            .as_deref(),
        Some("staging")
    );

    // A name in two namespaces, and pods that do not exist: errors that
    // list the pods.
    let err = fails(&["record", "--pod", &pod.name, "-o", "-"]);
    assert!(err.contains("is used in 2 namespaces"), "{err}");
    for part in [pod.display(), staging.display()] {
        assert!(err.contains(&part), "{part} missing from:\n{err}");
    }
    let err = fails(&["record", "--pod", "prod/fpt-no-such-pod", "-o", "-"]);
    assert!(
        err.contains("no running pod is named `prod/fpt-no-such-pod`"),
        "{err}"
    );
    for part in [
        pod.display(),
        staging.display(),
        cart_name.clone(),
        "containerd".into(),
    ] {
        assert!(err.contains(&part), "{part} missing from:\n{err}");
    }

    // The pod, with a container that starts in it during the recording
    // (a restarted container has a new id too).
    let in_pod = format!("[Pod]{};", pod.display());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pod.folded");
    let rec = Recording::start(&[
        "--pod",
        &pod.display(),
        "-d",
        "60s",
        "-F",
        "999",
        "-o",
        out.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let late_name = unique("late");
    let late = ctrd.cri_container(&pod, &sandbox, &late_name, &fs, &["ratio-static", "600"]);
    let late_pid = late.pid();
    std::thread::sleep(Duration::from_secs(3));
    let (_, err) = rec.stop();
    let folded = read_folded(&out);
    assert_all_start_with(&folded, &in_pod);
    assert_burner(
        &folded,
        cart_pid,
        &format!("{in_pod}[Con]{cart_name};"),
        &err,
    );
    assert_burner(&folded, db_pid, &format!("{in_pod}[Con]{db_name};"), &err);
    assert_burner(
        &folded,
        late_pid,
        &format!("{in_pod}[Con]{late_name};"),
        &err,
    );
    assert!(
        err.contains(&format!(
            "container {late_name} started in pod {}",
            pod.display()
        )),
        "{err}"
    );
    drop(late);

    let (folded, err) = record(&["--container", &cart_name], 2);
    let prefix = format!("{in_pod}[Con]{cart_name};");
    assert_all_start_with(&folded, &prefix);
    assert_burner(&folded, cart_pid, &prefix, &err);

    let (all, err) = record(&["-a", "--group-by", "pid"], 2);
    assert_burner(&all, db_pid, &format!("{in_pod}[Con]{db_name};"), &err);
    assert_burner(&all, host.pid(), "", &err);
}

/// `--pod` with podman pods (no namespace): every member, the infra
/// container included, and nothing else.
#[test]
fn podman_pod_is_recorded_by_name() {
    require_root!();
    let Some(podman) = crate::containers_util::Podman::get() else {
        return;
    };
    let _cpu = shared_cpu();
    let bin = ratio_static();
    let image = podman.image(&[&bin]);
    let pod = podman.pod("ppod");
    let member = podman.run("pmember", &image, Some(&pod), &["ratio-static", "600"]);
    let outside = podman.run("poutside", &image, None, &["ratio-static", "600"]);
    let (member_pid, outside_pid) = (member.pid(), outside.pid());
    let members = container::resolve_selection(&Selection {
        containers: vec![],
        pods: vec![pod.name.clone()],
    })
    .unwrap();
    let mut names: Vec<&str> = members.containers.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names.len(),
        2,
        "the member and the infra container: {names:?}"
    );
    assert!(names.contains(&member.name.as_str()), "{names:?}");

    let (folded, err) = record(&["--pod", &pod.name], 3);
    let in_pod = format!("[Pod]{};", pod.name);
    assert_all_start_with(&folded, &in_pod);
    assert_burner(
        &folded,
        member_pid,
        &format!("{in_pod}[Con]{};", member.name),
        &err,
    );
    assert!(stacks_with(&folded, &format!("[{outside_pid}]ratio-static")).is_empty());
}
