//! Which allocator a process uses, and where its entry points are.
//!
//! An allocator is a binary that *defines* `malloc` and `free`: glibc's
//! `libc.so.6`, `libjemalloc`, `libtcmalloc`, `libmimalloc`, or the main
//! executable when the allocator is linked statically. Entry points are
//! located as file offsets (what uprobes attach to) from the ELF symbol
//! tables; aliases at the same offset (glibc's `aligned_alloc` and
//! `memalign`, `cfree` and `free`) are attached once.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use object::read::elf::{Dyn, FileHeader};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};

/// How an entry point takes its arguments (one BPF program each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AllocFn {
    /// `malloc(size)`, `valloc(size)`, `pvalloc(size)`.
    Malloc,
    /// `calloc(n, size)`.
    Calloc,
    /// `realloc(ptr, size)`.
    Realloc,
    /// `reallocarray(ptr, n, size)`.
    ReallocArray,
    /// `posix_memalign(&ptr, align, size)`.
    PosixMemalign,
    /// `memalign(align, size)`, `aligned_alloc(align, size)`.
    Memalign,
    /// `free(ptr)` and relatives taking the pointer first.
    Free,
}

/// Symbols probed, in priority order (the first name at an offset wins).
pub const SYMBOLS: &[(&str, AllocFn)] = &[
    ("malloc", AllocFn::Malloc),
    ("free", AllocFn::Free),
    ("calloc", AllocFn::Calloc),
    ("realloc", AllocFn::Realloc),
    ("reallocarray", AllocFn::ReallocArray),
    ("posix_memalign", AllocFn::PosixMemalign),
    ("aligned_alloc", AllocFn::Memalign),
    ("memalign", AllocFn::Memalign),
    ("valloc", AllocFn::Malloc),
    ("pvalloc", AllocFn::Malloc),
    ("cfree", AllocFn::Free),
    ("free_sized", AllocFn::Free),
    ("free_aligned_sized", AllocFn::Free),
    ("sdallocx", AllocFn::Free),
];

/// One entry point to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: &'static str,
    pub kind: AllocFn,
    /// File offset of the function's first instruction.
    pub entry: u64,
    /// File offset the uprobe goes to: the entry, or a few bytes further
    /// past instructions that change no register the probe reads (see
    /// [`skippable_prefix`]).
    pub offset: u64,
}

/// Bytes at the start of a function that a uprobe may skip: `endbr64`,
/// and `test %rdi,%rdi` when a conditional jump follows (glibc's `free`).
/// They change neither the arguments nor the stack pointer, so a probe
/// after them sees the entry state; but the kernel must single-step them
/// out of line (a second trap per call), while the jump or `push` that
/// follows is emulated. Nothing jumps back into such a prologue.
pub fn skippable_prefix(code: &[u8]) -> u64 {
    let mut n = 0;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        n = 4;
    }
    let rest = &code[n.min(code.len())..];
    let jcc_follows = matches!(
        rest.get(3..5),
        Some([0x70..=0x7f, _]) | Some([0x0f, 0x80..=0x8f])
    );
    if rest.starts_with(&[0x48, 0x85, 0xff]) && jcc_follows {
        n += 3;
    }
    n as u64
}

/// The allocator entry points a binary defines; empty when it does not
/// define both `malloc` and `free` (so it is not an allocator).
pub fn entry_points(data: &[u8]) -> Result<Vec<EntryPoint>, String> {
    let file = object::File::parse(data).map_err(|e| format!("not a readable ELF file: {e}"))?;
    let mut addrs: BTreeMap<&'static str, u64> = BTreeMap::new();
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        if !sym.is_definition() || sym.kind() != SymbolKind::Text || sym.is_local() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if let Some((known, _)) = SYMBOLS.iter().find(|(n, _)| *n == name) {
            addrs.entry(known).or_insert(sym.address());
        }
    }
    if !(addrs.contains_key("malloc") && addrs.contains_key("free")) {
        return Ok(Vec::new());
    }
    let mut out: Vec<EntryPoint> = Vec::new();
    for (name, kind) in SYMBOLS {
        let Some(&addr) = addrs.get(name) else {
            continue;
        };
        let Some(offset) = file_offset(&file, addr) else {
            continue;
        };
        if out.iter().any(|e| e.entry == offset) {
            continue; // an alias of an entry point already probed
        }
        let code = usize::try_from(offset)
            .ok()
            .and_then(|o| data.get(o..o.saturating_add(16)))
            .unwrap_or(&[]);
        out.push(EntryPoint {
            name,
            kind: *kind,
            entry: offset,
            offset: offset + skippable_prefix(code),
        });
    }
    Ok(out)
}

/// The file offset of a virtual address, through the loadable segments.
fn file_offset(file: &object::File<'_>, addr: u64) -> Option<u64> {
    file.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (addr >= start && addr < start + size).then(|| addr - start + off)
    })
}

/// File offset of an executable's entry point (`e_entry`), where its own
/// code starts once the dynamic loader has mapped its libraries.
pub fn program_entry(file: &File) -> Result<u64, String> {
    let map = map_file(file)?;
    let elf = object::File::parse(&*map).map_err(|e| e.to_string())?;
    file_offset(&elf, elf.entry()).ok_or_else(|| "entry point outside the file's segments".into())
}

/// Maps a file and returns its allocator entry points.
pub fn entry_points_of(file: &File) -> Result<Vec<EntryPoint>, String> {
    entry_points(&map_file(file)?)
}

fn map_file(file: &File) -> Result<memmap2::Mmap, String> {
    // SAFETY: the mapping is read-only and private; binaries on disk are
    // not modified while they are mapped by running processes.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("cannot map: {e}"))
}

/// True for file names of known allocator libraries (and libc).
pub fn is_allocator_library(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libc.so")
        || base.starts_with("libc-")
        || base.starts_with("libjemalloc")
        || base.starts_with("libtcmalloc")
        || base.starts_with("libmimalloc")
}

/// What a command will load, found before it runs: its executable (which
/// may hold a static allocator), allocator libraries it needs or
/// preloads, and whether it is dynamically linked (then it uses the system
/// libc).
#[derive(Debug, Default)]
pub struct CommandBinaries {
    pub executable: Option<PathBuf>,
    pub libraries: Vec<PathBuf>,
    pub dynamic: bool,
}

/// Resolves `program` like execvp (PATH search), follows one `#!`
/// interpreter, and reads its DT_NEEDED allocator libraries and (in
/// flameprobe's environment, which the command inherits) LD_PRELOAD.
pub fn command_binaries(program: &OsStr) -> CommandBinaries {
    let Some(mut exe) = find_program(program) else {
        return CommandBinaries::default();
    };
    if let Some(interp) = shebang(&exe) {
        exe = interp;
    }
    image_binaries(exe, std::env::var_os("LD_PRELOAD").as_deref())
}

/// What a process that just exec'd will load: its executable (as its
/// `/proc/PID/exe` names it), allocator libraries it needs, and those its
/// environment preloads.
pub fn process_image_binaries(pid: u32) -> CommandBinaries {
    let Ok(exe) = std::fs::read_link(crate::proc::proc_path(pid, "exe")) else {
        return CommandBinaries::default();
    };
    let preload = crate::proc::read_environ_var(pid, "LD_PRELOAD");
    image_binaries(exe, preload.as_deref())
}

/// The allocator-related binaries of the program `exe`, with `preload`
/// (an LD_PRELOAD value).
fn image_binaries(exe: PathBuf, preload: Option<&OsStr>) -> CommandBinaries {
    let mut out = CommandBinaries::default();
    let Ok(file) = crate::safe_fs::open_own_file(&exe) else {
        return out;
    };
    // SAFETY: a read-only private mapping of a regular file; a file
    // changed under it gives wrong or no names, not unsafety in practice
    // (the same assumption every ELF reader here makes).
    let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return out;
    };
    if let Ok((needed, runpath, dynamic)) = dynamic_info(&data) {
        out.dynamic = dynamic;
        let origin = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        for name in needed.iter().filter(|n| is_allocator_library(n)) {
            if let Some(p) = find_library(name, &runpath, &origin) {
                out.libraries.push(p);
            }
        }
    }
    if let Some(preload) = preload {
        for item in preload
            .as_bytes()
            .split(|&b| b == b':' || b == b' ')
            .filter(|s| !s.is_empty())
        {
            let p = PathBuf::from(OsStr::from_bytes(item));
            let found = if p.is_absolute() {
                Some(p)
            } else {
                find_library(&p.to_string_lossy(), &[], Path::new("/"))
            };
            out.libraries.extend(found);
        }
    }
    out.executable = Some(exe);
    out
}

fn find_program(program: &OsStr) -> Option<PathBuf> {
    let p = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return Some(p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(p))
        .find(|c| c.is_file())
}

fn shebang(exe: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = crate::safe_fs::open_own_file(exe)
        .ok()?
        .read(&mut head)
        .ok()?;
    let head = head.get(..n)?.strip_prefix(b"#!")?;
    let line = head.split(|&b| b == b'\n').next()?;
    let interp = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|s| !s.is_empty())?;
    Some(PathBuf::from(OsStr::from_bytes(interp)))
}

/// DT_NEEDED names, DT_RUNPATH/DT_RPATH directories and whether the
/// binary has a dynamic section at all.
fn dynamic_info(data: &[u8]) -> Result<(Vec<String>, Vec<String>, bool), object::Error> {
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let Some((dyns, link)) = sections.dynamic(endian, data)? else {
        return Ok((Vec::new(), Vec::new(), false));
    };
    let strings = sections.strings(endian, data, link)?;
    let (mut needed, mut runpath) = (Vec::new(), Vec::new());
    for d in dyns {
        let tag = d.tag32(endian);
        let text = || {
            d.string(endian, strings)
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        match tag {
            Some(object::elf::DT_NEEDED) => needed.push(text()?),
            Some(object::elf::DT_RUNPATH) | Some(object::elf::DT_RPATH) => {
                runpath.extend(text()?.split(':').map(str::to_string))
            }
            _ => {}
        }
    }
    Ok((needed, runpath, true))
}

const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];

fn find_library(name: &str, runpath: &[String], origin: &Path) -> Option<PathBuf> {
    let origin = origin.to_string_lossy();
    let env_dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    runpath
        .iter()
        .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
        .chain(env_dirs)
        .chain(LIBRARY_DIRS.iter().map(|s| s.to_string()))
        .map(|d| Path::new(&d).join(name))
        .find(|p| p.is_file())
}

/// The C library flameprobe itself runs with: the one every dynamically
/// linked command in the same root uses.
pub fn own_libc() -> Option<PathBuf> {
    let maps = crate::proc::read_maps(std::process::id()).ok()?;
    maps.into_iter()
        .find(|m| m.executable && m.is_file() && is_allocator_library(&m.path))
        .map(|m| PathBuf::from(m.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_glibc_entry_points_once_per_offset() {
        let libc = own_libc().expect("tests run with a dynamic libc");
        let file = File::open(&libc).unwrap();
        let eps = entry_points_of(&file).unwrap();
        let names: Vec<&str> = eps.iter().map(|e| e.name).collect();
        for want in ["malloc", "free", "calloc", "realloc", "posix_memalign"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let mut offsets: Vec<u64> = eps.iter().map(|e| e.entry).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), eps.len(), "one probe per offset: {eps:?}");
        assert!(eps
            .iter()
            .all(|e| e.offset >= e.entry && e.offset < e.entry + 8));
    }

    #[test]
    fn skips_only_harmless_prologues() {
        assert_eq!(skippable_prefix(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]), 4);
        assert_eq!(
            skippable_prefix(&[0x48, 0x85, 0xff, 0x0f, 0x84, 0, 0, 0, 0]),
            3
        );
        assert_eq!(skippable_prefix(&[0x48, 0x85, 0xff, 0x74, 0x10]), 3);
        assert_eq!(
            skippable_prefix(&[0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x10]),
            7
        );
        // test without a following jump, a push, too short: entry.
        assert_eq!(skippable_prefix(&[0x48, 0x85, 0xff, 0x55]), 0);
        assert_eq!(skippable_prefix(&[0x41, 0x54, 0x55]), 0);
        assert_eq!(skippable_prefix(&[0x48, 0x85]), 0);
    }

    #[test]
    fn a_binary_without_malloc_is_no_allocator() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(entry_points(&me).unwrap().is_empty());
    }

    #[test]
    fn recognizes_allocator_library_names() {
        assert!(is_allocator_library("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(is_allocator_library("libjemalloc.so.2"));
        assert!(is_allocator_library("/opt/x/libtcmalloc_minimal.so.4"));
        assert!(!is_allocator_library("/usr/lib/libcrypto.so.3"));
    }

    #[test]
    fn command_binaries_of_a_dynamic_program() {
        let c = command_binaries(OsStr::new("sh"));
        assert!(c.executable.is_some());
        assert!(c.dynamic);
        assert!(c
            .libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("libc.so")));
    }
}
