//! flameprobe as a library: the binary in `main.rs` is a thin shell over
//! these modules. Data flows one way:
//!
//! ```text
//! cli -> config -> record::run
//!   prepare: target (pids, containers, command held before exec) -> Filter,
//!            output path checked (output::sink), BPF support (probe::setup)
//!   attach:  the probe kind's Recorder (record/<kind>.rs over probe/<kind>.rs;
//!            BPF programs in bpf/, one shared header)
//!   poll:    ring buffers -> stacks (process knowledge from /proc and the
//!            kernel's mmap records; user stacks unwound in unwind/, or in the
//!            kernel with unwind::table rows) until -d, Ctrl-C or targets gone
//!   finish:  StackCollector -> symbolize (ELF/DWARF, kallsyms, jit perf maps)
//!            -> profile::Profile (stacks, and the timeline of streamed
//!            samples) -> output (folded, SVG, pprof, speedscope), summary, report
//! report/convert: input -> profile::Profile -> report / output
//! diff:    two inputs -> two profiles -> differential SVG or lines, report --diff
//! doctor:  what this machine can record, and the fixes
//! ```
//!
//! Files of a profiled process are opened through `safe_fs` (inside its
//! root, regular files only, never blocking); container knowledge lives
//! in `container`, JIT runtimes in `jit`. `docs/architecture.md` has the
//! module table and how to add a probe kind.

/// Like std's `eprintln!`, but a message that cannot be written is dropped:
/// std's panics when stderr fails (`2>/dev/full`, a closed pipe), which
/// would turn a recording whose output was written into exit code 101.
/// Defined before the modules, it shadows std's in all of them (and
/// `main` imports it), so no message on stderr can panic.
#[macro_export]
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// Like std's `eprint!`, without the panic (see [`eprintln!`]).
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::write!(::std::io::stderr(), $($arg)*);
    }};
}

pub mod allocator;
pub mod buildid;
pub mod cli;
pub mod config;
pub mod container;
pub mod convert;
pub mod diff;
pub mod doctor;
pub mod generate;
pub mod input;
pub mod jit;
pub mod limits;
pub mod output;
pub mod probe;
pub mod proc;
pub mod process;
pub mod profile;
pub mod push;
pub mod quality;
pub mod record;
pub mod report;
pub mod safe_fs;
pub mod signals;
pub mod stacks;
pub mod symbolize;
pub mod target;
pub mod text;
pub mod timeline;
pub mod unwind;
