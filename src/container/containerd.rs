//! containerd's state: the OCI bundle of each running task,
//! `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`
//! (containerd runtime v2 shim layout). Under Kubernetes (namespace
//! `k8s.io`) the CRI plugin annotates it (containerd
//! `internal/cri/annotations`): `io.kubernetes.cri.container-name`,
//! `io.kubernetes.cri.sandbox-name`, `io.kubernetes.cri.sandbox-namespace`,
//! `io.kubernetes.cri.sandbox-uid` (1.6.12+) and
//! `io.kubernetes.cri.sandbox-id`, and `io.kubernetes.cri.container-type`
//! (`sandbox` for the pod's pause container, which has no container name:
//! it is called `POD`, as cri-dockerd and dockershim call theirs); nerdctl
//! records `nerdctl/name`. Tasks in docker's namespace, `moby`, carry no
//! names: docker's own state names them.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::{Metadata, Pod, StateError};
use crate::safe_fs::{self, SafeOpenError, Scope};

/// containerd's default v2 task state directory.
pub const TASK_ROOT: &str = "/run/containerd/io.containerd.runtime.v2.task";

/// What a pod's sandbox (pause) container is called.
pub const SANDBOX_NAME: &str = "POD";

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
    let sandbox = get("io.kubernetes.cri.container-type").is_some_and(|t| t == "sandbox");
    let name = get("io.kubernetes.cri.container-name")
        .or_else(|| get("nerdctl/name"))
        .or_else(|| sandbox.then(|| SANDBOX_NAME.to_string()));
    let pod = get("io.kubernetes.cri.sandbox-name").map(|name| Pod {
        id: get("io.kubernetes.cri.sandbox-uid")
            .or_else(|| get("io.kubernetes.cri.sandbox-id"))
            .unwrap_or_default(),
        name,
        namespace: get("io.kubernetes.cri.sandbox-namespace"),
    });
    Metadata { name, pod }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cri_containers_and_sandboxes() {
        let pod = [
            ("io.kubernetes.cri.sandbox-id", "08880aef"),
            ("io.kubernetes.cri.sandbox-name", "shop"),
            ("io.kubernetes.cri.sandbox-namespace", "prod"),
            (
                "io.kubernetes.cri.sandbox-uid",
                "4fe556a4-0bd7-45be-966f-46e2cbf4c4ac",
            ),
        ];
        let want_pod = Some(Pod {
            id: "4fe556a4-0bd7-45be-966f-46e2cbf4c4ac".into(),
            name: "shop".into(),
            namespace: Some("prod".into()),
        });
        let mut c = pod.to_vec();
        c.extend([
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.container-name", "cart"),
        ]);
        let m = metadata_from_annotations(&annotations(&c));
        assert_eq!((m.name.as_deref(), &m.pod), (Some("cart"), &want_pod));
        let mut sandbox = pod.to_vec();
        sandbox.push(("io.kubernetes.cri.container-type", "sandbox"));
        let m = metadata_from_annotations(&annotations(&sandbox));
        assert_eq!((m.name.as_deref(), &m.pod), (Some("POD"), &want_pod));
        // Before sandbox-uid (containerd < 1.6.12): the sandbox id.
        let m = metadata_from_annotations(&annotations(&c[..3]));
        assert_eq!(m.pod.map(|p| p.id), Some("08880aef".to_string()));
        // A task docker made: nothing to name it by here.
        assert_eq!(
            metadata_from_annotations(&annotations(&[])),
            Metadata::default()
        );
        let m = metadata_from_annotations(&annotations(&[("nerdctl/name", "web")]));
        assert_eq!((m.name.as_deref(), m.pod), (Some("web"), None));
    }
}
