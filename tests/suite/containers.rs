//! Container awareness against real podman containers (root): listing,
//! resolving `--container` specs, labels of processes inside containers,
//! and cgroup ids as the kernel reports them.

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flameprobe::container::{self, cgroup, ContainerCache, ResolveError, Runtime};

use crate::containers_util::{cgroup_procs, Podman};

fn find<'a>(all: &'a [container::Container], name: &str) -> &'a container::Container {
    all.iter().find(|c| c.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        panic!("{name} not listed; listed: {names:?}")
    })
}

#[test]
fn lists_resolves_and_labels_podman_containers() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let image = podman.image(&[]);
    let solo = podman.run("solo", &image, None, &["sleep", "600"]);
    let pod = podman.pod("pod");
    let member = podman.run("member", &image, Some(&pod), &["sleep", "600"]);
    let (solo_id, member_id) = (solo.id(), member.id());

    let all = container::list();
    let s = find(&all, &solo.name);
    assert_eq!(s.id, solo_id);
    assert_eq!(s.runtime, Some(Runtime::Podman));
    assert_eq!(s.pod, None);
    assert!(s.pids.contains(&solo.pid()), "{s:?}");
    let m = find(&all, &member.name);
    assert_eq!(m.id, member_id);
    let p = m.pod.as_ref().expect("the member is in a pod");
    assert_eq!(
        (p.name.as_str(), p.namespace.as_deref()),
        (pod.name.as_str(), None)
    );
    // The pod's infra container is listed too, in the same pod.
    assert!(all
        .iter()
        .any(|c| c.id != m.id && c.pod.as_ref().is_some_and(|q| q.id == p.id)));

    // podman + runc place containers in the unified hierarchy too (hybrid
    // mode here): each has its own cgroup there, its id the directory inode.
    let mount = cgroup::unified_mount().expect("a cgroup2 mount");
    for c in [s, m] {
        let id = c.cgroup_id.expect("a cgroup v2 id");
        let dir = mount.join(c.cgroup_path.trim_start_matches('/'));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            id,
            std::fs::metadata(&dir).unwrap().ino(),
            "{}",
            dir.display()
        );
        assert!(
            c.cgroup_path.ends_with(&format!("libpod-{}", c.id)),
            "{}",
            c.cgroup_path
        );
    }

    // Resolving by name, full id, unique prefix, comma-separated.
    let names = |specs: &[&str]| -> Vec<String> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        container::resolve(&specs)
            .unwrap_or_else(|e| panic!("{specs:?}: {e}"))
            .into_iter()
            .map(|c| c.name)
            .collect()
    };
    assert_eq!(names(&[&solo.name]), vec![solo.name.clone()]);
    assert_eq!(names(&[&member_id]), vec![member.name.clone()]);
    assert_eq!(names(&[&solo_id[..12]]), vec![solo.name.clone()]);
    assert_eq!(
        names(&[&format!("{},{}", member.name, &solo_id[..16])]),
        [member.name.clone(), solo.name.clone()]
    );

    // No such container: the error lists what runs (name, short id, runtime).
    let err = container::resolve(&["fpt-no-such-container".to_string()]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{msg}");
    for part in [
        &solo.name,
        &solo_id[..12],
        "podman",
        &member.name,
        &pod.name,
    ] {
        assert!(msg.contains(part), "{part} missing from:\n{msg}");
    }
    // Ambiguous prefix: podman cannot be told container ids, so a second
    // entry sharing the solo container's first 4 digits is added to the
    // real list; the error names both matches and no other container.
    let mut listed = all.clone();
    let mut twin = m.clone();
    twin.id = format!("{}{}", &solo_id[..4], &twin.id[4..]);
    listed.push(twin);
    let err = container::resolve_in(&[solo_id[..4].to_string()], &listed).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, ResolveError::Ambiguous { matches, .. } if matches.len() == 2),
        "{msg}"
    );
    assert!(
        msg.contains(&solo.name) && msg.contains(&member.name),
        "{msg}"
    );

    // Labels of the processes in each container, found through the
    // container cgroup's cgroup.procs.
    let mut cache = ContainerCache::new();
    let solo_pids = cgroup_procs(&mount, &s.cgroup_path);
    assert!(!solo_pids.is_empty());
    let l = cache
        .labels_of(solo_pids[0])
        .expect("labels of a container process");
    assert_eq!(
        (l.container.as_str(), l.container_id.as_str()),
        (solo.name.as_str(), solo_id.as_str())
    );
    assert_eq!((l.pod, l.namespace), (None, None));
    let member_pid = cgroup_procs(&mount, &m.cgroup_path)[0];
    let l = cache.labels_of(member_pid).expect("labels of a pod member");
    assert_eq!(l.container, member.name);
    assert_eq!(l.pod.as_deref(), Some(pod.name.as_str()));
    assert_eq!(l.pod_display().as_deref(), Some(pod.name.as_str()));
    // A host process has none.
    assert_eq!(cache.labels_of(std::process::id()), None);
}

/// The cgroup id flameprobe computes for a container is what
/// `bpf_get_current_cgroup_id()` returns in the sampler for its processes.
#[test]
fn cgroup_id_matches_the_kernels() {
    require_root!();
    let Some(podman) = Podman::get() else { return };
    let _cpu = crate::util::shared_cpu();
    let image = podman.image(&[]);
    let busy = podman.run("busy", &image, None, &["sh", "-c", "while :; do :; done"]);
    let pid = busy.pid();
    let listed = container::list();
    let c = find(&listed, &busy.name);
    let expected = c.cgroup_id.expect("a cgroup v2 id");

    use flameprobe::probe::cpu::{CpuConfig, CpuProbe};
    use flameprobe::probe::Delivery;
    use flameprobe::target::Filter;
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let sink = seen.clone();
    let config = CpuConfig {
        filter: Filter::Pids {
            pids: vec![pid],
            follow_children: false,
        },
        threads: None,
        include_idle: false,
        frequency: 99,
        stack_copy_size: 0,
        fp_user_stack: false,
    };
    let mut storage = MaybeUninit::uninit();
    let probe = CpuProbe::attach(&mut storage, &config, move |s| {
        sink.lock().unwrap().push(s.cgroup_id());
    })
    .expect("attaching the CPU sampler");
    let start = Instant::now();
    while seen.lock().unwrap().len() < 5 && start.elapsed() < Duration::from_secs(20) {
        let until = Instant::now() + Duration::from_millis(100);
        probe.wait(until);
        probe.consume(until);
    }
    drop(probe);
    let seen = seen.lock().unwrap();
    assert!(
        seen.len() >= 5,
        "only {} samples of the busy container",
        seen.len()
    );
    assert!(
        seen.iter().all(|&id| id == expected),
        "kernel ids {seen:?}, ours {expected}"
    );
}
