//! Stacks that probes aggregating in the kernel (memleak, offcpu) deliver
//! once each: normalized while their process is alive, looked up by id at
//! the end of the recording.

use std::collections::HashMap;

use crate::probe::stacks::StackRecord;
use crate::profile::Labels;
use crate::stacks::{RawStack, StackCollector};
use crate::unwind::{MAX_CAPTURED_FRAMES, MIN_CODE_ADDR};

/// Delivered stacks by id.
#[derive(Default)]
pub(super) struct StackBook {
    resolved: HashMap<u64, RawStack>,
}

impl StackBook {
    /// Normalizes a delivered stack (its user addresses against the
    /// process's maps, now). `at_entry`: it was taken at a function's entry
    /// (an allocator), where the first user address is a return address
    /// too, into the caller.
    pub fn add(&mut self, stacks: &mut StackCollector, rec: &StackRecord, at_entry: bool) {
        let pid = rec.pid();
        let raw_user = rec.user_stack();
        let mut addrs: Vec<u64> = raw_user
            .iter()
            .copied()
            .take_while(|&a| a >= MIN_CODE_ADDR)
            .collect();
        if at_entry {
            // Kernels that add the caller at a function-entry uprobe
            // themselves repeat it in a frame-pointer walk.
            if !rec.unwound_with_cfi() && addrs.len() >= 2 && addrs[0] == addrs[1] {
                addrs.remove(0);
            }
            if let Some(first) = addrs.first_mut() {
                *first -= 1;
            }
        }
        let user = if pid == 0 || addrs.is_empty() {
            Vec::new()
        } else {
            stacks.resolve_user(pid, &addrs)
        };
        let tid = rec.tid();
        let labels = stacks.table.labels(
            pid,
            (tid != 0).then_some(tid),
            rec.process_name(),
            (tid != 0).then(|| rec.thread_name()),
        );
        self.resolved.insert(
            rec.stack_id(),
            RawStack {
                labels,
                kernel: rec.kernel_stack().to_vec(),
                user,
                truncated: raw_user.len() >= MAX_CAPTURED_FRAMES,
            },
        );
    }

    /// Files a stack under an id chosen elsewhere (not a BPF hash).
    pub fn insert(&mut self, id: u64, stack: RawStack) {
        self.resolved.insert(id, stack);
    }

    /// Drops the stacks `drop` selects (continuous mode: of processes that
    /// are gone); returns their ids.
    pub fn forget(&mut self, drop: impl Fn(u64, &RawStack) -> bool) -> Vec<u64> {
        let ids: Vec<u64> = self
            .resolved
            .iter()
            .filter(|(&id, stack)| drop(id, stack))
            .map(|(&id, _)| id)
            .collect();
        for id in &ids {
            self.resolved.remove(id);
        }
        ids
    }

    /// The stack with this id; one that never arrived (its ring buffer was
    /// full, counted as lost) is an empty stack marked truncated.
    pub fn get(&self, id: u64) -> RawStack {
        self.resolved.get(&id).cloned().unwrap_or_else(|| RawStack {
            labels: Labels::default(),
            kernel: Vec::new(),
            user: Vec::new(),
            truncated: true,
        })
    }
}
