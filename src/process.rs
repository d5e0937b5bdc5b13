//! Snapshots of the processes seen during a recording: their memory maps and
//! open handles on every mapped binary, and who they are (the labels their
//! stacks carry).
//!
//! A process is snapshotted the first time one of its samples arrives, and
//! its binaries are opened then (through `/proc/PID/map_files` or
//! `/proc/PID/root`, so binaries inside containers and deleted files work).
//! Unwinding and symbolization read these snapshots only, so a process that
//! exits during the recording still unwinds and symbolizes. Binaries are
//! shared between processes by (device, inode): each file is opened and
//! parsed once per run.
//!
//! The container a process runs in is looked up at that first sight too
//! (one runtime lookup per container id, [`ContainerCache`]) and kept for
//! the rest of the recording, also once the process is gone;
//! [`ProcessTable::labels`] is the one place that builds a stack's
//! [`Labels`].

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crate::container::{ContainerCache, ContainerLabels};
use crate::proc::{self, MapEntry};
use crate::profile::Labels;

/// Identifies a binary on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

impl FileKey {
    /// The key of a mapping, as `/proc/PID/maps` shows it (`major:minor`
    /// in hex, inode).
    pub fn of_map_entry(entry: &MapEntry) -> FileKey {
        FileKey {
            dev: encode_dev(entry.dev_major, entry.dev_minor),
            inode: entry.inode,
        }
    }

    /// The key of an opened file, encoded as for a mapping so the two can be
    /// compared (is this the file the process mapped?).
    pub fn of_metadata(m: &std::fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        let dev = m.dev();
        FileKey {
            dev: encode_dev(libc::major(dev), libc::minor(dev)),
            inode: m.ino(),
        }
    }
}

/// The one encoding of a device number in a [`FileKey`].
fn encode_dev(major: u32, minor: u32) -> u64 {
    (u64::from(major) << 8) | u64::from(minor)
}

/// An opened binary, shared by every process that maps it.
#[derive(Debug)]
pub struct ModuleFile {
    pub key: FileKey,
    /// Path as the process sees it (inside its mount namespace).
    pub path: String,
    /// Our open handle; `fd_path()` names it for libraries that want a path.
    pub file: File,
}

impl ModuleFile {
    /// A path that reaches this exact file for as long as flameprobe runs.
    pub fn fd_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// File name without directories, for `module+0xoffset` names.
    pub fn base_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// One mapping of a process, with its binary when file backed.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub entry: MapEntry,
    pub module: Option<Arc<ModuleFile>>,
}

impl Mapping {
    /// File offset of `addr` (which must lie in this mapping).
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.entry.start + self.entry.offset
    }
}

/// What flameprobe knows about one process.
#[derive(Debug, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub name: String,
    /// The pid inside the process's own pid namespace.
    pub ns_pid: u32,
    pub mappings: Vec<Mapping>,
    /// Maps could not be read (process gone before we looked).
    pub unavailable: bool,
    /// Distinct for every snapshot taken (changes when maps are re-read).
    pub version: u64,
    /// The container the process ran in when first seen (`None`: a host
    /// process, or one whose cgroup could not be read).
    pub container: Option<ContainerLabels>,
}

impl ProcessInfo {
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        // Mappings are sorted by address (as /proc lists them).
        let i = self.mappings.partition_point(|m| m.entry.end <= addr);
        self.mappings.get(i).filter(|m| m.entry.contains(addr))
    }
}

/// All processes seen so far and every binary opened for them.
#[derive(Default)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcessInfo>,
    files: HashMap<FileKey, Arc<ModuleFile>>,
    /// Counter for `ProcessInfo::version`.
    snapshots: u64,
    /// Container lookups, created at the first process seen.
    containers: Option<ContainerCache>,
}

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The snapshot of `pid`, taken now if this is the first sight of it.
    pub fn get(&mut self, pid: u32) -> &ProcessInfo {
        if !self.procs.contains_key(&pid) {
            let mut info = self.snapshot(pid);
            info.container = self.container_of(pid);
            self.procs.insert(pid, info);
        }
        &self.procs[&pid]
    }

    /// The labels of a stack seen in thread `tid` of process `pid`, named
    /// `process` and `thread` by the probe: these plus the container labels
    /// the process had at first sight (taken now if this is it). pid 0 (the
    /// idle task, kernel context) has no process to look up.
    pub fn labels(
        &mut self,
        pid: u32,
        tid: Option<u32>,
        process: String,
        thread: Option<String>,
    ) -> Labels {
        let container = if pid == 0 {
            None
        } else {
            self.get(pid).container.as_ref()
        };
        let (container, container_id, pod, namespace) = match container {
            Some(c) => (
                Some(c.container.clone()),
                Some(c.container_id.clone()),
                c.pod.clone(),
                c.namespace.clone(),
            ),
            None => (None, None, None, None),
        };
        Labels {
            pid: Some(pid),
            tid,
            process: Some(process),
            thread,
            container,
            container_id,
            pod,
            namespace,
        }
    }

    /// The container labels of `pid` from its cgroup now.
    fn container_of(&mut self, pid: u32) -> Option<ContainerLabels> {
        self.containers
            .get_or_insert_with(ContainerCache::new)
            .labels_of(pid)
    }

    /// The mapping holding `addr` in `pid`; re-reads the maps once when the
    /// address is not in the snapshot (a library loaded since).
    pub fn find(&mut self, pid: u32, addr: u64) -> Option<&Mapping> {
        let known = self.get(pid).find(addr).is_some();
        if !known && proc::process_alive(pid) {
            self.refresh(pid);
        }
        self.procs.get(&pid).and_then(|p| p.find(addr))
    }

    /// Re-reads the maps of `pid` (a library loaded, an exec); keeps the
    /// previous snapshot when the process can no longer be read, and the
    /// container labels of the first sight in any case.
    pub fn refresh(&mut self, pid: u32) -> &ProcessInfo {
        let mut info = self.snapshot(pid);
        if let Some(old) = self.procs.get_mut(&pid) {
            if !info.unavailable {
                info.container = old.container.take();
                *old = info;
            }
        } else {
            info.container = self.container_of(pid);
            self.procs.insert(pid, info);
        }
        &self.procs[&pid]
    }

    /// Every known process (including those that have exited since).
    pub fn processes(&self) -> impl Iterator<Item = &ProcessInfo> {
        self.procs.values()
    }

    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.procs.get(&pid)
    }

    /// Installs a snapshot from maps read elsewhere (e.g. saved with a
    /// captured sample), opening each binary by its path.
    pub fn adopt(&mut self, pid: u32, name: &str, entries: Vec<MapEntry>) {
        let mut mappings = Vec::with_capacity(entries.len());
        for entry in entries {
            let module = entry
                .is_file()
                .then(|| self.open_file(&entry, &[std::path::PathBuf::from(&entry.path)]))
                .flatten();
            mappings.push(Mapping { entry, module });
        }
        self.snapshots += 1;
        let info = ProcessInfo {
            pid,
            name: name.to_string(),
            ns_pid: pid,
            mappings,
            unavailable: false,
            version: self.snapshots,
            container: None,
        };
        self.procs.insert(pid, info);
    }

    fn snapshot(&mut self, pid: u32) -> ProcessInfo {
        self.snapshots += 1;
        let version = self.snapshots;
        let status = proc::read_status(pid).ok();
        let entries = match proc::read_maps(pid) {
            Ok(e) => e,
            Err(_) => {
                return ProcessInfo {
                    pid,
                    name: status.map(|s| s.name).unwrap_or_default(),
                    unavailable: true,
                    version,
                    ..ProcessInfo::default()
                }
            }
        };
        let mut mappings = Vec::with_capacity(entries.len());
        for entry in entries {
            let module = if entry.is_file() {
                self.open_module(pid, &entry)
            } else {
                None
            };
            mappings.push(Mapping { entry, module });
        }
        let ns_pid = status
            .as_ref()
            .and_then(|s| s.nspid.last().copied())
            .unwrap_or(pid);
        ProcessInfo {
            pid,
            name: status.map(|s| s.name).unwrap_or_default(),
            ns_pid,
            mappings,
            unavailable: false,
            version,
            container: None,
        }
    }

    fn open_module(&mut self, pid: u32, entry: &MapEntry) -> Option<Arc<ModuleFile>> {
        // map_files reaches the exact mapped file (even deleted or in another
        // mount namespace); the root path is the fallback.
        let candidates = [
            proc::proc_path(pid, &format!("map_files/{:x}-{:x}", entry.start, entry.end)),
            proc::proc_path(pid, "root").join(entry.path.trim_start_matches('/')),
        ];
        self.open_file(entry, &candidates)
    }

    fn open_file(&mut self, entry: &MapEntry, candidates: &[PathBuf]) -> Option<Arc<ModuleFile>> {
        let key = FileKey::of_map_entry(entry);
        if let Some(f) = self.files.get(&key) {
            return Some(f.clone());
        }
        let file = candidates.iter().find_map(|p| File::open(p).ok())?;
        let module = Arc::new(ModuleFile {
            key,
            path: entry.path.clone(),
            file,
        });
        self.files.insert(key, module.clone());
        Some(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_own_process_and_finds_code() {
        let mut table = ProcessTable::new();
        let pid = std::process::id();
        let addr = snapshots_own_process_and_finds_code as fn() as usize as u64;
        let mapping = table.find(pid, addr).expect("own code is mapped").clone();
        assert!(mapping.entry.executable);
        let module = mapping.module.clone().expect("test binary is file backed");
        assert!(std::fs::metadata(module.fd_path()).is_ok());
        assert!(mapping.file_offset(addr) < std::fs::metadata(module.fd_path()).unwrap().len());
        let info = table.process(pid).unwrap();
        assert!(!info.name.is_empty());
        assert_eq!(info.ns_pid, pid);
    }

    #[test]
    fn labels_keep_the_container_of_first_sight() {
        let mut table = ProcessTable::new();
        let me = std::process::id();
        // This process's container (none on a host), as the cache reads it.
        let l = table.labels(me, Some(me), "t".into(), None);
        let mine = ContainerCache::new().labels_of(me);
        assert_eq!(
            l.container_id,
            mine.as_ref().map(|c| c.container_id.clone())
        );
        assert_eq!((l.pid, l.process.as_deref()), (Some(me), Some("t")));

        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id();
        table.get(pid);
        // As if its first sight had found it in a pod.
        let seen = ContainerLabels {
            container: "web".into(),
            container_id: "ab".repeat(32),
            pod: Some("shop".into()),
            namespace: Some("prod".into()),
        };
        table.procs.get_mut(&pid).unwrap().container = Some(seen.clone());
        // Kept when its maps are read again, and once it has exited.
        table.refresh(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        table.refresh(pid);
        let l = table.labels(pid, None, "sleep".into(), None);
        assert_eq!(
            (l.container, l.container_id, l.pod, l.namespace),
            (
                Some(seen.container),
                Some(seen.container_id),
                seen.pod,
                seen.namespace
            )
        );
        // pid 0 (kernel context) is never looked up.
        assert_eq!(
            table.labels(0, None, "swapper".into(), None).container,
            None
        );
        assert!(table.process(0).is_none());
    }

    #[test]
    fn vanished_process_is_unavailable() {
        let mut table = ProcessTable::new();
        assert!(table.get(u32::MAX - 3).unavailable);
    }
}
