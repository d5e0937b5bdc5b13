//! podman's state: container names, pods and pod names, from libpod's
//! database under the storage graph root.
//!
//! podman 4.x (Debian 12 ships 4.3.1) keeps it in BoltDB,
//! `<graphroot>/libpod/bolt_state.db` (libpod `boltdb_state.go`,
//! `boltdb_state_internal.go`): top-level buckets `all-ctrs` (container id
//! -> name), `allPods` (pod id -> name) and `ctr`, with a bucket per
//! container id holding `config` (JSON), `state` (JSON: `state`, the
//! `define.ContainerStatus` number, 3 = running; `pid`) and, for pod
//! members, `pod-id`. podman writes it under an exclusive `flock`; we read
//! it under a shared one, as bbolt's read-only opens do.
//!
//! Newer podman (5.x) uses SQLite, `<graphroot>/db.sql`, in WAL mode. That
//! is not read: container names then come from the containers/storage
//! store (`containers.json`, the same names podman shows), and a pod is
//! named by its short id, from the container's cgroup path.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::boltdb::{BoltDb, BoltError, Value};
use super::storage::StorageConf;
use super::{Metadata, Pod, StateError};
use crate::safe_fs::{self, SafeOpenError, Scope};

/// Where the BoltDB state is, relative to the graph root.
pub const BOLT_STATE: &str = "libpod/bolt_state.db";
/// Where newer podman's SQLite state is, relative to the graph root.
pub const SQLITE_STATE: &str = "db.sql";
/// A state file with thousands of containers is a few MiB.
const STATE_LIMIT: u64 = 256 << 20;
/// How long to wait for podman to finish a write transaction.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// `define.ContainerStateRunning` in libpod.
pub const STATUS_RUNNING: u32 = 3;

/// One container as libpod's database records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodmanContainer {
    pub id: String,
    pub name: String,
    pub pod_id: Option<String>,
    pub pod_name: Option<String>,
    /// libpod's `ContainerStatus` (1 configured, 2 created, 3 running,
    /// 4 stopped, 5 paused, 6 exited, ...), when the state was readable.
    pub status: Option<u32>,
    /// Host pid of the container's init process while it runs.
    pub pid: Option<u32>,
}

/// podman's containers, read once.
#[derive(Debug, Default)]
pub struct PodmanState {
    containers: HashMap<String, PodmanContainer>,
}

#[derive(Deserialize)]
struct StateJson {
    #[serde(default)]
    state: Option<u32>,
    #[serde(default)]
    pid: Option<i64>,
}

impl PodmanState {
    /// Reads the state of the podman whose store `conf` describes.
    pub fn load(conf: &StorageConf) -> Result<PodmanState, StateError> {
        let root = &conf.graph_root;
        match read_bolt(root)? {
            Some(bytes) => {
                let db = BoltDb::new(bytes).map_err(|source| StateError::Bolt {
                    path: root.join(BOLT_STATE),
                    source,
                })?;
                PodmanState::from_bolt(&db).map_err(|source| StateError::Bolt {
                    path: root.join(BOLT_STATE),
                    source,
                })
            }
            None => {
                if root.join(SQLITE_STATE).exists() {
                    log::info!(
                        "podman's SQLite state ({}) is not read: container names come from \
                         containers/storage, pods are shown by their short id",
                        root.join(SQLITE_STATE).display()
                    );
                }
                let names = conf.container_names()?;
                Ok(PodmanState {
                    containers: names
                        .into_iter()
                        .map(|(id, name)| {
                            let c = PodmanContainer {
                                id: id.clone(),
                                name,
                                pod_id: None,
                                pod_name: None,
                                status: None,
                                pid: None,
                            };
                            (id, c)
                        })
                        .collect(),
                })
            }
        }
    }

    /// The containers in libpod's BoltDB.
    pub fn from_bolt(db: &BoltDb) -> Result<PodmanState, BoltError> {
        let root = db.root();
        let names = string_map(root.bucket(b"all-ctrs")?)?;
        let pod_names = string_map(root.bucket(b"allPods")?)?;
        let ctrs = root.bucket(b"ctr")?;
        let mut containers = HashMap::new();
        for (id, name) in names {
            let bucket = match &ctrs {
                Some(b) => b.bucket(id.as_bytes())?,
                None => None,
            };
            let (mut pod_id, mut status, mut pid) = (None, None, None);
            if let Some(b) = bucket {
                pod_id = b
                    .get(b"pod-id")?
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .filter(|s| !s.is_empty());
                if let Some(state) = b.get(b"state")? {
                    if let Ok(s) = serde_json::from_slice::<StateJson>(state) {
                        status = s.state;
                        pid = s.pid.and_then(|p| u32::try_from(p).ok()).filter(|&p| p > 0);
                    }
                }
            }
            let pod_name = pod_id.as_ref().and_then(|p| pod_names.get(p).cloned());
            containers.insert(
                id.clone(),
                PodmanContainer {
                    id,
                    name,
                    pod_id,
                    pod_name,
                    status,
                    pid,
                },
            );
        }
        Ok(PodmanState { containers })
    }

    /// The container with this full id.
    pub fn get(&self, id: &str) -> Option<&PodmanContainer> {
        self.containers.get(id)
    }

    /// Every container podman knows, running or not.
    pub fn containers(&self) -> impl Iterator<Item = &PodmanContainer> {
        self.containers.values()
    }

    /// Name and pod of container `id`, if podman knows it.
    pub fn metadata(&self, id: &str) -> Option<Metadata> {
        let c = self.containers.get(id)?;
        let pod = c.pod_id.as_ref().map(|pid| Pod {
            id: pid.clone(),
            name: c
                .pod_name
                .clone()
                .unwrap_or_else(|| super::short_id(pid).to_string()),
            namespace: None,
        });
        Some(Metadata {
            name: Some(c.name.clone()),
            pod,
        })
    }
}

/// A bucket of string keys and values (`all-ctrs`, `allPods`).
fn string_map(
    bucket: Option<super::boltdb::Bucket<'_>>,
) -> Result<HashMap<String, String>, BoltError> {
    let Some(b) = bucket else {
        return Ok(HashMap::new());
    };
    Ok(b.entries()?
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::Data(d) => Some((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(d).into_owned(),
            )),
            Value::Bucket(_) => None,
        })
        .collect())
}

/// The bytes of the BoltDB state under a shared lock; `None` if absent.
fn read_bolt(graph_root: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let path = graph_root.join(BOLT_STATE);
    let err = |source: SafeOpenError| StateError::Open {
        path: path.clone(),
        source,
    };
    let dir = match safe_fs::open_dir(graph_root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(SafeOpenError::Io(e))),
    };
    let mut file = match safe_fs::open_file(dir.as_fd(), Path::new(BOLT_STATE), Scope::Beneath) {
        Ok(f) => f,
        Err(SafeOpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let start = Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own; released when it closes.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err(SafeOpenError::Io(e)));
        }
        if start.elapsed() > LOCK_WAIT {
            return Err(StateError::Locked {
                path,
                waited_ms: LOCK_WAIT.as_millis() as u64,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    safe_fs::read_limited(&mut file, STATE_LIMIT)
        .map(Some)
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// libpod's database from this machine's podman 4.3.1 (runc, cgroupfs),
    /// after `podman run -d --name fpt1 ...`, a pod without infra `fppod1`
    /// with `fpt2`, a pod `fppod2` (infra `fc34ea7aea16-infra`) with
    /// `fpt3`, `podman create --name fpt-created` and `podman run --name
    /// fpt-exited ... sh -c 'exit 0'`: the real file, gzipped.
    fn fixture_db() -> BoltDb {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/containers/podman-4.3.1-bolt_state.db.gz");
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        BoltDb::new(bytes).unwrap()
    }

    fn by_name<'a>(s: &'a PodmanState, name: &str) -> &'a PodmanContainer {
        s.containers()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} not in the state"))
    }

    #[test]
    fn reads_containers_and_pods_from_real_boltdb_state() {
        let state = PodmanState::from_bolt(&fixture_db()).unwrap();
        assert_eq!(state.containers().count(), 6);

        let fpt1 = by_name(&state, "fpt1");
        assert_eq!(
            fpt1.id,
            "8dfa34dcb107ce849e02558a65793f4a7d487166c96a1bd538cf6002d80bbf58"
        );
        assert_eq!((fpt1.status, fpt1.pid), (Some(STATUS_RUNNING), Some(12920)));
        assert_eq!(fpt1.pod_id, None);
        assert_eq!(
            state.metadata(&fpt1.id),
            Some(Metadata {
                name: Some("fpt1".into()),
                pod: None
            })
        );

        let fpt3 = by_name(&state, "fpt3");
        assert_eq!(fpt3.pod_name.as_deref(), Some("fppod2"));
        assert_eq!(
            fpt3.pod_id.as_deref(),
            Some("fc34ea7aea167e23b9b707ed7a8abb892ece7640c2e0254f0595c458b45c6ea4")
        );
        let infra = by_name(&state, "fc34ea7aea16-infra");
        assert_eq!(infra.pod_name.as_deref(), Some("fppod2"));
        let fpt2 = by_name(&state, "fpt2");
        assert_eq!(fpt2.pod_name.as_deref(), Some("fppod1"));
        let pod = state.metadata(&fpt2.id).unwrap().pod.unwrap();
        assert_eq!((pod.name.as_str(), pod.namespace), ("fppod1", None));

        // Not running: `podman create` leaves it configured (1; podman ps
        // says "Created"), exited (6), without a pid.
        let created = by_name(&state, "fpt-created");
        assert_eq!((created.status, created.pid), (Some(1), None));
        let exited = by_name(&state, "fpt-exited");
        assert_eq!((exited.status, exited.pid), (Some(6), None));
        assert!(state.metadata(&"0".repeat(64)).is_none());
    }

    #[test]
    fn falls_back_to_the_store_without_boltdb() {
        let dir = tempfile::tempdir().unwrap();
        let store = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containers/storage");
        std::fs::create_dir(dir.path().join("overlay-containers")).unwrap();
        std::fs::copy(
            store.join("overlay-containers/containers.json"),
            dir.path().join("overlay-containers/containers.json"),
        )
        .unwrap();
        std::fs::write(dir.path().join(SQLITE_STATE), b"SQLite format 3\0").unwrap();
        let conf = StorageConf {
            graph_root: dir.path().to_path_buf(),
            run_root: dir.path().join("run"),
            driver: None,
        };
        let state = PodmanState::load(&conf).unwrap();
        let meta = state
            .metadata("1c290f5070e50914429b48e6249f9a0ea63510015566ce7ebd2201c0b894e1cd")
            .unwrap();
        assert_eq!(meta.name.as_deref(), Some("fpt3"));

        // A bolt_state.db that is a symlink out of the store is refused.
        std::fs::create_dir(dir.path().join("libpod")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(BOLT_STATE)).unwrap();
        let err = PodmanState::load(&conf).unwrap_err();
        assert!(matches!(err, StateError::Open { .. }), "{err}");
    }
}
