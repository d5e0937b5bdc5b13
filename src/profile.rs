//! THE profile model. Every output reads a [`Profile`]; nothing else shares state.
//!
//! A profile is a set of aggregated stacks. Each stack is a list of interned
//! [`Location`]s (root first) plus the [`Labels`] of the thread it was seen in
//! and its weights. A location is one code address in one module; inlined
//! functions make it carry several [`Line`]s (innermost first, as in pprof).

use std::collections::HashMap;
use std::fmt;

/// Index into [`Profile::locations`].
pub type LocationId = usize;
/// Index into [`Profile::modules`].
pub type ModuleId = usize;

/// What a stack's weight measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// On-CPU samples taken every `period_ns` nanoseconds.
    Samples { period_ns: u64 },
    /// Bytes of memory (count = number of allocations).
    Bytes,
    /// Plain counts of unknown meaning (e.g. converted folded files).
    Count,
}

impl Unit {
    /// Human name of the weight, used in SVG and report headings.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Samples { .. } => "samples",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
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
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl Line {
    pub fn named(function: impl Into<String>) -> Self {
        Line {
            function: function.into(),
            file: None,
            line: None,
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
    pub container: Option<String>,
    pub pod: Option<String>,
}

/// One aggregated stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub labels: Labels,
    /// Root first.
    pub locations: Vec<LocationId>,
    /// Primary weight in the profile's [`Unit`] (samples, bytes, ...).
    pub weight: u64,
    /// Number of events (samples, allocations) merged into this stack.
    pub count: u64,
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
    /// Name of the probe that produced the profile ("cpu", "memleak").
    pub probe: String,
}

/// The profile: interned locations and modules, aggregated stacks.
#[derive(Clone, Debug)]
pub struct Profile {
    pub unit: Unit,
    pub meta: Meta,
    pub modules: Vec<Module>,
    pub locations: Vec<Location>,
    pub stacks: Vec<Stack>,
    location_index: HashMap<Location, LocationId>,
    module_index: HashMap<Module, ModuleId>,
    stack_index: HashMap<(Labels, Vec<LocationId>), usize>,
}

impl Profile {
    pub fn new(unit: Unit, meta: Meta) -> Self {
        Profile {
            unit,
            meta,
            modules: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::new(),
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

    /// Adds `weight`/`count` to the stack with these labels and locations.
    pub fn add(&mut self, labels: Labels, locations: Vec<LocationId>, weight: u64, count: u64) {
        let key = (labels, locations);
        if let Some(&i) = self.stack_index.get(&key) {
            self.stacks[i].weight += weight;
            self.stacks[i].count += count;
            return;
        }
        let (labels, locations) = key.clone();
        self.stack_index.insert(key, self.stacks.len());
        self.stacks.push(Stack {
            labels,
            locations,
            weight,
            count,
        });
    }

    pub fn total_weight(&self) -> u64 {
        self.stacks.iter().map(|s| s.weight).sum()
    }

    pub fn total_count(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// The frame names of a stack, root first, as flame graphs show them:
    /// label frames (`[pid]process`, thread) first, inlined functions
    /// expanded, kernel frames suffixed `_[k]`.
    pub fn frame_names(&self, stack: &Stack, opts: &FrameNameOptions) -> Vec<String> {
        let mut names = label_frames(&stack.labels, opts.threads);
        for &loc in &stack.locations {
            let location = &self.locations[loc];
            for line in location.lines.iter().rev() {
                names.push(display_name(location.kind, &line.function));
            }
        }
        names
    }

    /// Self weight per function name (the leaf frame of each stack), sorted
    /// heaviest first, ties by name.
    pub fn top_self(&self) -> Vec<(String, u64)> {
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for stack in &self.stacks {
            let name = match stack.locations.last() {
                Some(&loc) => {
                    let l = &self.locations[loc];
                    display_name(l.kind, &l.lines[0].function)
                }
                None => continue,
            };
            *by_name.entry(name).or_default() += stack.weight;
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
}

impl Default for FrameNameOptions {
    fn default() -> Self {
        FrameNameOptions { threads: true }
    }
}

/// The synthetic root frames for a thread: `[Pod]`, `[Con]`, `[pid]comm`
/// and the thread name.
pub fn label_frames(labels: &Labels, threads: bool) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(pod) = &labels.pod {
        out.push(format!("[Pod]{pod}"));
    }
    if let Some(con) = &labels.container {
        out.push(format!("[Con]{con}"));
    }
    match (labels.pid, &labels.process) {
        (Some(pid), Some(name)) => out.push(format!("[{pid}]{name}")),
        (Some(pid), None) => out.push(format!("[{pid}]")),
        (None, Some(name)) => out.push(name.clone()),
        (None, None) => {}
    }
    if threads {
        if let Some(thread) = &labels.thread {
            out.push(thread.clone());
        }
    }
    out
}

/// A function name as shown in folded stacks (kernel frames get `_[k]`).
/// Semicolons would split a frame in folded files, so they become colons.
pub fn display_name(kind: FrameKind, function: &str) -> String {
    let clean = sanitize(function);
    match kind {
        FrameKind::Kernel => format!("{clean}_[k]"),
        FrameKind::Jit => format!("{clean}_[j]"),
        _ => clean,
    }
}

fn sanitize(name: &str) -> String {
    if name.contains([';', '\n', '\r']) {
        name.replace(';', ":").replace(['\n', '\r'], " ")
    } else {
        name.to_string()
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut p = Profile::new(Unit::Samples { period_ns: 10 }, Meta::default());
        let a = p.intern_named(FrameKind::User, "main");
        let b = p.intern_named(FrameKind::User, "work");
        assert_eq!(a, p.intern_named(FrameKind::User, "main"));
        p.add(labels(1, "t"), vec![a, b], 1, 1);
        p.add(labels(1, "t"), vec![a, b], 2, 2);
        p.add(labels(2, "t"), vec![a, b], 1, 1);
        assert_eq!(p.stacks.len(), 2);
        assert_eq!(p.stacks[0].weight, 3);
        assert_eq!(p.total_weight(), 4);
    }

    #[test]
    fn frame_names_put_labels_first_and_mark_kernel() {
        let mut p = Profile::new(Unit::Count, Meta::default());
        let inl = p.intern_location(Location {
            kind: FrameKind::User,
            module: None,
            address: 0x10,
            lines: vec![Line::named("inner"), Line::named("outer")],
        });
        let k = p.intern_named(FrameKind::Kernel, "do_syscall_64");
        p.add(labels(7, "worker"), vec![inl, k], 1, 1);
        let names = p.frame_names(&p.stacks[0], &FrameNameOptions { threads: true });
        assert_eq!(
            names,
            ["[7]app", "worker", "outer", "inner", "do_syscall_64_[k]"]
        );
        let names = p.frame_names(&p.stacks[0], &FrameNameOptions { threads: false });
        assert_eq!(names[1], "outer");
    }

    #[test]
    fn container_labels_come_before_process() {
        let l = Labels {
            pod: Some("web-1".into()),
            container: Some("nginx".into()),
            ..labels(3, "t")
        };
        assert_eq!(
            label_frames(&l, false),
            ["[Pod]web-1", "[Con]nginx", "[3]app"]
        );
    }

    #[test]
    fn top_self_sorts_by_weight_then_name() {
        let mut p = Profile::new(Unit::Count, Meta::default());
        let m = p.intern_named(FrameKind::User, "main");
        let x = p.intern_named(FrameKind::User, "x");
        let y = p.intern_named(FrameKind::User, "y");
        p.add(Labels::default(), vec![m, x], 5, 5);
        p.add(Labels::default(), vec![m, y], 5, 5);
        p.add(Labels::default(), vec![m], 1, 1);
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
