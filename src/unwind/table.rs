//! Unwind tables for the in-kernel unwinder (memleak's user stacks).
//!
//! A binary's `.eh_frame` is compiled into rows sorted by address, one row
//! per address range with the same rule (`struct unwind_row` in
//! bpf/flameprobe.h), and the rows of every binary go into one BPF array.
//! Only rules the BPF program can apply are kept: CFA = rsp or rbp plus an
//! offset, rbp saved at CFA plus an offset or left alone, and "outermost
//! frame". Anything else (the PLT's CFA expressions, gaps between
//! functions) becomes a row without CFI, where the BPF program falls back
//! to frame pointers.
//!
//! Each binary is compiled once per run (keyed by device and inode, like
//! the user-space unwinder's data) and shared by every process mapping it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};

use super::{module_ranges, FileUnwindInfo};
use crate::process::{FileKey, ProcessInfo};

/// Capacity of the in-kernel unwinder's shared row array (12 bytes each;
/// glibc needs about 20 000 rows).
pub const UNWIND_ROWS: u32 = 1 << 20;

/// How to find the caller's frame in one address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No CFI here: frame pointers, if any.
    None,
    /// The outermost frame (`_start`, a thread's entry): the stack ends.
    Stop,
    /// CFA = rsp + `cfa`; rbp saved at CFA + `rbp` (0: unchanged).
    Rsp { cfa: i32, rbp: i16 },
    /// CFA = rbp + `cfa`; rbp saved at CFA + `rbp` (0: unchanged).
    Rbp { cfa: i32, rbp: i16 },
}

/// A rule from `pc` (a link-time address) up to the next row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub pc: u32,
    pub rule: Rule,
}

/// A binary as one process maps it, with its rows in the shared array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleRows {
    /// Address range of the binary's mappings.
    pub start: u64,
    pub end: u64,
    /// Load address minus link-time address.
    pub bias: u64,
    /// Index of its first row in the shared array, and the number of rows.
    pub first: u32,
    pub count: u32,
}

/// The rows of every binary seen so far, placed one after the other in a
/// shared array of `capacity` rows.
pub struct CfiTables {
    files: HashMap<FileKey, Option<(u32, u32, Arc<FileUnwindInfo>)>>,
    next: u32,
    capacity: u32,
}

impl CfiTables {
    pub fn new(capacity: u32) -> Self {
        CfiTables {
            files: HashMap::new(),
            next: 0,
            capacity,
        }
    }

    /// The binaries of `info` that have rows, sorted by address. Rows of a
    /// binary met for the first time are compiled and handed to
    /// `upload(first_index, rows)` before they are referenced.
    pub fn modules<E>(
        &mut self,
        info: &ProcessInfo,
        mut upload: impl FnMut(u32, &[Row]) -> Result<(), E>,
    ) -> Result<Vec<ModuleRows>, E> {
        let mut out = Vec::new();
        for r in module_ranges(info) {
            if !self.files.contains_key(&r.key) {
                let placed = self.place(&r.file, &mut upload)?;
                self.files.insert(r.key, placed);
            }
            let Some(Some((first, count, data))) = self.files.get(&r.key) else {
                continue;
            };
            out.push(ModuleRows {
                start: r.avma.start,
                end: r.avma.end,
                bias: data.base_avma(r.start_minus_offset),
                first: *first,
                count: *count,
            });
        }
        Ok(out)
    }

    fn place<E>(
        &mut self,
        file: &crate::process::ModuleFile,
        upload: &mut impl FnMut(u32, &[Row]) -> Result<(), E>,
    ) -> Result<Option<(u32, u32, Arc<FileUnwindInfo>)>, E> {
        let data = match FileUnwindInfo::load(file) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                log::debug!("no unwind rows for {}: {e}", file.path);
                return Ok(None);
            }
        };
        let rows = match data.rows() {
            Ok(rows) if !rows.is_empty() => rows,
            Ok(_) => return Ok(None),
            Err(e) => {
                log::debug!("no unwind rows for {}: {e}", file.path);
                return Ok(None);
            }
        };
        let count = rows.len() as u32;
        if self.capacity - self.next < count {
            log::warn!(
                "unwind table full: {} keeps frame-pointer stacks",
                file.path
            );
            return Ok(None);
        }
        let first = self.next;
        upload(first, &rows)?;
        self.next += count;
        log::debug!("{}: {count} unwind rows", file.path);
        Ok(Some((first, count, data)))
    }
}

impl FileUnwindInfo {
    /// This binary's `.eh_frame` compiled into rows.
    pub(super) fn rows(&self) -> Result<Vec<Row>, String> {
        match self.eh_frame_data()? {
            Some((data, bases)) => compile(data, &bases),
            None => Ok(Vec::new()),
        }
    }

    /// The `.eh_frame` section and the bases its pointers are relative to.
    fn eh_frame_data(&self) -> Result<Option<(&[u8], BaseAddresses)>, String> {
        let Some((svma, range)) = &self.eh_frame else {
            return Ok(None);
        };
        let data = self.map.get(range.clone()).ok_or("truncated .eh_frame")?;
        let mut bases = BaseAddresses::default().set_eh_frame(svma.start);
        if let Some((text, _)) = &self.text {
            bases = bases.set_text(text.start);
        }
        if let Some((hdr, _)) = &self.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr.start);
        }
        if let Some(got) = &self.got {
            bases = bases.set_got(got.start);
        }
        Ok(Some((data, bases)))
    }
}

/// The link-time address range of every FDE of a binary's `.eh_frame`
/// and `.debug_frame`, sorted by start: where its functions with CFI
/// begin and end, symbols or not (stripped binaries keep their CFI).
pub fn fde_ranges(file: &crate::process::ModuleFile) -> Result<Vec<Range<u64>>, String> {
    let info = FileUnwindInfo::load(file)?;
    let mut out = Vec::new();
    if let Some((data, bases)) = info.eh_frame_data()? {
        push_fde_ranges(&EhFrame::new(data, LittleEndian), &bases, &mut out);
    }
    if let Some(data) = info
        .debug_frame
        .as_ref()
        .and_then(|r| info.map.get(r.clone()))
    {
        let bases = BaseAddresses::default();
        push_fde_ranges(&DebugFrame::new(data, LittleEndian), &bases, &mut out);
    }
    out.retain(|r| r.end > r.start);
    out.sort_by_key(|r| (r.start, r.end));
    out.dedup_by_key(|r| r.start);
    Ok(out)
}

fn push_fde_ranges<'a, S: UnwindSection<EndianSlice<'a, LittleEndian>>>(
    section: &S,
    bases: &BaseAddresses,
    out: &mut Vec<Range<u64>>,
) {
    let mut entries = section.entries(bases);
    // Keep what was read before a malformed entry.
    while let Ok(Some(entry)) = entries.next() {
        if let CieOrFde::Fde(partial) = entry {
            if let Ok(fde) = partial.parse(S::cie_from_offset) {
                let start = fde.initial_address();
                out.push(start..start.saturating_add(fde.len()));
            }
        }
    }
}

/// Compiles an `.eh_frame` section into sorted rows.
fn compile(data: &[u8], bases: &BaseAddresses) -> Result<Vec<Row>, String> {
    let eh = EhFrame::new(data, LittleEndian);
    let mut ctx = Box::new(UnwindContext::new());
    // (start, end, rule) of every row of every FDE.
    let mut ranges: Vec<(u64, u64, Rule)> = Vec::new();
    let mut entries = eh.entries(bases);
    loop {
        let entry = match entries.next() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            // Keep what was read before a malformed entry.
            Err(e) => {
                log::debug!(".eh_frame: {e}");
                break;
            }
        };
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            continue;
        };
        let Ok(mut table) = fde.rows(&eh, bases, &mut ctx) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            let rule = rule_of(row);
            ranges.push((row.start_address(), row.end_address(), rule));
        }
    }
    ranges.sort_by_key(|r| r.0);

    let mut rows: Vec<Row> = Vec::with_capacity(ranges.len() + 1);
    let mut covered_to = 0u64;
    for (start, end, rule) in ranges {
        if end <= start || end > u64::from(u32::MAX) {
            continue;
        }
        // A gap between functions has no CFI.
        if start > covered_to && !rows.is_empty() {
            push_row(&mut rows, covered_to as u32, Rule::None);
        }
        push_row(&mut rows, start as u32, rule);
        covered_to = covered_to.max(end);
    }
    if !rows.is_empty() {
        push_row(&mut rows, covered_to as u32, Rule::None);
    }
    Ok(rows)
}

/// Appends a row, merging it into the previous one when the rule is the
/// same (or replacing it when both start at the same address).
fn push_row(rows: &mut Vec<Row>, pc: u32, rule: Rule) {
    if let Some(last) = rows.last_mut() {
        if last.pc == pc {
            last.rule = rule;
            let n = rows.len();
            if n >= 2 && rows[n - 2].rule == rule {
                rows.pop();
            }
            return;
        }
        if last.rule == rule {
            return;
        }
    }
    rows.push(Row { pc, rule });
}

fn rule_of<T: gimli::ReaderOffset>(row: &gimli::UnwindTableRow<T>) -> Rule {
    if matches!(row.register(X86_64::RA), Some(RegisterRule::Undefined)) {
        return Rule::Stop;
    }
    let rbp = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => 0,
        Some(RegisterRule::Offset(o)) => match i16::try_from(o) {
            Ok(o) if o != 0 => o,
            _ => return Rule::None,
        },
        Some(_) => return Rule::None,
    };
    match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(cfa) = i32::try_from(*offset) else {
                return Rule::None;
            };
            if *register == X86_64::RSP {
                Rule::Rsp { cfa, rbp }
            } else if *register == X86_64::RBP {
                Rule::Rbp { cfa, rbp }
            } else {
                Rule::None
            }
        }
        CfaRule::Expression(_) => Rule::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::{Object, ObjectSymbol};

    fn fixture() -> (Vec<u8>, FileUnwindInfo) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/unwind/selfdump-nofp"
        );
        let file = crate::process::ModuleFile {
            key: FileKey { dev: 0, inode: 0 },
            path: path.into(),
            file: std::fs::File::open(path).unwrap(),
        };
        let bytes = std::fs::read(path).unwrap();
        (bytes, FileUnwindInfo::load(&file).unwrap())
    }

    fn row_at(rows: &[Row], pc: u64) -> Rule {
        let i = rows.partition_point(|r| u64::from(r.pc) <= pc);
        assert!(i > 0, "no row at {pc:#x}");
        rows[i - 1].rule
    }

    #[test]
    fn compiles_eh_frame_into_sorted_rows() {
        let (bytes, info) = fixture();
        let rows = info.rows().unwrap();
        assert!(rows
            .windows(2)
            .all(|w| w[0].pc < w[1].pc && w[0].rule != w[1].rule));
        assert_eq!(rows.last().unwrap().rule, Rule::None, "ends with no CFI");

        let elf = object::File::parse(&*bytes).unwrap();
        let sym = |name: &str| {
            elf.symbols()
                .find(|s| s.name() == Ok(name))
                .unwrap_or_else(|| panic!("{name}"))
                .address()
        };
        // level3: `sub $8,%rsp` after entry (built without frame pointers).
        let level3 = sym("level3");
        assert_eq!(row_at(&rows, level3), Rule::Rsp { cfa: 8, rbp: 0 });
        assert_eq!(row_at(&rows, level3 + 4), Rule::Rsp { cfa: 16, rbp: 0 });
        // _start marks the return address undefined: the stack ends there.
        assert_eq!(row_at(&rows, sym("_start") + 4), Rule::Stop);
    }

    #[test]
    fn rows_merge_and_gaps_have_no_cfi() {
        let mut rows = Vec::new();
        let a = Rule::Rsp { cfa: 8, rbp: 0 };
        push_row(&mut rows, 0x10, a);
        push_row(&mut rows, 0x14, a);
        push_row(&mut rows, 0x14, Rule::Rbp { cfa: 16, rbp: -16 });
        push_row(&mut rows, 0x20, Rule::None);
        assert_eq!(
            rows,
            [
                Row { pc: 0x10, rule: a },
                Row {
                    pc: 0x14,
                    rule: Rule::Rbp { cfa: 16, rbp: -16 }
                },
                Row {
                    pc: 0x20,
                    rule: Rule::None
                },
            ]
        );
    }

    #[test]
    fn malformed_eh_frame_gives_no_rows() {
        let rows = compile(&[0xff; 64], &BaseAddresses::default()).unwrap();
        assert!(rows.is_empty());
    }
}
