//! The one part of an OCI bundle's `config.json` (runtime-spec
//! `config.md`) flameprobe reads: its `annotations`, where the CRI
//! runtimes record Kubernetes container, pod and namespace names.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{parse_json, read_state_file, StateError};

/// Bundles hold the whole spec (mounts, seccomp profile): a few hundred
/// KiB at most in practice.
const CONFIG_LIMIT: u64 = 16 << 20;

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// The annotations of the bundle config `rel` below `dir` (which the path
/// must not leave); `None` when there is no such file.
pub(crate) fn read_annotations(
    dir: &Path,
    rel: &Path,
) -> Result<Option<HashMap<String, String>>, StateError> {
    let Some(bytes) = read_state_file(dir, rel, CONFIG_LIMIT)? else {
        return Ok(None);
    };
    parse_annotations(&dir.join(rel), &bytes).map(Some)
}

/// The annotations of a `config.json`'s bytes.
pub(crate) fn parse_annotations(
    path: &Path,
    bytes: &[u8],
) -> Result<HashMap<String, String>, StateError> {
    parse_json::<Spec>(path, bytes).map(|s| s.annotations)
}
