//! Interactive SVG flame graphs, drawn by inferno from folded lines: flame
//! graphs (stacks merged, root at the bottom), icicles (root at the top),
//! inverted graphs (merged by the leaf: each function with its callers
//! below it) and flame charts (each thread's samples in time order, not
//! merged).

use std::io::{self, Write};

use inferno::flamegraph::color::Palette;
use inferno::flamegraph::{self, Direction};

use super::folded;
use crate::profile::{units, FrameNameOptions, ProbeKind, Profile};
use crate::{text, timeline};

/// SVG-only options.
#[derive(Clone, Debug, Default)]
pub struct SvgOptions {
    /// Title; a default naming the probe is used when empty.
    pub title: Option<String>,
    /// Icicle graph: the flame graph upside down, root at the top.
    pub icicle: bool,
    /// Inverted (icicle of callers): stacks reversed, so they merge by
    /// their leaf function, drawn from the top: every function that ran
    /// on the top row, its callers below it (inferno's
    /// `reverse_stack_order` with the inverted direction).
    pub inverted: bool,
    /// Flame chart: each thread's samples in time order, not merged
    /// (where the profile has sample times; the rest merged after them).
    pub flamechart: bool,
    /// Palette name as inferno knows it (`hot`, `mem`, `java`, ...).
    pub colors: Option<String>,
    /// Omit frames narrower than this many pixels.
    pub min_width: Option<f64>,
}

/// The subtitle line: target, duration, frequency and the totals.
pub fn subtitle(profile: &Profile) -> String {
    let m = &profile.meta;
    let mut parts = Vec::new();
    if !m.target.is_empty() {
        parts.push(m.target.clone());
    }
    if m.duration_ns > 0 {
        parts.push(format!("{:.1}s", m.duration_ns as f64 / 1e9));
    }
    if let Some(hz) = m.frequency {
        parts.push(format!("{hz} Hz"));
    }
    // The shown value, then the events it came from.
    let (display, events) = (profile.display_index(), profile.events_index());
    let total = |i: usize| profile.total(i);
    let ty = &profile.sample_types[display];
    let mut totals = match ty.unit.as_str() {
        units::NANOSECONDS => ty.format(total(display)),
        units::BYTES => format!("{} bytes", total(display)),
        _ => format!("{} {}", total(display), ty.noun()),
    };
    if events != display {
        let e = &profile.sample_types[events];
        totals.push_str(&format!(" in {} {}", total(events), e.noun()));
    }
    parts.push(totals);
    if m.lost > 0 {
        parts.push(format!("{} lost", m.lost));
    }
    parts.join(", ")
}

fn default_title(profile: &Profile, opts: &SvgOptions) -> String {
    let title = profile.meta.probe.map_or("Flame Graph", ProbeKind::title);
    if opts.flamechart {
        title.replace("Flame Graph", "Flame Chart")
    } else if opts.inverted {
        title.replace("Flame Graph", "Flame Graph, inverted (callers below)")
    } else {
        title.to_string()
    }
}

/// Folded lines of each thread's samples in time order (consecutive
/// equal stacks joined), threads one after the other, ready for inferno's
/// flame chart: it draws its input from right to left, so the lines come
/// last sample first.
pub fn chart_lines(profile: &Profile, names: &FrameNameOptions) -> Vec<String> {
    let mut lines: Vec<(String, u64)> = Vec::new();
    for thread in timeline::by_thread(profile, Profile::WIDTH) {
        for (stack, weight) in thread.samples {
            let line = text::stack(&profile.frame_names(&profile.stacks[stack], names));
            match lines.last_mut() {
                Some((last, w)) if *last == line => *w = w.saturating_add(weight),
                _ => lines.push((line, weight)),
            }
        }
    }
    lines
        .into_iter()
        .rev()
        .filter_map(|(stack, w)| {
            let count = folded::folded_count(profile, w);
            (count > 0).then(|| format!("{stack} {count}"))
        })
        .collect()
}

fn palette(profile: &Profile, name: Option<&str>) -> io::Result<Palette> {
    let name = name.unwrap_or_else(|| profile.meta.probe.unwrap_or_default().palette());
    name.parse::<Palette>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("unknown colors: {e}")))
}

pub fn write(
    profile: &Profile,
    opts: &SvgOptions,
    names: &FrameNameOptions,
    w: &mut dyn Write,
) -> io::Result<()> {
    let lines: Vec<String> = if opts.flamechart {
        chart_lines(profile, names)
    } else {
        folded::lines(profile, names)
            .into_iter()
            .map(|(stack, weight)| format!("{stack} {weight}"))
            .collect()
    };
    if lines.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the profile has no samples to draw",
        ));
    }
    let mut o = flamegraph::Options::default();
    o.title = opts
        .title
        .clone()
        .unwrap_or_else(|| default_title(profile, opts));
    o.subtitle = Some(subtitle(profile));
    o.count_name = folded::count_name(profile).to_string();
    o.colors = palette(profile, opts.colors.as_deref())?;
    o.deterministic = true;
    if opts.icicle || opts.inverted {
        o.direction = Direction::Inverted;
    }
    // (A flame chart is never re-sorted, so never reversed: the options
    // that set both are refused.)
    o.reverse_stack_order = opts.inverted && !opts.flamechart;
    o.flame_chart = opts.flamechart;
    if let Some(mw) = opts.min_width {
        o.min_width = mw;
    }
    flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Labels, Meta, ValueType};

    /// main -> a three times, main -> b once, timed b, a, a, a.
    fn profile() -> Profile {
        let mut p = Profile::new(
            vec![
                ValueType::new("samples", units::COUNT),
                ValueType::new("cpu", units::NANOSECONDS),
            ],
            Meta::default(),
        );
        let m = p.intern_named(FrameKind::User, "main");
        let a = p.intern_named(FrameKind::User, "leaf_a");
        let b = p.intern_named(FrameKind::User, "leaf_b");
        let sa = p.add(Labels::default(), vec![m, a], &[3, 30]);
        let sb = p.add(Labels::default(), vec![m, b], &[1, 10]);
        p.timeline.push(1, sb, &[1, 10]);
        for t in 2..5 {
            p.timeline.push(t, sa, &[1, 10]);
        }
        p
    }

    /// (x, y) of the first frame with this name.
    fn position(svg: &str, name: &str) -> (f64, f64) {
        let at = svg
            .find(&format!("<title>{name} ("))
            .unwrap_or_else(|| panic!("no {name} in {svg}"));
        let rect = &svg[at..];
        let attr = |key: &str| -> f64 {
            let from = rect.find(&format!(" {key}=\"")).unwrap() + key.len() + 3;
            let v = &rect[from..from + rect[from..].find('"').unwrap()];
            v.trim_end_matches('%').parse().unwrap()
        };
        (attr("x"), attr("y"))
    }

    fn draw(p: &Profile, opts: &SvgOptions) -> String {
        let mut out = Vec::new();
        write(p, opts, &FrameNameOptions::default(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn flame_chart_draws_samples_in_time_order() {
        let p = profile();
        // inferno draws a chart's lines right to left: last sample first.
        assert_eq!(
            chart_lines(&p, &FrameNameOptions::default()),
            ["main;leaf_a 3", "main;leaf_b 1"]
        );
        let chart = draw(
            &p,
            &SvgOptions {
                flamechart: true,
                ..SvgOptions::default()
            },
        );
        assert!(chart.contains("Flame Chart"), "{chart}");
        assert!(position(&chart, "leaf_b").0 < position(&chart, "leaf_a").0);
        // A flame graph sorts by name instead: leaf_a first.
        let graph = draw(&p, &SvgOptions::default());
        assert!(position(&graph, "leaf_a").0 < position(&graph, "leaf_b").0);
    }

    #[test]
    fn inverted_puts_leaves_on_top_and_icicle_the_root() {
        let p = profile();
        let graph = draw(&p, &SvgOptions::default());
        let inverted = draw(
            &p,
            &SvgOptions {
                inverted: true,
                ..SvgOptions::default()
            },
        );
        let icicle = draw(
            &p,
            &SvgOptions {
                icicle: true,
                ..SvgOptions::default()
            },
        );
        let y = |s: &str, n: &str| position(s, n).1;
        // Flame graph: main below its callees (larger y).
        assert!(y(&graph, "main") > y(&graph, "leaf_a"));
        // Icicle: the same tree from the top.
        assert!(y(&icicle, "main") < y(&icicle, "leaf_a"));
        // Inverted: each leaf on the top row, its caller main below it,
        // once per leaf.
        assert!(y(&inverted, "leaf_a") < y(&inverted, "main"));
        assert_eq!(y(&inverted, "leaf_a"), y(&inverted, "leaf_b"));
        assert_eq!(inverted.matches("<title>main (").count(), 2);
    }
}
