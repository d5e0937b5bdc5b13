//! Comparing two profiles (any format `report` reads): differential flame
//! graphs and their `stack before after` lines (`flameprobe diff`), and the
//! functions that changed most (`report --diff BASE`).
//!
//! Both compare one value (sample type) present in both profiles. The
//! differential lines come from inferno's `differential` module (as
//! FlameGraph's `difffolded.pl`) over each profile's folded lines, and are
//! drawn by inferno's flame graph: widths from AFTER, red where a stack
//! grew, blue where it shrank (the color of a frame is the change of the
//! stacks ending in it). `--negate` draws BEFORE's widths with the same
//! colors; `--normalize` scales BEFORE to AFTER's total first.
//!
//! The change table follows `go tool pprof -top -diff_base`: per function
//! the change of its self and total value, in percent of the base's total,
//! sorted by the absolute self change, then by name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use inferno::flamegraph;
use regex::Regex;
use serde::Serialize;

use crate::output::{folded, Destination, Output};
use crate::profile::{units, FrameNameOptions, Labels, Profile};
use crate::report::{function_totals, FunctionTotals};

/// What `diff` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// A differential flame graph (SVG).
    Svg,
    /// `stack before after` lines (inferno-flamegraph and FlameGraph's
    /// flamegraph.pl draw them).
    Folded,
}

impl DiffFormat {
    /// The format a file name implies (.svg, .folded, .txt).
    pub fn from_path(path: &Path) -> Option<DiffFormat> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".svg") {
            Some(DiffFormat::Svg)
        } else if name.ends_with(".folded") || name.ends_with(".txt") {
            Some(DiffFormat::Folded)
        } else {
            None
        }
    }
}

/// Everything `diff` needs.
#[derive(Clone, Debug)]
pub struct DiffConfig {
    pub before: PathBuf,
    pub after: PathBuf,
    pub destination: Destination,
    pub format: DiffFormat,
    /// The value compared (`name` or `name/unit`); default: the width.
    pub sample_type: Option<String>,
    /// Widths from BEFORE.
    pub negate: bool,
    /// BEFORE scaled to AFTER's total.
    pub normalize: bool,
    pub names: FrameNameOptions,
    pub title: Option<String>,
    pub min_width: Option<f64>,
}

/// The sample type `wanted` names (`name`, or `name/unit`) in `profile`.
fn find_type(profile: &Profile, wanted: &str) -> Option<usize> {
    profile
        .sample_types
        .iter()
        .position(|t| t.name == wanted || t.to_string() == wanted)
}

fn type_list(profile: &Profile) -> String {
    let types: Vec<String> = profile.sample_types.iter().map(|t| t.to_string()).collect();
    types.join(", ")
}

/// The value both profiles are compared by: the sample type `wanted`
/// names, else `default`'s choice in `after`, which `before` must have
/// too. Returns its index in `before` and in `after`.
pub fn pick_values(
    (before, before_name): (&Profile, &str),
    (after, after_name): (&Profile, &str),
    wanted: Option<&str>,
    default: fn(&Profile) -> usize,
) -> Result<(usize, usize), String> {
    if let Some(wanted) = wanted {
        let find = |p: &Profile, name: &str| {
            find_type(p, wanted).ok_or_else(|| {
                format!(
                    "{name} has no sample type '{wanted}' (it has {})",
                    type_list(p)
                )
            })
        };
        let (b, a) = (find(before, before_name)?, find(after, after_name)?);
        if before.sample_types[b].unit != after.sample_types[a].unit {
            return Err(format!(
                "'{wanted}' is {} in {before_name} but {} in {after_name}: the values cannot \
                 be compared",
                before.sample_types[b], after.sample_types[a]
            ));
        }
        return Ok((b, a));
    }
    let a = default(after);
    let shown = &after.sample_types[a];
    match before.sample_types.iter().position(|t| t == shown) {
        Some(b) => Ok((b, a)),
        None => Err(format!(
            "{after_name} shows {shown}, which {before_name} does not have (it has {}): \
             pass --sample-type with a type both have",
            type_list(before)
        )),
    }
}

/// Folded lines of value `index`, for comparing with another profile.
/// Files without labels (folded input) carry their process frames as
/// text: when processes are grouped by name, `[1234]app` reads `app`
/// there too, so two runs of a program match.
fn comparable_lines(
    profile: &Profile,
    index: usize,
    names: &FrameNameOptions,
) -> BTreeMap<String, u64> {
    let lines = folded::lines_of(profile, index, names);
    let unlabeled = profile.stacks.iter().all(|s| s.labels == Labels::default());
    if !unlabeled || names.group_by != crate::profile::GroupBy::Comm {
        return lines;
    }
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, count) in lines {
        let e = out.entry(without_pid(&stack)).or_default();
        *e = e.saturating_add(count);
    }
    out
}

/// `[Pod]p;[Con]c;[1234]app;...` -> `[Pod]p;[Con]c;app;...`.
fn without_pid(stack: &str) -> String {
    let mut frames: Vec<&str> = stack.split(';').collect();
    if let Some(f) = frames
        .iter_mut()
        .find(|f| !f.starts_with("[Pod]") && !f.starts_with("[Con]"))
    {
        if let Some(rest) = f.strip_prefix('[') {
            if let Some((pid, name)) = rest.split_once(']') {
                if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty() {
                    *f = name;
                }
            }
        }
    }
    frames.join(";")
}

/// One differential line: a stack and its counts before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffLine {
    pub stack: String,
    pub before: u64,
    pub after: u64,
}

/// The differential lines of two sets of folded lines (inferno's
/// `differential`), sorted by stack.
pub fn differential(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    normalize: bool,
) -> io::Result<Vec<DiffLine>> {
    let text = |lines: &BTreeMap<String, u64>| {
        let mut s = String::new();
        for (stack, count) in lines {
            let _ = writeln!(s, "{stack} {count}");
        }
        s
    };
    let opts = inferno::differential::Options {
        normalize,
        strip_hex: false,
    };
    let mut out = Vec::new();
    inferno::differential::from_readers(
        opts,
        text(before).as_bytes(),
        text(after).as_bytes(),
        &mut out,
    )?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected differential line");
    let mut lines = Vec::new();
    for line in String::from_utf8_lossy(&out).lines() {
        let (rest, after) = line.rsplit_once(' ').ok_or_else(bad)?;
        let (stack, before) = rest.rsplit_once(' ').ok_or_else(bad)?;
        lines.push(DiffLine {
            stack: stack.to_string(),
            before: before.parse().map_err(|_| bad())?,
            after: after.parse().map_err(|_| bad())?,
        });
    }
    lines.sort_by(|a, b| a.stack.cmp(&b.stack));
    Ok(lines)
}

/// The two profiles of a diff, read, and the values they are compared by.
struct Inputs {
    before: Profile,
    after: Profile,
    /// Index of the compared value in `before`, in `after`.
    values: (usize, usize),
}

fn read_inputs(config: &DiffConfig) -> Result<Inputs> {
    let before = crate::input::read(&config.before)?;
    let after = crate::input::read(&config.after)?;
    let values = pick_values(
        (&before, &config.before.display().to_string()),
        (&after, &config.after.display().to_string()),
        config.sample_type.as_deref(),
        |_| Profile::WIDTH,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Inputs {
        before,
        after,
        values,
    })
}

/// `flameprobe diff`: reads both profiles and writes the differential
/// flame graph or lines.
pub fn run(config: &DiffConfig) -> Result<()> {
    let out = Output::prepare(&config.destination)?;
    let inputs = read_inputs(config)?;
    let (b, a) = inputs.values;
    let before = comparable_lines(&inputs.before, b, &config.names);
    let after = comparable_lines(&inputs.after, a, &config.names);
    let lines = differential(&before, &after, config.normalize)
        .context("computing the differential lines")?;
    let drawn = if config.negate { "BEFORE" } else { "AFTER" };
    let width: u64 = lines
        .iter()
        .map(|l| if config.negate { l.before } else { l.after })
        .sum();
    if config.format == DiffFormat::Svg && width == 0 {
        anyhow::bail!(
            "{drawn} ({}) has no {} to draw{}",
            if config.negate {
                config.before.display()
            } else {
                config.after.display()
            },
            inputs.after.sample_types[a],
            if config.negate {
                ""
            } else {
                " (--negate draws BEFORE's widths)"
            }
        );
    }
    out.write(|w| match config.format {
        DiffFormat::Folded => write_lines(&lines, w),
        DiffFormat::Svg => write_svg(config, &inputs, &lines, w),
    })?;
    Ok(())
}

/// `stack before after` per line.
pub fn write_lines(lines: &[DiffLine], w: &mut dyn Write) -> io::Result<()> {
    for l in lines {
        writeln!(w, "{} {} {}", l.stack, l.before, l.after)?;
    }
    Ok(())
}

fn write_svg(
    config: &DiffConfig,
    inputs: &Inputs,
    lines: &[DiffLine],
    w: &mut dyn Write,
) -> io::Result<()> {
    let (_, a) = inputs.values;
    let after = &inputs.after;
    // inferno draws the second count and colors by second - first:
    // --negate swaps the counts and the sign back.
    let text: Vec<String> = lines
        .iter()
        .map(|l| {
            let (first, second) = if config.negate {
                (l.after, l.before)
            } else {
                (l.before, l.after)
            };
            format!("{} {first} {second}", l.stack)
        })
        .collect();
    let total = |pick: fn(&DiffLine) -> u64| lines.iter().map(pick).sum::<u64>();
    let (tb, ta) = (total(|l| l.before), total(|l| l.after));
    let count_name = folded::count_name_of(after, a).to_string();
    let mut o = flamegraph::Options::default();
    o.title = config
        .title
        .clone()
        .unwrap_or_else(|| "Differential Flame Graph".to_string());
    o.subtitle = Some(format!(
        "{} against {}: {}, {tb} -> {ta} {count_name}{}; red: more in AFTER, blue: less; \
         widths from {}",
        config.after.display(),
        config.before.display(),
        after.sample_types[a],
        if config.normalize {
            " (BEFORE scaled to AFTER's total)"
        } else {
            ""
        },
        if config.negate { "BEFORE" } else { "AFTER" }
    ));
    o.count_name = count_name;
    o.negate_differentials = config.negate;
    o.deterministic = true;
    if let Some(mw) = config.min_width {
        o.min_width = mw;
    }
    flamegraph::from_lines(&mut o, text.iter().map(String::as_str), w)
}

/// One function's change, in the value compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeRow {
    pub name: String,
    pub self_base: u64,
    pub self_new: u64,
    /// `self_new - self_base` (pprof's `flat`).
    pub self_change: i64,
    /// The change in percent of the base's total (pprof's `flat%`, with
    /// its sign).
    pub self_change_percent: f64,
    /// Running sum of the self changes so far, in percent (pprof's `sum%`).
    pub sum_percent: f64,
    /// The change in percent of the function's own self value in the
    /// base (`None` when it had none).
    pub self_relative_percent: Option<f64>,
    pub total_base: u64,
    pub total_new: u64,
    /// pprof's `cum`.
    pub total_change: i64,
    /// pprof's `cum%`, with its sign.
    pub total_change_percent: f64,
}

/// `report --diff`: every function whose value changed.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    pub base: String,
    pub profile: String,
    /// The value compared (a pprof sample type name) and its unit.
    pub value: String,
    pub unit: String,
    pub base_total: u64,
    pub total: u64,
    pub rows: Vec<ChangeRow>,
}

fn change(new: u64, base: u64) -> i64 {
    let d = i128::from(new) - i128::from(base);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The functions of `new` and `base` by change of value (`values`: its
/// index in `base`, in `new`), as `go tool pprof -top -diff_base` orders
/// them; functions that did not change are left out.
pub fn changes(
    (base, base_name): (&Profile, &str),
    (new, new_name): (&Profile, &str),
    values: (usize, usize),
    focus: Option<&Regex>,
) -> DiffReport {
    let (bi, ni) = values;
    let old = function_totals(base, bi, base.events_index(), focus);
    let now = function_totals(new, ni, new.events_index(), focus);
    let base_total = base.total(bi);
    let percent = |v: i64| {
        if base_total == 0 {
            0.0
        } else {
            100.0 * v as f64 / base_total as f64
        }
    };
    let mut names: Vec<&String> = old.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    let none = FunctionTotals::default();
    let mut rows: Vec<ChangeRow> = names
        .into_iter()
        .map(|name| {
            let (o, n) = (
                old.get(name).unwrap_or(&none),
                now.get(name).unwrap_or(&none),
            );
            let self_change = change(n.self_weight, o.self_weight);
            let total_change = change(n.total, o.total);
            ChangeRow {
                name: name.clone(),
                self_base: o.self_weight,
                self_new: n.self_weight,
                self_change,
                self_change_percent: percent(self_change),
                sum_percent: 0.0,
                self_relative_percent: (o.self_weight > 0)
                    .then(|| 100.0 * self_change as f64 / o.self_weight as f64),
                total_base: o.total,
                total_new: n.total,
                total_change,
                total_change_percent: percent(total_change),
            }
        })
        .filter(|r| r.self_change != 0 || r.total_change != 0)
        .collect();
    rows.sort_by(|a, b| {
        b.self_change
            .unsigned_abs()
            .cmp(&a.self_change.unsigned_abs())
            .then_with(|| a.name.cmp(&b.name))
            .then(
                b.total_change
                    .unsigned_abs()
                    .cmp(&a.total_change.unsigned_abs()),
            )
    });
    let mut sum = 0i64;
    for row in &mut rows {
        sum = sum.saturating_add(row.self_change);
        row.sum_percent = percent(sum);
    }
    let shown = &new.sample_types[ni];
    DiffReport {
        base: base_name.to_string(),
        profile: new_name.to_string(),
        value: shown.name.clone(),
        unit: shown.unit.clone(),
        base_total,
        total: new.total(ni),
        rows,
    }
}

/// `report --diff BASE`: reads both and prints the change table (or JSON).
pub fn report(
    base_path: &Path,
    path: &Path,
    sample_type: Option<&str>,
    focus: Option<&Regex>,
    top: usize,
    json: bool,
) -> Result<String> {
    let base = crate::input::read(base_path)?;
    let new = crate::input::read(path)?;
    let (base_name, new_name) = (base_path.display().to_string(), path.display().to_string());
    let values = pick_values(
        (&base, &base_name),
        (&new, &new_name),
        sample_type,
        Profile::display_index,
    )
    .map_err(anyhow::Error::msg)?;
    let mut report = changes((&base, &base_name), (&new, &new_name), values, focus);
    if top > 0 {
        report.rows.truncate(top);
    }
    if json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        return Ok(text);
    }
    Ok(render_changes(&report))
}

fn signed(unit: &str, v: i64) -> String {
    let mag = units::format(unit, v.unsigned_abs());
    match v.signum() {
        1 => format!("+{mag}"),
        -1 => format!("-{mag}"),
        _ => mag,
    }
}

/// The change table as text.
pub fn render_changes(r: &DiffReport) -> String {
    let fv = |v: u64| units::format(&r.unit, v);
    let mut out = String::new();
    let total_change = change(r.total, r.base_total);
    let rel = if r.base_total == 0 {
        String::new()
    } else {
        format!(
            ", {:+.2}%",
            100.0 * total_change as f64 / r.base_total as f64
        )
    };
    let _ = writeln!(
        out,
        "Diff of {} against the base {} ({}): {} -> {} ({}{rel})",
        r.profile,
        r.base,
        r.value,
        fv(r.base_total),
        fv(r.total),
        signed(&r.unit, total_change)
    );
    let _ = writeln!(
        out,
        "\nTop functions by change of self {} (percentages of the base's total, as go tool \
         pprof -top -diff_base):",
        r.value
    );
    let _ = writeln!(
        out,
        "{:>12} {:>8} {:>8} {:>12} {:>8}  {:>24}  function",
        "self", "self%", "sum%", "total", "total%", "self before -> after"
    );
    for row in &r.rows {
        let relative = match row.self_relative_percent {
            Some(p) => format!(" ({p:+.1}%)"),
            None if row.self_new > 0 => " (new)".to_string(),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "{:>12} {:>+7.2}% {:>+7.2}% {:>12} {:>+7.2}%  {:>24}  {}",
            signed(&r.unit, row.self_change),
            row.self_change_percent,
            row.sum_percent,
            signed(&r.unit, row.total_change),
            row.total_change_percent,
            format!("{} -> {}{relative}", fv(row.self_base), fv(row.self_new)),
            row.name
        );
    }
    if r.rows.is_empty() {
        out.push_str("  (no function changed)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Meta, ValueType};

    fn folded(text: &str) -> Profile {
        crate::input::parse("t.folded", text.as_bytes()).unwrap()
    }

    #[test]
    fn differential_lines_and_normalize() {
        let names = FrameNameOptions::default();
        let before = folded("main;a 75\nmain;b 25\n");
        let after = folded("main;a 75\nmain;b 50\nmain;c 5\n");
        let lines = differential(
            &comparable_lines(&before, 0, &names),
            &comparable_lines(&after, 0, &names),
            false,
        )
        .unwrap();
        let got: Vec<(&str, u64, u64)> = lines
            .iter()
            .map(|l| (l.stack.as_str(), l.before, l.after))
            .collect();
        assert_eq!(
            got,
            [("main;a", 75, 75), ("main;b", 25, 50), ("main;c", 0, 5)]
        );
        // BEFORE (100) scaled to AFTER's total (130).
        let lines = differential(
            &comparable_lines(&before, 0, &names),
            &comparable_lines(&after, 0, &names),
            true,
        )
        .unwrap();
        assert_eq!((lines[0].before, lines[1].before), (97, 32));
    }

    #[test]
    fn runs_of_a_program_match_by_name() {
        assert_eq!(without_pid("[12]app;app;main"), "app;app;main");
        assert_eq!(
            without_pid("[Pod]p;[Con]web;[7]nginx;w"),
            "[Pod]p;[Con]web;nginx;w"
        );
        assert_eq!(without_pid("[unknown];x"), "[unknown];x");
        assert_eq!(without_pid("main;[1]x"), "main;[1]x");
        let by_comm = FrameNameOptions {
            threads: true,
            group_by: crate::profile::GroupBy::Comm,
            ..FrameNameOptions::default()
        };
        let p = folded("[12]app;main 3\n[13]app;main 2\n");
        assert_eq!(
            comparable_lines(&p, 0, &by_comm)
                .into_iter()
                .collect::<Vec<_>>(),
            [("app;main".to_string(), 5)]
        );
        assert_eq!(
            comparable_lines(&p, 0, &FrameNameOptions::default()).len(),
            2
        );
    }

    #[test]
    fn picks_a_value_both_profiles_have() {
        let cpu = Profile::new(
            vec![
                ValueType::new("samples", units::COUNT),
                ValueType::new("cpu", units::NANOSECONDS),
            ],
            Meta::default(),
        );
        let f = folded("main 1\n");
        let mem = Profile::new(
            vec![ValueType::new("inuse_space", units::BYTES)],
            Meta::default(),
        );
        let pick = |b: &Profile, a: &Profile, want: Option<&str>| {
            pick_values((b, "B"), (a, "A"), want, |_| Profile::WIDTH)
        };
        assert_eq!(pick(&f, &cpu, None), Ok((0, 0)));
        assert_eq!(pick(&cpu, &cpu, Some("cpu")), Ok((1, 1)));
        assert_eq!(pick(&cpu, &cpu, Some("cpu/nanoseconds")), Ok((1, 1)));
        let err = pick(&f, &mem, None).unwrap_err();
        assert!(
            err.contains("--sample-type") && err.contains("samples/count"),
            "{err}"
        );
        let err = pick(&f, &cpu, Some("cpu")).unwrap_err();
        assert!(err.starts_with("B has no sample type 'cpu'"), "{err}");
        let display = pick_values((&cpu, "B"), (&cpu, "A"), None, Profile::display_index);
        assert_eq!(display, Ok((1, 1)));
    }

    #[test]
    fn change_table_orders_like_pprof() {
        // The same input go tool pprof -top -diff_base prints as
        //   25 24.51% 24.51%  25 24.51%  hot_b
        //    3  2.94% 27.45%   3  2.94%  other
        //   -2  1.96% 25.49%  23 22.55%  run
        //    0     0% 25.49%  26 25.49%  main
        //    0     0% 25.49%  25 24.51%  path_b1
        let base = folded("main;run;path_a1;hot_a 75\nmain;run;path_b1;hot_b 25\nmain;run 2\n");
        let new = folded("main;run;path_a1;hot_a 75\nmain;run;path_b1;hot_b 50\nmain;other 3\n");
        let r = changes((&base, "b"), (&new, "a"), (0, 0), None);
        let got: Vec<(&str, i64, i64)> = r
            .rows
            .iter()
            .map(|row| (row.name.as_str(), row.self_change, row.total_change))
            .collect();
        assert_eq!(
            got,
            [
                ("hot_b", 25, 25),
                ("other", 3, 3),
                ("run", -2, 23),
                ("main", 0, 26),
                ("path_b1", 0, 25)
            ]
        );
        let pct: Vec<String> = r
            .rows
            .iter()
            .map(|row| format!("{:.2} {:.2}", row.self_change_percent, row.sum_percent))
            .collect();
        assert_eq!(pct[..3], ["24.51 24.51", "2.94 27.45", "-1.96 25.49"]);
        assert_eq!(r.rows[0].self_relative_percent, Some(100.0));
        assert_eq!(r.rows[1].self_relative_percent, None);
        let text = render_changes(&r);
        assert!(text.contains("+25") && text.contains("(+100.0%)"), "{text}");
        assert!(text.contains("102 -> 128 (+26, +25.49%)"), "{text}");
        // Kernel frames keep their suffix, as in every report.
        let mut k = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let s = k.intern_named(FrameKind::Kernel, "schedule");
        k.add(Labels::default(), vec![s], &[1]);
        let r = changes((&base, "b"), (&k, "k"), (0, 0), None);
        assert!(r.rows.iter().any(|row| row.name == "schedule_[k]"));
    }
}
