//! docker's state: `<data-root>/containers/<id>/config.v2.json` (moby
//! `container.Container`, saved by `container.CheckpointTo`): `Name`
//! (`/name`), `State.Running`, `State.Pid`, and `Config.Labels`, which for
//! Kubernetes pods run through dockershim hold `io.kubernetes.container.name`,
//! `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`,
//! `io.kubernetes.pod.uid` (`io.kubernetes.docker.type` is `podsandbox`
//! for the pause container, whose container name label is `POD`). The
//! data root is `data-root` in `/etc/docker/daemon.json`, by default
//! `/var/lib/docker`.
//!
//! cri-dockerd (and dockershim before it) also names the docker container
//! after the Kubernetes one, `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`
//! (`k8s_POD_...` for the sandbox; cri-dockerd `core/naming.go`): where a
//! label is missing, the name says it ([`parse_kubernetes_name`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{parse_json, read_state_file, Metadata, Pod, StateError};

pub const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
const CONFIG_LIMIT: u64 = 16 << 20;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigV2 {
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: Option<Config>,
    #[serde(default)]
    state: Option<State>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Config {
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct State {
    #[serde(default)]
    running: bool,
    #[serde(default)]
    pid: i64,
}

/// One docker container's saved configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerContainer {
    pub metadata: Metadata,
    pub running: bool,
    pub pid: Option<u32>,
}

/// Docker's data root as `/etc/docker/daemon.json` sets it.
pub fn data_root_from_host() -> PathBuf {
    #[derive(Deserialize)]
    struct Daemon {
        #[serde(rename = "data-root")]
        data_root: Option<String>,
    }
    let dir = Path::new("/etc/docker");
    match read_state_file(dir, Path::new("daemon.json"), 1 << 20) {
        Ok(Some(bytes)) => match parse_json::<Daemon>(&dir.join("daemon.json"), &bytes) {
            Ok(Daemon {
                data_root: Some(root),
            }) if !root.is_empty() => return PathBuf::from(root),
            Ok(_) => {}
            Err(e) => log::debug!("{e}"),
        },
        Ok(None) => {}
        Err(e) => log::debug!("{e}"),
    }
    PathBuf::from(DEFAULT_DATA_ROOT)
}

/// Name and pod of docker container `id`; `None` when docker has no such
/// container.
pub fn lookup(data_root: &Path, id: &str) -> Result<Option<Metadata>, StateError> {
    Ok(read(data_root, id)?.map(|c| c.metadata))
}

/// Reads container `id`'s `config.v2.json`, inside `<data_root>/containers`.
pub fn read(data_root: &Path, id: &str) -> Result<Option<DockerContainer>, StateError> {
    let dir = data_root.join("containers");
    let rel = Path::new(id).join("config.v2.json");
    let Some(bytes) = read_state_file(&dir, &rel, CONFIG_LIMIT)? else {
        return Ok(None);
    };
    parse_config_v2(&dir.join(rel), &bytes).map(Some)
}

/// A docker container name as cri-dockerd gives it to a Kubernetes
/// container: `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesName<'a> {
    /// The container's name in the pod spec; `POD` for the sandbox.
    pub container: &'a str,
    pub pod: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub attempt: u32,
}

/// Splits a cri-dockerd container name; `None` for any other name.
/// Kubernetes names never hold `_` (they are DNS labels or subdomains), so
/// the six parts are unambiguous.
pub fn parse_kubernetes_name(name: &str) -> Option<KubernetesName<'_>> {
    let parts: Vec<&str> = name.split('_').collect();
    let ["k8s", container, pod, namespace, uid, attempt] = parts[..] else {
        return None;
    };
    if [container, pod, namespace, uid]
        .iter()
        .any(|p| p.is_empty())
    {
        return None;
    }
    Some(KubernetesName {
        container,
        pod,
        namespace,
        uid,
        attempt: attempt.parse().ok()?,
    })
}

/// Parses a `config.v2.json`.
pub fn parse_config_v2(path: &Path, bytes: &[u8]) -> Result<DockerContainer, StateError> {
    let c: ConfigV2 = parse_json(path, bytes)?;
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let plain_name = Some(c.name.trim_start_matches('/').to_string()).filter(|n| !n.is_empty());
    let kube = plain_name.as_deref().and_then(parse_kubernetes_name);
    let name = label("io.kubernetes.container.name")
        .or_else(|| kube.as_ref().map(|k| k.container.to_string()))
        .or(plain_name.clone());
    let pod = label("io.kubernetes.pod.name")
        .or_else(|| kube.as_ref().map(|k| k.pod.to_string()))
        .map(|name| Pod {
            id: label("io.kubernetes.pod.uid")
                .or_else(|| kube.as_ref().map(|k| k.uid.to_string()))
                .unwrap_or_default(),
            name,
            namespace: label("io.kubernetes.pod.namespace")
                .or_else(|| kube.as_ref().map(|k| k.namespace.to_string())),
        });
    let state = c.state.unwrap_or_default();
    Ok(DockerContainer {
        metadata: Metadata { name, pod },
        running: state.running,
        pid: u32::try_from(state.pid).ok().filter(|&p| p > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "4eede96e-e976-4573-bc90-68dfe2516d3b";

    fn config(name: &str, labels: &[(&str, &str)]) -> DockerContainer {
        let labels: HashMap<&str, &str> = labels.iter().copied().collect();
        let json = serde_json::json!({
            "Name": name,
            "Config": {"Labels": labels},
            "State": {"Running": true, "Pid": 4242},
        });
        parse_config_v2(Path::new("config.v2.json"), json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn splits_cri_dockerd_names() {
        let name = format!("k8s_nginx_web-7d4b9c6f5-x2x9k_shop_{UID}_3");
        let k = parse_kubernetes_name(&name).unwrap();
        assert_eq!(
            k,
            KubernetesName {
                container: "nginx",
                pod: "web-7d4b9c6f5-x2x9k",
                namespace: "shop",
                uid: UID,
                attempt: 3
            }
        );
        assert_eq!(
            parse_kubernetes_name(&format!("k8s_POD_web_shop_{UID}_0")).map(|k| k.container),
            Some("POD")
        );
        for other in [
            "quirky_tail",
            "k8s_nginx_web_shop_uid",
            "k8s_nginx_web_shop_uid_x",
            "k8s__web_shop_uid_0",
            "k8s_a_b_c_d_0_extra",
            "web",
        ] {
            assert_eq!(parse_kubernetes_name(other), None, "{other}");
        }
    }

    #[test]
    fn kubernetes_names_from_labels_or_the_container_name() {
        // cri-dockerd sets both; the labels win.
        let both = config(
            &format!("/k8s_web_shop_prod_{UID}_0"),
            &[
                ("io.kubernetes.container.name", "web"),
                ("io.kubernetes.pod.name", "shop"),
                ("io.kubernetes.pod.namespace", "prod"),
                ("io.kubernetes.pod.uid", UID),
            ],
        );
        let want = Metadata {
            name: Some("web".into()),
            pod: Some(Pod {
                id: UID.into(),
                name: "shop".into(),
                namespace: Some("prod".into()),
            }),
        };
        assert_eq!(both.metadata, want);
        assert_eq!((both.running, both.pid), (true, Some(4242)));
        // The name alone (labels stripped, or an old dockershim container).
        assert_eq!(
            config(&format!("/k8s_web_shop_prod_{UID}_0"), &[]).metadata,
            want
        );
        // A label overrides its part of the name only.
        let relabelled = config(
            &format!("/k8s_web_shop_prod_{UID}_0"),
            &[("io.kubernetes.container.name", "api")],
        );
        assert_eq!(relabelled.metadata.name.as_deref(), Some("api"));
        assert_eq!(relabelled.metadata.pod, want.pod);
        // A plain docker container.
        assert_eq!(
            config("/quirky_tail", &[]).metadata,
            Metadata {
                name: Some("quirky_tail".into()),
                pod: None
            }
        );
    }
}
