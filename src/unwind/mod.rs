//! Turns a sample's user-stack snapshot into frame addresses (leaf first).
//!
//! - `fp`: the frame-pointer chain the BPF program walked passes through.
//! - `dwarf`: the BPF program copied the top of the user stack and the
//!   registers; framehop unwinds that copy with each binary's CFI
//!   (`.eh_frame`/`.debug_frame`), falling back to frame pointers for code
//!   without CFI (JIT code).
//! - `auto`: both are captured; the DWARF result is used, and the
//!   frame-pointer chain where the stack copy failed or DWARF found less.
//!
//! Unwind information is loaded once per binary (keyed by device+inode, the
//! file is mapped, not copied) and shared by every process that maps it.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use object::{Object, ObjectSection, ObjectSegment};

use crate::process::{FileKey, ModuleFile, ProcessTable};

pub mod table;

/// How user stacks are unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// DWARF where the binary has CFI, frame pointers otherwise, per sample.
    Auto,
    /// DWARF/CFI unwinding of a copy of the user stack.
    Dwarf,
    /// Frame pointers walked in the kernel (smallest, cheapest record).
    Fp,
}

/// Limits of the stacks the BPF programs capture. bpf/flameprobe.h
/// (`enum limits`) defines the same values for the kernel side; `probe`
/// checks at compile time that the two agree.
///
/// Largest user-stack copy per sample (bytes).
pub const MAX_STACK_COPY: u32 = 64 * 1024;
/// Stack copies are whole pages.
pub const STACK_COPY_PAGE: u32 = 4096;
/// Deepest stack captured in the kernel (frames): frame-pointer walks and
/// the in-kernel CFI unwinder stop there.
pub const MAX_CAPTURED_FRAMES: usize = 127;
/// Lowest address user code can live at (mmap_min_addr is at least 4 KiB):
/// a smaller "return address" ends a stack.
pub const MIN_CODE_ADDR: u64 = 0x1000;

/// Default bytes of user stack copied for DWARF unwinding.
pub const DEFAULT_STACK_COPY: u32 = 16 * 1024;
/// Deepest stack kept (frames); deeper stacks are marked truncated.
const MAX_FRAMES: usize = 1024;

/// User-mode registers captured with a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

impl UnwindMode {
    /// The mode used when none is given.
    pub fn default_mode() -> Self {
        UnwindMode::Auto
    }

    /// Whether the BPF program copies the user stack.
    pub fn copies_stack(self) -> bool {
        self != UnwindMode::Fp
    }

    /// Whether the BPF program walks frame pointers.
    pub fn walks_frame_pointers(self) -> bool {
        self != UnwindMode::Dwarf
    }
}

/// A user stack as a sample captured it.
#[derive(Clone, Copy, Debug)]
pub struct UserSnapshot<'a> {
    pub pid: u32,
    pub regs: Option<UserRegs>,
    /// Bytes copied from the stack, starting at `regs.sp`.
    pub stack: &'a [u8],
    /// The copy stopped where the stack's mapping ends (nothing was cut).
    pub stack_ends_in_copy: bool,
    /// Frame-pointer chain from the kernel, leaf first.
    pub fp_frames: &'a [u64],
}

/// Frame addresses of one user stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    /// Absolute addresses, leaf first; all but the first are return addresses.
    pub frames: Vec<u64>,
    /// The unwinder stopped before the stack's end because the copy (or the
    /// depth limit) ended: more frames existed.
    pub truncated: bool,
}

/// Unwinds user stacks; keeps per-binary and per-process state.
pub struct Unwinder {
    mode: UnwindMode,
    files: HashMap<FileKey, Option<Arc<FileUnwindInfo>>>,
    procs: HashMap<u32, ProcUnwinder>,
}

struct ProcUnwinder {
    /// Snapshot version the modules were built from.
    version: u64,
    unwinder: UnwinderX86_64<SectionData>,
    cache: CacheX86_64,
}

impl Unwinder {
    pub fn new(mode: UnwindMode) -> Self {
        Unwinder {
            mode,
            files: HashMap::new(),
            procs: HashMap::new(),
        }
    }

    pub fn unwind(&mut self, snap: &UserSnapshot<'_>, table: &mut ProcessTable) -> Unwound {
        let fp = fp_unwound(snap.fp_frames);
        let Some(regs) = snap.regs.filter(|_| self.mode.copies_stack()) else {
            return fp;
        };
        if snap.stack.is_empty() {
            return fp;
        }
        let dwarf = self.dwarf(snap, regs, table);
        match self.mode {
            // The DWARF walk stopped early (no CFI and no frame pointer to
            // follow): the kernel's frame-pointer chain may know more.
            UnwindMode::Auto if fp.frames.len() > dwarf.frames.len() && !dwarf.truncated => fp,
            _ => dwarf,
        }
    }

    fn dwarf(
        &mut self,
        snap: &UserSnapshot<'_>,
        regs: UserRegs,
        table: &mut ProcessTable,
    ) -> Unwound {
        // Make sure the snapshot knows the leaf's module (a library loaded
        // since the process was first seen).
        let _ = table.find(snap.pid, regs.ip);
        let Some(info) = table.process(snap.pid) else {
            return Unwound::default();
        };
        let version = info.version;
        let needs_build = self
            .procs
            .get(&snap.pid)
            .is_none_or(|p| p.version != version);
        if needs_build {
            let mut unwinder = UnwinderX86_64::new();
            for r in module_ranges(info) {
                let Some(data) = self.file_info(r.key, &r.file) else {
                    continue;
                };
                unwinder.add_module(data.module(&r.file.path, r.avma, r.start_minus_offset));
            }
            self.procs.insert(
                snap.pid,
                ProcUnwinder {
                    version,
                    unwinder,
                    cache: CacheX86_64::new(),
                },
            );
        }
        let Some(proc_unwinder) = self.procs.get_mut(&snap.pid) else {
            return Unwound::default();
        };

        let stack = snap.stack;
        let sp0 = regs.sp;
        let mut read_failed_beyond_copy = false;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp0).ok_or(())? as usize;
            match stack.get(off..off.saturating_add(8)) {
                Some(b) => Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?)),
                None => {
                    read_failed_beyond_copy = true;
                    Err(())
                }
            }
        };
        let mut frames = Vec::with_capacity(32);
        let mut iter = proc_unwinder.unwinder.iter_frames(
            regs.ip,
            UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
            &mut proc_unwinder.cache,
            &mut read_stack,
        );
        let mut depth_limited = false;
        // Ok(None) is a clean end; Err(_) is where the walk could go no
        // further (unreadable stack, no rule): keep what was found.
        while let Ok(Some(frame)) = iter.next() {
            let addr = frame.address();
            if addr < MIN_CODE_ADDR {
                break;
            }
            if frames.len() >= MAX_FRAMES {
                depth_limited = true;
                break;
            }
            frames.push(addr);
        }
        Unwound {
            truncated: depth_limited || (read_failed_beyond_copy && !snap.stack_ends_in_copy),
            frames,
        }
    }

    /// Unwind data of a binary, parsed once per run.
    fn file_info(&mut self, key: FileKey, file: &Arc<ModuleFile>) -> Option<Arc<FileUnwindInfo>> {
        self.files
            .entry(key)
            .or_insert_with(|| match FileUnwindInfo::load(file) {
                Ok(info) => Some(Arc::new(info)),
                Err(e) => {
                    log::debug!("no unwind info for {}: {e}", file.path);
                    None
                }
            })
            .clone()
    }
}

fn fp_unwound(raw: &[u64]) -> Unwound {
    // A frame-pointer walk through code without frame pointers ends in
    // garbage; stop at the first impossible address.
    let frames: Vec<u64> = raw
        .iter()
        .copied()
        .take_while(|&a| a >= MIN_CODE_ADDR)
        .collect();
    Unwound {
        truncated: raw.len() >= MAX_CAPTURED_FRAMES,
        frames,
    }
}

/// One binary as mapped by a process.
struct ModuleRange {
    key: FileKey,
    file: Arc<ModuleFile>,
    /// Covers all of the binary's mappings.
    avma: Range<u64>,
    /// Start minus file offset of its lowest mapping.
    start_minus_offset: u64,
}

/// The binaries a process maps, each with the range of all its mappings.
fn module_ranges(info: &crate::process::ProcessInfo) -> Vec<ModuleRange> {
    let mut by_key: HashMap<FileKey, ModuleRange> = HashMap::new();
    // Mappings are sorted by address, so the first one seen is the lowest.
    for m in &info.mappings {
        let Some(file) = &m.module else { continue };
        let r = by_key.entry(file.key).or_insert_with(|| ModuleRange {
            key: file.key,
            file: file.clone(),
            avma: m.entry.start..m.entry.end,
            start_minus_offset: m.entry.start.wrapping_sub(m.entry.offset),
        });
        r.avma.end = r.avma.end.max(m.entry.end);
    }
    let mut out: Vec<ModuleRange> = by_key.into_values().collect();
    out.sort_by_key(|r| r.avma.start);
    out
}

/// A slice of a mapped binary, as framehop wants section data.
#[derive(Clone)]
struct SectionData {
    map: Arc<memmap2::Mmap>,
    range: Range<usize>,
}

impl Deref for SectionData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// The sections of one binary that unwinding needs.
struct FileUnwindInfo {
    map: Arc<memmap2::Mmap>,
    text: Option<(Range<u64>, Range<usize>)>,
    eh_frame: Option<(Range<u64>, Range<usize>)>,
    eh_frame_hdr: Option<(Range<u64>, Range<usize>)>,
    debug_frame: Option<Range<usize>>,
    got: Option<Range<u64>>,
    /// PT_LOAD segments: (file offset, vaddr, file size).
    segments: Vec<(u64, u64, u64)>,
}

impl FileUnwindInfo {
    fn load(file: &ModuleFile) -> Result<Self, String> {
        // SAFETY: read-only mapping of a file we hold open; see buildid.rs.
        let map = unsafe { memmap2::Mmap::map(&file.file) }.map_err(|e| e.to_string())?;
        let map = Arc::new(map);
        let elf = object::File::parse(&**map).map_err(|e| e.to_string())?;
        let section = |name: &str| -> Option<(Range<u64>, Range<usize>)> {
            let s = elf.section_by_name(name)?;
            let (off, size) = s.file_range()?;
            Some((
                s.address()..s.address() + s.size(),
                off as usize..(off + size) as usize,
            ))
        };
        let info = FileUnwindInfo {
            text: section(".text"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame").map(|(_, r)| r),
            got: section(".got").map(|(a, _)| a),
            segments: elf
                .segments()
                .map(|s| {
                    let (off, size) = s.file_range();
                    (off, s.address(), size)
                })
                .collect(),
            map: map.clone(),
        };
        if info.eh_frame.is_none() && info.debug_frame.is_none() {
            return Err("no .eh_frame or .debug_frame".into());
        }
        Ok(info)
    }

    fn data(&self, r: &Range<usize>) -> Option<SectionData> {
        (r.end <= self.map.len()).then(|| SectionData {
            map: self.map.clone(),
            range: r.clone(),
        })
    }

    /// The framehop module for this binary mapped at `avma`, whose lowest
    /// mapping's start minus file offset is `start_minus_offset`.
    fn module(&self, name: &str, avma: Range<u64>, start_minus_offset: u64) -> Module<SectionData> {
        let base_avma = self.base_avma(start_minus_offset);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.as_ref().map(|(a, _)| a.clone()),
            text: self.text.as_ref().and_then(|(_, r)| self.data(r)),
            got_svma: self.got.clone(),
            eh_frame_svma: self.eh_frame.as_ref().map(|(a, _)| a.clone()),
            eh_frame: self.eh_frame.as_ref().and_then(|(_, r)| self.data(r)),
            eh_frame_hdr_svma: self.eh_frame_hdr.as_ref().map(|(a, _)| a.clone()),
            eh_frame_hdr: self.eh_frame_hdr.as_ref().and_then(|(_, r)| self.data(r)),
            debug_frame: self.debug_frame.as_ref().and_then(|r| self.data(r)),
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        };
        Module::new(name.to_string(), avma, base_avma, info)
    }

    /// AVMA of SVMA 0, from the lowest mapping's start minus its offset
    /// (`start_minus_offset`), corrected by the first PT_LOAD segment's
    /// difference between file offset and virtual address.
    fn base_avma(&self, start_minus_offset: u64) -> u64 {
        let first = self.segments.iter().min_by_key(|(off, _, _)| *off);
        match first {
            Some(&(off, vaddr, _)) => start_minus_offset
                .wrapping_add(off & !0xfff)
                .wrapping_sub(vaddr & !0xfff),
            None => start_minus_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp_stops_at_garbage() {
        let u = fp_unwound(&[0x401000, 0x402000, 0, 0x403000]);
        assert_eq!(u.frames, [0x401000, 0x402000]);
        assert!(!u.truncated);
        let deep = vec![0x401000u64; MAX_CAPTURED_FRAMES];
        assert!(fp_unwound(&deep).truncated);
    }

    #[test]
    fn modes() {
        assert!(UnwindMode::Auto.copies_stack() && UnwindMode::Auto.walks_frame_pointers());
        assert!(UnwindMode::Dwarf.copies_stack() && !UnwindMode::Dwarf.walks_frame_pointers());
        assert!(!UnwindMode::Fp.copies_stack() && UnwindMode::Fp.walks_frame_pointers());
    }
}
