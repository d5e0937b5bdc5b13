//! The containers/storage layout shared by podman and CRI-O: where
//! `storage.conf` puts the graph root and run root, the per-driver
//! `<driver>-containers/containers.json` (ids and names of the containers in
//! the store) and each container's OCI bundle,
//! `<root>/<driver>-containers/<id>/userdata/config.json`.
//!
//! storage.conf is TOML; flameprobe needs three string keys of its
//! `[storage]` table, so it reads those lines itself (see
//! [`parse_storage_conf`]) rather than pulling in a TOML parser.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{parse_json, read_state_file, StateError};
use crate::safe_fs::{self, Scope};

/// containers/storage's defaults for root (storage.conf(5)).
pub const DEFAULT_GRAPH_ROOT: &str = "/var/lib/containers/storage";
pub const DEFAULT_RUN_ROOT: &str = "/run/containers/storage";
/// storage.conf and JSON state files are small; refuse anything bigger.
const CONF_LIMIT: u64 = 1 << 20;
const CONTAINERS_JSON_LIMIT: u64 = 64 << 20;

/// The store's locations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConf {
    pub graph_root: PathBuf,
    pub run_root: PathBuf,
    /// The graph driver (`overlay`, `vfs`, ...); `None`: not configured,
    /// containers/storage picks one (every `*-containers` directory is read).
    pub driver: Option<String>,
}

impl Default for StorageConf {
    fn default() -> Self {
        StorageConf {
            graph_root: PathBuf::from(DEFAULT_GRAPH_ROOT),
            run_root: PathBuf::from(DEFAULT_RUN_ROOT),
            driver: None,
        }
    }
}

impl StorageConf {
    /// The store a root podman or CRI-O uses here: `$CONTAINERS_STORAGE_CONF`,
    /// else `/etc/containers/storage.conf`, else
    /// `/usr/share/containers/storage.conf`, else the defaults.
    pub fn from_host() -> StorageConf {
        let candidates: Vec<PathBuf> = match std::env::var_os("CONTAINERS_STORAGE_CONF") {
            Some(p) => vec![PathBuf::from(p)],
            None => vec![
                PathBuf::from("/etc/containers/storage.conf"),
                PathBuf::from("/usr/share/containers/storage.conf"),
            ],
        };
        for path in candidates {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            match read_state_file(dir, Path::new(name), CONF_LIMIT) {
                Ok(Some(bytes)) => return parse_storage_conf(&String::from_utf8_lossy(&bytes)),
                Ok(None) => {}
                Err(e) => log::debug!("containers storage configuration: {e}"),
            }
        }
        StorageConf::default()
    }

    /// The `<driver>-containers` directory names to read under a root.
    fn container_dirs(&self, root: &Path) -> Vec<OsString> {
        if let Some(d) = &self.driver {
            return vec![OsString::from(format!("{d}-containers"))];
        }
        let Ok(dir) = safe_fs::open_dir(root) else {
            return Vec::new();
        };
        let mut names: Vec<OsString> =
            safe_fs::list_dir(dir.as_fd(), Path::new("."), Scope::Beneath)
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.to_string_lossy().ends_with("-containers"))
                .collect();
        names.sort();
        names
    }

    /// The OCI annotations of container `id`'s bundle (run root first, where
    /// CRI-O keeps the live bundle, then the graph root); `None` when the
    /// store has no bundle for it.
    pub(crate) fn bundle_annotations(
        &self,
        id: &str,
    ) -> Result<Option<HashMap<String, String>>, StateError> {
        for root in [&self.run_root, &self.graph_root] {
            for dir in self.container_dirs(root) {
                let rel = Path::new(&dir).join(id).join("userdata/config.json");
                if let Some(a) = super::oci::read_annotations(root, &rel)? {
                    return Ok(Some(a));
                }
            }
        }
        Ok(None)
    }

    /// Names of the store's containers by id, from `containers.json` (and
    /// `volatile-containers.json`) of each driver.
    pub fn container_names(&self) -> Result<HashMap<String, String>, StateError> {
        let mut out = HashMap::new();
        for dir in self.container_dirs(&self.graph_root) {
            for file in ["containers.json", "volatile-containers.json"] {
                let rel = Path::new(&dir).join(file);
                if let Some(bytes) = read_state_file(&self.graph_root, &rel, CONTAINERS_JSON_LIMIT)?
                {
                    let path = self.graph_root.join(&rel);
                    out.extend(parse_containers_json(&path, &bytes)?);
                }
            }
        }
        Ok(out)
    }
}

/// Reads the `[storage]` table's `graphroot`, `runroot` and `driver` from
/// storage.conf text; missing keys keep their defaults.
pub fn parse_storage_conf(text: &str) -> StorageConf {
    let mut conf = StorageConf::default();
    let mut in_storage = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('[') {
            in_storage = line == "[storage]";
            continue;
        }
        if !in_storage || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let Some(value) = toml_string(value.trim()) else {
            continue;
        };
        match key.trim() {
            "graphroot" if !value.is_empty() => conf.graph_root = PathBuf::from(value),
            "runroot" if !value.is_empty() => conf.run_root = PathBuf::from(value),
            "driver" if !value.is_empty() => conf.driver = Some(value),
            _ => {}
        }
    }
    conf
}

/// A TOML basic ("...") or literal ('...') string, with a trailing comment.
fn toml_string(v: &str) -> Option<String> {
    let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &v[1..];
    if quote == '\'' {
        return rest.find('\'').map(|end| rest[..end].to_string());
    }
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[derive(Deserialize)]
struct StoreContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
}

/// id -> first name, from a containers/storage `containers.json`.
pub fn parse_containers_json(
    path: &Path,
    bytes: &[u8],
) -> Result<HashMap<String, String>, StateError> {
    let list: Vec<StoreContainer> = parse_json(path, bytes)?;
    Ok(list
        .into_iter()
        .filter_map(|c| Some((c.id, c.names.into_iter().next()?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_roots_from_storage_conf() {
        // Shape of the storage.conf that containers-storage ships
        // (/usr/share/containers/storage.conf in Fedora's package).
        let text = r#"
# This file is the configuration file for all tools
[storage]

# Default Storage Driver, Must be set for proper operation.
driver = "overlay"

# Temporary storage location
runroot = "/run/containers/storage"

# Primary Read/Write location of container storage
graphroot = '/srv/containers/storage' # moved
#graphroot = "/nowhere"

[storage.options]
additionalimagestores = [
]
graphroot = "/not/this/table"
"#;
        let conf = parse_storage_conf(text);
        assert_eq!(conf.graph_root, PathBuf::from("/srv/containers/storage"));
        assert_eq!(conf.run_root, PathBuf::from("/run/containers/storage"));
        assert_eq!(conf.driver.as_deref(), Some("overlay"));
        assert_eq!(parse_storage_conf(""), StorageConf::default());
        assert_eq!(toml_string(r#""a\"b" "#).as_deref(), Some("a\"b"));
        assert_eq!(toml_string("unquoted"), None);
    }

    #[test]
    fn reads_names_from_containers_json() {
        // Trimmed from this machine's podman 4.3.1 store
        // (/var/lib/containers/storage/overlay-containers/containers.json).
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/containers/storage/overlay-containers/containers.json");
        let bytes = std::fs::read(&path).unwrap();
        let names = parse_containers_json(&path, &bytes).unwrap();
        assert_eq!(
            names["8dfa34dcb107ce849e02558a65793f4a7d487166c96a1bd538cf6002d80bbf58"],
            "fpt1"
        );
        assert_eq!(
            names["4221b60c26f1f93d6af08c0d320455d3a527b089f53a95c27a8d8e6ec7a4ca39"],
            "fc34ea7aea16-infra"
        );
        let err = parse_containers_json(&path, b"{\"id\": 1}").unwrap_err();
        assert!(err.to_string().contains("containers.json"), "{err}");
    }
}
