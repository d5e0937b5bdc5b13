//! Names for JIT-compiled code (Java, JavaScript, Python), which has no
//! file behind it and shows as `[anon]+0x...` otherwise.
//!
//! The building blocks, and how the recording uses them (the recording's
//! side is [`tracker`]):
//!
//! 1. At a process's first sample in anonymous executable memory:
//!    [`runtime::Runtime::detect`] says which runtime it is, and
//!    [`perfmap::PerfMapSource::open`] captures where its perf map is (its
//!    root and its pid as it sees itself), so the map can be read even after
//!    the process exited.
//! 2. When a profiled process exits during the recording:
//!    `source.read_cached()` (Node and Python leave their map in `/tmp`; a
//!    JVM started with `-XX:+DumpPerfMapAtExit` writes one at exit). Every
//!    read goes through the recording's [`perfmap::MapCache`]: a file is
//!    read once however many processes share it (hard links), and all
//!    reads together stay within a budget of bytes.
//! 3. At the end, after sampling stopped, for each live HotSpot JVM with
//!    samples in anonymous executable memory, once (it costs the JVM a
//!    safepoint), unless `--no-jit-attach`: [`hotspot::write_perf_map`];
//!    an error is one warning line (its text names the pid and what to do).
//!    Then, for every live process, `source.read_cached()`; a process that
//!    exited keeps the map read at its exit (a read at the end could find
//!    another process's map under a reused pid). All of this, in parallel,
//!    ends within [`tracker::END_BUDGET`] of sampling's end: JVMs that did
//!    not answer by then (or a process posing as one) are named in one
//!    summary line, and maps not read are said too.
//! 4. Symbolization: an address in an anonymous (or `[anon:...]`)
//!    executable mapping is looked up with [`perfmap::PerfMap::lookup`];
//!    file-backed mappings keep their ELF symbols (Node lists its embedded
//!    builtins, which live in the `node` binary, in its map too). Each
//!    [`perfmap::NameId`] is cleaned once with [`names::clean`] and the
//!    runtime's [`names::Language`]: `display` for folded/SVG frames (to be
//!    marked as JIT, inferno's `_[j]`), `system` for pprof's system name.
//! 5. Stack quality: frames left unnamed are counted per process with the
//!    reason: no map ([`runtime::Runtime::perf_map_hint`] gives the flag to
//!    use), the attach error, or a map that did not cover the address.

pub mod hotspot;
pub mod names;
pub mod perfmap;
pub mod runtime;
pub mod tracker;

/// Tests that write this process's own `/tmp/perf-<pid>.map` take this
/// lock: they run in parallel in one process, so they share the file.
#[cfg(test)]
pub(crate) static OWN_PERF_MAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
