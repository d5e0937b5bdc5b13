//! Containers and pods: which container a process runs in, what the
//! container and its pod are called, and the cgroup that holds it.
//!
//! How it is used:
//! - `--container X`, `--pod P`: [`resolve_selection`] turns the user's
//!   names, full ids or id prefixes ([`resolve`]) and pod names
//!   ([`pods::resolve_pods_in`]) into [`Container`]s (or a [`ResolveError`]
//!   whose message lists what is running). A container's [`Container::cgroup_id`] is the cgroup
//!   v2 id to filter on in the kernel (`bpf_get_current_cgroup_id()`, or an
//!   ancestor at [`cgroup::cgroup_level`] of [`Container::cgroup_path`] for
//!   processes in sub-cgroups); `None` means the cgroup cannot identify the
//!   container (pure cgroup v1, or a runtime that leaves it in a shared v2
//!   cgroup): fall back to [`Container::pids`] plus fork following.
//! - Labels on stacks, in every mode: one [`ContainerCache`] per recording;
//!   [`ContainerCache::labels_of`] gives a process's [`ContainerLabels`]
//!   (`None` for host processes). The cache holds one lookup per container
//!   id; the caller keeps the labels per pid from first sight, so a process
//!   that has exited (its cgroup unreadable) keeps them.
//! - [`members::ContainerWatch`] follows the recorded containers during the
//!   recording: the processes that join them (for probes attached per
//!   process, and the pid fallback) and the containers that stop.
//! - [`list`] is every running container flameprobe can see.
//!
//! The container id comes from `/proc/PID/cgroup` ([`cgroup`]); names come
//! from the runtimes' own state on disk, read directly and bounded, never
//! following a symlink out of the runtime's state directory
//! ([`crate::safe_fs`] with [`Scope::Beneath`]): [`podman`] (libpod's BoltDB
//! via [`boltdb`]), [`crio`] and the podman fallback through the shared
//! containers/storage layout ([`storage`]), [`containerd`], [`docker`].
//! Where no name is found, the name is the 12-character short id.

pub mod boltdb;
pub mod cgroup;
pub mod containerd;
pub mod crio;
pub mod docker;
pub mod members;
mod oci;
pub mod podman;
pub mod pods;
pub mod storage;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::safe_fs::{self, SafeOpenError, Scope};

/// A container runtime whose state flameprobe reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Podman,
    Docker,
    Containerd,
    CriO,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Podman => "podman",
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
        })
    }
}

/// The pod a container belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    /// podman: the pod id; Kubernetes: the pod UID, or the sandbox id
    /// when the runtime's state does not record the UID.
    pub id: String,
    pub name: String,
    /// The Kubernetes namespace (`None` for podman pods).
    pub namespace: Option<String>,
}

impl Pod {
    /// How the pod is shown: `namespace/name` for Kubernetes, else `name`.
    pub fn display_name(&self) -> String {
        crate::profile::pod_display_name(self.namespace.as_deref(), &self.name)
    }
}

/// What a runtime's state says about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub name: Option<String>,
    pub pod: Option<Pod>,
}

/// A running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The full id, 64 hex digits.
    pub id: String,
    /// The runtime's name for it, or the short id where none was found.
    pub name: String,
    /// `None` when no runtime's state knows the id.
    pub runtime: Option<Runtime>,
    pub pod: Option<Pod>,
    /// The container's own cgroup: in the unified hierarchy when it has one
    /// there, else its v1 path.
    pub cgroup_path: String,
    /// The cgroup v2 id of `cgroup_path` when the container has its own
    /// cgroup in the unified hierarchy (see the module docs).
    pub cgroup_id: Option<u64>,
    /// Host pids of its processes when it was listed, ascending.
    pub pids: Vec<u32>,
}

impl Container {
    /// The first 12 hex digits of the id, as the runtimes' CLIs show it.
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }
}

/// The labels a process in a container carries on its stacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLabels {
    /// The container's name (or short id).
    pub container: String,
    /// The full container id.
    pub container_id: String,
    /// The pod's name, when the container is in a pod.
    pub pod: Option<String>,
    /// The pod's Kubernetes namespace.
    pub namespace: Option<String>,
}

impl ContainerLabels {
    fn of(id: &str, meta: &Resolved) -> ContainerLabels {
        ContainerLabels {
            container: meta.name.clone(),
            container_id: id.to_string(),
            pod: meta.pod.as_ref().map(|p| p.name.clone()),
            namespace: meta.pod.as_ref().and_then(|p| p.namespace.clone()),
        }
    }

    /// The pod as shown in a frame: `namespace/name`, or `name`.
    pub fn pod_display(&self) -> Option<String> {
        let pod = self.pod.as_ref()?;
        Some(crate::profile::pod_display_name(
            self.namespace.as_deref(),
            pod,
        ))
    }
}

/// The first 12 characters of an id.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Why a runtime's state could not be read. Lookups log these and fall
/// back to short ids; they never stop a recording.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: SafeOpenError,
    },
    #[error("{path}: not valid JSON of the expected shape: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Bolt {
        path: PathBuf,
        source: boltdb::BoltError,
    },
    #[error("{path}: still locked by the runtime after {waited_ms} ms")]
    Locked { path: PathBuf, waited_ms: u64 },
}

/// Where each runtime keeps its state on this machine.
#[derive(Clone, Debug)]
pub struct StateRoots {
    /// containers/storage (podman, CRI-O): graph root, run root, driver.
    pub storage: storage::StorageConf,
    /// docker's data root (`/var/lib/docker`).
    pub docker: PathBuf,
    /// containerd's v2 task directory with one directory per namespace.
    pub containerd_tasks: PathBuf,
}

impl StateRoots {
    /// The locations configured on this host (storage.conf,
    /// /etc/docker/daemon.json) or the runtimes' defaults.
    pub fn from_host() -> StateRoots {
        StateRoots {
            storage: storage::StorageConf::from_host(),
            docker: docker::data_root_from_host(),
            containerd_tasks: PathBuf::from(containerd::TASK_ROOT),
        }
    }
}

/// Reads a runtime state file `rel` below `dir`, refusing paths that leave
/// `dir`, FIFOs and anything over `limit` bytes. `Ok(None)`: no such file.
pub(crate) fn read_state_file(
    dir: &Path,
    rel: &Path,
    limit: u64,
) -> Result<Option<Vec<u8>>, StateError> {
    let err = |source: SafeOpenError| StateError::Open {
        path: dir.join(rel),
        source,
    };
    let handle = match safe_fs::open_dir(dir) {
        Ok(h) => h,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(SafeOpenError::Io(e))),
    };
    use std::os::fd::AsFd;
    let mut file = match safe_fs::open_file(handle.as_fd(), rel, Scope::Beneath) {
        Ok(f) => f,
        Err(SafeOpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    safe_fs::read_limited(&mut file, limit)
        .map(Some)
        .map_err(err)
}

/// Parses a runtime's JSON state file, naming it in the error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|source| StateError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// What the cache knows about one container id.
#[derive(Clone, Debug)]
struct Resolved {
    name: String,
    runtime: Option<Runtime>,
    pod: Option<Pod>,
}

/// Container lookups for one recording, cached per container id.
pub struct ContainerCache {
    roots: StateRoots,
    by_id: HashMap<String, Arc<Resolved>>,
    /// podman's state, loaded at the first podman container and reloaded
    /// when an id is missing from it (a container created since).
    podman: Option<podman::PodmanState>,
}

impl Default for ContainerCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerCache {
    /// A cache reading the runtimes' state where this host keeps it.
    pub fn new() -> ContainerCache {
        Self::with_roots(StateRoots::from_host())
    }

    /// A cache reading state under the given roots.
    pub fn with_roots(roots: StateRoots) -> ContainerCache {
        ContainerCache {
            roots,
            by_id: HashMap::new(),
            podman: None,
        }
    }

    /// The container labels of process `pid`: `None` for a host process or
    /// when its cgroup cannot be read (it exited).
    pub fn labels_of(&mut self, pid: u32) -> Option<ContainerLabels> {
        self.try_labels_of(pid).flatten()
    }

    /// Like [`Self::labels_of`], telling a process whose cgroup cannot be
    /// read (gone: `None`) from one in no container (`Some(None)`).
    pub fn try_labels_of(&mut self, pid: u32) -> Option<Option<ContainerLabels>> {
        let text = std::fs::read_to_string(crate::proc::proc_path(pid, "cgroup")).ok()?;
        Some(cgroup::parse_proc_cgroup(&text).container.map(|found| {
            let meta = self.resolve_id(&found);
            ContainerLabels::of(&found.id, &meta)
        }))
    }

    /// Name, runtime and pod of the container a cgroup path named.
    fn resolve_id(&mut self, found: &cgroup::CgroupContainer) -> Arc<Resolved> {
        if let Some(r) = self.by_id.get(&found.id) {
            return r.clone();
        }
        let (runtime, meta) = self.lookup(found);
        let pod = meta.pod.or_else(|| pod_from_cgroup(found));
        let resolved = Arc::new(Resolved {
            name: meta.name.unwrap_or_else(|| short_id(&found.id).to_string()),
            runtime: runtime.or(found.runtime),
            pod,
        });
        self.by_id.insert(found.id.clone(), resolved.clone());
        resolved
    }

    /// Asks the runtime the path names, or each runtime when it names none.
    fn lookup(&mut self, found: &cgroup::CgroupContainer) -> (Option<Runtime>, Metadata) {
        let order: &[Runtime] = match found.runtime {
            Some(Runtime::Podman) => &[Runtime::Podman],
            Some(Runtime::Docker) => &[Runtime::Docker],
            Some(Runtime::Containerd) => &[Runtime::Containerd],
            Some(Runtime::CriO) => &[Runtime::CriO],
            None => &[
                Runtime::Containerd,
                Runtime::CriO,
                Runtime::Docker,
                Runtime::Podman,
            ],
        };
        // A runtime may know a container without naming it (docker runs
        // its containers as tasks in containerd's `moby` namespace, whose
        // bundles carry no names): another runtime's state may name it.
        let mut unnamed: Option<Runtime> = None;
        for &runtime in order {
            let result = match runtime {
                Runtime::Podman => self.podman_lookup(&found.id),
                Runtime::Docker => docker::lookup(&self.roots.docker, &found.id),
                Runtime::Containerd => containerd::lookup(&self.roots.containerd_tasks, &found.id),
                Runtime::CriO => crio::lookup(&self.roots.storage, &found.id),
            };
            match result {
                Ok(Some(meta)) if meta != Metadata::default() => return (Some(runtime), meta),
                Ok(Some(_)) => {
                    unnamed.get_or_insert(runtime);
                }
                Ok(None) => {}
                Err(e) => log::debug!(
                    "container {}: reading {runtime} state: {e}",
                    short_id(&found.id)
                ),
            }
        }
        (unnamed, Metadata::default())
    }

    fn podman_lookup(&mut self, id: &str) -> Result<Option<Metadata>, StateError> {
        if let Some(state) = &self.podman {
            if let Some(meta) = state.metadata(id) {
                return Ok(Some(meta));
            }
        }
        let state = podman::PodmanState::load(&self.roots.storage)?;
        let meta = state.metadata(id);
        self.podman = Some(state);
        Ok(meta)
    }
}

/// A pod named only by the cgroup path: its id stands for its name.
fn pod_from_cgroup(found: &cgroup::CgroupContainer) -> Option<Pod> {
    let id = match &found.pod {
        Some(cgroup::CgroupPod::Podman(id)) => id.clone(),
        Some(cgroup::CgroupPod::Kubernetes(uid)) => uid.clone(),
        None if found.runtime == Some(Runtime::Podman) => cgroup::podman_pod_of_path(&found.path)?,
        None => return None,
    };
    Some(Pod {
        name: short_id(&id).to_string(),
        id,
        namespace: None,
    })
}

/// Every running container flameprobe can see: the containers that have a
/// process now (from `/proc/*/cgroup`), named from the runtimes' state.
/// Sorted by name, then id.
pub fn list() -> Vec<Container> {
    list_with(&mut ContainerCache::new())
}

/// [`list`], resolving names with `cache`.
pub fn list_with(cache: &mut ContainerCache) -> Vec<Container> {
    let by_id = processes_by_container();
    let mut out = containers_in(&by_id, cache, |_| true);
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    out
}

/// The containers of a [`processes_by_container`] scan whose ids `wanted`
/// accepts, named with `cache`, in id order.
pub(crate) fn containers_in(
    by_id: &ProcessesByContainer,
    cache: &mut ContainerCache,
    wanted: impl Fn(&str) -> bool,
) -> Vec<Container> {
    let mount = cgroup::unified_mount().ok();
    by_id
        .iter()
        .filter(|(id, _)| wanted(id))
        .filter_map(|(_, (parsed, pids))| {
            let found = parsed.container.clone()?;
            let meta = cache.resolve_id(&found);
            let v2 = parsed.container_cgroup_v2();
            let cgroup_id = v2
                .zip(mount.as_deref())
                .and_then(|(path, m)| cgroup::cgroup_id(m, path).ok());
            Some(Container {
                cgroup_path: found.path.clone(),
                id: found.id,
                name: meta.name.clone(),
                runtime: meta.runtime,
                pod: meta.pod.clone(),
                cgroup_id,
                pids: pids.clone(),
            })
        })
        .collect()
}

/// Processes by container id, with the cgroups of the first process seen
/// in each container; pids ascending.
pub(crate) type ProcessesByContainer = BTreeMap<String, (cgroup::ProcCgroup, Vec<u32>)>;

/// Every process in a container now, by container id (from each
/// `/proc/PID/cgroup`).
pub(crate) fn processes_by_container() -> ProcessesByContainer {
    let mut by_id = ProcessesByContainer::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return by_id;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(crate::proc::proc_path(pid, "cgroup")) else {
            continue; // exited meanwhile
        };
        let parsed = cgroup::parse_proc_cgroup(&text);
        let Some(c) = &parsed.container else {
            continue;
        };
        let id = c.id.clone();
        by_id
            .entry(id)
            .or_insert_with(|| (parsed, Vec::new()))
            .1
            .push(pid);
    }
    for (_, pids) in by_id.values_mut() {
        pids.sort_unstable();
    }
    by_id
}

/// Why `--container` specs did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Nothing running has that name, id or id prefix.
    NotFound {
        spec: String,
        running: Vec<Container>,
    },
    /// An id prefix that more than one running container starts with, or
    /// a name more than one has.
    Ambiguous {
        spec: String,
        matches: Vec<Container>,
    },
    /// Not a name, and too short to be an id prefix.
    Invalid { spec: String, reason: &'static str },
    /// `--pod`: no running pod has that name, `namespace/name` or id prefix.
    PodNotFound {
        spec: String,
        running: Vec<Container>,
    },
    /// `--pod`: a name pods in several namespaces have, or an id prefix
    /// of several pods; the containers of the pods it matches.
    AmbiguousPod {
        spec: String,
        matches: Vec<Container>,
    },
    /// `--pod`: not a pod name or `namespace/name`.
    InvalidPod { spec: String, reason: &'static str },
}

/// Shortest id prefix accepted.
pub const MIN_PREFIX: usize = 4;

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { spec, running } => {
                write!(
                    f,
                    "no running container is named `{spec}` or has an id starting with it"
                )?;
                if running.is_empty() {
                    write!(
                        f,
                        "; flameprobe sees no running containers (it reads the state of podman, \
                         docker, containerd and CRI-O)"
                    )
                } else {
                    writeln!(f, "; running containers:")?;
                    write_table(f, running)
                }
            }
            ResolveError::Ambiguous { spec, matches } => {
                // Names are unique per runtime, but the short ids that name
                // containers no runtime knows can be shared.
                let by_name = matches.iter().all(|c| c.name == *spec);
                writeln!(
                    f,
                    "container {} `{spec}` matches {} containers; give more of the id{}:",
                    if by_name { "name" } else { "id prefix" },
                    matches.len(),
                    if by_name { "" } else { ", or the name" }
                )?;
                write_table(f, matches)
            }
            ResolveError::Invalid { spec, reason } => {
                write!(f, "container `{spec}`: {reason}")
            }
            ResolveError::PodNotFound { spec, running } => pods::write_not_found(f, spec, running),
            ResolveError::AmbiguousPod { spec, matches } => {
                let pods = pods::running_pods(matches).len();
                if matches
                    .iter()
                    .any(|c| c.pod.as_ref().is_some_and(|p| p.name == *spec))
                {
                    writeln!(
                        f,
                        "pod name `{spec}` is used in {pods} namespaces; give namespace/name:"
                    )?;
                } else {
                    writeln!(
                        f,
                        "pod id prefix `{spec}` matches {pods} pods; give more of the id, or \
                         the name:"
                    )?;
                }
                pods::write_pod_table(f, matches)
            }
            ResolveError::InvalidPod { spec, reason } => write!(f, "pod `{spec}`: {reason}"),
        }
    }
}

fn write_table(f: &mut fmt::Formatter<'_>, containers: &[Container]) -> fmt::Result {
    let width = containers
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    write!(f, "  {:width$}  {:12}  RUNTIME", "NAME", "ID")?;
    for c in containers {
        let runtime = c.runtime.map_or("unknown".to_string(), |r| r.to_string());
        let pod = c
            .pod
            .as_ref()
            .map(|p| format!("  (pod {})", p.display_name()))
            .unwrap_or_default();
        write!(
            f,
            "\n  {:width$}  {:12}  {runtime}{pod}",
            c.name,
            c.short_id()
        )?;
    }
    Ok(())
}

/// Resolves `--container` specs (each a name, a full id, or a unique id
/// prefix of at least [`MIN_PREFIX`] hex digits; comma-separated lists are
/// split) against the running containers. Duplicates are removed.
pub fn resolve(specs: &[String]) -> Result<Vec<Container>, ResolveError> {
    resolve_in(specs, &list())
}

/// What `--container` and `--pod` name: the containers to record are
/// those named and every container of the pods named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub containers: Vec<String>,
    pub pods: Vec<String>,
}

impl Selection {
    /// `container web`, `pods prod/shop,cart`, `pod shop and container db`.
    pub fn describe(&self) -> String {
        let part = |what: &str, specs: &[String]| match specs {
            [] => None,
            [one] => Some(format!("{what} {one}")),
            many => Some(format!("{what}s {}", many.join(","))),
        };
        [part("pod", &self.pods), part("container", &self.containers)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// What a [`Selection`] resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selected {
    /// The named containers, then those of the named pods, each once.
    pub containers: Vec<Container>,
    /// The pods named, whose new containers join a recording
    /// ([`members::ContainerWatch::follow_pods`]).
    pub pods: Vec<Pod>,
}

/// Resolves a [`Selection`] against the containers running now (listed
/// once).
pub fn resolve_selection(selection: &Selection) -> Result<Selected, ResolveError> {
    resolve_selection_in(selection, &list())
}

/// [`resolve_selection`] against a given list of running containers.
pub fn resolve_selection_in(
    selection: &Selection,
    running: &[Container],
) -> Result<Selected, ResolveError> {
    let mut out = Selected::default();
    if !selection.containers.is_empty() {
        out.containers = resolve_in(&selection.containers, running)?;
    }
    if !selection.pods.is_empty() {
        let (containers, pods) = pods::resolve_pods_in(&selection.pods, running)?;
        for c in containers {
            if !out.containers.iter().any(|o| o.id == c.id) {
                out.containers.push(c);
            }
        }
        out.pods = pods;
    }
    Ok(out)
}

/// [`resolve`] against a given list of running containers.
pub fn resolve_in(specs: &[String], running: &[Container]) -> Result<Vec<Container>, ResolveError> {
    let mut out: Vec<Container> = Vec::new();
    for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if spec.is_empty() {
            return Err(ResolveError::Invalid {
                spec: spec.to_string(),
                reason: "an empty container name",
            });
        }
        let found = resolve_one(spec, running)?;
        if !out.iter().any(|c| c.id == found.id) {
            out.push(found.clone());
        }
    }
    Ok(out)
}

fn resolve_one<'a>(spec: &str, running: &'a [Container]) -> Result<&'a Container, ResolveError> {
    // A name wins over an id prefix (as in podman and docker).
    let named: Vec<&Container> = running.iter().filter(|c| c.name == spec).collect();
    match named[..] {
        [] => {}
        [one] => return Ok(one),
        _ => {
            return Err(ResolveError::Ambiguous {
                spec: spec.to_string(),
                matches: named.into_iter().cloned().collect(),
            })
        }
    }
    let lower = spec.to_ascii_lowercase();
    let is_hex = lower.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        if let Some(c) = running.iter().find(|c| c.id == lower) {
            return Ok(c);
        }
        let matches: Vec<&Container> = running
            .iter()
            .filter(|c| c.id.starts_with(&lower))
            .collect();
        if lower.len() >= MIN_PREFIX {
            match matches.len() {
                0 => {}
                1 => return Ok(matches[0]),
                _ => {
                    return Err(ResolveError::Ambiguous {
                        spec: spec.to_string(),
                        matches: matches.into_iter().cloned().collect(),
                    })
                }
            }
        } else if !matches.is_empty() {
            return Err(ResolveError::Invalid {
                spec: spec.to_string(),
                reason: "an id prefix needs at least 4 hex digits",
            });
        }
    }
    Err(ResolveError::NotFound {
        spec: spec.to_string(),
        running: running.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctr(name: &str, id: &str, runtime: Option<Runtime>, pod: Option<Pod>) -> Container {
        Container {
            id: id.to_string(),
            name: name.to_string(),
            runtime,
            pod,
            cgroup_path: format!("/libpod_parent/libpod-{id}"),
            cgroup_id: None,
            pids: vec![1],
        }
    }

    fn running() -> Vec<Container> {
        vec![
            ctr(
                "web",
                "8dfa34dcb107ce849e02558a65793f4a7d487166c96a1bd538cf6002d80bbf58",
                Some(Runtime::Podman),
                None,
            ),
            ctr(
                "db",
                "88ef0a45f4e1275b591b459cec2387fd1b01287f964391c8676b0d5d3cf58a3f",
                Some(Runtime::Docker),
                Some(Pod {
                    id: "x".into(),
                    name: "shop".into(),
                    namespace: Some("prod".into()),
                }),
            ),
            ctr(
                "88ef",
                "1c290f5070e50914429b48e6249f9a0ea63510015566ce7ebd2201c0b894e1cd",
                None,
                None,
            ),
        ]
    }

    #[test]
    fn resolves_names_ids_and_prefixes() {
        let all = running();
        let names = |specs: &[&str]| -> Vec<String> {
            let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
            resolve_in(&specs, &all)
                .unwrap()
                .into_iter()
                .map(|c| c.name)
                .collect()
        };
        assert_eq!(names(&["web"]), ["web"]);
        assert_eq!(names(&["db,web", "web"]), ["db", "web"]);
        assert_eq!(names(&[&all[0].id]), ["web"]);
        assert_eq!(names(&["8DFA34"]), ["web"]);
        assert_eq!(names(&["1c29"]), ["88ef"]);
        // A name wins over the id prefix it also is.
        assert_eq!(names(&["88ef"]), ["88ef"]);
    }

    #[test]
    fn explains_what_did_not_resolve() {
        let all = running();
        let err = resolve_in(&["nope".to_string()], &all).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ResolveError::NotFound { .. }));
        for line in [
            "web",
            "8dfa34dcb107",
            "podman",
            "db",
            "docker",
            "(pod prod/shop)",
            "unknown",
        ] {
            assert!(msg.contains(line), "{line} missing from:\n{msg}");
        }
        let err = resolve_in(&["nope".to_string()], &[]).unwrap_err();
        assert!(
            err.to_string().contains("sees no running containers"),
            "{err}"
        );

        let err = resolve_in(&["8".to_string()], &all).unwrap_err();
        assert!(err.to_string().contains("at least 4 hex digits"), "{err}");
        let mut two = all.clone();
        two[2].id = format!("8dfa{}", &two[2].id[4..]);
        two[2].name = "other".into();
        let err = resolve_in(&["8dfa".to_string()], &two).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ResolveError::Ambiguous { ref matches, .. } if matches.len() == 2));
        assert!(
            msg.contains("web") && msg.contains("other") && !msg.contains("db "),
            "{msg}"
        );
        assert!(resolve_in(&["web,".to_string()], &all).is_err());

        // Containers no runtime knows are named by their short ids, which
        // two of them can share: that name is ambiguous too.
        let mut twins = all.clone();
        for (c, tail) in twins.iter_mut().zip(["1", "2", "3"]) {
            c.name = "fee100000ac5".into();
            c.id = format!("fee100000ac5{}{tail}", "0".repeat(51));
        }
        let err = resolve_in(&["fee100000ac5".to_string()], &twins[..2]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ResolveError::Ambiguous { ref matches, .. } if matches.len() == 2),
            "{msg}"
        );
        assert!(
            msg.starts_with("container name `fee100000ac5` matches 2"),
            "{msg}"
        );
        assert_eq!(
            resolve_in(&[twins[2].id.clone()], &twins).unwrap()[0].id,
            twins[2].id
        );
    }

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containers")
    }

    /// State roots over the checked-in fixtures, with the real podman
    /// BoltDB unpacked into a temporary graph root.
    fn fixture_roots(graph_root: &Path) -> StateRoots {
        use std::io::Read;
        let mut db = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(fixtures().join("podman-4.3.1-bolt_state.db.gz")).unwrap(),
        )
        .read_to_end(&mut db)
        .unwrap();
        std::fs::create_dir_all(graph_root.join("libpod")).unwrap();
        std::fs::write(graph_root.join(podman::BOLT_STATE), db).unwrap();
        StateRoots {
            storage: storage::StorageConf {
                graph_root: graph_root.to_path_buf(),
                run_root: fixtures().join("crio/run"),
                driver: None,
            },
            docker: fixtures().join("docker"),
            containerd_tasks: fixtures().join("containerd"),
        }
    }

    fn labels(cache: &mut ContainerCache, proc_cgroup: &str) -> (ContainerLabels, Option<Runtime>) {
        let found = cgroup::parse_proc_cgroup(proc_cgroup).container.unwrap();
        let r = cache.resolve_id(&found);
        (ContainerLabels::of(&found.id, &r), r.runtime)
    }

    #[test]
    fn names_containers_from_each_runtime_state() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cache = ContainerCache::with_roots(fixture_roots(tmp.path()));

        let (l, rt) = labels(
            &mut cache,
            &std::fs::read_to_string(fixtures().join("podman-pod-member.cgroup")).unwrap(),
        );
        assert_eq!(rt, Some(Runtime::Podman));
        assert_eq!(
            (l.container.as_str(), l.pod.as_deref()),
            ("fpt3", Some("fppod2"))
        );
        assert_eq!(l.pod_display().as_deref(), Some("fppod2"));

        let (l, rt) = labels(
            &mut cache,
            "0::/system.slice/docker-53ede05dffac31d9d10cae92fbc6a7b1bfa219f526cbb2db097451be3fdbcd11.scope\n",
        );
        assert_eq!(
            (rt, l.container.as_str(), l.pod),
            (Some(Runtime::Docker), "quirky_tail", None)
        );

        // A bare id under kubepods: found in docker's state (dockershim),
        // though containerd (docker's own, namespace `moby`) knows it first.
        let (l, rt) = labels(
            &mut cache,
            "11:memory:/kubepods/besteffort/pod4eede96e-e976-4573-bc90-68dfe2516d3b/c3cd4e0a7993a1c155cc1bdd3326c7b1e260226d0c2c79e3e48dbc360543c768\n",
        );
        assert_eq!(rt, Some(Runtime::Docker));
        assert_eq!(l.container, "nginx");
        assert_eq!(l.pod_display().as_deref(), Some("shop/web-7d4b9c6f5-x2x9k"));

        let (l, rt) = labels(
            &mut cache,
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod4fe556a4_0bd7_45be_966f_46e2cbf4c4ac.slice/cri-containerd-1733e7a76be7ee5c026275bb563de617e1e5723164a1f07903469a320d5a67a4.scope\n",
        );
        assert_eq!(rt, Some(Runtime::Containerd));
        assert_eq!(l.container, "test-pod-9240");
        assert_eq!(l.pod_display().as_deref(), Some("default/test-pod-9240"));

        let (l, rt) = labels(
            &mut cache,
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5c8c71de_9fef_11e7_8181_54ee75105a2b.slice/crio-494b682ff63e3a3fa7702537e8a84ae92b5e945c2276f93cf061a0c4d3095985.scope\n",
        );
        assert_eq!(rt, Some(Runtime::CriO));
        assert_eq!(l.container, "kubedns");
        assert_eq!(
            l.pod_display().as_deref(),
            Some("kube-system/kube-dns-3097350089-49d91")
        );

        // Unknown to every runtime: the short id, the runtime the path names.
        let (l, rt) = labels(&mut cache, &format!("0::/docker/{}\n", "0".repeat(64)));
        assert_eq!(
            (rt, l.container.as_str()),
            (Some(Runtime::Docker), "000000000000")
        );
        // A podman container missing from the database, in a cgroupfs pod:
        // the pod is named by its short id.
        let (l, _) = labels(
            &mut cache,
            &format!(
                "0::/libpod_parent/fc34ea7aea167e23b9b707ed7a8abb892ece7640c2e0254f0595c458b45c6ea4/libpod-{}\n",
                "1".repeat(64)
            ),
        );
        assert_eq!(
            (l.container.as_str(), l.pod.as_deref()),
            ("111111111111", Some("fc34ea7aea16"))
        );
        assert_eq!(cache.by_id.len(), 7);
    }

    #[test]
    fn never_follows_state_out_of_its_directory() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        let docker_id = "53ede05dffac31d9d10cae92fbc6a7b1bfa219f526cbb2db097451be3fdbcd11";
        let ctrd_id = "1733e7a76be7ee5c026275bb563de617e1e5723164a1f07903469a320d5a67a4";
        let crio_id = "494b682ff63e3a3fa7702537e8a84ae92b5e945c2276f93cf061a0c4d3095985";
        // Real state files, placed outside the state directories.
        std::fs::copy(
            fixtures().join(format!("docker/containers/{docker_id}/config.v2.json")),
            outside.path().join("config.v2.json"),
        )
        .unwrap();
        std::fs::create_dir_all(outside.path().join(ctrd_id)).unwrap();
        std::fs::copy(
            fixtures().join(format!("containerd/k8s.io/{ctrd_id}/config.json")),
            outside.path().join(ctrd_id).join("config.json"),
        )
        .unwrap();

        let state = tempfile::tempdir().unwrap();
        let s = state.path();
        // docker: the file is an absolute symlink out.
        std::fs::create_dir_all(s.join("docker/containers").join(docker_id)).unwrap();
        symlink(
            outside.path().join("config.v2.json"),
            s.join("docker/containers")
                .join(docker_id)
                .join("config.v2.json"),
        )
        .unwrap();
        // containerd: the namespace directory is a symlink out.
        std::fs::create_dir_all(s.join("tasks")).unwrap();
        symlink(outside.path(), s.join("tasks/k8s.io")).unwrap();
        // CRI-O: one bundle's config.json is a FIFO (must not block),
        // another's userdata directory a relative symlink climbing out.
        let crio_dir = s.join("run/overlay-containers").join(crio_id);
        std::fs::create_dir_all(crio_dir.join("userdata")).unwrap();
        nix::unistd::mkfifo(
            &crio_dir.join("userdata/config.json"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let climbing_id = "a".repeat(64);
        let climbing = s.join("run/overlay-containers").join(&climbing_id);
        std::fs::create_dir_all(&climbing).unwrap();
        symlink("../../../..", climbing.join("userdata")).unwrap();

        let docker_err = docker::lookup(&s.join("docker"), docker_id).unwrap_err();
        assert!(
            docker_err.to_string().contains("config.v2.json"),
            "{docker_err}"
        );
        let ctrd_err = containerd::lookup(&s.join("tasks"), ctrd_id).unwrap_err();
        assert!(ctrd_err.to_string().contains("outside"), "{ctrd_err}");
        let conf = storage::StorageConf {
            graph_root: s.join("graph"),
            run_root: s.join("run"),
            driver: Some("overlay".into()),
        };
        let crio_err = crio::lookup(&conf, crio_id).unwrap_err();
        assert!(crio_err.to_string().contains("FIFO"), "{crio_err}");
        let climb_err = crio::lookup(&conf, &climbing_id).unwrap_err();
        assert!(climb_err.to_string().contains("outside"), "{climb_err}");

        // The cache falls back to short ids.
        let mut cache = ContainerCache::with_roots(StateRoots {
            storage: conf,
            docker: s.join("docker"),
            containerd_tasks: s.join("tasks"),
        });
        let (l, _) = labels(
            &mut cache,
            &format!("0::/system.slice/docker-{docker_id}.scope\n"),
        );
        assert_eq!(l.container, "53ede05dffac");
        let (l, _) = labels(
            &mut cache,
            &format!("0::/x.slice/cri-containerd-{ctrd_id}.scope\n"),
        );
        assert_eq!((l.container.as_str(), l.pod), ("1733e7a76be7", None));
    }

    #[test]
    fn labels_and_pod_display() {
        let r = Resolved {
            name: "web".into(),
            runtime: Some(Runtime::Containerd),
            pod: Some(Pod {
                id: "uid".into(),
                name: "shop".into(),
                namespace: Some("prod".into()),
            }),
        };
        let l = ContainerLabels::of("abc", &r);
        assert_eq!(l.pod_display().as_deref(), Some("prod/shop"));
        assert_eq!(l.container, "web");
        assert_eq!(l.namespace.as_deref(), Some("prod"));
        let host = ContainerLabels {
            pod: None,
            namespace: None,
            ..l
        };
        assert_eq!(host.pod_display(), None);
    }
}
