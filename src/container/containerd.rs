//! containerd's state: the OCI bundle of each running task,
//! `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`
//! (containerd runtime v2 shim layout). Under Kubernetes (namespace
//! `k8s.io`) the CRI plugin annotates it (containerd
//! `internal/cri/annotations`): `io.kubernetes.cri.container-name`,
//! `io.kubernetes.cri.sandbox-name`, `io.kubernetes.cri.sandbox-namespace`,
//! `io.kubernetes.cri.sandbox-uid` (1.6.12+) and
//! `io.kubernetes.cri.sandbox-id`; nerdctl records `nerdctl/name`.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::{Metadata, Pod, StateError};
use crate::safe_fs::{self, SafeOpenError, Scope};

/// containerd's default v2 task state directory.
pub const TASK_ROOT: &str = "/run/containerd/io.containerd.runtime.v2.task";

/// Name and pod of containerd task `id`, searched in every namespace;
/// `None` when no namespace has it.
pub fn lookup(task_root: &Path, id: &str) -> Result<Option<Metadata>, StateError> {
    let dir = match safe_fs::open_dir(task_root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Open {
                path: task_root.to_path_buf(),
                source: SafeOpenError::Io(e),
            })
        }
    };
    let mut namespaces =
        safe_fs::list_dir(dir.as_fd(), Path::new("."), Scope::Beneath).map_err(|e| {
            StateError::Open {
                path: task_root.to_path_buf(),
                source: SafeOpenError::Io(e),
            }
        })?;
    namespaces.sort();
    for ns in namespaces {
        let rel: PathBuf = Path::new(&ns).join(id).join("config.json");
        if let Some(a) = super::oci::read_annotations(task_root, &rel)? {
            return Ok(Some(metadata_from_annotations(&a)));
        }
    }
    Ok(None)
}

/// What the CRI plugin's (or nerdctl's) annotations say.
pub fn metadata_from_annotations(a: &HashMap<String, String>) -> Metadata {
    let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
    let name = get("io.kubernetes.cri.container-name").or_else(|| get("nerdctl/name"));
    let pod = get("io.kubernetes.cri.sandbox-name").map(|name| Pod {
        id: get("io.kubernetes.cri.sandbox-uid")
            .or_else(|| get("io.kubernetes.cri.sandbox-id"))
            .unwrap_or_default(),
        name,
        namespace: get("io.kubernetes.cri.sandbox-namespace"),
    });
    Metadata { name, pod }
}
