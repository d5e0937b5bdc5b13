//! BPF probes. Only this module touches the skeletons; each probe attaches
//! in its constructor, streams records to a callback and detaches on drop.

pub mod cpu;
pub mod memleak;
mod perf;
mod setup;

pub use setup::{check_bpf_support, enable_bpf_stats};

/// The skeleton generated from `bpf/profile.bpf.c` (and its shared types).
#[allow(clippy::all, clippy::pedantic, dead_code, non_camel_case_types)]
pub(crate) mod profile_skel {
    include!(concat!(env!("OUT_DIR"), "/profile.skel.rs"));
}

/// The skeleton generated from `bpf/memleak.bpf.c` (and its shared types).
#[allow(clippy::all, clippy::pedantic, dead_code, non_camel_case_types)]
pub(crate) mod memleak_skel {
    include!(concat!(env!("OUT_DIR"), "/memleak.skel.rs"));
}
