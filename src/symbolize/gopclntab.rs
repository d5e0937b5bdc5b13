//! Go's own symbol table, `.gopclntab`, which every Go binary keeps,
//! stripped (`-ldflags='-s -w'`) or not: function names, files and lines,
//! and the inline tree, for the Go 1.2-1.15 (`0xfffffffb`), 1.16-1.17
//! (`0xfffffffa`), 1.18-1.19 (`0xfffffff0`) and 1.20+ (`0xfffffff1`)
//! layouts. The format is the one the Go sources document (`debug/gosym`,
//! `runtime/symtab.go`, `runtime/runtime2.go`'s `_func`).
//!
//! Addresses are link-time addresses; callers hand in file offsets, placed
//! by the binary's PT_LOAD segments. Every read is bounds-checked: a
//! malformed table gives no names, never a panic.

use std::ops::Range;
use std::sync::Arc;

use object::{Object, ObjectSection};

use super::functions::Segments;
use crate::process::ModuleFile;
use crate::profile::Line;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    /// Go 1.2 to 1.15.
    V12,
    /// Go 1.16 and 1.17.
    V116,
    /// Go 1.18 and 1.19.
    V118,
    /// Go 1.20 and later.
    V120,
}

/// `_PCDATA_InlTreeIndex` and `_FUNCDATA_InlTree` (Go 1.9 and later).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// Inlining levels followed at one address (the tree is acyclic in any
/// binary Go wrote; this bounds a hostile one).
const MAX_INLINE_DEPTH: usize = 64;

/// One binary's Go symbol table.
pub struct GoTable {
    map: Arc<memmap2::Mmap>,
    segments: Segments,
    version: Version,
    ptr_size: usize,
    quantum: u64,
    text_start: u64,
    nfunc: usize,
    /// File ranges of the table's parts.
    pclntab: Range<usize>,
    funcnametab: Range<usize>,
    cutab: Range<usize>,
    filetab: Range<usize>,
    pctab: Range<usize>,
    /// Where `_func` offsets start, and the function table.
    funcdata: Range<usize>,
    functab: Range<usize>,
    /// The address funcdata offsets are relative to (Go 1.18+:
    /// `moduledata.gofunc`), when found.
    gofunc: Option<u64>,
}

/// One `_func`, at a file offset.
#[derive(Clone, Copy)]
struct Func {
    at: usize,
    entry: u64,
}

impl GoTable {
    /// The Go table of `file`, if it is a Go binary.
    pub fn load(file: &ModuleFile) -> Option<GoTable> {
        // SAFETY: read-only mapping of a file we hold open; see buildid.rs.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file.file) }.ok()?);
        let elf = object::File::parse(&**map).ok()?;
        let section = |name: &str| {
            let s = elf.section_by_name(name)?;
            let (off, size) = s.file_range()?;
            Some((s.address(), off as usize..(off + size) as usize))
        };
        let (pcln_addr, pclntab) = section(".gopclntab")?;
        let segments = Segments::of(&elf);
        let text = section(".text").map(|(a, _)| a);
        let mut t = GoTable::parse_header(map.clone(), segments, pclntab, text)?;
        if t.version >= Version::V118 {
            let rodata = section(".rodata").map(|(a, _)| a);
            t.gofunc = rodata.and_then(|rodata| {
                [".noptrdata", ".data"].iter().find_map(|name| {
                    let (_, data) = section(name)?;
                    t.find_gofunc(data, pcln_addr, rodata)
                })
            });
        }
        drop(elf);
        Some(t)
    }

    fn parse_header(
        map: Arc<memmap2::Mmap>,
        segments: Segments,
        pclntab: Range<usize>,
        text: Option<u64>,
    ) -> Option<GoTable> {
        let d = map.get(pclntab.clone())?;
        if d.len() < 16 || d[4] != 0 || d[5] != 0 {
            return None;
        }
        let version = match u32::from_le_bytes(d[0..4].try_into().ok()?) {
            0xfffffffb => Version::V12,
            0xfffffffa => Version::V116,
            0xfffffff0 => Version::V118,
            0xfffffff1 => Version::V120,
            _ => return None,
        };
        let quantum = u64::from(d[6]);
        let ptr_size = usize::from(d[7]);
        if !matches!(quantum, 1 | 2 | 4) || ptr_size != 8 {
            return None;
        }
        let word = |i: usize| read_uint(d, 8 + i * ptr_size, ptr_size);
        let part = |off: u64| -> Option<Range<usize>> {
            let off = usize::try_from(off).ok()?;
            (off <= d.len()).then(|| pclntab.start + off..pclntab.end)
        };
        let mut t = GoTable {
            map: map.clone(),
            segments,
            version,
            ptr_size,
            quantum,
            text_start: 0,
            nfunc: 0,
            pclntab: pclntab.clone(),
            funcnametab: pclntab.clone(),
            cutab: pclntab.clone(),
            filetab: pclntab.clone(),
            pctab: pclntab.clone(),
            funcdata: pclntab.clone(),
            functab: pclntab.clone(),
            gofunc: None,
        };
        let field = match version {
            Version::V12 => {
                t.nfunc = usize::try_from(word(0)?).ok()?;
                t.functab = part(8 + ptr_size as u64)?;
                t.text_start = 0;
                ptr_size
            }
            Version::V116 => {
                t.nfunc = usize::try_from(word(0)?).ok()?;
                t.funcnametab = part(word(2)?)?;
                t.cutab = part(word(3)?)?;
                t.filetab = part(word(4)?)?;
                t.pctab = part(word(5)?)?;
                t.funcdata = part(word(6)?)?;
                t.functab = t.funcdata.clone();
                ptr_size
            }
            Version::V118 | Version::V120 => {
                t.nfunc = usize::try_from(word(0)?).ok()?;
                t.text_start = word(2)?;
                t.funcnametab = part(word(3)?)?;
                t.cutab = part(word(4)?)?;
                t.filetab = part(word(5)?)?;
                t.pctab = part(word(6)?)?;
                t.funcdata = part(word(7)?)?;
                t.functab = t.funcdata.clone();
                4
            }
        };
        if t.text_start == 0 && version >= Version::V118 {
            t.text_start = text?;
        }
        let size = (t.nfunc.checked_mul(2)?.checked_add(1)?).checked_mul(field)?;
        if t.functab.start.checked_add(size)? > t.functab.end {
            return None;
        }
        t.functab.end = t.functab.start + size;
        Some(t)
    }

    /// `moduledata.gofunc` (Go 1.18+): the moduledata in `.noptrdata`
    /// starts with the address of the table (`pcHeader`), then its
    /// function name table; `gofunc` follows the `rodata` field, the start
    /// of `.rodata`.
    fn find_gofunc(&self, noptrdata: Range<usize>, pcln_addr: u64, rodata: u64) -> Option<u64> {
        let data = self.map.get(noptrdata)?;
        let names = pcln_addr + (self.funcnametab.start - self.pclntab.start) as u64;
        let word = |at: usize| read_uint(data, at, 8);
        (0..data.len().saturating_sub(64))
            .step_by(8)
            .filter(|&at| word(at) == Some(pcln_addr) && word(at + 8) == Some(names))
            .find_map(|at| {
                // Word 37 in Go 1.18 and 1.19, 39 in 1.20+; `types`, a few
                // words before, may hold the same address: the last match.
                (30..48)
                    .rev()
                    .find(|i| word(at + i * 8) == Some(rodata))
                    .and_then(|i| word(at + i * 8 + 8))
            })
    }

    /// Function names (with inlined functions, innermost first) at file
    /// offset `offset`, or `None` outside every Go function.
    pub fn lookup(&self, offset: u64) -> Option<Vec<Line>> {
        let pc = self.segments.addr_of(offset)?;
        let f = self.find_func(pc)?;
        let mut lines = Vec::new();
        let mut at = pc;
        let mut seen = 0;
        while let Some((name, parent_pc)) = self.inlined_at(f, at) {
            lines.push(self.line(f, at, name));
            at = f.entry + parent_pc;
            seen += 1;
            if seen >= MAX_INLINE_DEPTH {
                break;
            }
        }
        let name = self.func_name(self.field(f, 1)?)?;
        lines.push(self.line(f, at, name));
        Some(lines)
    }

    fn d(&self) -> &[u8] {
        &self.map
    }

    fn functab_field(&self) -> usize {
        if self.version >= Version::V118 {
            4
        } else {
            self.ptr_size
        }
    }

    fn find_func(&self, pc: u64) -> Option<Func> {
        let sz = self.functab_field();
        let entry_pc = |i: usize| {
            let v = read_uint(self.d(), self.functab.start + 2 * i * sz, sz)?;
            Some(if self.version >= Version::V118 {
                v + self.text_start
            } else {
                v
            })
        };
        // The last function starting at or before pc.
        let (mut lo, mut hi) = (0, self.nfunc);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if entry_pc(mid)? <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let i = lo.checked_sub(1)?;
        if pc >= entry_pc(i + 1)? {
            return None;
        }
        let funcoff = read_uint(self.d(), self.functab.start + (2 * i + 1) * sz, sz)?;
        let at = self
            .funcdata
            .start
            .checked_add(usize::try_from(funcoff).ok()?)?;
        (at < self.pclntab.end).then_some(Func {
            at,
            entry: entry_pc(i)?,
        })
    }

    /// Size of the first `_func` field: the entry PC (a pointer before
    /// Go 1.18, an offset from the text start after).
    fn first_field(&self) -> usize {
        if self.version >= Version::V118 {
            4
        } else {
            self.ptr_size
        }
    }

    /// The `n`th 32-bit field of a `_func` (1 = name offset, 5 = pcfile,
    /// 6 = pcln, 7 = npcdata, 8 = cuOffset).
    fn field(&self, f: Func, n: usize) -> Option<u32> {
        read_u32(self.d(), f.at + self.first_field() + (n - 1) * 4)
    }

    /// Size of the `_func` header, before its pcdata offsets.
    fn header_size(&self) -> usize {
        self.first_field()
            + 4 * match self.version {
                Version::V12 => 8,
                Version::V116 | Version::V118 => 9,
                Version::V120 => 10,
            }
    }

    fn nfuncdata(&self, f: Func) -> usize {
        self.d()
            .get(f.at + self.header_size() - 1)
            .map_or(0, |&n| usize::from(n))
    }

    /// The value of pcdata table `table` at `pc`.
    fn pcdata(&self, f: Func, table: u32, pc: u64) -> Option<i32> {
        if table >= self.field(f, 7)? {
            return None;
        }
        let off = read_u32(self.d(), f.at + self.header_size() + table as usize * 4)?;
        self.pcvalue(off, f.entry, pc)
    }

    /// The file offset of funcdata `i` of a function.
    fn funcdata(&self, f: Func, i: u32) -> Option<usize> {
        if i as usize >= self.nfuncdata(f) {
            return None;
        }
        let npcdata = self.field(f, 7)? as usize;
        let start = f.at + self.header_size() + npcdata * 4;
        let addr = if self.version >= Version::V118 {
            let off = read_u32(self.d(), start + i as usize * 4)?;
            if off == u32::MAX {
                return None;
            }
            self.gofunc? + u64::from(off)
        } else {
            // Pointers, aligned (in memory, as the section is).
            let mut start = start;
            if (start - self.pclntab.start) % self.ptr_size != 0 {
                start += 4;
            }
            let addr = read_uint(self.d(), start + i as usize * self.ptr_size, self.ptr_size)?;
            if addr == 0 {
                return None;
            }
            addr
        };
        usize::try_from(self.segments.offset_of(addr)?).ok()
    }

    /// The function inlined at `pc` (its name and the offset from the
    /// entry of an instruction at its call site), if any.
    fn inlined_at(&self, f: Func, pc: u64) -> Option<(&str, u64)> {
        let index = self.pcdata(f, PCDATA_INL_TREE_INDEX, pc)?;
        let index = usize::try_from(index).ok()?;
        let tree = self.funcdata(f, FUNCDATA_INL_TREE)?;
        let (size, name_at, parent_pc_at) = match self.version {
            Version::V120 => (16, 4, 8),
            _ => (20, 12, 16),
        };
        let at = tree.checked_add(index.checked_mul(size)?)?;
        let name = read_u32(self.d(), at + name_at)?;
        let parent_pc = read_u32(self.d(), at + parent_pc_at)?;
        Some((self.func_name(name)?, u64::from(parent_pc)))
    }

    fn func_name(&self, off: u32) -> Option<&str> {
        let table = if self.version == Version::V12 {
            &self.pclntab
        } else {
            &self.funcnametab
        };
        cstr(self.d(), table.start.checked_add(off as usize)?, table.end)
    }

    /// A line of `name` at `pc` of function `f`, with its file and line.
    fn line(&self, f: Func, pc: u64, name: &str) -> Line {
        let line = self
            .field(f, 6)
            .and_then(|t| self.pcvalue(t, f.entry, pc))
            .and_then(|l| u32::try_from(l).ok());
        let file = self
            .field(f, 5)
            .and_then(|t| self.pcvalue(t, f.entry, pc))
            .and_then(|i| self.file_name(f, i));
        Line {
            function: name.to_string(),
            file: file.map(str::to_string),
            line: line.filter(|_| file.is_some()),
            system_name: None,
        }
    }

    fn file_name(&self, f: Func, index: i32) -> Option<&str> {
        let index = usize::try_from(index).ok()?;
        let d = self.d();
        if self.version == Version::V12 {
            let filetab = self.v12_filetab()?;
            let off = read_u32(d, filetab.checked_add(index.checked_mul(4)?)?)?;
            return cstr(d, self.pclntab.start + off as usize, self.pclntab.end);
        }
        let cu = self.field(f, 8)? as usize;
        let off = read_u32(d, self.cutab.start + (cu + index) * 4)?;
        if off == u32::MAX {
            return None;
        }
        cstr(
            d,
            self.filetab.start.checked_add(off as usize)?,
            self.filetab.end,
        )
    }

    /// Go 1.2-1.15: the file table's offset follows the function table.
    fn v12_filetab(&self) -> Option<usize> {
        let off = read_u32(self.d(), self.functab.end)?;
        self.pclntab.start.checked_add(off as usize)
    }

    /// A pc-value table (at `off` in the pc table) evaluated at `target`.
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Option<i32> {
        let d = self.d();
        let mut p = self.pctab.start.checked_add(off as usize)?;
        let end = self.pctab.end;
        let mut pc = entry;
        let mut val: i32 = -1;
        let mut first = true;
        loop {
            let uv = varint(d, &mut p, end)?;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            let delta = if uv & 1 != 0 {
                !(uv >> 1) as i32
            } else {
                (uv >> 1) as i32
            };
            let pcdelta = u64::from(varint(d, &mut p, end)?) * self.quantum;
            pc += pcdelta;
            val = val.wrapping_add(delta);
            if target < pc {
                return Some(val);
            }
        }
    }
}

fn read_u32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_uint(d: &[u8], at: usize, size: usize) -> Option<u64> {
    match size {
        4 => read_u32(d, at).map(u64::from),
        8 => Some(u64::from_le_bytes(
            d.get(at..at.checked_add(8)?)?.try_into().ok()?,
        )),
        _ => None,
    }
}

fn varint(d: &[u8], p: &mut usize, end: usize) -> Option<u32> {
    let mut v: u32 = 0;
    for shift in (0..35).step_by(7) {
        if *p >= end {
            return None;
        }
        let b = *d.get(*p)?;
        *p += 1;
        v |= u32::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A NUL-terminated UTF-8 string at `at`, before `end`.
fn cstr(d: &[u8], at: usize, end: usize) -> Option<&str> {
    let bytes = d.get(at..end.min(d.len()))?;
    let len = memchr::memchr(0, bytes)?;
    std::str::from_utf8(&bytes[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_varints_and_strings_within_bounds() {
        let d = [0x96, 0x01, 0x05, 0x80];
        let mut p = 0;
        assert_eq!(varint(&d, &mut p, 4), Some(150));
        assert_eq!(varint(&d, &mut p, 4), Some(5));
        assert_eq!(varint(&d, &mut p, 4), None, "runs off the end");
        assert_eq!(cstr(b"main.main\0x", 0, 11), Some("main.main"));
        assert_eq!(cstr(b"unterminated", 0, 12), None);
        assert_eq!(read_uint(&d, 2, 4), None);
    }
}
