//! Which JIT runtime a process runs, from its mappings: what language its
//! perf-map names are in, and how to get a perf map out of it (the hint of
//! the stack-quality summary when its JIT frames stay unnamed).

use super::hotspot::{self, HotSpot, PERFMAP_SINCE};
use super::names::Language;
use crate::proc::MapEntry;

/// A process's JIT runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    HotSpot(HotSpot),
    /// Node.js (V8).
    Node,
    /// CPython, with its version when the binary's name says it.
    Python {
        version: Option<(u32, u32)>,
    },
    /// No runtime flameprobe knows; a perf map may still exist.
    Unknown,
}

impl Runtime {
    /// Detects the runtime of `pid` from its mappings (reading the Java
    /// version inside its root for a JVM).
    pub fn detect(pid: u32, maps: &[MapEntry]) -> Runtime {
        if let Some(jvm) = hotspot::detect(pid, maps) {
            return Runtime::HotSpot(jvm);
        }
        Self::detect_in_maps(maps)
    }

    /// Detects the runtime from the mappings alone (no Java version).
    pub fn detect_in_maps(maps: &[MapEntry]) -> Runtime {
        if let Some(libjvm) = hotspot::find_libjvm(maps) {
            return Runtime::HotSpot(HotSpot {
                libjvm: libjvm.to_string(),
                version: None,
            });
        }
        let files = || {
            maps.iter()
                .filter(|m| m.is_file())
                .map(|m| m.path.rsplit('/').next().unwrap_or(""))
        };
        if files().any(|b| b == "node" || b == "nodejs" || b.starts_with("libnode.so")) {
            return Runtime::Node;
        }
        let python = files().find_map(|b| {
            let rest = b
                .strip_prefix("libpython")
                .or_else(|| b.strip_prefix("python"))?;
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            // `python3`, `python3.12`, `libpython3.12.so.1.0`, not `python-foo`.
            if !digits.starts_with('3') {
                return None;
            }
            let mut it = digits.split('.').filter(|s| !s.is_empty());
            let major = it.next()?.parse().ok()?;
            Some(
                it.next()
                    .and_then(|m| m.parse().ok())
                    .map(|minor| (major, minor)),
            )
        });
        match python {
            Some(version) => Runtime::Python { version },
            None => Runtime::Unknown,
        }
    }

    /// The language of its perf-map names, for `names::clean`.
    pub fn language(&self) -> Language {
        match self {
            Runtime::HotSpot(_) => Language::Java,
            Runtime::Node => Language::JavaScript,
            Runtime::Python { .. } => Language::Python,
            Runtime::Unknown => Language::Unknown,
        }
    }

    /// How to get a perf map out of this runtime, for a process that has
    /// none; `None` for an unknown runtime.
    pub fn perf_map_hint(&self) -> Option<String> {
        match self {
            Runtime::HotSpot(HotSpot {
                version: Some(v), ..
            }) if v.feature < PERFMAP_SINCE => Some(format!(
                "Java {v} cannot write a perf map (Java {PERFMAP_SINCE}+ can); run it with a perf-map agent"
            )),
            Runtime::HotSpot(_) => Some(
                "flameprobe asks the JVM for its perf map at the end unless --no-jit-attach; \
                 or start it with -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit"
                    .to_string(),
            ),
            Runtime::Node => Some(
                "start node with --perf-basic-prof (or --perf-basic-prof-only-functions, also \
                 in NODE_OPTIONS)"
                    .to_string(),
            ),
            Runtime::Python {
                version: Some((3, minor)),
            } if *minor < 12 => Some(format!(
                "Python 3.{minor} cannot write a perf map (3.12+ can, with -X perf)"
            )),
            Runtime::Python { .. } => {
                Some("start python (3.12+) with -X perf, or set PYTHONPERFSUPPORT=1".to_string())
            }
            Runtime::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::parse_maps;

    fn maps_of(paths: &[&str]) -> Vec<MapEntry> {
        let text: String = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                format!(
                    "7f{i:02x}00000000-7f{i:02x}00001000 r-xp 00000000 fe:01 {} {p}\n",
                    i + 10
                )
            })
            .collect();
        parse_maps(&text)
    }

    #[test]
    fn detects_runtimes_by_their_binaries() {
        let jvm = maps_of(&["/usr/bin/java", "/usr/lib/jvm/x/lib/server/libjvm.so"]);
        assert!(matches!(Runtime::detect_in_maps(&jvm), Runtime::HotSpot(_)));
        assert_eq!(
            Runtime::detect_in_maps(&maps_of(&["/usr/bin/node"])),
            Runtime::Node
        );
        assert_eq!(
            Runtime::detect_in_maps(&maps_of(&["/opt/app/bin/app", "/usr/lib/libnode.so.115"])),
            Runtime::Node
        );
        assert_eq!(
            Runtime::detect_in_maps(&maps_of(&[
                "/root/.pyenv/versions/3.12.1/bin/python3.12",
                "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"
            ])),
            Runtime::Python {
                version: Some((3, 12))
            }
        );
        assert_eq!(
            Runtime::detect_in_maps(&maps_of(&["/usr/bin/python3"])),
            Runtime::Python { version: None }
        );
        assert_eq!(
            Runtime::detect_in_maps(&maps_of(&["/usr/bin/python-config-tool", "/bin/sh"])),
            Runtime::Unknown
        );
    }

    #[test]
    fn hints_name_the_flag_to_use() {
        let py311 = Runtime::Python {
            version: Some((3, 11)),
        };
        assert!(py311.perf_map_hint().unwrap().contains("3.12+"));
        let py312 = Runtime::Python {
            version: Some((3, 12)),
        };
        assert!(py312.perf_map_hint().unwrap().contains("-X perf"));
        assert!(Runtime::Node
            .perf_map_hint()
            .unwrap()
            .contains("--perf-basic-prof"));
        let old = Runtime::HotSpot(HotSpot {
            libjvm: String::new(),
            version: hotspot::parse_release("JAVA_VERSION=\"11.0.2\""),
        });
        assert!(old.perf_map_hint().unwrap().contains("Java 11.0.2 cannot"));
        assert_eq!(Runtime::Unknown.perf_map_hint(), None);
        assert_eq!(Runtime::Node.language(), Language::JavaScript);
    }

    #[test]
    fn detects_this_process_as_no_runtime() {
        let maps = crate::proc::read_maps(std::process::id()).unwrap();
        assert_eq!(Runtime::detect(std::process::id(), &maps), Runtime::Unknown);
    }
}
