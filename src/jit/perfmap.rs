//! Perf maps: the `/tmp/perf-<pid>.map` text files in which JIT runtimes
//! name the code they generate (`START SIZE NAME` per line, hex numbers).
//!
//! This module owns the tolerant parser ([`PerfMap`]) and the reader that
//! finds a process's map inside its root ([`PerfMapSource`]).
//!
//! Producers and their quirks:
//! - HotSpot `Compiler.perfmap` (JDK 17+, `codeCache.cpp`): `0x`-prefixed,
//!   zero-padded numbers; a snapshot of the live code cache, written on
//!   request, in which the same blob may be listed twice.
//! - Node `--perf-basic-prof`, Python 3.12 `-X perf`, perf-map-agent: bare
//!   hex, appended as code is created, so the file is a log: code freed and
//!   its memory reused leaves older, overlapping entries behind, and the
//!   last line may still be being written.
//!
//! Parsing never fails as a whole: a line that does not parse is skipped
//! and counted ([`ParseStats`]). Where entries overlap, the one written
//! later wins for every address it covers; the parts of older entries it
//! does not cover keep their names (the newest knowledge of those bytes).
//!
//! Memory: names are interned into one string arena and the lookup table is
//! 16 bytes per address range, so a map at the 256 MiB limit costs about
//! its own size at the peak of parsing, less when names repeat.

use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::proc;
use crate::safe_fs::{self, SafeOpenError, Scope};

/// The largest perf map read (a Node process that runs for days with
/// `--perf-basic-prof` can write gigabytes).
pub const MAX_PERF_MAP_BYTES: u64 = 256 << 20;

/// Lines longer than this are skipped as bad (real names are far shorter).
const MAX_LINE_BYTES: usize = 64 << 10;

/// Why a line was skipped; the text is shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLine {
    NoSize,
    BadStart,
    BadSize,
    NoName,
    ZeroSize,
    /// START + SIZE passes the end of the address space, or SIZE is over
    /// 4 GiB (no JIT emits such a blob).
    BadRange,
    TooLong,
    /// The file ended without a newline: the runtime was still writing it.
    Unterminated,
}

impl BadLine {
    pub fn as_str(self) -> &'static str {
        match self {
            BadLine::NoSize => "no size after the start address",
            BadLine::BadStart => "the start address is not a hex number",
            BadLine::BadSize => "the size is not a hex number",
            BadLine::NoName => "no name after the size",
            BadLine::ZeroSize => "the size is zero",
            BadLine::BadRange => "the address range is impossible",
            BadLine::TooLong => "the line is longer than 64 KiB",
            BadLine::Unterminated => "the last line has no newline (still being written)",
        }
    }
}

/// What parsing saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Lines read, including empty and bad ones.
    pub lines: u64,
    /// Lines that gave an entry.
    pub entries: u64,
    /// Lines skipped because they did not parse (empty lines are not bad).
    pub bad_lines: u64,
    /// The first bad line: 1-based line number and why.
    pub first_bad: Option<(u64, BadLine)>,
}

/// Identifies an interned name of one [`PerfMap`], for caching per name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameId(pub u32);

/// What [`PerfMap::lookup`] found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerfMapSymbol<'a> {
    pub id: NameId,
    pub name: &'a str,
    /// The address range this name holds in the resolved map (part of an
    /// entry when a newer entry covers the rest).
    pub start: u64,
    pub end: u64,
}

/// One resolved, non-overlapping address range.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: u64,
    len: u32,
    name: u32,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + u64::from(self.len)
    }
}

/// A parsed perf map: address ranges sorted and made disjoint (the newest
/// entry wins), each with an interned name.
#[derive(Debug, Default)]
pub struct PerfMap {
    segments: Vec<Segment>,
    names: Names,
    stats: ParseStats,
}

impl PerfMap {
    /// Parses perf-map text held in memory.
    pub fn parse(text: &[u8]) -> PerfMap {
        // Reading from a slice cannot fail.
        Self::parse_reader(text).unwrap_or_default()
    }

    /// Parses perf-map text from a reader, line by line (a long line costs
    /// at most 64 KiB). Only read errors fail; bad lines are counted.
    pub fn parse_reader(mut reader: impl Read) -> io::Result<PerfMap> {
        let mut builder = Builder::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut carry: Vec<u8> = Vec::new();
        let mut skipping = false;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut data = &buf[..n];
            while let Some(pos) = memchr::memchr(b'\n', data) {
                let piece = &data[..pos];
                if skipping {
                    skipping = false;
                    builder.bad(BadLine::TooLong);
                } else if carry.len() + piece.len() > MAX_LINE_BYTES {
                    carry.clear();
                    builder.bad(BadLine::TooLong);
                } else if carry.is_empty() {
                    builder.line(piece);
                } else {
                    carry.extend_from_slice(piece);
                    builder.line(&carry);
                    carry.clear();
                }
                data = &data[pos + 1..];
            }
            if !skipping {
                if carry.len() + data.len() > MAX_LINE_BYTES {
                    carry = Vec::new();
                    skipping = true;
                } else {
                    carry.extend_from_slice(data);
                }
            }
        }
        if skipping {
            builder.bad(BadLine::TooLong);
        } else if !carry.is_empty() {
            builder.bad(BadLine::Unterminated);
        }
        Ok(builder.finish())
    }

    /// The name of the code at `addr`, if an entry covers it.
    pub fn lookup(&self, addr: u64) -> Option<PerfMapSymbol<'_>> {
        let i = self.segments.partition_point(|s| s.start <= addr);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (addr < seg.end()).then(|| PerfMapSymbol {
            id: NameId(seg.name),
            name: self.names.get(seg.name),
            start: seg.start,
            end: seg.end(),
        })
    }

    /// The text of an interned name.
    pub fn name(&self, id: NameId) -> &str {
        self.names.get(id.0)
    }

    /// How many distinct names there are (ids are `0..name_count()`).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The resolved ranges in address order: (start, end, name).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, &str)> + '_ {
        self.segments
            .iter()
            .map(|s| (s.start, s.end(), self.names.get(s.name)))
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn stats(&self) -> &ParseStats {
        &self.stats
    }
}

/// Interned names: one string arena, ends of each name.
#[derive(Debug, Default)]
struct Names {
    text: String,
    ends: Vec<u32>,
}

impl Names {
    fn get(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// An entry as read, in file order (its index is its age).
#[derive(Clone, Copy, Debug)]
struct Raw {
    start: u64,
    len: u32,
    name: u32,
}

#[derive(Default)]
struct Builder {
    raw: Vec<Raw>,
    names: Names,
    /// Name id by name, hashed with `hasher`; only while parsing.
    index: hashbrown::HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
    stats: ParseStats,
}

impl Builder {
    fn bad(&mut self, why: BadLine) {
        self.stats.lines += 1;
        self.stats.bad_lines += 1;
        if self.stats.first_bad.is_none() {
            self.stats.first_bad = Some((self.stats.lines, why));
        }
    }

    fn line(&mut self, line: &[u8]) {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            self.stats.lines += 1;
            return;
        }
        match parse_line(trimmed) {
            Ok((start, len, name)) => {
                self.stats.lines += 1;
                self.stats.entries += 1;
                let name = self.intern(name);
                self.raw.push(Raw { start, len, name });
            }
            Err(why) => self.bad(why),
        }
    }

    fn intern(&mut self, name: &[u8]) -> u32 {
        let name = String::from_utf8_lossy(name);
        let hash = self.hasher.hash_one(&*name);
        let names = &self.names;
        if let Some(&id) = self.index.find(hash, |&id| names.get(id) == name) {
            return id;
        }
        let id = self.names.ends.len() as u32;
        self.names.text.push_str(&name);
        // The arena holds at most the file (256 MiB), far below 4 GiB.
        self.names.ends.push(self.names.text.len() as u32);
        let (names, hasher) = (&self.names, &self.hasher);
        self.index
            .insert_unique(hash, id, |&i| hasher.hash_one(names.get(i)));
        id
    }

    fn finish(self) -> PerfMap {
        let Builder {
            raw,
            mut names,
            index,
            stats,
            ..
        } = self;
        // The index is only for parsing: free it before the overlap sweep.
        drop(index);
        names.text.shrink_to_fit();
        names.ends.shrink_to_fit();
        PerfMap {
            segments: resolve(raw),
            names,
            stats,
        }
    }
}

/// `START SIZE NAME`: hex numbers with or without `0x`, separated by
/// spaces or tabs; the name is the rest of the line (it may hold spaces).
fn parse_line(line: &[u8]) -> Result<(u64, u32, &[u8]), BadLine> {
    let (start, rest) = split_field(line).ok_or(BadLine::NoSize)?;
    let start = parse_hex(start).ok_or(BadLine::BadStart)?;
    let (size, name) = match split_field(rest) {
        Some((size, name)) => (size, name),
        None if parse_hex(rest).is_some() => return Err(BadLine::NoName),
        None => return Err(BadLine::BadSize),
    };
    let size = parse_hex(size).ok_or(BadLine::BadSize)?;
    if size == 0 {
        return Err(BadLine::ZeroSize);
    }
    let len = u32::try_from(size).map_err(|_| BadLine::BadRange)?;
    start.checked_add(size).ok_or(BadLine::BadRange)?;
    Ok((start, len, name))
}

/// The first field and the rest after the blanks that follow it.
fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = s.iter().position(|&b| b == b' ' || b == b'\t')?;
    let rest = &s[end..];
    let skip = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len());
    Some((&s[..end], &rest[skip..]))
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    let digits = s
        .strip_prefix(b"0x")
        .or_else(|| s.strip_prefix(b"0X"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    // Checked above: 1 to 16 hex digits.
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Turns entries in file order into sorted, disjoint segments in which,
/// for every address, the last entry covering it wins.
fn resolve(mut raw: Vec<Raw>) -> Vec<Segment> {
    let end = |r: &Raw| r.start + u64::from(r.len);
    // Stable: among equal starts, file order (age) is kept.
    let mut order: Vec<u32> = (0..raw.len() as u32).collect();
    order.sort_by_key(|&i| raw[i as usize].start);
    let disjoint = order
        .windows(2)
        .all(|w| end(&raw[w[0] as usize]) <= raw[w[1] as usize].start);
    if disjoint {
        // The common case (a JVM's snapshot without duplicates): put the
        // entries in order in place, without a second table.
        permute_in_place(&mut raw, &mut order);
        drop(order);
        return raw
            .into_iter()
            .map(|r| Segment {
                start: r.start,
                len: r.len,
                name: r.name,
            })
            .collect();
    }

    // Sweep the address space: the live entries are in a heap by age, the
    // newest names each stretch until it ends or a newer one may start.
    let mut out: Vec<Segment> = Vec::with_capacity(raw.len());
    let mut live: BinaryHeap<u32> = BinaryHeap::new();
    let mut next = 0usize;
    let mut x = 0u64;
    loop {
        while live.peek().is_some_and(|&i| end(&raw[i as usize]) <= x) {
            live.pop();
        }
        if live.is_empty() {
            let Some(&i) = order.get(next) else { break };
            x = raw[i as usize].start;
        }
        while let Some(&i) = order.get(next) {
            if raw[i as usize].start > x {
                break;
            }
            live.push(i);
            next += 1;
        }
        let Some(&top) = live.peek() else { continue };
        let top = raw[top as usize];
        let upcoming = order.get(next).map_or(u64::MAX, |&i| raw[i as usize].start);
        let stop = end(&top).min(upcoming);
        // stop - x <= top.len, which fits in u32.
        let len = (stop - x) as u32;
        match out.last_mut() {
            Some(last)
                if last.end() == x
                    && last.name == top.name
                    && u64::from(last.len) + u64::from(len) <= u64::from(u32::MAX) =>
            {
                last.len += len;
            }
            _ => out.push(Segment {
                start: x,
                len,
                name: top.name,
            }),
        }
        x = stop;
    }
    out.shrink_to_fit();
    out
}

/// Reorders `items` so that `items[k]` becomes the old `items[order[k]]`,
/// following cycles; `order` is consumed as scratch space.
fn permute_in_place<T: Copy>(items: &mut [T], order: &mut [u32]) {
    for k in 0..items.len() {
        if order[k] as usize == k {
            continue;
        }
        let first = items[k];
        let mut hole = k;
        loop {
            let src = order[hole] as usize;
            order[hole] = hole as u32;
            if src == k {
                items[hole] = first;
                break;
            }
            items[hole] = items[src];
            hole = src;
        }
    }
}

/// Why a process's perf map was not read.
#[derive(Debug, thiserror::Error)]
pub enum PerfMapError {
    #[error("process {pid}: cannot read its status or root directory ({source}); has it exited?")]
    Process { pid: u32, source: io::Error },
    #[error("process {pid} has no perf map ({path})")]
    Missing { pid: u32, path: String },
    #[error(
        "perf map {path} of process {pid} is {} MiB, more than the {} MiB flameprobe reads; \
         restart the process to start a new map (Node writes less with \
         --perf-basic-prof-only-functions)",
        size >> 20, limit >> 20
    )]
    TooLarge {
        pid: u32,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("perf map {path} of process {pid} was not read: {reason}")]
    Refused {
        pid: u32,
        path: String,
        reason: String,
    },
    #[error("perf map {path} of process {pid} was not read: {reason}")]
    Skipped {
        pid: u32,
        path: String,
        reason: String,
    },
    #[error("reading perf map {path} of process {pid}: {source}")]
    Io {
        pid: u32,
        path: String,
        source: io::Error,
    },
}

/// Where a process's perf map is, captured while the process is alive so
/// the map can still be read after it exited: take one at first sight of a
/// process, [`read`](Self::read) it when the process exits and at the end.
/// The handles on its root directory and its mount namespace keep its file
/// systems (a container's `/tmp` mount too) reachable after it is gone.
#[derive(Debug)]
pub struct PerfMapSource {
    pid: u32,
    ns_pid: u32,
    euid: Option<u32>,
    root: OwnedFd,
    _mount_ns: Option<OwnedFd>,
}

impl PerfMapSource {
    /// Captures the root, pid (as the process sees it) and user of `pid`.
    pub fn open(pid: u32) -> Result<PerfMapSource, PerfMapError> {
        let err = |source| PerfMapError::Process { pid, source };
        let status = proc::read_status(pid).map_err(err)?;
        let root = safe_fs::process_root(pid).map_err(err)?;
        // Without it, the mounts of a namespace whose last process exited
        // are detached, and the root handle would show what is under them.
        let mount_ns = File::open(proc::proc_path(pid, "ns/mnt"))
            .ok()
            .map(OwnedFd::from);
        Ok(PerfMapSource {
            pid,
            ns_pid: status.ns_tgid(),
            euid: status.euid,
            root,
            _mount_ns: mount_ns,
        })
    }

    /// The map's path inside the process's root: `/tmp/perf-<nspid>.map`.
    pub fn path_in_root(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/perf-{}.map", self.ns_pid))
    }

    /// The path as shown to users (reachable while the process lives).
    pub fn display_path(&self) -> String {
        format!("/proc/{}/root/tmp/perf-{}.map", self.pid, self.ns_pid)
    }

    /// Reads and parses the map, at most [`MAX_PERF_MAP_BYTES`].
    pub fn read(&self) -> Result<PerfMap, PerfMapError> {
        self.read_limited(MAX_PERF_MAP_BYTES)
    }

    /// Reads and parses the map, refusing one larger than `limit` bytes.
    /// The file is opened inside the process's root (no `..` or absolute
    /// link leaves it), must be a regular file that is not a symbolic link
    /// (runtimes write it in place; a link was planted) and must belong to
    /// the process's user or root (else another user wrote it). What is
    /// appended while reading is left for the next read.
    pub fn read_limited(&self, limit: u64) -> Result<PerfMap, PerfMapError> {
        let (file, len) = self.open_checked(limit)?;
        PerfMap::parse_reader(file.take(len)).map_err(|source| PerfMapError::Io {
            pid: self.pid,
            path: self.display_path(),
            source,
        })
    }

    /// Reads the map through `cache`: a file already read (same device,
    /// inode, size and modification time: one map hard-linked into many
    /// processes) is not read again, a read that would take the
    /// recording's maps past the cache's budget is skipped, and so is the
    /// rest of a read still running at `deadline`.
    pub fn read_cached(
        &self,
        cache: &MapCache,
        deadline: Option<Instant>,
    ) -> Result<Arc<PerfMap>, PerfMapError> {
        let (file, len) = self.open_checked(MAX_PERF_MAP_BYTES)?;
        let skipped = |reason: String| PerfMapError::Skipped {
            pid: self.pid,
            path: self.display_path(),
            reason,
        };
        let meta = file.metadata().map_err(|source| PerfMapError::Io {
            pid: self.pid,
            path: self.display_path(),
            source,
        })?;
        let id = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: len,
            mtime: (meta.mtime(), meta.mtime_nsec()),
        };
        let cell = cache.cell(id);
        let read = cell.get_or_init(|| {
            if let Err(budget) = cache.take(len) {
                return Err(format!(
                    "the perf maps read for this recording reached their budget of {} MiB",
                    budget >> 20
                ));
            }
            let reader = UntilDeadline {
                inner: file.take(len),
                deadline,
            };
            match PerfMap::parse_reader(reader) {
                Ok(map) => Ok(Arc::new(map)),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(format!(
                    "reading its {} MiB took longer than the time left for the end of the \
                     recording",
                    len >> 20
                )),
                Err(e) => Err(format!("reading it failed: {e}")),
            }
        });
        match read {
            Ok(map) => Ok(map.clone()),
            Err(reason) => {
                cache.skipped();
                Err(skipped(reason.clone()))
            }
        }
    }

    /// Opens the map and checks it (see [`read_limited`](Self::read_limited));
    /// returns it with its length.
    fn open_checked(&self, limit: u64) -> Result<(File, u64), PerfMapError> {
        let (pid, path) = (self.pid, self.display_path());
        let rel = self.path_in_root();
        let file = match safe_fs::open_file_nofollow(self.root.as_fd(), &rel, Scope::InRoot) {
            Ok(f) => f,
            Err(SafeOpenError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PerfMapError::Missing { pid, path })
            }
            Err(SafeOpenError::Io(e)) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(PerfMapError::Refused {
                    pid,
                    path,
                    reason: "it is a symbolic link (runtimes write the map as a regular file)"
                        .into(),
                })
            }
            Err(e @ (SafeOpenError::NotRegular(_) | SafeOpenError::Io(_))) => {
                return Err(PerfMapError::Refused {
                    pid,
                    path,
                    reason: e.to_string(),
                })
            }
            Err(SafeOpenError::TooLarge { size, limit }) => {
                return Err(PerfMapError::TooLarge {
                    pid,
                    path,
                    size,
                    limit,
                })
            }
        };
        let meta = file.metadata().map_err(|source| PerfMapError::Io {
            pid,
            path: path.clone(),
            source,
        })?;
        if meta.uid() != 0 && Some(meta.uid()) != self.euid {
            return Err(PerfMapError::Refused {
                pid,
                path,
                reason: format!(
                    "it belongs to uid {}, not to the process's user ({}) or root",
                    meta.uid(),
                    self.euid.map_or("unknown".to_string(), |u| u.to_string())
                ),
            });
        }
        if meta.len() > limit {
            return Err(PerfMapError::TooLarge {
                pid,
                path,
                size: meta.len(),
                limit,
            });
        }
        Ok((file, meta.len()))
    }
}

/// A perf map file as read: device, inode, size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

/// The most perf-map bytes one recording reads (each map is also at most
/// [`MAX_PERF_MAP_BYTES`]); a parsed map costs about its size.
pub const PERF_MAPS_BUDGET: u64 = 512 << 20;

/// The perf maps of one recording: each file read once however many
/// processes share it, within a total budget of bytes.
#[derive(Debug)]
pub struct MapCache {
    state: Mutex<CacheState>,
}

type Cell = Arc<OnceLock<Result<Arc<PerfMap>, String>>>;

#[derive(Debug)]
struct CacheState {
    cells: HashMap<FileId, Cell>,
    budget: u64,
    stats: CacheStats,
}

/// What a [`MapCache`] did, for `-v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Files read (and parsed).
    pub files: u64,
    pub bytes: u64,
    /// Reads served by a file already read (hard links, the same map
    /// read at exit and at the end).
    pub shared: u64,
    /// Reads given up (budget, time, errors).
    pub skipped: u64,
}

impl Default for MapCache {
    fn default() -> Self {
        MapCache::with_budget(PERF_MAPS_BUDGET)
    }
}

impl MapCache {
    pub fn with_budget(budget: u64) -> MapCache {
        MapCache {
            state: Mutex::new(CacheState {
                cells: HashMap::new(),
                budget,
                stats: CacheStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell of file `id` (a reader that finds it filling waits for it).
    fn cell(&self, id: FileId) -> Cell {
        let mut st = self.lock();
        if let Some(cell) = st.cells.get(&id).cloned() {
            st.stats.shared += 1;
            return cell;
        }
        st.cells.entry(id).or_default().clone()
    }

    /// Takes `len` bytes of the budget, or says what the budget is.
    fn take(&self, len: u64) -> Result<(), u64> {
        let mut st = self.lock();
        let total = st.stats.bytes.saturating_add(len);
        if total > st.budget {
            return Err(st.budget);
        }
        st.stats.bytes = total;
        st.stats.files += 1;
        Ok(())
    }

    fn skipped(&self) {
        self.lock().stats.skipped += 1;
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }
}

/// A reader that fails with `TimedOut` once `deadline` has passed.
struct UntilDeadline<R> {
    inner: R,
    deadline: Option<Instant>,
}

impl<R: Read> Read for UntilDeadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "past the deadline"));
        }
        self.inner.read(buf)
    }
}

/// Reads the perf map of a live process now (see [`PerfMapSource`]).
pub fn read_process_perf_map(pid: u32) -> Result<PerfMap, PerfMapError> {
    PerfMapSource::open(pid)?.read()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jit")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn name_at(map: &PerfMap, addr: u64) -> Option<&str> {
        map.lookup(addr).map(|s| s.name)
    }

    #[test]
    fn parses_a_real_hotspot_map() {
        let map = PerfMap::parse(&fixture("hotspot17.map"));
        let st = map.stats();
        assert_eq!(st.bad_lines, 0, "{st:?}");
        assert!(st.entries > 40, "{st:?}");
        let text = String::from_utf8(fixture("hotspot17.map")).unwrap();
        let line = text
            .lines()
            .find(|l| l.ends_with(" Interpreter"))
            .expect("the interpreter blob is listed");
        let mut f = line.split(' ');
        let start = u64::from_str_radix(&f.next().unwrap()[2..], 16).unwrap();
        let size = u64::from_str_radix(&f.next().unwrap()[2..], 16).unwrap();
        assert_eq!(name_at(&map, start), Some("Interpreter"));
        assert_eq!(name_at(&map, start + size - 1), Some("Interpreter"));
        // Every method line resolves to its own name at its start.
        for line in text.lines().filter(|l| l.contains("JitHot")) {
            let start = u64::from_str_radix(&line[2..18], 16).unwrap();
            assert_eq!(name_at(&map, start), Some(&line[38..]), "{line}");
        }
    }

    #[test]
    fn parses_real_node_and_python_maps() {
        let node = PerfMap::parse(&fixture("node20.map"));
        assert_eq!(node.stats().bad_lines, 0);
        let fib = node
            .ranges()
            .find(|(_, _, n)| n.starts_with("JS:*fibJs "))
            .expect("optimized fibJs");
        assert_eq!(name_at(&node, fib.0 + 1), Some(fib.2));

        let py = PerfMap::parse(&fixture("python312.map"));
        assert_eq!(py.stats().bad_lines, 0);
        assert!(py
            .ranges()
            .any(|(_, _, n)| n.starts_with("py::fib_py:") && n.ends_with("/jit_hot.py")));
    }

    #[test]
    fn accepts_both_hex_forms_and_counts_bad_lines() {
        let text = b"0x1000 0x10 with prefix\n\
                     2000 20 bare hex\n\
                     0X3000\t0x8\ttabs and  two  spaces\r\n\
                     \n\
                     nonsense here\n\
                     4000\n\
                     5000 zz name\n\
                     6000 10\n\
                     7000 0 zero\n\
                     ffffffffffffffff 2 wraps\n\
                     8000 100000000 over 4 GiB\n\
                     0x 10 empty hex\n\
                     9000 10 last\n";
        let map = PerfMap::parse(text);
        assert_eq!(name_at(&map, 0x1000), Some("with prefix"));
        assert_eq!(name_at(&map, 0x100f), Some("with prefix"));
        assert_eq!(name_at(&map, 0x1010), None);
        assert_eq!(name_at(&map, 0x201f), Some("bare hex"));
        assert_eq!(name_at(&map, 0x3007), Some("tabs and  two  spaces"));
        assert_eq!(name_at(&map, 0x9000), Some("last"));
        assert_eq!(name_at(&map, 0x0fff), None);
        let st = map.stats();
        assert_eq!(st.lines, 13);
        assert_eq!(st.entries, 4);
        assert_eq!(st.bad_lines, 8);
        assert_eq!(st.first_bad, Some((5, BadLine::BadStart)));

        for (line, why) in [
            (&b"4000"[..], BadLine::NoSize),
            (b"5000 zz name", BadLine::BadSize),
            (b"6000 10", BadLine::NoName),
            (b"7000 0 zero", BadLine::ZeroSize),
            (b"ffffffffffffffff 2 wraps", BadLine::BadRange),
            (b"8000 100000000 big", BadLine::BadRange),
            (b"0x 10 empty", BadLine::BadStart),
            (b"12345678123456781 1 long", BadLine::BadStart),
        ] {
            assert_eq!(parse_line(line).unwrap_err(), why, "{line:?}");
        }
    }

    #[test]
    fn newest_entry_wins_where_entries_overlap() {
        // A: 0x100..0x200 (oldest), B: 0x150..0x180 inside it, C: 0x1f0..0x220
        // across A's end, D: an exact duplicate of B's range (newest).
        let text = b"100 100 A\n150 30 B\n1f0 30 C\n150 30 D\n";
        let map = PerfMap::parse(text);
        let got: Vec<_> = map.ranges().collect();
        assert_eq!(
            got,
            [
                (0x100, 0x150, "A"),
                (0x150, 0x180, "D"),
                (0x180, 0x1f0, "A"),
                (0x1f0, 0x220, "C"),
            ]
        );
        // An older entry inside a newer one disappears; a newer one inside
        // an older one splits it.
        let map = PerfMap::parse(b"10 4 old-inner\n0 100 new-outer\n");
        assert_eq!(map.ranges().collect::<Vec<_>>(), [(0, 0x100, "new-outer")]);
        // Same name on both sides of a newer entry: two ranges, one name id.
        let map = PerfMap::parse(b"0 100 X\n40 10 Y\n");
        let x1 = map.lookup(0x10).unwrap();
        let x2 = map.lookup(0x60).unwrap();
        assert_eq!((x1.id, x1.start, x1.end), (x2.id, 0, 0x40));
        assert_eq!((x2.start, x2.end), (0x50, 0x100));
        assert_eq!(map.name_count(), 2);
        // Overlapping entries of the same name become one range.
        let map = PerfMap::parse(b"0 20 X\n10 20 X\n");
        assert_eq!(map.ranges().collect::<Vec<_>>(), [(0, 0x30, "X")]);
    }

    #[test]
    fn overlap_resolution_matches_a_per_address_reference() {
        // Pseudo-random small ranges in a 512-byte space: the sweep must
        // agree with "last line covering the address" for every address.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for round in 0..200 {
            let n = 1 + next(12);
            let mut text = String::new();
            let mut entries = Vec::new();
            for k in 0..n {
                let start = next(480);
                let size = 1 + next(60);
                let name = format!("f{}", next(4).max(k % 3));
                text.push_str(&format!("{start:x} {size:x} {name}\n"));
                entries.push((start, start + size, name));
            }
            let map = PerfMap::parse(text.as_bytes());
            for addr in 0..560u64 {
                let want = entries
                    .iter()
                    .rev()
                    .find(|(s, e, _)| *s <= addr && addr < *e)
                    .map(|(_, _, n)| n.as_str());
                assert_eq!(
                    name_at(&map, addr),
                    want,
                    "round {round} addr {addr:#x}\n{text}"
                );
            }
            let ranges: Vec<_> = map.ranges().collect();
            assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0), "{ranges:?}");
        }
    }

    #[test]
    fn interns_repeated_names() {
        let map = PerfMap::parse(b"0 10 same\n100 10 same\n200 10 other\n300 10 same\n");
        assert_eq!(map.name_count(), 2);
        assert_eq!(map.lookup(0).unwrap().id, map.lookup(0x300).unwrap().id);
        assert_eq!(map.name(map.lookup(0x200).unwrap().id), "other");
    }

    #[test]
    fn long_and_unterminated_lines_are_counted_not_fatal() {
        let mut text = b"10 1 a\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        text.extend_from_slice(b"\n20 1 b\n30 1 partial-na");
        // Read in small pieces to cross chunk boundaries.
        let map = PerfMap::parse_reader(io::BufReader::with_capacity(7, &text[..])).unwrap();
        assert_eq!(name_at(&map, 0x10), Some("a"));
        assert_eq!(name_at(&map, 0x20), Some("b"));
        assert_eq!(name_at(&map, 0x30), None);
        let st = map.stats();
        assert_eq!((st.lines, st.entries, st.bad_lines), (4, 2, 2));
        assert_eq!(st.first_bad, Some((2, BadLine::TooLong)));
        // A long line at the very end, without newline.
        let mut text = b"10 1 a\n".to_vec();
        text.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 1));
        let map = PerfMap::parse(&text);
        assert_eq!(map.stats().first_bad, Some((2, BadLine::TooLong)));
    }

    #[test]
    fn invalid_utf8_names_are_kept_lossily() {
        let map = PerfMap::parse(b"10 1 caf\xe9\n");
        assert_eq!(name_at(&map, 0x10), Some("caf\u{fffd}"));
    }

    #[test]
    fn permutes_in_place() {
        let mut items = ['a', 'b', 'c', 'd', 'e'];
        let mut order = [3, 0, 4, 1, 2];
        permute_in_place(&mut items, &mut order);
        assert_eq!(items, ['d', 'a', 'e', 'b', 'c']);
    }

    #[test]
    fn reads_own_process_map_and_refuses_what_it_must() {
        // This process as the "target": its root is /, its map would be
        // /tmp/perf-<pid>.map. Each case writes the file, reads, removes it.
        let _own_map = crate::jit::OWN_PERF_MAP
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let src = PerfMapSource::open(std::process::id()).unwrap();
        let path = Path::new("/tmp").join(src.path_in_root().file_name().unwrap());
        let _cleanup = Cleanup(path.clone());
        assert!(matches!(src.read(), Err(PerfMapError::Missing { .. })));

        std::fs::write(&path, b"0x1000 0x10 main\n").unwrap();
        let map = src.read().unwrap();
        assert_eq!(name_at(&map, 0x1008), Some("main"));

        let err = src.read_limited(8).unwrap_err();
        assert!(matches!(err, PerfMapError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than"), "{err}");

        std::fs::remove_file(&path).unwrap();
        let target = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(target.path(), b"0x1000 0x10 secret\n").unwrap();
        std::os::unix::fs::symlink(target.path(), &path).unwrap();
        let err = src.read().unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    /// One map hard-linked into two processes is read once (the same
    /// parsed map for both); a cache whose budget is smaller skips it and
    /// says why.
    #[test]
    fn a_hard_linked_map_is_read_once_within_the_budget() {
        let _own_map = crate::jit::OWN_PERF_MAP
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (me, other) = (std::process::id(), child.id());
        let mine = PathBuf::from(format!("/tmp/perf-{me}.map"));
        let theirs = PathBuf::from(format!("/tmp/perf-{other}.map"));
        let _cleanup = (Cleanup(mine.clone()), Cleanup(theirs.clone()));
        std::fs::write(&mine, b"0x1000 0x10 shared\n").unwrap();
        let _ = std::fs::remove_file(&theirs);
        std::fs::hard_link(&mine, &theirs).unwrap();
        let (a, b) = (
            PerfMapSource::open(me).unwrap(),
            PerfMapSource::open(other).unwrap(),
        );

        let cache = MapCache::default();
        let ma = a.read_cached(&cache, None).unwrap();
        let mb = b.read_cached(&cache, None).unwrap();
        assert!(Arc::ptr_eq(&ma, &mb), "read twice");
        assert_eq!(name_at(&mb, 0x1004), Some("shared"));
        let stats = cache.stats();
        assert_eq!((stats.files, stats.shared, stats.skipped), (1, 1, 0));

        let small = MapCache::with_budget(8);
        let err = b.read_cached(&small, None).unwrap_err();
        assert!(err.to_string().contains("reached their budget"), "{err}");
        // Past its deadline, a read gives up.
        let err = a
            .read_cached(&MapCache::default(), Some(Instant::now()))
            .unwrap_err();
        assert!(
            err.to_string().contains("took longer than the time left"),
            "{err}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Peak memory of parsing a ~250 MiB map with distinct names (the worst
    /// case for interning), by hand: `cargo test --release --lib
    /// perfmap::tests::peak_rss_of_a_large_map -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn peak_rss_of_a_large_map() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perf-big.map");
        {
            let mut w = io::BufWriter::new(File::create(&path).unwrap());
            let mut addr = 0x7f00_0000_0000u64;
            let mut i = 0u64;
            while w.get_ref().metadata().unwrap().len() < 250 << 20 {
                for _ in 0..10_000 {
                    // Node-like lines; every 8th overlaps its predecessor.
                    let size = 0x40 + (i % 0x300);
                    let start = if i % 8 == 7 { addr - 0x20 } else { addr };
                    writeln!(
                        w,
                        "{start:x} {size:x} JS:*handler{i} /srv/app/routes/file{}.js:{}:{}",
                        i % 977,
                        i % 4001,
                        i % 77
                    )
                    .unwrap();
                    addr = start + size;
                    i += 1;
                }
                w.flush().unwrap();
            }
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let hwm = || {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .unwrap()
                .to_string();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                << 10
        };
        let rss = || {
            let s = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = s
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .unwrap()
                .to_string();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
                << 10
        };
        // Reset the high-water mark (Linux 4.0+).
        std::fs::write("/proc/self/clear_refs", b"5").unwrap();
        let before = rss();
        let map = PerfMap::parse_reader(File::open(&path).unwrap()).unwrap();
        let peak = hwm();
        let after = rss();
        eprintln!(
            "file {} MiB, {} entries, {} names; rss before {} MiB, peak {} MiB (+{} MiB), kept {} MiB",
            size >> 20,
            map.stats().entries,
            map.name_count(),
            before >> 20,
            peak >> 20,
            (peak - before) >> 20,
            (after - before) >> 20
        );
        assert_eq!(map.stats().bad_lines, 0);
        assert!(
            peak - before < size * 3 / 2,
            "peak grew by {} bytes",
            peak - before
        );
    }
}
