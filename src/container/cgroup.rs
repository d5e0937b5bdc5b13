//! What a process's cgroups say about its container, and cgroup v2 ids.
//!
//! [`parse_proc_cgroup`] reads the text of `/proc/PID/cgroup` (cgroup v1,
//! v2 and hybrid layouts) and finds the container id in the paths the
//! runtimes create, with the runtime and pod the path implies:
//!
//! | runtime, cgroup driver | path (v1 and v2 alike) |
//! |---|---|
//! | podman, cgroupfs | `/libpod_parent/libpod-<id>`, in a pod `/libpod_parent/<podid>/libpod-<id>` |
//! | podman, systemd | `/machine.slice/libpod-<id>.scope`, in a pod `.../machine-libpod_pod_<podid>.slice/libpod-<id>.scope` |
//! | docker | `/docker/<id>`, `/system.slice/docker-<id>.scope` |
//! | containerd (CRI) | `.../kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope`, or `...slice:cri-containerd:<id>` |
//! | CRI-O | `.../kubepods-<qos>-pod<uid>.slice/crio-<id>.scope`, `/kubepods/<qos>/pod<uid>/crio-<id>` |
//! | any, cgroupfs under Kubernetes | `/kubepods/<qos>/pod<uid>/<id>` |
//!
//! The runtime monitors (`libpod-conmon-<id>`, `crio-conmon-<id>`, podman's
//! `conmon` cgroups) are not the container. When paths nest containers
//! (docker in docker) the innermost id is the process's container.
//!
//! The kernel's `bpf_get_current_cgroup_id()` returns the id of the task's
//! cgroup in the unified (v2) hierarchy (`task_dfl_cgroup(current)`, its
//! kernfs node id), which on 64-bit kernels is the inode number of the
//! cgroup's directory wherever cgroup2 is mounted: [`cgroup_id`] reads it.
//! In hybrid mode the unified hierarchy is mounted beside the v1 ones
//! (`/sys/fs/cgroup/unified` on systemd-style layouts); [`unified_mount`]
//! finds it in `/proc/self/mountinfo`. A cgroup id identifies a container
//! only when the container's own cgroup is in the unified hierarchy
//! ([`ProcCgroup::container_cgroup_v2`]): runtimes that manage v1 only leave
//! their processes in some shared v2 cgroup (or the root).

use std::io;
use std::path::{Path, PathBuf};

use super::Runtime;

/// Where a process's container sits in the cgroup tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupContainer {
    /// The full container id, 64 lowercase hex digits.
    pub id: String,
    /// The runtime the path names (`None`: a bare id, e.g. cgroupfs under
    /// Kubernetes, where any CRI runtime may have made it).
    pub runtime: Option<Runtime>,
    /// The pod the path names, if it names one.
    pub pod: Option<CgroupPod>,
    /// The container's own cgroup: the path up to and including the
    /// component that names it (processes may sit in sub-cgroups of it).
    pub path: String,
}

/// A pod named by a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupPod {
    /// A podman pod id (64 hex).
    Podman(String),
    /// A Kubernetes pod UID (`8-4-4-4-12` hex with dashes).
    Kubernetes(String),
}

/// The parts of `/proc/PID/cgroup` flameprobe uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The path in the unified (v2) hierarchy: the `0::` line, if any.
    pub unified: Option<String>,
    /// The container the process runs in: from the unified path, or else
    /// from the first v1 line that names one.
    pub container: Option<CgroupContainer>,
}

impl ProcCgroup {
    /// The container's cgroup in the unified hierarchy, when it has one
    /// there: then its cgroup v2 id identifies the container (with every
    /// process started in it later). `None` on pure v1, or when the unified
    /// path does not name the container (a v1-only runtime in hybrid mode
    /// leaves processes in the root or in a shared cgroup).
    pub fn container_cgroup_v2(&self) -> Option<&str> {
        let c = self.container.as_ref()?;
        let from_unified = parse_cgroup_path(self.unified.as_deref()?)?;
        (from_unified.id == c.id).then_some(c.path.as_str())
    }
}

/// Parses the text of `/proc/PID/cgroup`. Lines are `ID:CONTROLLERS:PATH`;
/// the unified hierarchy's line is `0::PATH`. Malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroup {
    let mut unified = None;
    let mut from_v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            unified = Some(path.to_string());
        } else if from_v1.is_none() {
            from_v1 = parse_cgroup_path(path);
        }
    }
    let container = unified.as_deref().and_then(parse_cgroup_path).or(from_v1);
    ProcCgroup { unified, container }
}

/// The container a cgroup path names, if any (see the module docs for the
/// forms recognised).
pub fn parse_cgroup_path(path: &str) -> Option<CgroupContainer> {
    // containerd's systemd driver on cgroup v1 may leave its cgroupsPath
    // syntax (`slice:prefix:id`) in the path: ':' separates components too.
    let mut components: Vec<(usize, &str)> = Vec::new();
    let mut start = 0;
    for (i, ch) in path.char_indices() {
        if ch == '/' || ch == ':' {
            if i > start {
                components.push((start, &path[start..i]));
            }
            start = i + 1;
        }
    }
    if start < path.len() {
        components.push((start, &path[start..]));
    }

    // The innermost container wins: scan from the leaf up.
    for (idx, &(offset, comp)) in components.iter().enumerate().rev() {
        let previous = idx.checked_sub(1).map(|i| components[i].1);
        match classify(comp, previous) {
            Component::Monitor => return None,
            Component::Container { id, runtime } => {
                // In the ':' form the prefix, the id and the slice are one
                // directory: the path up to the id's end is all of it.
                let end = offset + comp.len();
                let pod = components[..idx]
                    .iter()
                    .rev()
                    .find_map(|&(_, c)| pod_of_component(c));
                return Some(CgroupContainer {
                    id: id.to_string(),
                    runtime,
                    pod,
                    path: path[..end].to_string(),
                });
            }
            Component::Other => {}
        }
    }
    None
}

enum Component<'a> {
    Container {
        id: &'a str,
        runtime: Option<Runtime>,
    },
    /// A runtime's monitor process (conmon), not the container.
    Monitor,
    Other,
}

fn classify<'a>(comp: &'a str, previous: Option<&str>) -> Component<'a> {
    let name = comp.strip_suffix(".scope").unwrap_or(comp);
    if name.starts_with("libpod-conmon-") || name.starts_with("crio-conmon-") {
        return Component::Monitor;
    }
    if name == "conmon" && previous.is_some_and(|p| p == "libpod_parent" || is_hex64(p)) {
        return Component::Monitor;
    }
    const PREFIXES: [(&str, Runtime); 4] = [
        ("libpod-", Runtime::Podman),
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_hex64(id) {
                return Component::Container {
                    id,
                    runtime: Some(runtime),
                };
            }
        }
    }
    if is_hex64(comp) {
        return match previous {
            // `/libpod_parent/<podid>`: a podman pod's cgroup, not a container.
            Some("libpod_parent") => Component::Other,
            Some("docker") => Component::Container {
                id: comp,
                runtime: Some(Runtime::Docker),
            },
            Some("cri-containerd") => Component::Container {
                id: comp,
                runtime: Some(Runtime::Containerd),
            },
            Some("crio") => Component::Container {
                id: comp,
                runtime: Some(Runtime::CriO),
            },
            _ => Component::Container {
                id: comp,
                runtime: None,
            },
        };
    }
    Component::Other
}

fn pod_of_component(comp: &str) -> Option<CgroupPod> {
    let name = comp.strip_suffix(".slice").unwrap_or(comp);
    // podman with systemd: machine-libpod_pod_<id>.slice (user- when
    // rootless); with cgroupfs newer podman uses libpod_pod_<id>.
    if let Some(at) = name.find("libpod_pod_") {
        let id = &name[at + "libpod_pod_".len()..];
        if is_hex64(id) {
            return Some(CgroupPod::Podman(id.to_string()));
        }
    }
    // Kubernetes: pod<uid> (cgroupfs) or kubepods-<qos>-pod<uid_>.slice.
    let uid = if let Some(rest) = name.strip_prefix("pod") {
        rest
    } else {
        let at = name.rfind("-pod")?;
        if !name.starts_with("kubepods") && !name.contains("-kubepods") {
            return None;
        }
        &name[at + "-pod".len()..]
    };
    let uid = uid.replace('_', "-");
    is_uuid(&uid).then_some(CgroupPod::Kubernetes(uid))
}

/// A podman pod id from a cgroupfs path `/libpod_parent/<podid>/...`
/// (podman 4 with the cgroupfs manager names no pod in the component).
pub(crate) fn podman_pod_of_path(path: &str) -> Option<String> {
    let mut parts = path.split('/').filter(|c| !c.is_empty());
    while let Some(c) = parts.next() {
        if c == "libpod_parent" {
            return parts.next().filter(|id| is_hex64(id)).map(str::to_string);
        }
    }
    None
}

/// 64 lowercase hex digits: a container id as the runtimes write it.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Where the unified (cgroup v2) hierarchy is mounted, from the text of
/// `/proc/self/mountinfo`: the first `cgroup2` mount of the hierarchy's
/// root. `/sys/fs/cgroup` on a pure v2 system, `/sys/fs/cgroup/unified` in
/// systemd's hybrid layout.
pub fn parse_unified_mount(mountinfo: &str) -> Option<PathBuf> {
    unified_root_mount(&crate::proc::parse_mountinfo(mountinfo))
}

fn unified_root_mount(mounts: &[crate::proc::Mount]) -> Option<PathBuf> {
    mounts
        .iter()
        .find(|m| m.fstype == "cgroup2" && m.root == "/")
        .map(|m| PathBuf::from(&m.mount_point))
}

/// The cgroup hierarchies a mount namespace has, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The v1 hierarchies: mount point and what it holds (its controllers,
    /// or `name=systemd` for a named hierarchy), in mount order.
    pub v1: Vec<(PathBuf, String)>,
    /// Whether a cgroup2 file system is mounted at all (inside a container
    /// without its own cgroup namespace, only a subtree may be).
    pub v2_mounted: bool,
    /// Where the unified (v2) hierarchy's root is mounted
    /// ([`parse_unified_mount`]): cgroup ids can be read there.
    pub unified: Option<PathBuf>,
}

impl CgroupLayout {
    /// `unified` (v2 only), `hybrid` (v1 hierarchies beside the unified
    /// one), `legacy` (v1 only) or `none`.
    pub fn kind(&self) -> &'static str {
        match (self.v1.is_empty(), self.v2_mounted) {
            (true, true) => "unified",
            (false, true) => "hybrid",
            (false, false) => "legacy",
            (true, false) => "none",
        }
    }
}

/// Parses the cgroup mounts out of the text of `/proc/self/mountinfo`: each
/// v1 hierarchy once (the first mount of it, of its root or, in a
/// container, of a subtree), and the unified hierarchy.
pub fn parse_cgroup_layout(mountinfo: &str) -> CgroupLayout {
    let mounts = crate::proc::parse_mountinfo(mountinfo);
    let mut v1: Vec<(PathBuf, String)> = Vec::new();
    for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
        // Super options: rw, the controllers, name=..., and flags.
        let holds: Vec<&str> = m
            .super_options
            .split(',')
            .filter(|o| {
                !matches!(
                    *o,
                    "rw" | "ro"
                        | "xattr"
                        | "noprefix"
                        | "clone_children"
                        | "cpuset_v2_mode"
                        | "favordynmods"
                        | ""
                ) && (!o.contains('=') || o.starts_with("name="))
            })
            .collect();
        let holds = holds.join(",");
        if !v1.iter().any(|(_, h)| *h == holds) {
            v1.push((PathBuf::from(&m.mount_point), holds));
        }
    }
    CgroupLayout {
        v1,
        v2_mounted: mounts.iter().any(|m| m.fstype == "cgroup2"),
        unified: unified_root_mount(&mounts),
    }
}

/// Why a cgroup id could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupIdError {
    #[error("no cgroup2 (unified) hierarchy is mounted (see /proc/self/mountinfo)")]
    NoUnifiedHierarchy,
    #[error("reading /proc/self/mountinfo: {0}")]
    Mountinfo(io::Error),
    #[error("cgroup {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
}

/// Where this machine mounts the unified hierarchy.
pub fn unified_mount() -> Result<PathBuf, CgroupIdError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupIdError::Mountinfo)?;
    parse_unified_mount(&text).ok_or(CgroupIdError::NoUnifiedHierarchy)
}

/// The cgroup v2 id of `path` (a path in the unified hierarchy, as
/// `/proc/PID/cgroup`'s `0::` line gives it) under the hierarchy mounted at
/// `mount`: the inode number of its directory, which is what
/// `bpf_get_current_cgroup_id()` returns for tasks in it.
pub fn cgroup_id(mount: &Path, path: &str) -> Result<u64, CgroupIdError> {
    use std::os::unix::fs::MetadataExt;
    let dir = mount.join(path.trim_start_matches('/'));
    let meta = std::fs::metadata(&dir).map_err(|source| CgroupIdError::Stat {
        path: dir.clone(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(CgroupIdError::Stat {
            path: dir,
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a cgroup directory"),
        });
    }
    Ok(meta.ino())
}

/// Nesting depth of a cgroup path (the root `/` is level 0), as
/// `bpf_get_current_ancestor_cgroup_id(level)` counts it.
pub fn cgroup_level(path: &str) -> u32 {
    path.split('/').filter(|c| !c.is_empty()).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/containers")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    const PODMAN_CTR: &str = "8dfa34dcb107ce849e02558a65793f4a7d487166c96a1bd538cf6002d80bbf58";
    const PODMAN_POD: &str = "fc34ea7aea167e23b9b707ed7a8abb892ece7640c2e0254f0595c458b45c6ea4";
    const PODMAN_POD_MEMBER: &str =
        "1c290f5070e50914429b48e6249f9a0ea63510015566ce7ebd2201c0b894e1cd";

    // This machine: podman 4.3.1 + runc, cgroupfs manager, hybrid layout.
    #[test]
    fn podman_cgroupfs_hybrid_from_this_machine() {
        let cg = parse_proc_cgroup(&fixture("podman-container.cgroup"));
        let c = cg.container.clone().unwrap();
        assert_eq!(c.id, PODMAN_CTR);
        assert_eq!(c.runtime, Some(Runtime::Podman));
        assert_eq!(c.pod, None);
        assert_eq!(c.path, format!("/libpod_parent/libpod-{PODMAN_CTR}"));
        assert_eq!(cg.unified.as_deref(), Some(c.path.as_str()));
        assert_eq!(cg.container_cgroup_v2(), Some(c.path.as_str()));

        let cg = parse_proc_cgroup(&fixture("podman-pod-member.cgroup"));
        let c = cg.container.clone().unwrap();
        assert_eq!(c.id, PODMAN_POD_MEMBER);
        assert_eq!(c.runtime, Some(Runtime::Podman));
        // cgroupfs names the pod by its bare id under libpod_parent.
        assert_eq!(c.pod, None);
        assert_eq!(podman_pod_of_path(&c.path).as_deref(), Some(PODMAN_POD));
        assert_eq!(cg.container_cgroup_v2(), Some(c.path.as_str()));
        assert_eq!(cgroup_level(&c.path), 3);
    }

    #[test]
    fn podman_monitors_are_not_containers() {
        // conmon: v1 `/libpod_parent/conmon`, v2 the root.
        let cg = parse_proc_cgroup(&fixture("podman-conmon.cgroup"));
        assert_eq!(cg.unified.as_deref(), Some("/"));
        assert_eq!(cg.container, None);
        let cg = parse_proc_cgroup(&fixture("podman-pod-conmon.cgroup"));
        assert_eq!(cg.container, None);
        assert_eq!(
            parse_cgroup_path(&format!("/machine.slice/libpod-conmon-{PODMAN_CTR}.scope")),
            None
        );
    }

    // podman with the systemd manager (podman docs, `podman run --cgroups`,
    // and /proc/PID/cgroup on Fedora): v2 only.
    #[test]
    fn podman_systemd() {
        let text = format!("0::/machine.slice/libpod-{PODMAN_CTR}.scope/container\n");
        let cg = parse_proc_cgroup(&text);
        let c = cg.container.clone().unwrap();
        assert_eq!(c.id, PODMAN_CTR);
        assert_eq!(c.path, format!("/machine.slice/libpod-{PODMAN_CTR}.scope"));
        assert_eq!(cg.container_cgroup_v2(), Some(c.path.as_str()));

        let text = format!(
            "0::/machine.slice/machine-libpod_pod_{PODMAN_POD}.slice/libpod-{PODMAN_POD_MEMBER}.scope\n"
        );
        let c = parse_proc_cgroup(&text).container.unwrap();
        assert_eq!(c.id, PODMAN_POD_MEMBER);
        assert_eq!(c.pod, Some(CgroupPod::Podman(PODMAN_POD.into())));
    }

    // docker, cgroupfs driver, hybrid: the v2 path is dockerd's (shared),
    // so no cgroup id identifies the container (ctrsploit/ctrsploit#280).
    #[test]
    fn docker_cgroupfs_hybrid() {
        let text = "\
12:net_cls,net_prio:/docker/2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d
11:freezer:/docker/2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d
10:rdma:/
8:memory:/docker/2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d
1:name=systemd:/docker/2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d
0::/system.slice/containerd.service
";
        let cg = parse_proc_cgroup(text);
        let c = cg.container.clone().unwrap();
        assert_eq!(
            c.id,
            "2403ccfe427f1dc7b6120dccb9ac58c2f8456950380d587a9f33ea7f00dd303d"
        );
        assert_eq!(c.runtime, Some(Runtime::Docker));
        assert_eq!(
            cg.unified.as_deref(),
            Some("/system.slice/containerd.service")
        );
        assert_eq!(cg.container_cgroup_v2(), None);
    }

    // Pure v1, the name=systemd line without the id (moby/moby#33352);
    // docker in docker, the innermost id (DataDog/dd-agent#3274).
    #[test]
    fn docker_v1_and_nested() {
        let text = "\
10:perf_event:/docker/5dace3de0735f73d2b5048f12d41a71741a02e49668de921fdae62f7e65dc498
9:net_cls:/
1:name=systemd:/
";
        let cg = parse_proc_cgroup(text);
        assert_eq!(cg.unified, None);
        assert_eq!(
            cg.container.as_ref().unwrap().id,
            "5dace3de0735f73d2b5048f12d41a71741a02e49668de921fdae62f7e65dc498"
        );
        assert_eq!(cg.container_cgroup_v2(), None);

        let outer = "a".repeat(64);
        let inner = "b".repeat(64);
        let c = parse_cgroup_path(&format!("/docker/{outer}/docker/{inner}")).unwrap();
        assert_eq!(c.id, inner);
        assert_eq!(c.path, format!("/docker/{outer}/docker/{inner}"));
    }

    // docker, systemd driver, v2 (docker docs "cgroup v2": docker-<id>.scope).
    #[test]
    fn docker_systemd_v2() {
        let text = "0::/system.slice/docker-7add903ef98f9974fcd73ecd653cef3a298acba2a14ad55a64859fb7638fb133.scope\n";
        let cg = parse_proc_cgroup(text);
        let c = cg.container.clone().unwrap();
        assert_eq!(c.runtime, Some(Runtime::Docker));
        assert_eq!(
            c.id,
            "7add903ef98f9974fcd73ecd653cef3a298acba2a14ad55a64859fb7638fb133"
        );
        assert_eq!(cg.container_cgroup_v2(), Some(c.path.as_str()));
    }

    // containerd CRI, systemd driver, v2 (netdata/netdata#4868, kind).
    #[test]
    fn containerd_kubepods_systemd() {
        let text = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod55c6c714_b240_4dec_9a45_57b61696ab6e.slice/cri-containerd-2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36.scope\n";
        let c = parse_proc_cgroup(text).container.unwrap();
        assert_eq!(c.runtime, Some(Runtime::Containerd));
        assert_eq!(
            c.id,
            "2032491dcae31e6746f47daa0ac74564f2843a1bd847c5e6c4eb501ca132ac36"
        );
        assert_eq!(
            c.pod,
            Some(CgroupPod::Kubernetes(
                "55c6c714-b240-4dec-9a45-57b61696ab6e".into()
            ))
        );
        assert!(c.path.ends_with(".scope"));
    }

    // containerd CRI, systemd driver on cgroup v1: the cgroupsPath syntax
    // shows through (open-telemetry/opentelemetry-java#4507).
    #[test]
    fn containerd_colon_form_v1() {
        let text = "\
11:perf_event:/kubepods-besteffort-pod0125ec2f_b64a_4868_8f5b_94b56cbab864.slice:cri-containerd:ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459
10:blkio:/system.slice/containerd.service/kubepods-besteffort-pod0125ec2f_b64a_4868_8f5b_94b56cbab864.slice:cri-containerd:ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459
";
        let c = parse_proc_cgroup(text).container.unwrap();
        assert_eq!(c.runtime, Some(Runtime::Containerd));
        assert_eq!(
            c.id,
            "ee4b20e90ac7f42a10bd004d05646b13d8ab5e2c5e7cbc01abf8006bac016459"
        );
        assert_eq!(
            c.pod,
            Some(CgroupPod::Kubernetes(
                "0125ec2f-b64a-4868-8f5b-94b56cbab864".into()
            ))
        );
    }

    // CRI-O, systemd driver, v1 (opencontainers/runc#4620).
    #[test]
    fn crio_kubepods_systemd_v1() {
        let text = "\
13:freezer:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/crio-5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c.scope
11:files:/
";
        let c = parse_proc_cgroup(text).container.unwrap();
        assert_eq!(c.runtime, Some(Runtime::CriO));
        assert_eq!(
            c.id,
            "5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c"
        );
        assert_eq!(
            c.pod,
            Some(CgroupPod::Kubernetes(
                "a5c1f8d5-1919-434d-add7-4afaafdaef89".into()
            ))
        );
        assert_eq!(
            parse_cgroup_path(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda5c1f8d5_1919_434d_add7_4afaafdaef89.slice/crio-conmon-5eed917563583925ffdbd40a64efb2aaffe58638e57add8becaf460fe74f5b1c.scope"
            ),
            None
        );
    }

    // Kubernetes with the cgroupfs driver: a bare id (peass-ng/PEASS-ng#124).
    #[test]
    fn kubepods_cgroupfs() {
        let text = "\
12:rdma:/
11:memory:/kubepods/besteffort/pod4eede96e-e976-4573-bc90-68dfe2516d3b/c3cd4e0a7993a1c155cc1bdd3326c7b1e260226d0c2c79e3e48dbc360543c768
";
        let c = parse_proc_cgroup(text).container.unwrap();
        assert_eq!(c.runtime, None);
        assert_eq!(
            c.id,
            "c3cd4e0a7993a1c155cc1bdd3326c7b1e260226d0c2c79e3e48dbc360543c768"
        );
        assert_eq!(
            c.pod,
            Some(CgroupPod::Kubernetes(
                "4eede96e-e976-4573-bc90-68dfe2516d3b".into()
            ))
        );
    }

    #[test]
    fn host_processes_have_no_container() {
        let text = "0::/system.slice/sshd.service\n";
        assert_eq!(parse_proc_cgroup(text).container, None);
        assert_eq!(parse_proc_cgroup("0::/\n").container, None);
        assert_eq!(parse_proc_cgroup("garbage\n\n").container, None);
        // A pod id alone (podman's pod cgroup) is no container.
        assert_eq!(
            parse_cgroup_path(&format!("/libpod_parent/{PODMAN_POD}")),
            None
        );
        // Not 64 hex digits.
        assert_eq!(
            parse_cgroup_path(&format!("/docker/{}", &PODMAN_CTR[..63])),
            None
        );
        assert_eq!(
            parse_cgroup_path(&format!("/docker/{}", PODMAN_CTR.to_uppercase())),
            None
        );
    }

    #[test]
    fn finds_the_unified_hierarchy_in_hybrid_mode() {
        let text = fixture("hybrid.mountinfo");
        assert_eq!(
            parse_unified_mount(&text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // Pure v2 (Debian 12 default), and an escaped mount point.
        let v2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            parse_unified_mount(v2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let esc = "35 24 0:30 / /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(parse_unified_mount(esc), Some(PathBuf::from("/mnt/my cg")));
        // Pure v1: none.
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(parse_unified_mount(v1), None);
    }

    #[test]
    fn tells_the_cgroup_layouts_apart() {
        // This machine: hybrid (systemd's layout, v1 controllers + unified).
        let hybrid = parse_cgroup_layout(&fixture("hybrid.mountinfo"));
        assert_eq!(hybrid.kind(), "hybrid");
        assert_eq!(
            hybrid.unified,
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let holds: Vec<&str> = hybrid.v1.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(
            holds,
            [
                "cpu",
                "cpuacct",
                "cpuset",
                "memory",
                "devices",
                "freezer",
                "blkio",
                "pids",
                "name=systemd"
            ]
        );
        assert_eq!(hybrid.v1[0].0, PathBuf::from("/sys/fs/cgroup/cpu"));
        // Debian 12's default: v2 only.
        let v2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let unified = parse_cgroup_layout(v2);
        assert_eq!(unified.kind(), "unified");
        assert!(unified.v1.is_empty());
        // A v1-only host (systemd, SELinux, docker).
        let legacy = parse_cgroup_layout(&fixture("legacy.mountinfo"));
        assert_eq!(legacy.kind(), "legacy");
        assert_eq!(legacy.unified, None);
        let holds: Vec<&str> = legacy.v1.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(
            holds,
            [
                "name=systemd",
                "perf_event",
                "devices",
                "cpuacct,cpu",
                "freezer",
                "net_prio,net_cls",
                "cpuset",
                "memory",
                "pids",
                "hugetlb",
                "blkio"
            ]
        );
        assert_eq!(legacy.v1[3].0, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        // Inside a docker container on a v1 host: subtrees of the host's
        // hierarchies, still v1.
        let inside = parse_cgroup_layout(&fixture("docker-v1-container.mountinfo"));
        assert_eq!(inside.kind(), "legacy");
        assert_eq!(inside.v1.len(), 8);
        assert_eq!(inside.v1[0].1, "name=systemd");
        // A v2 subtree without the hierarchy's root: v2, but no cgroup ids.
        let sub = "2825 2824 0:22 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let sub = parse_cgroup_layout(sub);
        assert_eq!((sub.kind(), sub.unified), ("unified", None));
        assert_eq!(parse_cgroup_layout("").kind(), "none");
        assert_eq!(parse_cgroup_layout("garbage\n").kind(), "none");
    }

    #[test]
    fn cgroup_id_is_the_directory_inode_and_the_kernfs_id() {
        use std::os::unix::fs::MetadataExt;
        let Ok(mount) = unified_mount() else {
            return; // no cgroup2 here: nothing to compare
        };
        let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
        let path = own.unified.expect("a cgroup2 mount implies a 0:: line");
        let id = cgroup_id(&mount, &path).unwrap();
        let dir = mount.join(path.trim_start_matches('/'));
        assert_eq!(id, std::fs::metadata(&dir).unwrap().ino());
        // The kernel's own encoding of the cgroup id: the kernfs file
        // handle (what cgroup tools and BPF selftests use) holds kn->id.
        assert_eq!(Some(id), kernfs_handle_id(&dir));
        let err = cgroup_id(&mount, "/no/such/cgroup").unwrap_err();
        assert!(err.to_string().contains("/no/such/cgroup"), "{err}");
    }

    /// The u64 of a kernfs file handle (name_to_handle_at).
    fn kernfs_handle_id(path: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        #[repr(C)]
        struct Handle {
            bytes: u32,
            kind: i32,
            id: [u8; 8],
        }
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut h = Handle {
            bytes: 8,
            kind: 0,
            id: [0; 8],
        };
        let mut mount_id = 0;
        // SAFETY: valid path, a handle buffer of the declared size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                c.as_ptr(),
                &mut h as *mut Handle,
                &mut mount_id as *mut i32,
                0,
            )
        };
        (rc == 0 && h.bytes == 8).then(|| u64::from_ne_bytes(h.id))
    }
}
