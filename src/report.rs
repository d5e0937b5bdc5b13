//! `flameprobe report`: a text (or JSON) summary of a [`Profile`] for the
//! terminal: the top functions by self weight, and the merged call tree.
//!
//! The tree merges identical frames at the same position from the root
//! (as a thread-dump analysis does). Every node has a total weight (the
//! "duration" of everything through it), a self weight (total minus its
//! children: time in the frame itself) and a count (samples, or
//! allocations, through it). Weights are shown in the profile's unit: CPU
//! samples become time (samples x sampling period), memory is bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;

use regex::Regex;
use serde::Serialize;

use crate::profile::{label_frames, units, FrameNameOptions, Profile, INLINED};
use crate::text;

/// Said under a top table that has inlined functions.
pub const INLINED_NOTE: &str = "  (name_[i]: inlined into its caller, with the self time of its \
     code; `flameprobe report --no-inline` gives that to the caller)";

/// Everything `report` needs.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// Profile file; `-` is standard input.
    pub input: std::path::PathBuf,
    pub options: ReportOptions,
    pub json: bool,
    /// Compare with this base profile (`--diff`).
    pub diff_base: Option<std::path::PathBuf>,
    /// With a base: the value compared (a sample type's name).
    pub sample_type: Option<String>,
}

/// What to report.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Include the call tree in the text output.
    pub tree: bool,
    /// Keep only stacks with a frame matching this.
    pub focus: Option<Regex>,
    /// Drop tree nodes under this share of the total, in percent.
    pub min_percent: f64,
    /// Rows of the top table (0 = all).
    pub top: usize,
    /// Include the per-thread table in the text output.
    pub by_thread: bool,
    /// Give the code of inlined functions to the function they were
    /// inlined into (no `_[i]` frames).
    pub no_inline: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            tree: false,
            focus: None,
            min_percent: 1.0,
            top: 20,
            by_thread: false,
            no_inline: false,
        }
    }
}

/// One function in the top table. Values are in [`Report::unit`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopRow {
    pub name: String,
    #[serde(rename = "self")]
    pub self_value: u64,
    pub self_percent: f64,
    pub total: u64,
    pub total_percent: f64,
    /// Samples (events) in which the function is on the stack.
    pub count: u64,
}

/// One thread's totals: every value of the profile that is not a count
/// (time, bytes), then its events.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    pub process: String,
    pub thread: String,
    /// In the order of [`Report::thread_columns`].
    pub values: Vec<u64>,
    pub events: u64,
}

/// A node of the merged call tree. Values are in [`Report::unit`].
#[derive(Clone, Debug, PartialEq)]
pub struct TreeNode {
    pub name: String,
    /// Everything through this frame ("duration").
    pub total: u64,
    pub total_percent: f64,
    /// Total minus the children ("self duration").
    pub self_value: u64,
    /// Samples through this frame ("dump count").
    pub count: u64,
    /// Indices in [`Tree::nodes`], heaviest first.
    pub children: Vec<usize>,
}

/// The merged call tree, its nodes in one arena: stacks may be thousands of
/// frames deep, so nothing here recurses (building, walking, JSON).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tree {
    pub nodes: Vec<TreeNode>,
    /// Indices of the root frames, heaviest first.
    pub roots: Vec<usize>,
}

impl Tree {
    /// The nodes in depth-first order (children heaviest first), with
    /// their depth.
    pub fn walk(&self) -> impl Iterator<Item = (usize, &TreeNode)> + '_ {
        let mut stack: Vec<(usize, usize)> = self.roots.iter().rev().map(|&i| (0, i)).collect();
        std::iter::from_fn(move || {
            let (depth, i) = stack.pop()?;
            let node = &self.nodes[i];
            stack.extend(node.children.iter().rev().map(|&c| (depth + 1, c)));
            Some((depth, node))
        })
    }

    /// The child (or, with `None`, the root) named `name`.
    pub fn child(&self, parent: Option<usize>, name: &str) -> Option<&TreeNode> {
        let list = match parent {
            Some(p) => &self.nodes[p].children,
            None => &self.roots,
        };
        list.iter()
            .map(|&i| &self.nodes[i])
            .find(|n| n.name == name)
    }

    /// The tree as JSON (nested `children` arrays), written without
    /// recursion.
    fn to_json(&self) -> String {
        let mut out = String::from("[");
        // Closing brackets owed, innermost last: after the children of a
        // node come "]}".
        enum Step {
            Node(usize, bool),
            Close,
        }
        let mut todo: Vec<Step> = self
            .roots
            .iter()
            .enumerate()
            .rev()
            .map(|(k, &i)| Step::Node(i, k > 0))
            .collect();
        while let Some(step) = todo.pop() {
            match step {
                Step::Close => out.push_str("]}"),
                Step::Node(i, comma) => {
                    let n = &self.nodes[i];
                    if comma {
                        out.push(',');
                    }
                    let name = serde_json::to_string(&n.name).unwrap_or_else(|_| "\"\"".into());
                    let _ = write!(
                        out,
                        "{{\"name\":{name},\"total\":{},\"total_percent\":{},\"self\":{},\"count\":{},\"children\":[",
                        n.total,
                        json_f64(n.total_percent),
                        n.self_value,
                        n.count
                    );
                    todo.push(Step::Close);
                    todo.extend(
                        n.children
                            .iter()
                            .enumerate()
                            .rev()
                            .map(|(k, &c)| Step::Node(c, k > 0)),
                    );
                }
            }
        }
        out.push(']');
        out
    }
}

fn json_f64(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "0".into())
}

/// The report data, printed as text or serialized as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What every value is: the profile's sample type shown (e.g. `cpu`).
    pub value: String,
    /// Unit of every value: "nanoseconds", "bytes" or "count".
    pub unit: String,
    /// Total weight of the whole profile.
    pub total: u64,
    /// Total events (samples, allocations) of the whole profile.
    pub count: u64,
    /// What the counts count ("samples", "allocations").
    pub events: String,
    /// Sampling period of CPU profiles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub focus: Option<String>,
    /// Weight of the stacks kept by the focus (= total without focus).
    pub focused_total: u64,
    pub min_percent: f64,
    pub top: Vec<TopRow>,
    /// The values of the per-thread table, as `name/unit`.
    pub thread_columns: Vec<String>,
    /// Per thread, heaviest first (by the shown value).
    pub threads: Vec<ThreadRow>,
    /// The merged call tree, pruned by `min_percent` (in JSON: the roots,
    /// each with nested `children`).
    #[serde(skip)]
    pub tree: Tree,
}

/// Trie node while building.
#[derive(Default)]
struct Building {
    weight: u64,
    count: u64,
    children: BTreeMap<String, usize>,
}

/// A function's weights over a profile: as the leaf (self), anywhere on
/// the stack (total, once per stack however often it recurses), and the
/// events of the stacks it is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionTotals {
    pub self_weight: u64,
    pub total: u64,
    pub count: u64,
}

/// Adds a stack's frame names (label frames first, `labels` of them) to
/// the totals of its functions.
fn add_functions(
    functions: &mut HashMap<String, FunctionTotals>,
    names: &[String],
    labels: usize,
    weight: u64,
    count: u64,
) {
    // Functions: the frames below the label frames.
    let funcs = &names[labels.min(names.len())..];
    // A set: a stack may be 200,000 frames deep.
    let mut seen: HashSet<&str> = HashSet::with_capacity(funcs.len());
    for name in funcs {
        if !seen.insert(name.as_str()) {
            continue;
        }
        let f = functions.entry(name.clone()).or_default();
        f.total = f.total.saturating_add(weight);
        f.count = f.count.saturating_add(count);
    }
    if let Some(leaf) = funcs.last() {
        let f = functions.entry(leaf.clone()).or_default();
        f.self_weight = f.self_weight.saturating_add(weight);
    }
}

/// Every function's totals of value `value` (and events of value
/// `events`), over the stacks with a frame matching `focus`.
pub fn function_totals(
    profile: &Profile,
    value: usize,
    events: usize,
    focus: Option<&Regex>,
) -> HashMap<String, FunctionTotals> {
    let names_opts = FrameNameOptions::threads(true);
    let mut functions = HashMap::new();
    for stack in &profile.stacks {
        let (weight, count) = (stack.values[value], stack.values[events]);
        if weight == 0 && count == 0 {
            continue;
        }
        let names = profile.frame_names(stack, &names_opts);
        if focus.is_some_and(|re| !names.iter().any(|n| re.is_match(n))) {
            continue;
        }
        let labels = label_frames(&stack.labels, &names_opts).len();
        add_functions(&mut functions, &names, labels, weight, count);
    }
    functions
}

/// Builds the report for a profile.
pub fn build(profile: &Profile, opts: &ReportOptions) -> Report {
    let (display, events) = (profile.display_index(), profile.events_index());
    let period_ns = match &profile.period {
        Some((t, p)) if t.unit == units::NANOSECONDS => Some(*p),
        _ => None,
    };
    let names_opts = FrameNameOptions {
        inline: !opts.no_inline,
        ..FrameNameOptions::threads(true)
    };
    let total_weight = profile.total(display);
    let mut nodes = vec![Building::default()];
    let mut functions: HashMap<String, FunctionTotals> = HashMap::new();
    let mut focused = 0u64;
    for stack in &profile.stacks {
        let (weight, count) = (stack.values[display], stack.values[events]);
        if weight == 0 && count == 0 {
            continue;
        }
        let names = profile.frame_names(stack, &names_opts);
        if let Some(re) = &opts.focus {
            if !names.iter().any(|n| re.is_match(n)) {
                continue;
            }
        }
        focused = focused.saturating_add(weight);
        let mut at = 0;
        for name in &names {
            let next = match nodes[at].children.get(name) {
                Some(&i) => i,
                None => {
                    nodes.push(Building::default());
                    let i = nodes.len() - 1;
                    nodes[at].children.insert(name.clone(), i);
                    i
                }
            };
            at = next;
            nodes[at].weight = nodes[at].weight.saturating_add(weight);
            nodes[at].count = nodes[at].count.saturating_add(count);
        }
        let labels = label_frames(&stack.labels, &names_opts).len();
        add_functions(&mut functions, &names, labels, weight, count);
    }

    let percent = |w: u64| {
        if total_weight == 0 {
            0.0
        } else {
            100.0 * w as f64 / total_weight as f64
        }
    };
    let mut top: Vec<TopRow> = functions
        .into_iter()
        .map(|(name, f)| TopRow {
            name,
            self_value: f.self_weight,
            self_percent: percent(f.self_weight),
            total: f.total,
            total_percent: percent(f.total),
            count: f.count,
        })
        .collect();
    top.sort_by(|a, b| {
        b.self_value
            .cmp(&a.self_value)
            .then(b.total.cmp(&a.total))
            .then_with(|| a.name.cmp(&b.name))
    });
    if opts.top > 0 {
        top.truncate(opts.top);
    }

    let tree = prune(&nodes, &percent, opts.min_percent);
    let (thread_columns, threads) = by_thread(profile, opts);
    let shown = &profile.sample_types[display];
    Report {
        value: shown.name.clone(),
        unit: shown.unit.clone(),
        total: total_weight,
        count: profile.total(events),
        events: profile.sample_types[events].noun().to_string(),
        period_ns,
        focus: opts.focus.as_ref().map(|r| r.as_str().to_string()),
        focused_total: focused,
        min_percent: opts.min_percent,
        top,
        thread_columns,
        threads,
        tree,
    }
}

/// Each thread's totals of every value that is not a count, and its
/// events, heaviest first; stacks outside the focus are left out.
fn by_thread(profile: &Profile, opts: &ReportOptions) -> (Vec<String>, Vec<ThreadRow>) {
    let columns: Vec<usize> = (0..profile.sample_types.len())
        .filter(|&i| profile.sample_types[i].unit != units::COUNT)
        .collect();
    let events = profile.events_index();
    let names = FrameNameOptions::threads(true);
    // (pid, tid, process, thread) -> (values, events)
    type Key = (Option<u32>, Option<u32>, String, String);
    let mut rows: BTreeMap<Key, (Vec<u64>, u64)> = BTreeMap::new();
    for stack in &profile.stacks {
        if let Some(re) = &opts.focus {
            if !profile
                .frame_names(stack, &names)
                .iter()
                .any(|n| re.is_match(n))
            {
                continue;
            }
        }
        let l = &stack.labels;
        let key = (
            l.pid,
            l.tid,
            l.process.clone().unwrap_or_default(),
            l.thread.clone().unwrap_or_default(),
        );
        let row = rows
            .entry(key)
            .or_insert_with(|| (vec![0; columns.len()], 0));
        for (sum, &c) in row.0.iter_mut().zip(&columns) {
            *sum = sum.saturating_add(stack.values[c]);
        }
        row.1 = row.1.saturating_add(stack.values[events]);
    }
    let mut out: Vec<ThreadRow> = rows
        .into_iter()
        .map(
            |((pid, tid, process, thread), (values, events))| ThreadRow {
                pid,
                tid,
                process,
                thread,
                values,
                events,
            },
        )
        .collect();
    out.sort_by(|a, b| {
        let first = |r: &ThreadRow| r.values.first().copied().unwrap_or(r.events);
        first(b).cmp(&first(a)).then(a.tid.cmp(&b.tid))
    });
    let columns = columns
        .iter()
        .map(|&c| profile.sample_types[c].to_string())
        .collect();
    (columns, out)
}

/// The pruned tree of the trie in `nodes` (node 0 is the root of all).
fn prune(nodes: &[Building], percent: &dyn Fn(u64) -> f64, min_percent: f64) -> Tree {
    let mut tree = Tree::default();
    // (trie node, index of its tree node's parent).
    let mut todo: Vec<(usize, Option<usize>)> = vec![(0, None)];
    while let Some((at, parent)) = todo.pop() {
        let mut kids: Vec<usize> = Vec::new();
        for (name, &i) in &nodes[at].children {
            let n = &nodes[i];
            if percent(n.weight) < min_percent {
                continue;
            }
            let below = n
                .children
                .values()
                .fold(0u64, |sum, &c| sum.saturating_add(nodes[c].weight));
            tree.nodes.push(TreeNode {
                name: name.clone(),
                total: n.weight,
                total_percent: percent(n.weight),
                self_value: n.weight.saturating_sub(below),
                count: n.count,
                children: Vec::new(),
            });
            let id = tree.nodes.len() - 1;
            kids.push(id);
            todo.push((i, Some(id)));
        }
        kids.sort_by(|&a, &b| {
            let (a, b) = (&tree.nodes[a], &tree.nodes[b]);
            b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name))
        });
        match parent {
            Some(p) => tree.nodes[p].children = kids,
            None => tree.roots = kids,
        }
    }
    tree
}

/// `flameprobe report`: reads the input and prints the report to stdout.
pub fn run(config: &ReportConfig) -> anyhow::Result<()> {
    let text = match &config.diff_base {
        Some(base) => crate::diff::report(
            base,
            &config.input,
            config.sample_type.as_deref(),
            config.options.focus.as_ref(),
            config.options.top,
            config.json,
        )?,
        None => {
            let profile = crate::input::read(&config.input)?;
            let report = build(&profile, &config.options);
            if config.json {
                render_json(&report)
            } else {
                render_text(&profile, &report, &config.options)
            }
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Call-tree lines are indented by two columns per level down to this
/// depth; deeper frames show their depth as `[N]` instead, so a line stays
/// short however deep the stack and the text grows linearly with it.
const MAX_INDENT_DEPTH: usize = 32;

/// The report as text for a terminal (no control character but line
/// breaks and tabs).
pub fn render_text(profile: &Profile, report: &Report, opts: &ReportOptions) -> String {
    let fv = |v: u64| units::format(&report.unit, v);
    let count_name = report.events.as_str();
    let mut out = String::new();
    let mut head = format!("Total: {}", fv(report.total));
    if report.unit != units::COUNT {
        let _ = write!(head, " in {} {count_name}", report.count);
    }
    let m = &profile.meta;
    if let Some(hz) = m.frequency {
        let _ = write!(head, ", {hz} Hz");
    }
    if let Some(p) = report.period_ns {
        let _ = write!(head, " (period {})", units::format(units::NANOSECONDS, p));
    }
    if !m.target.is_empty() {
        let _ = write!(head, ", {}", m.target);
    }
    if m.duration_ns > 0 {
        let _ = write!(head, ", {:.1}s", m.duration_ns as f64 / 1e9);
    }
    out.push_str(&head);
    out.push('\n');
    if let Some(focus) = &report.focus {
        let share = if report.total == 0 {
            0.0
        } else {
            100.0 * report.focused_total as f64 / report.total as f64
        };
        let _ = writeln!(
            out,
            "Focus /{focus}/: {} ({share:.2}% of the total)",
            fv(report.focused_total)
        );
    }

    let _ = writeln!(out, "\nTop functions by self {}:", self_word(&report.unit));
    let _ = writeln!(
        out,
        "{:>12} {:>7} {:>12} {:>7} {:>9}  function",
        "self", "self%", "total", "total%", count_name
    );
    for row in &report.top {
        let _ = writeln!(
            out,
            "{:>12} {:>6.2}% {:>12} {:>6.2}% {:>9}  {}",
            fv(row.self_value),
            row.self_percent,
            fv(row.total),
            row.total_percent,
            row.count,
            row.name
        );
    }
    if report.top.is_empty() {
        out.push_str("  (no samples)\n");
    }
    if report.top.iter().any(|r| r.name.ends_with(INLINED)) {
        out.push_str(INLINED_NOTE);
        out.push('\n');
    }

    if opts.by_thread {
        render_threads(&mut out, profile, report);
    }

    if opts.tree {
        let _ = writeln!(
            out,
            "\nCall tree (total = everything through the frame, self = total minus \
             children; nodes under {}% left out):",
            report.min_percent
        );
        let _ = writeln!(
            out,
            "{:>12} {:>7} {:>12} {:>9}  frame",
            "total", "total%", "self", count_name
        );
        for (depth, node) in report.tree.walk() {
            let _ = write!(
                out,
                "{:>12} {:>6.2}% {:>12} {:>9}  {:indent$}",
                fv(node.total),
                node.total_percent,
                fv(node.self_value),
                node.count,
                "",
                indent = depth.min(MAX_INDENT_DEPTH) * 2
            );
            if depth > MAX_INDENT_DEPTH {
                let _ = write!(out, "[{depth}] ");
            }
            out.push_str(&node.name);
            out.push('\n');
        }
    }
    // Names are escaped where they are formatted; no control character
    // of an input reaches the terminal through any other text either.
    text::message(&out).into_owned()
}

/// The per-thread table.
fn render_threads(out: &mut String, profile: &Profile, report: &Report) {
    let columns: Vec<&crate::profile::ValueType> = profile
        .sample_types
        .iter()
        .filter(|t| t.unit != units::COUNT)
        .collect();
    let events = &profile.sample_types[profile.events_index()];
    let _ = writeln!(out, "\nPer thread:");
    for t in &columns {
        let _ = write!(out, "{:>12} ", t.name);
    }
    let _ = writeln!(out, "{:>9}  thread", events.noun());
    for row in &report.threads {
        for (t, v) in columns.iter().zip(&row.values) {
            let _ = write!(out, "{:>12} ", t.format(*v));
        }
        let (process, thread) = (text::printable(&row.process), text::printable(&row.thread));
        let who = match (row.pid, row.tid) {
            (Some(pid), Some(tid)) => format!("[{pid}]{process} {thread} (tid {tid})"),
            (Some(pid), None) => format!("[{pid}]{process}"),
            _ => format!("{process} {thread}").trim().to_string(),
        };
        let _ = writeln!(out, "{:>9}  {who}", row.events);
    }
}

fn self_word(unit: &str) -> &'static str {
    match unit {
        units::NANOSECONDS => "time",
        units::BYTES => "bytes",
        _ => "weight",
    }
}

/// The report as JSON (one document, newline-terminated): the fields of
/// [`Report`], pretty, with the tree as one compact line.
pub fn render_json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        // Serializing plain structs of numbers and strings cannot fail.
        format!("{{\"error\": \"{e}\"}}")
    });
    // Splice in the tree, which serde would serialize recursively.
    if s.ends_with('}') {
        s.pop();
        while s.ends_with('\n') {
            s.pop();
        }
        let _ = write!(s, ",\n  \"tree\": {}\n}}", report.tree.to_json());
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::folded;

    const FIXTURE: &str = "\
main;a;b 5
main;a 3
main;c;b 2
main 1
";

    /// The node at `path` (frame names from the root).
    fn node<'a>(tree: &'a Tree, path: &[&str]) -> &'a TreeNode {
        let mut at = None;
        let mut found = None;
        for name in path {
            let n = tree.child(at, name).unwrap_or_else(|| panic!("{name}"));
            at = tree.nodes.iter().position(|x| std::ptr::eq(x, n));
            found = Some(n);
        }
        found.unwrap()
    }

    #[test]
    fn tree_and_top_numbers() {
        let p = folded::parse("t", FIXTURE).unwrap();
        let r = build(&p, &ReportOptions::default());
        assert_eq!((r.total, r.count, r.unit.as_str()), (11, 11, "count"));
        let main = node(&r.tree, &["main"]);
        assert_eq!((main.total, main.self_value, main.count), (11, 1, 11));
        let a = node(&r.tree, &["main", "a"]);
        assert_eq!((a.total, a.self_value), (8, 3));
        assert_eq!(node(&r.tree, &["main", "a", "b"]).total, 5);
        let c = node(&r.tree, &["main", "c"]);
        assert_eq!((c.total, c.self_value), (2, 0));
        assert_eq!(r.tree.nodes[main.children[0]].name, "a", "heaviest first");
        let json: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(json["tree"][0]["name"], "main");
        assert_eq!(json["tree"][0]["children"][0]["children"][0]["name"], "b");
        assert_eq!(json["tree"][0]["children"][1]["self"], 0);
        let b = r.top.iter().find(|t| t.name == "b").unwrap();
        assert_eq!((b.self_value, b.total), (7, 7));
        assert!((b.self_percent - 700.0 / 11.0).abs() < 1e-9);
        assert_eq!(r.top[0].name, "b");
        let main_row = r.top.iter().find(|t| t.name == "main").unwrap();
        assert_eq!((main_row.self_value, main_row.total), (1, 11));
    }

    #[test]
    fn inlined_functions_get_self_time_unless_no_inline() {
        let p = folded::parse("t", "main;work;helper_[i] 3\nmain;work 1\n").unwrap();
        let r = build(&p, &ReportOptions::default());
        assert_eq!(
            (r.top[0].name.as_str(), r.top[0].self_value),
            ("helper_[i]", 3)
        );
        let text = render_text(&p, &r, &ReportOptions::default());
        assert!(text.contains("--no-inline"), "{text}");
        let opts = ReportOptions {
            no_inline: true,
            ..ReportOptions::default()
        };
        let r = build(&p, &opts);
        assert_eq!((r.top[0].name.as_str(), r.top[0].self_value), ("work", 4));
        assert!(r.top.iter().all(|t| t.name != "helper_[i]"));
        assert!(!render_text(&p, &r, &opts).contains("--no-inline"));
    }

    #[test]
    fn focus_and_pruning() {
        let p = folded::parse("t", FIXTURE).unwrap();
        let opts = ReportOptions {
            focus: Some(Regex::new("^c$").unwrap()),
            ..ReportOptions::default()
        };
        let r = build(&p, &opts);
        assert_eq!(r.focused_total, 2);
        let main = node(&r.tree, &["main"]);
        assert_eq!(main.total, 2);
        assert_eq!(main.children.len(), 1);
        let opts = ReportOptions {
            min_percent: 20.0,
            ..ReportOptions::default()
        };
        let r = build(&p, &opts);
        let main = node(&r.tree, &["main"]);
        assert_eq!(main.children.len(), 1, "c (18%) pruned");
        assert_eq!(main.self_value, 1, "self is not changed by pruning");
    }

    #[test]
    fn cpu_weights_are_time() {
        use crate::profile::ValueType;
        let cpu = ValueType::new("cpu", units::NANOSECONDS);
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT), cpu.clone()],
            crate::profile::Meta::default(),
        );
        p.period = Some((cpu, 10_101_010));
        let m = p.intern_named(crate::profile::FrameKind::User, "main");
        p.add(crate::profile::Labels::default(), vec![m], &[3, 30_303_030]);
        let r = build(&p, &ReportOptions::default());
        assert_eq!(r.unit, "nanoseconds");
        assert_eq!(r.total, 30_303_030);
        assert_eq!(r.count, 3);
        assert_eq!(r.period_ns, Some(10_101_010));
        let text = render_text(&p, &r, &ReportOptions::default());
        assert!(text.contains("30.3 ms"), "{text}");
        assert!(text.contains("in 3 samples"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap();
        assert_eq!(json["top"][0]["self"], 30_303_030);
        assert_eq!(json["value"], "cpu");
    }

    #[test]
    fn deep_stacks_need_no_deep_recursion() {
        // Run on a small stack: nothing may recurse per frame.
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let frames: Vec<String> = (0..20_000).map(|i| format!("f{i}")).collect();
                let text = format!("{} 5\n{};x 2\n", frames.join(";"), frames[..10].join(";"));
                let p = folded::parse("deep", &text).unwrap();
                let opts = ReportOptions {
                    tree: true,
                    ..ReportOptions::default()
                };
                let r = build(&p, &opts);
                let text = render_text(&p, &r, &opts);
                assert!(text.contains("f19999"));
                let json = render_json(&r);
                assert_eq!(json.matches('{').count(), json.matches('}').count());
                assert!(json.contains("\"name\":\"f19999\""));
                assert_eq!(r.tree.walk().count(), 20_001);
                r.tree.walk().map(|(depth, _)| depth).max()
            })
            .unwrap();
        assert_eq!(handle.join().unwrap(), Some(19_999));
    }
}
