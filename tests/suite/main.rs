//! flameprobe's integration tests, one binary (see util.rs for helpers).
//! Tests that load BPF need root; they skip without it unless
//! FLAMEPROBE_REQUIRE_ROOT_TESTS=1, where they fail instead.

#[macro_use]
mod util;

mod cli;
mod containers;
mod containers_util;
mod convert;
mod doctor;
mod jit;
mod jit_record;
mod memleak;
mod names;
mod offcpu;
mod output;
mod pprof_go;
mod push;
mod push_util;
mod record_cli;
mod record_containers;
mod record_cpu;
mod record_dwarf;
mod record_runtimes;
mod report;
mod runtimes_util;
mod symbols;
mod target_root;
mod unwind;
mod views;
