//! Turns a sample's user-stack snapshot into frame addresses (leaf first).
//!
//! `fp`: the frame-pointer chain the BPF program walked passes straight
//! through. DWARF unwinding of the copied stack bytes slots in here.

use crate::probe::cpu::CpuSample;
use crate::process::ProcessTable;

/// How user stacks are unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// Frame pointers walked in the kernel (cheapest record).
    Fp,
}

/// Frame addresses of one user stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    /// Absolute addresses, leaf first; all but the first are return addresses.
    pub frames: Vec<u64>,
    /// The unwinder stopped before the stack's end (depth or copy limit).
    pub truncated: bool,
}

/// Unwinds user stacks; keeps per-module unwind state across samples.
pub struct Unwinder {
    mode: UnwindMode,
}

/// Lowest address user code can live at (mmap_min_addr is at least 4 KiB).
const MIN_CODE_ADDR: u64 = 0x1000;

/// Deepest user stack bpf_get_stack returns.
const FP_MAX_DEPTH: usize = 127;

impl UnwindMode {
    /// The mode used when none is given.
    pub fn default_mode() -> Self {
        UnwindMode::Fp
    }

    /// Bytes of user stack the BPF program copies per sample.
    pub fn stack_copy_size(self) -> u32 {
        match self {
            UnwindMode::Fp => 0,
        }
    }
}

impl Unwinder {
    pub fn new(mode: UnwindMode) -> Self {
        Unwinder { mode }
    }

    pub fn unwind(&mut self, sample: &CpuSample<'_>, _table: &mut ProcessTable) -> Unwound {
        match self.mode {
            UnwindMode::Fp => {
                let raw = sample.user_fp_stack();
                // A frame-pointer walk through code without frame pointers
                // ends in garbage; stop at the first impossible address.
                let frames: Vec<u64> = raw
                    .iter()
                    .copied()
                    .take_while(|&a| a >= MIN_CODE_ADDR)
                    .collect();
                Unwound {
                    truncated: raw.len() >= FP_MAX_DEPTH,
                    frames,
                }
            }
        }
    }
}
