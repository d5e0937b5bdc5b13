//! THE profile model. Every output reads a [`Profile`]; nothing else shares state.
//!
//! A profile is a set of aggregated stacks. Each stack is a list of interned
//! [`Location`]s (root first) plus the [`Labels`] of the thread it was seen in
//! and its weights. A location is one code address in one module; inlined
//! functions make it carry several [`Line`]s (innermost first, as in pprof).

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::text;
pub use crate::timeline::Timeline;

/// Index into [`Profile::locations`].
pub type LocationId = usize;
/// Index into [`Profile::modules`].
pub type ModuleId = usize;

/// What one of a stack's values measures: pprof's `ValueType`, such as
/// `samples/count`, `cpu/nanoseconds`, `inuse_space/bytes` or
/// `offcpu/nanoseconds`. Sample types are data: writers and readers
/// handle any of them, knowing only the few units in [`units`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueType {
    pub name: String,
    pub unit: String,
}

impl ValueType {
    pub fn new(name: &str, unit: &str) -> Self {
        ValueType {
            name: name.to_string(),
            unit: unit.to_string(),
        }
    }

    /// A value in this unit for people: `10.1 ms`, `1.5 MiB`, `42`.
    pub fn format(&self, v: u64) -> String {
        units::format(&self.unit, v)
    }

    /// What one of these is called in a sentence ("10 allocations"): the
    /// usual word for pprof's well-known names, else the name itself.
    pub fn noun(&self) -> &str {
        match self.name.as_str() {
            "inuse_objects" | "alloc_objects" => "allocations",
            "inuse_space" | "alloc_space" => "bytes",
            name => name,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.unit)
    }
}

/// The units flameprobe knows how to show; any other is shown as a count.
pub mod units {
    pub const COUNT: &str = "count";
    pub const NANOSECONDS: &str = "nanoseconds";
    pub const BYTES: &str = "bytes";

    /// A value for people: durations for nanoseconds (`10.1 ms`), binary
    /// sizes for bytes (`1.5 MiB`), the plain number otherwise.
    pub fn format(unit: &str, v: u64) -> String {
        if v == 0 {
            return "0".into();
        }
        match unit {
            NANOSECONDS => {
                let f = v as f64;
                if v >= 1_000_000_000 {
                    format!("{:.2} s", f / 1e9)
                } else if v >= 1_000_000 {
                    format!("{:.1} ms", f / 1e6)
                } else if v >= 1_000 {
                    format!("{:.1} us", f / 1e3)
                } else {
                    format!("{v} ns")
                }
            }
            BYTES => {
                const NAMES: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
                let mut f = v as f64;
                let mut u = 0;
                while f >= 1024.0 && u + 1 < NAMES.len() {
                    f /= 1024.0;
                    u += 1;
                }
                if u == 0 {
                    format!("{v} B")
                } else {
                    format!("{f:.1} {}", NAMES[u])
                }
            }
            _ => v.to_string(),
        }
    }
}

/// Which probe recorded a profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ProbeKind {
    /// On-CPU stacks, sampled (flame graph of CPU time).
    #[default]
    Cpu,
    /// User-space memory allocated during the recording and not freed by its end.
    Memleak,
    /// Kernel memory (slab and pages) allocated during the recording and not freed.
    Kmemleak,
    /// Time threads spent off the CPU (blocked, sleeping, waiting), per stack.
    Offcpu,
    /// Wall-clock time per thread: on-CPU samples plus off-CPU time.
    Wall,
}

impl ProbeKind {
    pub const ALL: &'static [ProbeKind] = &[
        ProbeKind::Cpu,
        ProbeKind::Memleak,
        ProbeKind::Kmemleak,
        ProbeKind::Offcpu,
        ProbeKind::Wall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Cpu => "cpu",
            ProbeKind::Memleak => "memleak",
            ProbeKind::Kmemleak => "kmemleak",
            ProbeKind::Offcpu => "offcpu",
            ProbeKind::Wall => "wall",
        }
    }

    /// The probe with this name (as pprof comments carry it).
    pub fn from_name(name: &str) -> Option<ProbeKind> {
        Self::ALL.iter().copied().find(|p| p.name() == name)
    }

    /// Default title of its flame graphs.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Cpu => "CPU Flame Graph",
            ProbeKind::Memleak | ProbeKind::Kmemleak => "Memory Flame Graph (outstanding bytes)",
            ProbeKind::Offcpu => "Off-CPU Time Flame Graph",
            ProbeKind::Wall => "Wall-Clock Time Flame Graph (on-CPU and off-CPU)",
        }
    }

    /// Default palette of its flame graphs (an inferno palette name).
    pub fn palette(self) -> &'static str {
        match self {
            ProbeKind::Cpu | ProbeKind::Wall => "java",
            ProbeKind::Memleak | ProbeKind::Kmemleak => "mem",
            ProbeKind::Offcpu => "io",
        }
    }
}

/// Where a frame's code lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    Kernel,
    User,
    /// Code generated at run time (Java, Node), named from a perf map.
    Jit,
    /// A synthetic frame: `[truncated]`, labels of converted files, ...
    Special,
}

/// One source-level function at a location.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    /// The name flame graphs show (for JIT code, the cleaned name:
    /// `JitHot.fib`).
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The full name when it differs from `function` (pprof's
    /// `system_name`): a JIT frame's name as its runtime wrote it, with
    /// signature or tier (`long JitHot.fib(int)`).
    pub system_name: Option<String>,
}

impl Line {
    pub fn named(function: impl Into<String>) -> Self {
        Line {
            function: function.into(),
            file: None,
            line: None,
            system_name: None,
        }
    }
}

/// A code location: an address in a module, with its function(s).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub kind: FrameKind,
    pub module: Option<ModuleId>,
    /// Normalized address: file offset in `module` for user code, the
    /// absolute address for kernel code, 0 when unknown.
    pub address: u64,
    /// Innermost first. Never empty.
    pub lines: Vec<Line>,
}

/// A mapped binary (pprof `Mapping`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Module {
    pub path: String,
    pub build_id: Option<String>,
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
}

/// Who a stack was seen in. `None` fields are unknown (converted files).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub process: Option<String>,
    pub thread: Option<String>,
    /// The container's name (or short id) for processes in a container.
    pub container: Option<String>,
    /// The container's full id.
    pub container_id: Option<String>,
    /// The pod's name, when the container is in a pod.
    pub pod: Option<String>,
    /// The pod's Kubernetes namespace (none for podman pods).
    pub namespace: Option<String>,
}

/// One aggregated stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub labels: Labels,
    /// Root first.
    pub locations: Vec<LocationId>,
    /// One value per [`Profile::sample_types`].
    pub values: Vec<u64>,
}

/// Facts about the recording, for titles, summaries and pprof headers.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    /// What was profiled, e.g. "pid 1234" or "whole system".
    pub target: String,
    /// Wall-clock start, nanoseconds since the Unix epoch (0 = unknown).
    pub start_unix_ns: u64,
    /// Length of the recording in nanoseconds (0 = unknown).
    pub duration_ns: u64,
    /// Sampling frequency in Hz (CPU profiles).
    pub frequency: Option<u64>,
    /// Events lost in transit (ring buffer full, maps full).
    pub lost: u64,
    /// The probe that recorded the profile (`None` for converted files
    /// that do not say).
    pub probe: Option<ProbeKind>,
}

/// The profile: interned locations and modules, aggregated stacks.
///
/// Every stack carries one value per sample type. Their roles follow from
/// the types, the same way for every probe and every input:
/// - the first is the flame graph's width (and the folded count);
/// - the first whose unit is not `count` is what reports show (time or
///   bytes), the width when there is none ([`Profile::display_index`]);
/// - the last whose unit is `count` counts the events merged into a stack
///   (samples, allocations, blocked episodes: [`Profile::events_index`]).
#[derive(Clone, Debug)]
pub struct Profile {
    pub sample_types: Vec<ValueType>,
    /// pprof's period: each sample stands for this much of this type (the
    /// sampling period of CPU profiles).
    pub period: Option<(ValueType, u64)>,
    pub meta: Meta,
    /// Some value did not fit in 64 bits and was saturated.
    pub saturated: bool,
    pub modules: Vec<Module>,
    pub locations: Vec<Location>,
    pub stacks: Vec<Stack>,
    /// Locations known by address to start a process or thread (the
    /// function holding a binary's ELF entry point, named or stripped),
    /// so a stack ending there was unwound completely. Filled when
    /// recording; converted files leave it empty (names decide then).
    pub entries: BTreeSet<LocationId>,
    /// The samples in the order they were taken, for the probes that
    /// stream them (empty otherwise): read by the time-ordered views
    /// (speedscope, flame charts), ignored by the aggregating ones.
    pub timeline: Timeline,
    location_index: HashMap<Location, LocationId>,
    module_index: HashMap<Module, ModuleId>,
    stack_index: HashMap<(Labels, Vec<LocationId>), usize>,
}

impl Profile {
    pub fn new(sample_types: Vec<ValueType>, meta: Meta) -> Self {
        assert!(!sample_types.is_empty(), "a profile has a sample type");
        Profile {
            sample_types,
            period: None,
            meta,
            saturated: false,
            modules: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::new(),
            entries: BTreeSet::new(),
            timeline: Timeline::default(),
            location_index: HashMap::new(),
            module_index: HashMap::new(),
            stack_index: HashMap::new(),
        }
    }

    pub fn intern_module(&mut self, module: Module) -> ModuleId {
        if let Some(&id) = self.module_index.get(&module) {
            return id;
        }
        let id = self.modules.len();
        self.modules.push(module.clone());
        self.module_index.insert(module, id);
        id
    }

    pub fn intern_location(&mut self, location: Location) -> LocationId {
        debug_assert!(!location.lines.is_empty());
        if let Some(&id) = self.location_index.get(&location) {
            return id;
        }
        let id = self.locations.len();
        self.locations.push(location.clone());
        self.location_index.insert(location, id);
        id
    }

    /// A location that is only a name (converted files, synthetic frames).
    pub fn intern_named(&mut self, kind: FrameKind, name: &str) -> LocationId {
        self.intern_location(Location {
            kind,
            module: None,
            address: 0,
            lines: vec![Line::named(name)],
        })
    }

    /// Adds `values` (one per sample type) to the stack with these labels
    /// and locations, and returns its index in [`Profile::stacks`]. Sums
    /// saturate (and set [`Profile::saturated`]).
    pub fn add(&mut self, labels: Labels, locations: Vec<LocationId>, values: &[u64]) -> usize {
        debug_assert_eq!(values.len(), self.sample_types.len());
        let key = (labels, locations);
        if let Some(&i) = self.stack_index.get(&key) {
            for (sum, v) in self.stacks[i].values.iter_mut().zip(values) {
                let (new, overflow) = sum.overflowing_add(*v);
                *sum = if overflow { u64::MAX } else { new };
                self.saturated |= overflow;
            }
            return i;
        }
        let (labels, locations) = key.clone();
        let index = self.stacks.len();
        self.stack_index.insert(key, index);
        let mut v = values.to_vec();
        v.resize(self.sample_types.len(), 0);
        self.stacks.push(Stack {
            labels,
            locations,
            values: v,
        });
        index
    }

    /// Adds the stacks of `other` that `keep` selects, with their
    /// locations and modules interned here, and their timed samples: a
    /// part of a profile (one container's stacks), or profiles of
    /// consecutive windows merged. The values are taken position by
    /// position (the same sample types).
    pub fn extend_from(&mut self, other: &Profile, keep: impl Fn(&Stack) -> bool) {
        let mut modules: Vec<Option<ModuleId>> = vec![None; other.modules.len()];
        let mut locations: Vec<Option<LocationId>> = vec![None; other.locations.len()];
        let mut stacks: Vec<Option<usize>> = vec![None; other.stacks.len()];
        let width = self.sample_types.len();
        for (i, stack) in other.stacks.iter().enumerate().filter(|(_, s)| keep(s)) {
            let mut ids = Vec::with_capacity(stack.locations.len());
            for &l in &stack.locations {
                if let Some(id) = locations[l] {
                    ids.push(id);
                    continue;
                }
                let mut loc = other.locations[l].clone();
                if let Some(m) = loc.module {
                    let id = *modules[m]
                        .get_or_insert_with(|| self.intern_module(other.modules[m].clone()));
                    loc.module = Some(id);
                }
                let id = self.intern_location(loc);
                if other.entries.contains(&l) {
                    self.entries.insert(id);
                }
                locations[l] = Some(id);
                ids.push(id);
            }
            let values: Vec<u64> = (0..width)
                .map(|i| stack.values.get(i).copied().unwrap_or(0))
                .collect();
            stacks[i] = Some(self.add(stack.labels.clone(), ids, &values));
        }
        self.timeline
            .extend_mapped(&other.timeline, |s| stacks.get(s).copied().flatten());
        self.saturated |= other.saturated;
    }

    /// The value flame graphs are drawn with (and folded files count).
    pub const WIDTH: usize = 0;

    /// The value reports show: the first in time or bytes (any unit but
    /// `count`), else the width.
    pub fn display_index(&self) -> usize {
        self.sample_types
            .iter()
            .position(|t| t.unit != units::COUNT)
            .unwrap_or(Self::WIDTH)
    }

    /// The value counting events (samples, allocations): the last in
    /// `count`, else the width.
    pub fn events_index(&self) -> usize {
        self.sample_types
            .iter()
            .rposition(|t| t.unit == units::COUNT)
            .unwrap_or(Self::WIDTH)
    }

    /// Sum of value `index` over every stack (saturating).
    pub fn total(&self, index: usize) -> u64 {
        self.stacks
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(s.values[index]))
    }

    /// Sum of the width over every stack.
    pub fn total_width(&self) -> u64 {
        self.total(Self::WIDTH)
    }

    /// The frame names of a stack, root first, as flame graphs show them:
    /// label frames (`[pid]process`, thread) first, inlined functions
    /// expanded and suffixed `_[i]` (unless `opts.inline` is off, which
    /// gives their code to the function they were inlined into), kernel
    /// frames suffixed `_[k]`.
    pub fn frame_names(&self, stack: &Stack, opts: &FrameNameOptions) -> Vec<String> {
        let mut names = label_frames(&stack.labels, opts);
        for &loc in &stack.locations {
            let location = &self.locations[loc];
            let outermost = location.lines.len() - 1;
            for (i, line) in location.lines.iter().enumerate().rev() {
                if i == outermost || opts.inline {
                    names.push(line_name(location, i < outermost, line));
                }
            }
        }
        names
    }

    /// Self weight per function name (the leaf frame of each stack, the
    /// innermost inlined function where code was inlined), sorted
    /// heaviest first, ties by name.
    pub fn top_self(&self) -> Vec<(String, u64)> {
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for stack in &self.stacks {
            let name = match stack.locations.last() {
                Some(&loc) => {
                    let l = &self.locations[loc];
                    line_name(l, l.lines.len() > 1, &l.lines[0])
                }
                None => continue,
            };
            let w = by_name.entry(name).or_default();
            *w = w.saturating_add(stack.values[Self::WIDTH]);
        }
        let mut v: Vec<(String, u64)> = by_name.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// How to turn a stack into frame names.
#[derive(Clone, Copy, Debug)]
pub struct FrameNameOptions {
    /// Include the thread-name frame under the process frame.
    pub threads: bool,
    /// How the process frame groups stacks.
    pub group_by: GroupBy,
    /// Inlined functions as frames of their own (`name_[i]`); without,
    /// their code counts as the function they were inlined into.
    pub inline: bool,
}

impl Default for FrameNameOptions {
    fn default() -> Self {
        FrameNameOptions {
            threads: true,
            group_by: GroupBy::Pid,
            inline: true,
        }
    }
}

impl FrameNameOptions {
    /// Process frames by pid, with or without the thread-name frame.
    pub fn threads(threads: bool) -> Self {
        FrameNameOptions {
            threads,
            ..Self::default()
        }
    }
}

/// How stacks are grouped under their process frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// `[1234]nginx`: every process apart.
    #[default]
    Pid,
    /// `nginx`: processes of the same name together (a whole machine with
    /// many short-lived processes).
    Comm,
}

/// The synthetic root frames for a thread: `[Pod]namespace/name` (or
/// `[Pod]name`), `[Con]name`, `[pid]comm` and the thread name, each name
/// escaped as a frame ([`text::frame`]).
pub fn label_frames(labels: &Labels, opts: &FrameNameOptions) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pod) = &labels.pod {
        let pod = pod_display_name(labels.namespace.as_deref(), pod);
        out.push(format!("[Pod]{}", text::frame(&pod)));
    }
    if let Some(con) = &labels.container {
        out.push(format!("[Con]{}", text::frame(con)));
    }
    let pid = labels.pid.filter(|_| opts.group_by == GroupBy::Pid);
    match (pid, &labels.process) {
        (Some(pid), Some(name)) => out.push(format!("[{pid}]{}", text::frame(name))),
        (Some(pid), None) => out.push(format!("[{pid}]")),
        (None, Some(name)) => out.push(text::frame(name).into_owned()),
        (None, None) if labels.pid.is_some() => out.push("[unknown]".into()),
        (None, None) => {}
    }
    if opts.threads {
        if let Some(thread) = &labels.thread {
            out.push(text::frame(thread).into_owned());
        }
    }
    out
}

/// How a pod is named for people: `namespace/name` for Kubernetes pods,
/// the bare name for pods without a namespace (podman).
pub fn pod_display_name(namespace: Option<&str>, pod: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{pod}"),
        None => pod.to_string(),
    }
}

/// The name of one of a location's lines, `_[i]` when it was inlined
/// (every line but the outermost, the function the code belongs to).
pub fn line_name(location: &Location, inlined: bool, line: &Line) -> String {
    if inlined && location.kind == FrameKind::User {
        format!("{}{INLINED}", display_name(location.kind, &line.function))
    } else {
        display_name(location.kind, &line.function)
    }
}

/// The suffix of inlined frames in folded stacks (inferno's).
pub const INLINED: &str = "_[i]";

/// A function name as shown in folded stacks (kernel frames get `_[k]`),
/// escaped as a frame ([`text::frame`]: no `;`, no control character).
pub fn display_name(kind: FrameKind, function: &str) -> String {
    let clean = text::frame(function);
    match kind {
        FrameKind::Kernel => format!("{clean}_[k]"),
        FrameKind::Jit => format!("{clean}_[j]"),
        _ => clean.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_types() -> Vec<ValueType> {
        vec![
            ValueType::new("samples", units::COUNT),
            ValueType::new("cpu", units::NANOSECONDS),
        ]
    }

    #[test]
    fn value_roles_follow_from_the_types() {
        let p = Profile::new(cpu_types(), Meta::default());
        assert_eq!((p.display_index(), p.events_index()), (1, 0));
        let mem = Profile::new(
            vec![
                ValueType::new("inuse_space", units::BYTES),
                ValueType::new("inuse_objects", units::COUNT),
            ],
            Meta::default(),
        );
        assert_eq!((mem.display_index(), mem.events_index()), (0, 1));
        assert_eq!(ValueType::new("x", units::BYTES).format(1536), "1.5 KiB");
        assert_eq!(units::format(units::NANOSECONDS, 10_101_010), "10.1 ms");
        assert_eq!(units::format(units::NANOSECONDS, 2_500_000_000), "2.50 s");
        assert_eq!(units::format(units::BYTES, 10), "10 B");
        assert_eq!(units::format(units::COUNT, 7), "7");
        assert_eq!(units::format(units::NANOSECONDS, 0), "0");
        for p in ProbeKind::ALL {
            assert_eq!(ProbeKind::from_name(p.name()), Some(*p));
        }
    }

    fn labels(pid: u32, thread: &str) -> Labels {
        Labels {
            pid: Some(pid),
            tid: Some(pid),
            process: Some("app".into()),
            thread: Some(thread.into()),
            ..Labels::default()
        }
    }

    #[test]
    fn add_aggregates_identical_stacks() {
        let mut p = Profile::new(cpu_types(), Meta::default());
        let a = p.intern_named(FrameKind::User, "main");
        let b = p.intern_named(FrameKind::User, "work");
        assert_eq!(a, p.intern_named(FrameKind::User, "main"));
        p.add(labels(1, "t"), vec![a, b], &[1, 10]);
        p.add(labels(1, "t"), vec![a, b], &[2, 20]);
        p.add(labels(2, "t"), vec![a, b], &[1, 10]);
        assert_eq!(p.stacks.len(), 2);
        assert_eq!(p.stacks[0].values, [3, 30]);
        assert_eq!(p.total_width(), 4);
        assert_eq!(p.total(1), 40);
        assert!(!p.saturated);
        p.add(labels(2, "t"), vec![a, b], &[u64::MAX, 0]);
        assert_eq!(p.stacks[1].values[0], u64::MAX, "saturates");
        assert_eq!(p.total_width(), u64::MAX);
        assert!(p.saturated);
    }

    #[test]
    fn extend_from_takes_parts_and_merges_windows() {
        let mut a = Profile::new(cpu_types(), Meta::default());
        let m = a.intern_module(Module {
            path: "/bin/app".into(),
            build_id: None,
            start: 0x1000,
            end: 0x2000,
            file_offset: 0,
        });
        let main = a.intern_location(Location {
            kind: FrameKind::User,
            module: Some(m),
            address: 0x10,
            lines: vec![Line::named("main")],
        });
        let work = a.intern_named(FrameKind::User, "work");
        a.add(labels(1, "t"), vec![main, work], &[2, 20]);
        a.add(labels(2, "t"), vec![main], &[1, 10]);
        // A part: one process's stacks, its locations and module only.
        let mut part = Profile::new(cpu_types(), Meta::default());
        part.extend_from(&a, |s| s.labels.pid == Some(2));
        assert_eq!(part.stacks.len(), 1);
        assert_eq!(part.locations.len(), 1);
        assert_eq!(part.modules.len(), 1);
        assert_eq!(
            part.frame_names(&part.stacks[0], &Default::default())[2],
            "main"
        );
        // Windows merged: the same stacks add up.
        let mut all = Profile::new(cpu_types(), Meta::default());
        all.extend_from(&a, |_| true);
        all.extend_from(&a, |_| true);
        assert_eq!(all.stacks.len(), 2);
        assert_eq!((all.total(0), all.total(1)), (6, 60));
        assert_eq!(all.locations[all.stacks[0].locations[0]].module, Some(0));
        // Timed samples come along, pointing at the stacks here.
        a.timeline.push(5, 1, &[1, 10]);
        a.timeline.push(6, 0, &[1, 10]);
        let mut part = Profile::new(cpu_types(), Meta::default());
        part.extend_from(&a, |s| s.labels.pid == Some(2));
        let timed: Vec<(u64, usize)> = part.timeline.iter().map(|(t, s, _)| (t, s)).collect();
        assert_eq!(timed, [(5, 0)]);
    }

    #[test]
    fn frame_names_put_labels_first_and_mark_kernel() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let inl = p.intern_location(Location {
            kind: FrameKind::User,
            module: None,
            address: 0x10,
            lines: vec![Line::named("inner"), Line::named("outer")],
        });
        let k = p.intern_named(FrameKind::Kernel, "do_syscall_64");
        p.add(labels(7, "worker"), vec![inl, k], &[1]);
        let names = p.frame_names(&p.stacks[0], &FrameNameOptions::threads(true));
        assert_eq!(
            names,
            [
                "[7]app",
                "worker",
                "outer",
                "inner_[i]",
                "do_syscall_64_[k]"
            ]
        );
        let names = p.frame_names(&p.stacks[0], &FrameNameOptions::threads(false));
        assert_eq!(names[1], "outer");
        let no_inline = FrameNameOptions {
            inline: false,
            ..FrameNameOptions::threads(false)
        };
        let names = p.frame_names(&p.stacks[0], &no_inline);
        assert_eq!(names, ["[7]app", "outer", "do_syscall_64_[k]"]);
        p.add(labels(7, "worker"), vec![inl], &[2]);
        assert_eq!(p.top_self()[0], ("inner_[i]".to_string(), 2));
    }

    #[test]
    fn container_labels_come_before_process() {
        let l = Labels {
            pod: Some("web-1".into()),
            container: Some("nginx".into()),
            ..labels(3, "t")
        };
        assert_eq!(
            label_frames(&l, &FrameNameOptions::threads(false)),
            ["[Pod]web-1", "[Con]nginx", "[3]app"]
        );
        // Kubernetes pods are shown with their namespace; the container id
        // makes no frame.
        let k8s = Labels {
            namespace: Some("shop".into()),
            container_id: Some("ab".repeat(32)),
            ..l
        };
        assert_eq!(
            label_frames(&k8s, &FrameNameOptions::threads(true)),
            ["[Pod]shop/web-1", "[Con]nginx", "[3]app", "t"]
        );
        // Host processes get neither frame.
        assert_eq!(
            label_frames(&labels(3, "t"), &FrameNameOptions::threads(false)),
            ["[3]app"]
        );
        let by_comm = FrameNameOptions {
            threads: false,
            group_by: GroupBy::Comm,
            ..FrameNameOptions::default()
        };
        assert_eq!(label_frames(&labels(3, "t"), &by_comm), ["app"]);
    }

    #[test]
    fn top_self_sorts_by_weight_then_name() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let m = p.intern_named(FrameKind::User, "main");
        let x = p.intern_named(FrameKind::User, "x");
        let y = p.intern_named(FrameKind::User, "y");
        p.add(Labels::default(), vec![m, x], &[5]);
        p.add(Labels::default(), vec![m, y], &[5]);
        p.add(Labels::default(), vec![m], &[1]);
        assert_eq!(
            p.top_self(),
            [
                ("x".to_string(), 5),
                ("y".to_string(), 5),
                ("main".to_string(), 1)
            ]
        );
    }

    #[test]
    fn semicolons_never_split_frames() {
        assert_eq!(display_name(FrameKind::User, "a;b"), "a:b");
    }
}
