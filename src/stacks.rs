//! Raw stacks as probes deliver them (addresses), aggregated during the
//! recording and turned into a symbolized [`Profile`] once it ends.
//!
//! User addresses are normalized to (binary, file offset) when the sample
//! arrives, against the snapshot of the process taken then, so later
//! changes (exit, pid reuse, unmapping) cannot mislabel them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::jit::tracker::JitTracker;
use crate::process::{FileKey, ModuleFile, ProcessTable};
use crate::profile::{FrameKind, Labels, Line, Location, Meta, Module, Profile, ValueType};
use crate::symbolize::{vdso, Symbolizer};
use crate::timeline::Timeline;

/// One user frame, normalized.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserFrame {
    /// Code in a file-backed mapping. `offset` is the file offset of the
    /// address to look up (already moved into the call instruction for
    /// return addresses).
    File { key: FileKey, offset: u64 },
    /// Code in a mapping without a file (`[vdso]`, JIT, anonymous), as the
    /// mapping's name (may be empty) and the offset into it.
    Pseudo {
        pid: u32,
        name: String,
        offset: u64,
        addr: u64,
    },
    /// An address outside every known mapping.
    Unmapped { addr: u64 },
}

/// A stack before symbolization.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RawStack {
    pub labels: Labels,
    /// Kernel addresses, leaf first.
    pub kernel: Vec<u64>,
    /// User frames, leaf first.
    pub user: Vec<UserFrame>,
    /// The user stack was cut short (depth limit, stack copy too small).
    pub truncated: bool,
}

/// First mapping seen of a binary, for pprof's `Mapping`.
#[derive(Clone)]
struct ModuleSeen {
    file: Arc<ModuleFile>,
    start: u64,
    end: u64,
    file_offset: u64,
}

/// A stack's totals, and its index for the timeline (in the order the
/// stacks were first seen).
#[derive(Clone, Debug, Default)]
struct Held {
    id: usize,
    /// One per sample type of the recording.
    values: Vec<u64>,
}

/// Aggregates raw stacks during a recording.
#[derive(Default)]
pub struct StackCollector {
    pub table: ProcessTable,
    stacks: HashMap<RawStack, Held>,
    /// Streamed samples in arrival order (stack ids of `stacks`).
    timeline: Timeline,
    modules: BTreeMap<FileKey, ModuleSeen>,
    /// Processes seen running JIT code (frames in anonymous executable
    /// memory), for their perf maps.
    pub jit: JitTracker,
    /// Events left out because the most distinct stacks were held.
    pub dropped: u64,
    /// Most distinct stacks held ([`MAX_STACKS`] unless set).
    limit: Option<usize>,
}

/// Most distinct stacks held during a recording (memory stays bounded
/// whatever the machine runs: about 1 KiB each).
pub const MAX_STACKS: usize = 1 << 20;

impl StackCollector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A collector holding at most `limit` distinct stacks.
    pub fn with_limit(limit: usize) -> Self {
        StackCollector {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// Normalizes user addresses (leaf first). Every address but the first
    /// is a return address and is looked up one byte earlier, inside the
    /// call instruction.
    pub fn resolve_user(&mut self, pid: u32, addrs: &[u64]) -> Vec<UserFrame> {
        addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| {
                let lookup = if i == 0 { addr } else { addr.saturating_sub(1) };
                self.resolve_one(pid, lookup)
            })
            .collect()
    }

    fn resolve_one(&mut self, pid: u32, addr: u64) -> UserFrame {
        let Some(mapping) = self.table.find(pid, addr) else {
            return UserFrame::Unmapped { addr };
        };
        match &mapping.module {
            Some(module) => {
                let key = module.key;
                let offset = mapping.file_offset(addr);
                self.modules.entry(key).or_insert_with(|| ModuleSeen {
                    file: module.clone(),
                    start: mapping.entry.start,
                    end: mapping.entry.end,
                    file_offset: mapping.entry.offset,
                });
                UserFrame::File { key, offset }
            }
            None => {
                // A file whose binary was not opened is still named by its
                // file offset, as every other unsymbolized frame (what
                // addr2line or a debugger takes); other mappings by the
                // offset into them.
                let offset = if mapping.entry.is_file() {
                    mapping.file_offset(addr)
                } else {
                    addr - mapping.entry.start
                };
                let frame = UserFrame::Pseudo {
                    pid,
                    name: mapping.entry.path.clone(),
                    offset,
                    addr,
                };
                if mapping.entry.executable
                    && is_anonymous(&mapping.entry.path)
                    && !self.jit.is_tracked(pid)
                {
                    if let Some(info) = self.table.process(pid) {
                        self.jit.track(pid, info);
                    }
                }
                frame
            }
        }
    }

    /// Adds one value per sample type to a stack (saturating). A new stack
    /// beyond [`MAX_STACKS`] is left out and counted in `dropped`.
    pub fn add(&mut self, stack: RawStack, values: &[u64]) -> Option<usize> {
        let limit = self.limit.unwrap_or(MAX_STACKS);
        let next = self.stacks.len();
        if next >= limit && !self.stacks.contains_key(&stack) {
            self.dropped += 1;
            return None;
        }
        let e = self.stacks.entry(stack).or_insert_with(|| Held {
            id: next,
            values: Vec::new(),
        });
        if e.values.len() < values.len() {
            e.values.resize(values.len(), 0);
        }
        for (sum, v) in e.values.iter_mut().zip(values) {
            *sum = sum.saturating_add(*v);
        }
        Some(e.id)
    }

    /// [`add`](Self::add) for a sample taken at `time_ns`
    /// (CLOCK_MONOTONIC): also noted in the timeline, for the time-ordered
    /// views.
    pub fn add_sample(&mut self, stack: RawStack, values: &[u64], time_ns: u64) {
        if let Some(id) = self.add(stack, values) {
            self.timeline.push(time_ns, id, values);
        }
    }

    /// Brings process knowledge up to date before samples are handled:
    /// mappings the kernel reported, JIT processes that exited.
    pub fn sync(&mut self) {
        self.table.sync();
        self.jit.poll_exits();
    }

    /// Number of distinct raw stacks so far.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Hands over the stacks aggregated so far (and the binaries they
    /// need) and starts over with none; process knowledge stays. Continuous
    /// mode's windows.
    pub fn take_window(&mut self) -> WindowStacks {
        WindowStacks {
            stacks: std::mem::take(&mut self.stacks),
            timeline: self.timeline.take(),
            // A binary is noted at its first frame: later windows need it
            // too, so every window gets them all (shared handles).
            modules: self.modules.clone(),
            dropped: std::mem::take(&mut self.dropped),
        }
    }

    /// Symbolizes everything (batched per binary) and builds the profile,
    /// whose stacks carry values of `sample_types`.
    pub fn into_profile(
        mut self,
        sample_types: Vec<ValueType>,
        meta: Meta,
        symbolizer: &mut Symbolizer,
    ) -> Profile {
        self.take_window()
            .into_profile(sample_types, meta, symbolizer)
    }
}

/// Stacks handed over by a collector: raw, with the binaries they are in;
/// made into a profile anywhere (continuous mode does it away from the
/// recording thread).
pub struct WindowStacks {
    stacks: HashMap<RawStack, Held>,
    timeline: Timeline,
    modules: BTreeMap<FileKey, ModuleSeen>,
    /// Events left out because the most distinct stacks were held.
    pub dropped: u64,
}

impl WindowStacks {
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    /// Symbolizes everything (batched per binary) and builds the profile,
    /// whose stacks carry values of `sample_types`.
    pub fn into_profile(
        self,
        sample_types: Vec<ValueType>,
        meta: Meta,
        symbolizer: &mut Symbolizer,
    ) -> Profile {
        let mut kernel_addrs = Vec::new();
        let mut offsets: BTreeMap<FileKey, Vec<u64>> = BTreeMap::new();
        let mut jit_addrs: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let mut vdso_offsets = Vec::new();
        for stack in self.stacks.keys() {
            kernel_addrs.extend_from_slice(&stack.kernel);
            for frame in &stack.user {
                match frame {
                    UserFrame::File { key, offset } => {
                        offsets.entry(*key).or_default().push(*offset);
                    }
                    UserFrame::Pseudo {
                        pid, name, addr, ..
                    } if is_anonymous(name) => jit_addrs.entry(*pid).or_default().push(*addr),
                    UserFrame::Pseudo { name, offset, .. } if name == vdso::MAPPING => {
                        vdso_offsets.push(*offset);
                    }
                    _ => {}
                }
            }
        }
        symbolizer.prepare_kernel(&kernel_addrs);
        symbolizer.prepare_vdso(&vdso_offsets);
        for (pid, addrs) in &jit_addrs {
            symbolizer.prepare_jit(*pid, addrs);
        }
        for (key, offs) in &offsets {
            if let Some(seen) = self.modules.get(key) {
                symbolizer.prepare_module(&seen.file, offs);
            }
        }

        let mut profile = Profile::new(sample_types, meta);
        let mut module_ids = HashMap::new();
        // The binaries this window's stacks are in.
        for (key, seen) in self.modules.iter().filter(|(k, _)| offsets.contains_key(k)) {
            let id = profile.intern_module(Module {
                path: seen.file.path.clone(),
                build_id: crate::buildid::read(&seen.file.file),
                start: seen.start,
                end: seen.end,
                file_offset: seen.file_offset,
            });
            module_ids.insert(*key, id);
        }
        // Deterministic order: sort raw stacks before interning.
        let mut stacks: Vec<(RawStack, Held)> = self.stacks.into_iter().collect();
        stacks.sort_by(|a, b| (&a.0.labels, &a.0.kernel).cmp(&(&b.0.labels, &b.0.kernel)));
        // Collector stack id -> profile stack (several raw stacks may read
        // the same once symbolized).
        let mut stack_of = vec![None; stacks.len()];
        for (stack, held) in stacks {
            let mut locs = Vec::with_capacity(stack.kernel.len() + stack.user.len() + 1);
            if stack.truncated {
                locs.push(profile.intern_named(FrameKind::Special, "[truncated]"));
            }
            for (i, frame) in stack.user.iter().rev().enumerate() {
                let loc = user_location(frame, symbolizer, &self.modules, &module_ids);
                let id = profile.intern_location(loc);
                // The outermost frame, in the function of its binary's
                // entry point: the stack is complete, named or not.
                if let (0, UserFrame::File { key, offset }) = (i, frame) {
                    let entry = self
                        .modules
                        .get(key)
                        .is_some_and(|seen| symbolizer.in_entry_function(&seen.file, *offset));
                    if entry {
                        profile.entries.insert(id);
                    }
                }
                locs.push(id);
            }
            for &addr in stack.kernel.iter().rev() {
                let lines = symbolizer
                    .kernel(addr)
                    .map(<[Line]>::to_vec)
                    .unwrap_or_else(|| vec![Line::named(format!("{addr:#x}"))]);
                locs.push(profile.intern_location(Location {
                    kind: FrameKind::Kernel,
                    module: None,
                    address: addr,
                    lines,
                }));
            }
            let index = profile.add(stack.labels, locs, &held.values);
            if let Some(slot) = stack_of.get_mut(held.id) {
                *slot = Some(index);
            }
        }
        profile
            .timeline
            .extend_mapped(&self.timeline, |id| stack_of.get(id).copied().flatten());
        profile
    }
}

fn user_location(
    frame: &UserFrame,
    symbolizer: &Symbolizer,
    modules: &BTreeMap<FileKey, ModuleSeen>,
    module_ids: &HashMap<FileKey, usize>,
) -> Location {
    match frame {
        UserFrame::File { key, offset } => {
            let lines = symbolizer.user(*key, *offset).map(<[Line]>::to_vec);
            let lines = lines.unwrap_or_else(|| {
                let name = modules
                    .get(key)
                    .map(|m| m.file.base_name().to_string())
                    .unwrap_or_else(|| "[unknown]".into());
                vec![Line::named(format!("{name}+{offset:#x}"))]
            });
            Location {
                kind: FrameKind::User,
                module: module_ids.get(key).copied(),
                address: *offset,
                lines,
            }
        }
        UserFrame::Pseudo {
            pid,
            name,
            offset,
            addr,
        } => {
            if let Some(line) = symbolizer.jit(*pid, *addr) {
                return Location {
                    kind: FrameKind::Jit,
                    module: None,
                    address: *addr,
                    lines: vec![line.clone()],
                };
            }
            if name == vdso::MAPPING {
                if let Some(lines) = symbolizer.vdso(*offset) {
                    return Location {
                        kind: FrameKind::User,
                        module: None,
                        address: *addr,
                        lines: lines.to_vec(),
                    };
                }
            }
            let label = if name.is_empty() { "[anon]" } else { name };
            Location {
                kind: FrameKind::User,
                module: None,
                address: *addr,
                lines: vec![Line::named(format!("{label}+{offset:#x}"))],
            }
        }
        UserFrame::Unmapped { addr } => Location {
            kind: FrameKind::User,
            module: None,
            address: *addr,
            lines: vec![Line::named(format!("[unmapped]+{addr:#x}"))],
        },
    }
}

/// A mapping without a file that may hold JIT code: anonymous, or named
/// with `prctl(PR_SET_VMA_ANON_NAME)` (`[anon:NAME]`); not `[vdso]`,
/// `[stack]` or `[heap]`.
fn is_anonymous(path: &str) -> bool {
    path.is_empty() || path.starts_with("[anon:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    #[no_mangle]
    pub extern "C" fn flameprobe_stacks_test_leaf() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn distinct_stacks_are_bounded_and_drops_counted() {
        let mut c = StackCollector::with_limit(2);
        let raw = |k: u64| RawStack {
            labels: Labels::default(),
            kernel: vec![k],
            user: vec![],
            truncated: false,
        };
        c.add(raw(1), &[1]);
        c.add(raw(2), &[1]);
        c.add(raw(3), &[5]); // a third distinct stack: left out
        c.add(raw(1), &[1]); // a known one still adds up
        assert_eq!((c.len(), c.dropped), (2, 1));
    }

    #[test]
    fn timed_samples_follow_their_stacks_into_the_profile() {
        let mut c = StackCollector::new();
        let raw = |tid: u32| RawStack {
            labels: Labels {
                pid: Some(1),
                tid: Some(tid),
                ..Labels::default()
            },
            kernel: vec![],
            user: vec![UserFrame::Unmapped {
                addr: 0x1000 + u64::from(tid),
            }],
            truncated: false,
        };
        c.add_sample(raw(2), &[1, 10], 500);
        c.add_sample(raw(1), &[1, 10], 600);
        c.add_sample(raw(2), &[1, 10], 700);
        c.add(raw(3), &[4, 40]); // aggregated, not timed
        let window = c.take_window();
        assert!(c.is_empty());
        c.add_sample(raw(1), &[1, 10], 900);
        let types = vec![
            ValueType::new("samples", crate::profile::units::COUNT),
            ValueType::new("cpu", crate::profile::units::NANOSECONDS),
        ];
        let p = window.into_profile(types.clone(), Meta::default(), &mut Symbolizer::new());
        let tids: Vec<(u64, Option<u32>)> = p
            .timeline
            .iter()
            .map(|(t, s, _)| (t, p.stacks[s].labels.tid))
            .collect();
        assert_eq!(tids, [(500, Some(2)), (600, Some(1)), (700, Some(2))]);
        // The next window starts its own timeline.
        let next = c.into_profile(types, Meta::default(), &mut Symbolizer::new());
        assert_eq!(next.timeline.len(), 1);
        assert_eq!(next.stacks[0].labels.tid, Some(1));
    }

    #[test]
    fn builds_profile_with_symbols_and_fallback_names() {
        let mut c = StackCollector::new();
        let pid = std::process::id();
        let leaf = flameprobe_stacks_test_leaf as extern "C" fn() -> u64 as usize as u64;
        let user = c.resolve_user(pid, &[leaf, 0x10]);
        assert!(matches!(user[0], UserFrame::File { .. }));
        assert_eq!(user[1], UserFrame::Unmapped { addr: 0xf });
        let labels = Labels {
            pid: Some(pid),
            process: Some("t".into()),
            ..Labels::default()
        };
        let raw = RawStack {
            labels: labels.clone(),
            kernel: vec![],
            user,
            truncated: true,
        };
        c.add(raw.clone(), &[2]);
        c.add(raw, &[1]);
        let types = vec![ValueType::new("samples", crate::profile::units::COUNT)];
        let p = c.into_profile(types, Meta::default(), &mut Symbolizer::new());
        assert_eq!(p.stacks.len(), 1);
        assert_eq!(p.stacks[0].values, [3]);
        let names = p.frame_names(&p.stacks[0], &Default::default());
        assert_eq!(
            names,
            [
                "[".to_string() + &pid.to_string() + "]t",
                "[truncated]".into(),
                "[unmapped]+0xf".into(),
                "flameprobe_stacks_test_leaf".into()
            ]
        );
        assert_eq!(p.modules.len(), 1);
    }
}
