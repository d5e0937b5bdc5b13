//! BPF probes. Only this module touches the skeletons; each probe attaches
//! in its constructor, streams records to a callback and detaches on drop.

pub mod cpu;
pub mod memleak;
pub mod mmaps;
pub mod offcpu;
pub(crate) mod perf;
pub mod ring;
mod setup;
pub mod stacks;
pub(crate) mod targets;

/// A NUL-terminated C string from a BPF record (task names), lossily.
pub(crate) fn c_string(raw: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    crate::text::from_bytes(&bytes)
}

pub use ring::Delivery;
pub use setup::{check_bpf_support, enable_bpf_stats, ProbeError, VerifierStat};
pub(crate) use setup::{
    missing_capabilities, route_libbpf_log, setcap_command, CAP_BPF, CAP_DAC_READ_SEARCH,
    CAP_PERFMON, CAP_SYSLOG, CAP_SYS_ADMIN, CAP_SYS_PTRACE, VMLINUX_BTF,
};

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

/// The skeleton generated from `bpf/offcpu.bpf.c` (and its shared types).
#[allow(clippy::all, clippy::pedantic, dead_code, non_camel_case_types)]
pub(crate) mod offcpu_skel {
    include!(concat!(env!("OUT_DIR"), "/offcpu.skel.rs"));
}

// The capture limits the user-space code works with are the ones the BPF
// programs were built with.
const _: () = {
    use crate::unwind;
    use profile_skel::types::limits;
    assert!(limits::FP_MAX_STACK_DEPTH.0 as usize == unwind::MAX_CAPTURED_FRAMES);
    assert!(limits::MAX_STACK_COPY.0 == unwind::MAX_STACK_COPY);
    assert!(limits::STACK_COPY_PAGE.0 == unwind::STACK_COPY_PAGE);
    assert!(limits::MIN_CODE_ADDR.0 as u64 == unwind::MIN_CODE_ADDR);
};
