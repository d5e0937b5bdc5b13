//! What a binary says about its functions besides its symbol table: where
//! each function with CFI starts and ends (its FDEs, which stripped
//! binaries keep, from the unwinder's `.eh_frame` reader) and which of them
//! holds the ELF entry point. Everything in file offsets, as frames are.

use std::ops::Range;

use object::{Object, ObjectSegment};

use crate::process::ModuleFile;

/// A binary's PT_LOAD segments: (file offset, link-time address, file size).
#[derive(Clone, Debug, Default)]
pub struct Segments(Vec<(u64, u64, u64)>);

impl Segments {
    pub fn of(elf: &object::File<'_>) -> Segments {
        Segments(
            elf.segments()
                .map(|s| {
                    let (off, size) = s.file_range();
                    (off, s.address(), size)
                })
                .filter(|&(_, _, size)| size > 0)
                .collect(),
        )
    }

    /// The file offset of link-time address `addr`.
    pub fn offset_of(&self, addr: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(_, vaddr, size)| vaddr <= addr && addr - vaddr < size)
            .map(|&(off, vaddr, _)| addr - vaddr + off)
    }

    /// The link-time address of file offset `offset`.
    pub fn addr_of(&self, offset: u64) -> Option<u64> {
        self.0
            .iter()
            .find(|&&(off, _, size)| off <= offset && offset - off < size)
            .map(|&(off, vaddr, _)| offset - off + vaddr)
    }
}

/// The functions of one binary known from its CFI.
#[derive(Debug, Default)]
pub struct Functions {
    /// FDE ranges as file offsets, sorted by start.
    ranges: Vec<Range<u64>>,
    /// The FDE that holds the ELF entry point.
    entry: Option<Range<u64>>,
}

impl Functions {
    /// Reads `file`'s FDEs and entry point; a binary without them (or not
    /// an ELF file) knows no functions.
    pub fn load(file: &ModuleFile) -> Functions {
        // SAFETY: read-only mapping of a file we hold open; see buildid.rs.
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file.file) }) else {
            return Functions::default();
        };
        let Ok(elf) = object::File::parse(&*map) else {
            return Functions::default();
        };
        let fdes = match crate::unwind::table::fde_ranges(file) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("no function ranges for {}: {e}", file.path);
                return Functions::default();
            }
        };
        Functions::from_fdes(&fdes, &Segments::of(&elf), elf.entry())
    }

    /// From FDE ranges in link-time addresses (sorted), the segments that
    /// place them in the file, and the ELF entry point.
    fn from_fdes(fdes: &[Range<u64>], segments: &Segments, entry: u64) -> Functions {
        let to_offsets = |r: &Range<u64>| {
            let start = segments.offset_of(r.start)?;
            Some(start..start + (r.end - r.start))
        };
        let entry = (entry != 0)
            .then(|| fdes.iter().find(|r| r.contains(&entry)))
            .flatten()
            .and_then(to_offsets);
        let mut ranges: Vec<Range<u64>> = fdes.iter().filter_map(to_offsets).collect();
        ranges.sort_by_key(|r| r.start);
        Functions { ranges, entry }
    }

    /// The function (FDE range, file offsets) holding `offset`.
    pub fn containing(&self, offset: u64) -> Option<&Range<u64>> {
        let i = self.ranges.partition_point(|r| r.start <= offset);
        // FDEs do not nest; the last one starting at or before `offset`
        // is the only candidate.
        self.ranges[..i].last().filter(|r| offset < r.end)
    }

    /// Whether `offset` lies in the function holding the ELF entry point.
    pub fn in_entry(&self, offset: u64) -> bool {
        self.entry.as_ref().is_some_and(|r| r.contains(&offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fde_ranges_become_file_offset_functions() {
        // Text at address 0x401000 from file offset 0x1000.
        let segments = Segments(vec![(0, 0x400000, 0x800), (0x1000, 0x401000, 0x2000)]);
        let fdes = [0x401000..0x401040, 0x401040..0x401100, 0x401200..0x401300];
        let f = Functions::from_fdes(&fdes, &segments, 0x401010);
        assert_eq!(f.containing(0x1000), Some(&(0x1000..0x1040)));
        assert_eq!(f.containing(0x10ff), Some(&(0x1040..0x1100)));
        assert_eq!(f.containing(0x1100), None, "gap between functions");
        assert_eq!(f.containing(0x1250), Some(&(0x1200..0x1300)));
        assert_eq!(f.containing(0x900), None);
        assert!(f.in_entry(0x1020) && !f.in_entry(0x1040));
        assert_eq!(segments.addr_of(0x1234), Some(0x401234));
        assert_eq!(segments.offset_of(0x3000), None);
        let none = Functions::from_fdes(&fdes, &segments, 0x402000);
        assert!(!none.in_entry(0x1020));
    }

    #[test]
    fn own_binary_has_functions_and_an_entry() {
        let mut table = crate::process::ProcessTable::new();
        let addr = own_fn as fn() -> u64 as usize as u64;
        let mapping = table.find(std::process::id(), addr).unwrap().clone();
        let module = mapping.module.clone().unwrap();
        let f = Functions::load(&module);
        let off = mapping.file_offset(addr);
        let r = f.containing(off).expect("own function has an FDE");
        assert!(r.start <= off && off < r.end);
        assert!(f.entry.is_some(), "{f:?}");
    }

    #[inline(never)]
    fn own_fn() -> u64 {
        std::hint::black_box(7)
    }
}
