//! What the probes that aggregate in the kernel share (bpf/stacks.h,
//! bpf/unwind.h): the stacks they deliver once each, and the tables of the
//! in-kernel CFI unwinder. Every skeleton generates its own copy of these
//! types from the one C definition; this module reads and writes them
//! through the memleak skeleton's copy and checks at compile time that the
//! others are the same size.

use libbpf_rs::{MapCore, MapFlags};

use super::c_string;
use super::memleak_skel::types;
use super::setup::ProbeError;
use crate::unwind::table::{ModuleRows, Row, Rule};

const _: () = {
    use super::offcpu_skel::types as off;
    use std::mem::size_of;
    assert!(size_of::<types::stack_event>() == size_of::<off::stack_event>());
    assert!(size_of::<types::unwind_row>() == size_of::<off::unwind_row>());
    assert!(size_of::<types::unwind_proc>() == size_of::<off::unwind_proc>());
};

/// Forgets that stacks were delivered (`seen_stacks` of bpf/stacks.h):
/// user space dropped them, their processes gone; an event with one of
/// these ids again delivers it again.
pub fn forget_seen(seen_stacks: &dyn MapCore, ids: &[u64]) {
    for id in ids {
        let _ = seen_stacks.delete(&id.to_ne_bytes());
    }
}

/// A stack delivered by the BPF program the first time it was seen.
pub struct StackRecord {
    ev: types::stack_event,
}

impl StackRecord {
    /// Parses a ring-buffer record; `None` if it is not a stack record.
    pub fn parse(data: &[u8]) -> Option<Self> {
        if data.len() < std::mem::size_of::<types::stack_event>() {
            return None;
        }
        // SAFETY: the record holds a whole stack_event, a plain-old-data
        // type generated from the program's BTF.
        let ev: types::stack_event = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        (ev.kind == types::record_kind::RECORD_STACK.0).then_some(StackRecord { ev })
    }

    pub fn stack_id(&self) -> u64 {
        self.ev.stack_id
    }
    /// The process (0 for kernel context without one).
    pub fn pid(&self) -> u32 {
        self.ev.pid
    }
    /// The thread, when the probe keeps threads apart (else 0).
    pub fn tid(&self) -> u32 {
        self.ev.tid
    }
    /// The process's name; `[interrupt]` for a stack taken in interrupt
    /// context, which belongs to no process (whatever task it interrupted).
    pub fn process_name(&self) -> String {
        if self.ev.flags & types::stack_flags::STACK_IRQ.0 != 0 {
            return "[interrupt]".into();
        }
        c_string(&self.ev.proc_comm)
    }
    /// The thread's name, when the probe keeps threads apart.
    pub fn thread_name(&self) -> String {
        c_string(&self.ev.comm)
    }
    /// Kernel return addresses, leaf first.
    pub fn kernel_stack(&self) -> &[u64] {
        slice(&self.ev.kstack, self.ev.kstack_len)
    }
    /// User addresses, leaf first (at an allocator's entry: the return
    /// address into its caller first).
    pub fn user_stack(&self) -> &[u64] {
        slice(&self.ev.ustack, self.ev.ustack_len)
    }
    /// Whether the user stack was unwound with CFI rows in the kernel
    /// (rather than read from frame pointers).
    pub fn unwound_with_cfi(&self) -> bool {
        self.ev.flags & types::stack_flags::STACK_CFI.0 != 0
    }
}

fn slice(stack: &[u64], len_bytes: i32) -> &[u64] {
    let n = usize::try_from(len_bytes).unwrap_or(0) / 8;
    &stack[..n.min(stack.len())]
}

/// The in-kernel unwinder's tables of one loaded program: rows of every
/// binary, and per process its binaries.
pub struct UnwindMaps<'a> {
    rows: &'a dyn MapCore,
    procs: &'a dyn MapCore,
}

impl<'a> UnwindMaps<'a> {
    pub(crate) fn new(rows: &'a dyn MapCore, procs: &'a dyn MapCore) -> Self {
        UnwindMaps { rows, procs }
    }

    /// Stores unwind rows at `first..first + rows.len()` of the shared array.
    pub fn load_unwind_rows(&self, first: u32, rows: &[Row]) -> Result<(), ProbeError> {
        let map = self.rows;
        let mut keys = Vec::with_capacity(rows.len() * 4);
        let mut values = Vec::with_capacity(rows.len() * std::mem::size_of::<types::unwind_row>());
        for (i, row) in rows.iter().enumerate() {
            keys.extend_from_slice(&(first + i as u32).to_ne_bytes());
            let (kind, cfa_off, rbp_off) = match row.rule {
                Rule::None => (types::unwind_kind::UNWIND_NONE, 0, 0),
                Rule::Stop => (types::unwind_kind::UNWIND_STOP, 0, 0),
                Rule::Rsp { cfa, rbp } => (types::unwind_kind::UNWIND_CFA_RSP, cfa, rbp),
                Rule::Rbp { cfa, rbp } => (types::unwind_kind::UNWIND_CFA_RBP, cfa, rbp),
            };
            let v = types::unwind_row {
                pc: row.pc,
                cfa_off,
                rbp_off,
                kind: kind.0 as u8,
                ..Default::default()
            };
            values.extend_from_slice(pod_bytes(&v));
        }
        map.update_batch(
            &keys,
            &values,
            rows.len() as u32,
            MapFlags::ANY,
            MapFlags::ANY,
        )
        .map_err(|e| ProbeError::attach("unwind rows", &e))
    }

    /// Tells the BPF program which binaries `pid` maps, for unwinding its
    /// stacks with their rows (at most `UNWIND_MAX_MODULES`, the rest fall
    /// back to frame pointers).
    pub fn set_unwind_modules(&self, pid: u32, modules: &[ModuleRows]) -> Result<(), ProbeError> {
        let mut proc_ = types::unwind_proc::default();
        let n = modules.len().min(proc_.mods.len());
        for (slot, m) in proc_.mods.iter_mut().zip(&modules[..n]) {
            *slot = types::unwind_module {
                start: m.start,
                end: m.end,
                bias: m.bias,
                first: m.first,
                count: m.count,
            };
        }
        proc_.count = n as u32;
        self.procs
            .update(&pid.to_ne_bytes(), pod_bytes(&proc_), MapFlags::ANY)
            .map_err(|e| ProbeError::attach("unwind modules", &e))
    }
}

/// The bytes of a value of a skeleton-generated type, for a map update.
fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: the skeleton's types are #[repr(C)] plain data whose padding
    // is spelled out as explicit fields, so every byte is initialized.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_short_records() {
        assert!(StackRecord::parse(&[0u8; 8]).is_none());
    }
}
