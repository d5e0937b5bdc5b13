//! The one symbolization layer: kernel addresses (kallsyms) and user
//! addresses normalized to (binary, file offset), both through blazesym,
//! and JIT code (addresses in a process's anonymous executable memory)
//! through that process's perf map, its names cleaned by `jit::names`.
//!
//! Go binaries are named from their own table, `.gopclntab` ([`gopclntab`]),
//! which stripping keeps. Where ELF symbols and DWARF are missing, a binary
//! still names its code:
//! the vDSO is read from flameprobe's own mapping ([`vdso`]), and code no
//! symbol covers is named after the start of the function its CFI
//! describes (`binary+0xSTART`, [`functions`]), so all samples of one
//! stripped function are one frame. Names are demangled only when mangled
//! ([`demangle`]).
//!
//! Callers gather every address first and symbolize once per binary, after
//! the recording; results are cached, so an address is looked up once.

pub mod demangle;
pub mod functions;
pub mod gopclntab;
pub mod vdso;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};

use self::functions::Functions;
use self::gopclntab::GoTable;

use crate::jit::names::{self, Language};
use crate::jit::perfmap::{NameId, PerfMap};
use crate::process::{FileKey, ModuleFile};
use crate::profile::Line;

/// Symbolizes kernel, user and JIT addresses.
pub struct Symbolizer {
    blaze: Blaze,
    kernel: HashMap<u64, Option<Vec<Line>>>,
    user: HashMap<(FileKey, u64), Option<Vec<Line>>>,
    /// Perf maps by pid, with the language of their runtime (one map may
    /// be shared by processes: hard links).
    perf_maps: HashMap<u32, (Arc<PerfMap>, Language)>,
    /// JIT addresses by (pid, address).
    jit: HashMap<(u32, u64), Option<Line>>,
    /// Functions known from CFI, per binary, read when first needed.
    functions: HashMap<FileKey, Arc<Functions>>,
    /// Go symbol tables, per binary (`None`: not a Go binary).
    go: HashMap<FileKey, Option<Arc<GoTable>>>,
    /// The vDSO image (once tried) and its offsets looked up.
    vdso_image: Option<Option<File>>,
    vdso: HashMap<u64, Option<Vec<Line>>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            blaze: Blaze::builder()
                // Names are demangled here, only when mangled.
                .enable_demangling(false)
                .enable_inlined_fns(true)
                .enable_code_info(true)
                .build(),
            kernel: HashMap::new(),
            user: HashMap::new(),
            perf_maps: HashMap::new(),
            jit: HashMap::new(),
            functions: HashMap::new(),
            go: HashMap::new(),
            vdso_image: None,
            vdso: HashMap::new(),
        }
    }

    /// How much the caches hold (addresses looked up, perf-map entries):
    /// a caller that symbolizes again and again starts a new symbolizer
    /// past a bound.
    pub fn cached(&self) -> usize {
        let maps: usize = self
            .perf_maps
            .values()
            .map(|(m, _)| m.stats().entries as usize)
            .sum();
        self.kernel.len() + self.user.len() + self.jit.len() + self.vdso.len() + maps
    }

    /// Learns the perf map of process `pid`, whose names are in `language`
    /// (`Language::Unknown`: their shape decides).
    pub fn add_perf_map(&mut self, pid: u32, map: impl Into<Arc<PerfMap>>, language: Language) {
        self.jit.retain(|(p, _), _| *p != pid);
        self.perf_maps.insert(pid, (map.into(), language));
    }

    /// Names addresses in JIT code of `pid` (anonymous executable memory)
    /// from its perf map, in one batch; each name is cleaned once.
    pub fn prepare_jit(&mut self, pid: u32, addrs: &[u64]) {
        let todo = missing(addrs, |a| self.jit.contains_key(&(pid, *a)));
        if todo.is_empty() {
            return;
        }
        let map = self.perf_maps.get(&pid);
        let mut cleaned: HashMap<NameId, Line> = HashMap::new();
        for addr in todo {
            let line = map.and_then(|(map, language)| {
                let sym = map.lookup(addr)?;
                let line = cleaned.entry(sym.id).or_insert_with(|| {
                    let name = names::clean(sym.name, *language);
                    Line {
                        system_name: (name.system != name.display).then_some(name.system),
                        function: name.display,
                        file: None,
                        line: None,
                    }
                });
                Some(line.clone())
            });
            self.jit.insert((pid, addr), line);
        }
    }

    /// Symbolizes kernel addresses in one batch; unknown ones stay `None`.
    pub fn prepare_kernel(&mut self, addrs: &[u64]) {
        let todo = missing(addrs, |a| self.kernel.contains_key(a));
        if todo.is_empty() {
            return;
        }
        let src = Source::Kernel(Kernel {
            debug_syms: false,
            ..Kernel::default()
        });
        let results = self
            .blaze
            .symbolize(&src, Input::AbsAddr(&todo))
            .map_err(|e| log::debug!("kernel symbolization failed: {e:#}"))
            .unwrap_or_default();
        for (i, addr) in todo.iter().enumerate() {
            let lines = results.get(i).and_then(to_lines);
            self.kernel.insert(*addr, lines);
        }
    }

    /// Symbolizes file offsets of one binary in one batch: Go code from
    /// the binary's `.gopclntab` (stripped or not, inlined Go functions
    /// included), the rest from ELF symbols and DWARF. An offset no symbol
    /// covers is named after the start of the function (FDE) that holds
    /// it, `binary+0xSTART`; only one outside every FDE stays unnamed (the
    /// caller's `binary+0xOFFSET`).
    pub fn prepare_module(&mut self, module: &Arc<ModuleFile>, offsets: &[u64]) {
        let key = module.key;
        let mut todo = missing(offsets, |o| self.user.contains_key(&(key, *o)));
        if todo.is_empty() {
            return;
        }
        let go = self
            .go
            .entry(key)
            .or_insert_with(|| GoTable::load(module).map(Arc::new))
            .clone();
        if let Some(go) = go {
            todo.retain(|off| match go.lookup(*off) {
                Some(lines) => {
                    self.user.insert((key, *off), Some(lines));
                    false
                }
                None => true,
            });
            if todo.is_empty() {
                return;
            }
        }
        let results = self.symbolize_elf(&module.fd_path(), &todo, &module.path);
        for (off, lines) in todo.iter().zip(results) {
            let lines = lines.or_else(|| {
                let start = self.functions(module).containing(*off)?.start;
                Some(vec![Line::named(format!(
                    "{}+{start:#x}",
                    module.base_name()
                ))])
            });
            self.user.insert((key, *off), lines);
        }
    }

    /// Symbolizes offsets into the vDSO mapping in one batch.
    pub fn prepare_vdso(&mut self, offsets: &[u64]) {
        let todo = missing(offsets, |o| self.vdso.contains_key(o));
        if todo.is_empty() {
            return;
        }
        let image = self.vdso_image.get_or_insert_with(|| {
            vdso::own_image()
                .map_err(|e| log::debug!("vDSO image not read: {e}"))
                .ok()
        });
        let path = image.as_ref().map(crate::process::fd_path);
        let results = match path {
            Some(path) => self.symbolize_elf(&path, &todo, vdso::MAPPING),
            None => Vec::new(),
        };
        let mut results = results.into_iter();
        for off in todo {
            self.vdso.insert(off, results.next().flatten());
        }
    }

    /// File offsets of the ELF file at `path` (`name` for messages), in
    /// one batch: one answer per offset, `None` where no symbol covers it.
    fn symbolize_elf(&self, path: &Path, offsets: &[u64], name: &str) -> Vec<Option<Vec<Line>>> {
        let src = Source::Elf(Elf::new(path));
        match self.blaze.symbolize(&src, Input::FileOffset(offsets)) {
            Ok(r) => r.iter().map(to_lines).collect(),
            Err(e) => {
                log::debug!("symbolizing {name} failed: {e:#}");
                vec![None; offsets.len()]
            }
        }
    }

    /// The functions `module`'s CFI describes (read once per binary).
    fn functions(&mut self, module: &ModuleFile) -> &Functions {
        self.functions
            .entry(module.key)
            .or_insert_with(|| Arc::new(Functions::load(module)))
    }

    /// Whether file offset `offset` of `module` lies in the function that
    /// holds the binary's ELF entry point (`_start`, named or not): a
    /// stack whose outermost frame is there reached the process's entry.
    pub fn in_entry_function(&mut self, module: &ModuleFile, offset: u64) -> bool {
        self.functions(module).in_entry(offset)
    }

    /// The vDSO function at `offset` into its mapping (after
    /// [`prepare_vdso`](Self::prepare_vdso)).
    pub fn vdso(&self, offset: u64) -> Option<&[Line]> {
        self.vdso.get(&offset).and_then(|l| l.as_deref())
    }

    pub fn kernel(&self, addr: u64) -> Option<&[Line]> {
        self.kernel.get(&addr).and_then(|l| l.as_deref())
    }

    pub fn user(&self, key: FileKey, offset: u64) -> Option<&[Line]> {
        self.user.get(&(key, offset)).and_then(|l| l.as_deref())
    }

    /// The JIT function at `addr` of `pid` (after [`prepare_jit`](Self::prepare_jit)).
    pub fn jit(&self, pid: u32, addr: u64) -> Option<&Line> {
        self.jit.get(&(pid, addr)).and_then(Option::as_ref)
    }
}

fn missing(addrs: &[u64], known: impl Fn(&u64) -> bool) -> Vec<u64> {
    let mut todo: Vec<u64> = addrs.iter().copied().filter(|a| !known(a)).collect();
    todo.sort_unstable();
    todo.dedup();
    todo
}

/// blazesym's answer as lines, innermost first: the inlined functions
/// (blazesym lists them outermost first), then the containing symbol.
fn to_lines(sym: &Symbolized<'_>) -> Option<Vec<Line>> {
    let sym = sym.as_sym()?;
    let site = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| match info {
        Some(info) => (
            Some(info.to_path().to_string_lossy().into_owned()),
            info.line,
        ),
        None => (None, None),
    };
    let mut lines: Vec<Line> = sym
        .inlined
        .iter()
        .rev()
        .map(|inl| {
            let (file, line) = site(inl.code_info.as_ref());
            Line {
                function: demangle::demangle(&inl.name).into_owned(),
                file,
                line,
                system_name: None,
            }
        })
        .collect();
    let (file, line) = site(sym.code_info.as_deref());
    lines.push(Line {
        function: demangle::demangle(&sym.name).into_owned(),
        file,
        line,
        system_name: None,
    });
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessTable;

    #[inline(never)]
    #[no_mangle]
    pub extern "C" fn flameprobe_symbolize_probe_fn() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn symbolizes_own_function_by_file_offset() {
        let mut table = ProcessTable::new();
        let addr = flameprobe_symbolize_probe_fn as extern "C" fn() -> u64 as usize as u64;
        let mapping = table.find(std::process::id(), addr).unwrap().clone();
        let module = mapping.module.clone().unwrap();
        let off = mapping.file_offset(addr);
        let mut sym = Symbolizer::new();
        sym.prepare_module(&module, &[off]);
        let lines = sym.user(module.key, off).expect("symbol found");
        assert_eq!(lines[0].function, "flameprobe_symbolize_probe_fn");
    }

    #[test]
    fn names_jit_addresses_from_perf_maps_per_process() {
        let mut sym = Symbolizer::new();
        let java = PerfMap::parse(b"0x1000 0x100 long JitHot.fib(int)\n0x2000 0x80 Interpreter\n");
        sym.add_perf_map(7, java, Language::Java);
        let node = PerfMap::parse(b"1000 40 JS:*fibJs /app/main.js:6:15\n");
        sym.add_perf_map(8, node, Language::JavaScript);
        sym.prepare_jit(7, &[0x1000, 0x10ff, 0x2010, 0x3000]);
        sym.prepare_jit(8, &[0x1010]);
        sym.prepare_jit(9, &[0x1010]);
        let fib = sym.jit(7, 0x10ff).expect("fib");
        assert_eq!(fib.function, "JitHot.fib");
        assert_eq!(fib.system_name.as_deref(), Some("long JitHot.fib(int)"));
        let interp = sym.jit(7, 0x2010).expect("interpreter");
        assert_eq!(
            (interp.function.as_str(), interp.system_name.as_deref()),
            ("Interpreter", None)
        );
        assert_eq!(sym.jit(7, 0x3000), None, "not in the map");
        assert_eq!(sym.jit(7, 0x1100), None, "not prepared");
        let js = sym.jit(8, 0x1010).expect("fibJs");
        assert_eq!(js.function, "fibJs /app/main.js:6");
        assert_eq!(
            js.system_name.as_deref(),
            Some("JS:*fibJs /app/main.js:6:15")
        );
        assert_eq!(sym.jit(9, 0x1010), None, "no map for that pid");
    }
}
