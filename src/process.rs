//! Snapshots of the processes seen during a recording: their memory maps and
//! open handles on every mapped binary, and who they are (the labels their
//! stacks carry).
//!
//! A process is snapshotted the first time one of its samples arrives, and
//! its binaries are opened then (through `/proc/PID/map_files` or
//! `/proc/PID/root`, so binaries inside containers and deleted files work).
//! What is opened is checked to be the file the process mapped (see
//! [`open_mapped`]): the process's root is controlled by whoever controls
//! the process, who may have planted something else at the path since.
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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::container::{ContainerCache, ContainerLabels};
use crate::proc::{self, MapEntry};
use crate::profile::Labels;
use crate::safe_fs::{self, SafeOpenError};

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
        fd_path(&self.file)
    }

    /// File name without directories, for `module+0xoffset` names.
    pub fn base_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A path that reaches an open file of ours for as long as it is open.
pub fn fd_path(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
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

/// What the kernel reports about processes' executable mappings as they
/// happen (perf's mmap, fork and exec records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapEvent {
    /// Process `pid` mapped part of a file executable.
    Mmap { pid: u32, entry: MapEntry },
    /// Process `pid` was forked from `ppid` (a copy of its maps).
    Fork { pid: u32, ppid: u32 },
    /// Process `pid` exec'd a new program (its maps start over).
    Exec { pid: u32 },
}

/// Where [`MapEvent`]s come from (the kernel's perf records, in
/// `probe::mmaps`).
pub trait MapEventSource {
    /// Hands every event since the last call to `f`; returns how many the
    /// source lost.
    fn drain(&mut self, f: &mut dyn FnMut(MapEvent)) -> u64;
}

/// Most processes whose mappings are kept from events.
const MAX_LOGGED: usize = 100_000;

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
    /// Binaries that could not be opened (said once in the log).
    unopened: HashSet<FileKey>,
    /// The executable mappings of processes as the kernel reported them
    /// ([`MapEvent`]s), for processes gone before their maps were read.
    logged: HashMap<u32, Vec<MapEntry>>,
    /// The parent of each process forked during the recording: a process
    /// that is gone is looked at through its nearest live ancestor (same
    /// root, same container, as good as always).
    parents: HashMap<u32, u32>,
    events: Option<Box<dyn MapEventSource>>,
    /// Events the source lost.
    pub events_lost: u64,
    /// Binaries not opened because flameprobe ran out of descriptors.
    pub fds_exhausted: u64,
    /// Counter for `ProcessInfo::version`.
    snapshots: u64,
    /// Container lookups, created at the first process seen.
    containers: Option<ContainerCache>,
    /// Processes found gone at the last [`forget_gone`](Self::forget_gone).
    gone: HashSet<u32>,
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

    /// The nearest ancestor of `pid` (itself excluded) that is still
    /// running, from the fork records of the recording.
    fn live_ancestor(&self, pid: u32) -> Option<u32> {
        let mut at = pid;
        for _ in 0..16 {
            at = *self.parents.get(&at)?;
            if proc::process_alive(at) {
                return Some(at);
            }
        }
        None
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

    /// The container labels of `pid` from its cgroup now; for a process
    /// already gone, those of its nearest live ancestor (a process stays
    /// in the container it was started in).
    fn container_of(&mut self, pid: u32) -> Option<ContainerLabels> {
        let ancestor = self.live_ancestor(pid);
        let cache = self.containers.get_or_insert_with(ContainerCache::new);
        match cache.try_labels_of(pid) {
            Some(labels) => labels,
            None => ancestor.and_then(|a| cache.labels_of(a)),
        }
    }

    /// The mapping holding `addr` in `pid`; re-reads the maps once when the
    /// address is not in the snapshot (a library loaded since).
    pub fn find(&mut self, pid: u32, addr: u64) -> Option<&Mapping> {
        let known = self.get(pid).find(addr).is_some();
        if !known {
            if proc::process_alive(pid) {
                self.refresh(pid);
            } else {
                // Its records since the last sync may say more (an exec; a
                // fork that reused the pid drops the old snapshot).
                self.sync();
                self.get(pid);
            }
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
    /// captured sample), opening each binary by its path in our own root
    /// (non-blocking, regular files only). Device and inode are those of the
    /// machine the maps were saved on, so they are not compared.
    pub fn adopt(&mut self, pid: u32, name: &str, entries: Vec<MapEntry>) {
        let mut mappings = Vec::with_capacity(entries.len());
        for entry in entries {
            let module = if entry.is_file() {
                let own = std::process::id();
                self.open_with(pid, &entry, |e| {
                    safe_fs::open_in_process_root(own, Path::new(&e.path)).map_err(NotOpened::Open)
                })
            } else {
                None
            };
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

    /// Continuous mode, at the end of each window: forgets the processes
    /// that were already gone at the previous window's end (their samples
    /// have all been read by now), so that the table stays bounded however
    /// long the recording runs. Returns how many were forgotten.
    pub fn forget_gone(&mut self) -> usize {
        let mut gone_now = HashSet::new();
        let mut forgotten = 0;
        let pids: Vec<u32> = self
            .procs
            .keys()
            .chain(self.logged.keys())
            .chain(self.parents.keys())
            .copied()
            .collect::<HashSet<u32>>()
            .into_iter()
            .collect();
        for pid in pids {
            if proc::process_alive(pid) {
                continue;
            }
            if self.gone.contains(&pid) {
                forgotten += usize::from(self.procs.remove(&pid).is_some());
                self.logged.remove(&pid);
                self.parents.remove(&pid);
            } else {
                gone_now.insert(pid);
            }
        }
        self.gone = gone_now;
        forgotten
    }

    /// Follows processes' mappings from `source` from now on.
    pub fn set_event_source(&mut self, source: Box<dyn MapEventSource>) {
        self.events = Some(source);
    }

    /// Takes in the events reported since the last call (call it before
    /// handling samples taken since then).
    pub fn sync(&mut self) {
        let Some(mut source) = self.events.take() else {
            return;
        };
        self.events_lost += source.drain(&mut |ev| {
            log::trace!("{ev:?}");
            self.apply(ev)
        });
        self.events = Some(source);
    }

    /// Takes in what the kernel reported about mappings: processes that
    /// exit before their maps are read are then known from these.
    pub fn apply(&mut self, ev: MapEvent) {
        match ev {
            MapEvent::Mmap { pid, entry } => {
                if !self.logged.contains_key(&pid) && self.logged.len() >= MAX_LOGGED {
                    return;
                }
                let maps = self.logged.entry(pid).or_default();
                // A new mapping replaces what it covers.
                maps.retain(|m| m.end <= entry.start || m.start >= entry.end);
                let at = maps.partition_point(|m| m.start < entry.start);
                maps.insert(at, entry);
            }
            MapEvent::Fork { pid, ppid } => {
                if self.parents.len() < MAX_LOGGED {
                    self.parents.insert(pid, ppid);
                }
                let parent = self.logged.get(&ppid).cloned().or_else(|| {
                    // A parent that was running before the recording: its
                    // executable mappings now.
                    let maps = proc::read_maps(ppid).ok()?;
                    Some(
                        maps.into_iter()
                            .filter(|m| m.executable && m.is_file())
                            .collect(),
                    )
                });
                if let Some(maps) = parent {
                    if self.logged.len() < MAX_LOGGED {
                        self.logged.insert(ppid, maps.clone());
                        self.logged.insert(pid, maps);
                    }
                }
                // A pid seen before belonged to another process.
                self.procs.remove(&pid);
            }
            MapEvent::Exec { pid } => {
                self.logged.insert(pid, Vec::new());
                // Its maps changed entirely: snapshot it again.
                self.procs.remove(&pid);
            }
        }
    }

    fn snapshot(&mut self, pid: u32) -> ProcessInfo {
        self.snapshots += 1;
        let version = self.snapshots;
        let status = proc::read_status(pid).ok();
        // A process that exited but was not reaped yet (a zombie) has
        // empty maps: as good as gone.
        let maps = proc::read_maps(pid).ok().filter(|e| !e.is_empty());
        if maps.is_none() {
            // Gone, maybe born since the last sync (its sample was taken
            // after it; its pid may even be a reused one): its records are
            // in the kernel's buffer now.
            self.sync();
        }
        let entries = match maps {
            Some(e) => e,
            None => match self.logged.get(&pid).filter(|m| !m.is_empty()).cloned() {
                // Gone already: what the kernel reported it mapped.
                Some(entries) => return self.snapshot_from_log(pid, entries, version),
                None => {
                    return ProcessInfo {
                        pid,
                        name: status.map(|s| s.name).unwrap_or_default(),
                        unavailable: true,
                        version,
                        ..ProcessInfo::default()
                    }
                }
            },
        };
        // Only binaries hold code: a file mapped without execute permission
        // (data, caches, archives) is not opened, as it needs a descriptor
        // for the whole recording. A binary's other segments share its
        // handle.
        let code: HashSet<FileKey> = entries
            .iter()
            .filter(|e| e.executable && e.is_file())
            .map(FileKey::of_map_entry)
            .collect();
        let mut mappings = Vec::with_capacity(entries.len());
        for entry in entries {
            let module = if entry.is_file() && code.contains(&FileKey::of_map_entry(&entry)) {
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

    /// The snapshot of a process that is gone, from its logged mappings.
    /// Its files are opened by path as flameprobe sees them, and only kept
    /// when they are the files it mapped (same device and inode): a process
    /// in another mount namespace (a container) may not see them there.
    fn snapshot_from_log(&mut self, pid: u32, entries: Vec<MapEntry>, version: u64) -> ProcessInfo {
        let mut mappings = Vec::with_capacity(entries.len());
        for entry in entries {
            let module = self.open_logged(pid, &entry);
            mappings.push(Mapping { entry, module });
        }
        ProcessInfo {
            pid,
            ns_pid: pid,
            mappings,
            version,
            ..ProcessInfo::default()
        }
    }

    /// The file of a logged mapping of process `pid` (gone), by its path
    /// inside the root of its nearest live ancestor (a container's
    /// process: the container's root), else in flameprobe's root, if it is
    /// the same file (device and inode); never blocking, regular files only.
    fn open_logged(&mut self, pid: u32, entry: &MapEntry) -> Option<Arc<ModuleFile>> {
        let own = std::process::id();
        let root = self.live_ancestor(pid).unwrap_or(own);
        self.open_with(pid, entry, |e| {
            let open_in = |root: u32| {
                safe_fs::open_in_process_root(root, Path::new(&e.path))
                    .map_err(NotOpened::Open)
                    .and_then(|file| check_mapped(e, file))
            };
            open_in(root).or_else(|why| if root == own { Err(why) } else { open_in(own) })
        })
    }

    fn open_module(&mut self, pid: u32, entry: &MapEntry) -> Option<Arc<ModuleFile>> {
        self.open_with(pid, entry, |e| open_mapped(pid, e))
    }

    /// The shared handle on the binary `entry` maps, opened with `open` the
    /// first time; `None` (said once with -v) when it cannot be.
    fn open_with(
        &mut self,
        pid: u32,
        entry: &MapEntry,
        open: impl FnOnce(&MapEntry) -> Result<File, NotOpened>,
    ) -> Option<Arc<ModuleFile>> {
        let key = FileKey::of_map_entry(entry);
        if let Some(f) = self.files.get(&key) {
            return Some(f.clone());
        }
        let opened = open(entry).and_then(|f| {
            // Descriptors are numbered lowest free first: a high number
            // means the binaries' share of the limit is used up.
            if f.as_raw_fd() as u64 >= crate::limits::binary_fd_ceiling() {
                Err(NotOpened::Open(SafeOpenError::Io(
                    io::Error::from_raw_os_error(libc::EMFILE),
                )))
            } else {
                Ok(f)
            }
        });
        let file = match opened {
            Ok(f) => f,
            Err(why) => {
                let first = self.unopened.insert(key);
                if first && why.is_fd_exhaustion() {
                    self.fds_exhausted += 1;
                }
                if first {
                    log::info!(
                        "pid {pid}: {}: not opened, its frames stay unsymbolized: {why}",
                        entry.path
                    );
                }
                return None;
            }
        };
        let module = Arc::new(ModuleFile {
            key,
            path: entry.path.clone(),
            file,
        });
        self.files.insert(key, module.clone());
        Some(module)
    }
}

/// Why the binary of a mapping was not opened.
#[derive(Debug)]
pub enum NotOpened {
    /// No regular file could be opened (missing, not permitted, a FIFO,
    /// device or directory, a link leading out of the root).
    Open(SafeOpenError),
    /// A regular file was opened, but not the one the process mapped.
    NotMapped { mapped: FileKey, found: FileKey },
}

impl fmt::Display for NotOpened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotOpened::Open(e) => write!(f, "{e}"),
            NotOpened::NotMapped { mapped, found } => write!(
                f,
                "the file at that path inside the process's root (device {:#x}, inode {}) is \
                 not the one it mapped (device {:#x}, inode {}): replaced since it was mapped",
                found.dev, found.inode, mapped.dev, mapped.inode
            ),
        }
    }
}

impl std::error::Error for NotOpened {}

impl NotOpened {
    /// flameprobe ran out of file descriptors (not the binary's fault).
    pub fn is_fd_exhaustion(&self) -> bool {
        matches!(self, NotOpened::Open(SafeOpenError::Io(e)) if crate::limits::is_exhausted(e))
    }
}

/// Opens the file that mapping `entry` of process `pid` maps, for reading:
/// through `/proc/PID/map_files` (the exact mapped inode, also when it was
/// deleted or lives in another mount namespace; the kernel allows it with
/// `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE` only), else by its path,
/// resolved inside the process's root. Both ways open regular files only,
/// without blocking, and accept only the file whose device and inode are
/// those `/proc/PID/maps` shows.
pub fn open_mapped(pid: u32, entry: &MapEntry) -> Result<File, NotOpened> {
    match safe_fs::open_map_file(pid, entry.start, entry.end)
        .map_err(NotOpened::Open)
        .and_then(|f| check_mapped(entry, f))
    {
        Ok(f) => return Ok(f),
        Err(e) => log::debug!("pid {pid}: {} through map_files: {e}", entry.path),
    }
    let root = std::fs::read_link(proc::proc_path(pid, "root")).unwrap_or_default();
    let path = path_in_root(&entry.path, &root.to_string_lossy());
    let file = safe_fs::open_in_process_root(pid, Path::new(path)).map_err(NotOpened::Open)?;
    check_mapped(entry, file)
}

/// The path of a mapped file inside the process's root, given the path
/// `/proc/PID/maps` shows and where `/proc/PID/root` points. Both are
/// shown as flameprobe sees them: a process chrooted into a directory
/// flameprobe can reach shows `/srv/jail/bin/app` for its `/bin/app` (and
/// its root is `/srv/jail`); a process in a container with its own mount
/// namespace shows paths from the container's root (and its root reads
/// `/`). A mapping from outside a chroot keeps its path (it will not be
/// found, or not be the mapped file).
fn path_in_root<'a>(mapped: &'a str, root: &str) -> &'a str {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return mapped;
    }
    match mapped.strip_prefix(root) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => mapped,
    }
}

/// Accepts `file` as the binary of `entry` when its device and inode are
/// those `/proc/PID/maps` shows.
///
/// On overlayfs (containers) the two agree on Linux 6.18: maps shows the
/// overlay's device and inode (the kernel reports the inode of the path
/// the process used, `file_user_inode`), and so does `fstat` of the file
/// opened through `/proc/PID/root` or `map_files`; observed for files of
/// an image's lower layer and of the upper layer (podman). Older kernels
/// (about 4.19 to 6.7) showed the underlying file system's device in maps
/// instead, with the same inode number: there the root path gives the
/// overlay's device and is refused here, so such binaries stay
/// unsymbolized unless map_files works (it opens the underlying file
/// itself, which matches). Refusing is the sound side: an inode number
/// alone does not identify a file across devices.
pub fn check_mapped(entry: &MapEntry, file: File) -> Result<File, NotOpened> {
    let mapped = FileKey::of_map_entry(entry);
    let found = FileKey::of_metadata(
        &file
            .metadata()
            .map_err(|e| NotOpened::Open(SafeOpenError::Io(e)))?,
    );
    if found == mapped {
        Ok(file)
    } else {
        Err(NotOpened::NotMapped { mapped, found })
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
    fn a_process_gone_is_known_from_its_logged_mappings() {
        let mut table = ProcessTable::new();
        let me = std::process::id();
        let own: Vec<MapEntry> = proc::read_maps(me)
            .unwrap()
            .into_iter()
            .filter(|m| m.executable && m.is_file())
            .collect();
        let (gone, child) = (u32::MAX - 11, u32::MAX - 12);
        for entry in &own {
            table.apply(MapEvent::Mmap {
                pid: gone,
                entry: entry.clone(),
            });
        }
        table.apply(MapEvent::Fork {
            pid: child,
            ppid: gone,
        });
        let addr = a_process_gone_is_known_from_its_logged_mappings as fn() as usize as u64;
        for pid in [gone, child] {
            let m = table.find(pid, addr).expect("known from the log").clone();
            let module = m.module.expect("its file, opened and verified");
            assert_eq!(module.key, FileKey::of_map_entry(&m.entry));
        }
        // exec: the old maps are gone.
        table.apply(MapEvent::Exec { pid: child });
        assert!(table.find(child, addr).is_none());
        // A logged path that is now another file is not used.
        let mut wrong = own[0].clone();
        wrong.inode += 1;
        let other = u32::MAX - 13;
        table.apply(MapEvent::Mmap {
            pid: other,
            entry: wrong.clone(),
        });
        let m = table.find(other, wrong.start).unwrap().clone();
        assert!(m.module.is_none());
    }

    #[test]
    fn vanished_process_is_unavailable() {
        let mut table = ProcessTable::new();
        assert!(table.get(u32::MAX - 3).unavailable);
    }

    #[test]
    fn mapped_paths_are_made_relative_to_the_process_root() {
        // A container: paths are already relative to its root.
        assert_eq!(path_in_root("/bin/busybox", "/"), "/bin/busybox");
        // A chroot flameprobe can reach.
        assert_eq!(path_in_root("/srv/jail/bin/app", "/srv/jail"), "/bin/app");
        assert_eq!(path_in_root("/srv/jail/bin/app", "/srv/jail/"), "/bin/app");
        // Not below the root (mapped before the chroot), or a mere prefix.
        assert_eq!(
            path_in_root("/lib/libc.so.6", "/srv/jail"),
            "/lib/libc.so.6"
        );
        assert_eq!(
            path_in_root("/srv/jailbird/x", "/srv/jail"),
            "/srv/jailbird/x"
        );
        // Unknown root: as shown.
        assert_eq!(path_in_root("/usr/bin/app", ""), "/usr/bin/app");
    }

    /// A map entry for `path` as /proc/PID/maps would show it.
    fn entry_for(path: &Path, dev: (u32, u32), inode: u64) -> MapEntry {
        MapEntry {
            start: 0x1000,
            end: 0x2000,
            readable: true,
            executable: true,
            offset: 0,
            dev_major: dev.0,
            dev_minor: dev.1,
            inode,
            path: path.to_string_lossy().into_owned(),
            deleted: false,
        }
    }

    #[test]
    fn only_the_mapped_device_and_inode_are_accepted() {
        use std::os::unix::fs::MetadataExt;
        let file = tempfile::NamedTempFile::new().unwrap();
        let meta = file.as_file().metadata().unwrap();
        let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let open = || File::open(file.path()).unwrap();

        let same = entry_for(file.path(), dev, meta.ino());
        assert!(check_mapped(&same, open()).is_ok());
        let other_inode = entry_for(file.path(), dev, meta.ino() + 1);
        let err = check_mapped(&other_inode, open()).unwrap_err();
        assert!(
            matches!(err, NotOpened::NotMapped { found, .. } if found == FileKey::of_metadata(&meta))
        );
        assert!(
            err.to_string().contains("replaced since it was mapped"),
            "{err}"
        );
        let other_device = entry_for(file.path(), (dev.0 + 1, dev.1), meta.ino());
        assert!(check_mapped(&other_device, open()).is_err());
    }

    #[test]
    fn a_replaced_binary_is_not_taken_from_the_root_path() {
        // Map a file, as a process maps its binary, then replace it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.so");
        std::fs::write(&path, b"the mapped one").unwrap();
        let mapped = File::open(&path).unwrap();
        // SAFETY: read-only private mapping of a file nobody writes.
        let map = unsafe { memmap2::Mmap::map(&mapped) }.unwrap();
        let replacement = dir.path().join("new.so");
        std::fs::write(&replacement, b"a planted one").unwrap();
        std::fs::rename(&replacement, &path).unwrap();

        let pid = std::process::id();
        let start = map.as_ptr() as u64;
        let entry = proc::read_maps(pid)
            .unwrap()
            .into_iter()
            .find(|e| e.start == start)
            .expect("the mapping is listed");
        assert!(entry.deleted, "{entry:?}");
        assert_eq!(entry.path, path.to_str().unwrap());

        // The root path now leads to the replacement: refused.
        let by_path = safe_fs::open_in_process_root(pid, &path).unwrap();
        let err = check_mapped(&entry, by_path).unwrap_err();
        assert!(matches!(err, NotOpened::NotMapped { .. }), "{err}");
        // open_mapped gives the mapped file (map_files, with CAP_SYS_ADMIN)
        // or nothing, never the replacement.
        match open_mapped(pid, &entry) {
            Ok(mut f) => {
                let bytes = safe_fs::read_limited(&mut f, 100).unwrap();
                assert_eq!(bytes, b"the mapped one");
            }
            Err(e) => assert!(matches!(e, NotOpened::NotMapped { .. }), "{e}"),
        }
        drop(map);
    }
}
