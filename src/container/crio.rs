//! CRI-O's state: Kubernetes container, pod and namespace names from the
//! annotations of the container's OCI bundle, which CRI-O keeps in the
//! containers/storage store it shares with podman
//! (`<runroot>/<driver>-containers/<id>/userdata/config.json`, see
//! [`super::storage`]).
//!
//! CRI-O copies the kubelet's labels into the annotations
//! (`io.kubernetes.container.name`, `io.kubernetes.pod.name`,
//! `io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`) and records its
//! own (`io.kubernetes.cri-o.Labels`, a JSON object of the same labels;
//! `io.kubernetes.cri-o.KubeName` and `io.kubernetes.cri-o.Namespace` for
//! the pod; `io.kubernetes.cri-o.SandboxID`): cri-o `pkg/annotations` and
//! `server/container_create_linux.go`. The direct keys are read first.

use std::collections::HashMap;

use super::storage::StorageConf;
use super::{Metadata, Pod, StateError};

/// Name and pod of CRI-O container `id`: `None` when the store has no
/// bundle for it or the bundle is not CRI-O's (podman's carry
/// `io.container.manager: libpod`).
pub fn lookup(conf: &StorageConf, id: &str) -> Result<Option<Metadata>, StateError> {
    let Some(annotations) = conf.bundle_annotations(id)? else {
        return Ok(None);
    };
    Ok(metadata_from_annotations(&annotations))
}

/// What CRI-O's annotations say; `None` for a bundle that is not CRI-O's.
pub fn metadata_from_annotations(a: &HashMap<String, String>) -> Option<Metadata> {
    if a.get("io.container.manager").is_some_and(|m| m == "libpod") {
        return None;
    }
    if !a.keys().any(|k| k.starts_with("io.kubernetes.")) {
        return None;
    }
    let labels: HashMap<String, String> = a
        .get("io.kubernetes.cri-o.Labels")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let get = |direct: &str, fallback: Option<&str>| -> Option<String> {
        a.get(direct)
            .or_else(|| labels.get(direct))
            .or_else(|| fallback.and_then(|f| a.get(f)))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let name = get("io.kubernetes.container.name", None);
    let pod_name = get(
        "io.kubernetes.pod.name",
        Some("io.kubernetes.cri-o.KubeName"),
    );
    let namespace = get(
        "io.kubernetes.pod.namespace",
        Some("io.kubernetes.cri-o.Namespace"),
    );
    let pod_id = get(
        "io.kubernetes.pod.uid",
        Some("io.kubernetes.cri-o.SandboxID"),
    );
    let pod = pod_name.map(|name| Pod {
        id: pod_id.unwrap_or_default(),
        name,
        namespace,
    });
    Some(Metadata { name, pod })
}
