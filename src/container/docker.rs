//! docker's state: `<data-root>/containers/<id>/config.v2.json` (moby
//! `container.Container`, saved by `container.CheckpointTo`): `Name`
//! (`/name`), `State.Running`, `State.Pid`, and `Config.Labels`, which for
//! Kubernetes pods run through dockershim hold `io.kubernetes.container.name`,
//! `io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`,
//! `io.kubernetes.pod.uid` (`io.kubernetes.docker.type` is `podsandbox`
//! for the pause container). The data root is `data-root` in
//! `/etc/docker/daemon.json`, by default `/var/lib/docker`.

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

/// Parses a `config.v2.json`.
pub fn parse_config_v2(path: &Path, bytes: &[u8]) -> Result<DockerContainer, StateError> {
    let c: ConfigV2 = parse_json(path, bytes)?;
    let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
    let plain_name = Some(c.name.trim_start_matches('/').to_string()).filter(|n| !n.is_empty());
    let name = label("io.kubernetes.container.name").or(plain_name);
    let pod = label("io.kubernetes.pod.name").map(|name| Pod {
        id: label("io.kubernetes.pod.uid").unwrap_or_default(),
        name,
        namespace: label("io.kubernetes.pod.namespace"),
    });
    let state = c.state.unwrap_or_default();
    Ok(DockerContainer {
        metadata: Metadata { name, pod },
        running: state.running,
        pid: u32::try_from(state.pid).ok().filter(|&p| p > 0),
    })
}
