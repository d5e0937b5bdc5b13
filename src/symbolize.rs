//! The one symbolization layer: kernel addresses (kallsyms) and user
//! addresses normalized to (binary, file offset), both through blazesym.
//!
//! Callers gather every address first and symbolize once per binary, after
//! the recording; results are cached, so an address is looked up once.

use std::collections::HashMap;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze};

use crate::process::{FileKey, ModuleFile};
use crate::profile::Line;

/// Symbolizes kernel and user addresses.
pub struct Symbolizer {
    blaze: Blaze,
    kernel: HashMap<u64, Option<Vec<Line>>>,
    user: HashMap<(FileKey, u64), Option<Vec<Line>>>,
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
                .enable_demangling(true)
                .enable_inlined_fns(true)
                .enable_code_info(true)
                .build(),
            kernel: HashMap::new(),
            user: HashMap::new(),
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

    /// Symbolizes file offsets of one binary in one batch.
    pub fn prepare_module(&mut self, module: &Arc<ModuleFile>, offsets: &[u64]) {
        let key = module.key;
        let todo = missing(offsets, |o| self.user.contains_key(&(key, *o)));
        if todo.is_empty() {
            return;
        }
        let src = Source::Elf(Elf::new(module.fd_path()));
        let results = match self.blaze.symbolize(&src, Input::FileOffset(&todo)) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("symbolizing {} failed: {e:#}", module.path);
                Vec::new()
            }
        };
        for (i, off) in todo.iter().enumerate() {
            let lines = results.get(i).and_then(to_lines);
            self.user.insert((key, *off), lines);
        }
    }

    pub fn kernel(&self, addr: u64) -> Option<&[Line]> {
        self.kernel.get(&addr).and_then(|l| l.as_deref())
    }

    pub fn user(&self, key: FileKey, offset: u64) -> Option<&[Line]> {
        self.user.get(&(key, offset)).and_then(|l| l.as_deref())
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
                function: inl.name.to_string(),
                file,
                line,
            }
        })
        .collect();
    let (file, line) = site(sym.code_info.as_deref());
    lines.push(Line {
        function: sym.name.to_string(),
        file,
        line,
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
}
