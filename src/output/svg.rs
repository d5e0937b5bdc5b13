//! Interactive SVG flame graphs, drawn by inferno from folded lines.

use std::io::{self, Write};

use inferno::flamegraph::color::Palette;
use inferno::flamegraph::{self, Direction};

use super::folded;
use crate::profile::{units, FrameNameOptions, ProbeKind, Profile};

/// SVG-only options.
#[derive(Clone, Debug, Default)]
pub struct SvgOptions {
    /// Title; a default naming the probe is used when empty.
    pub title: Option<String>,
    /// Icicle graph (root at the top).
    pub reverse: bool,
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

fn default_title(profile: &Profile) -> String {
    profile
        .meta
        .probe
        .map_or("Flame Graph", ProbeKind::title)
        .to_string()
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
    let lines: Vec<String> = folded::lines(profile, names)
        .into_iter()
        .map(|(stack, weight)| format!("{stack} {weight}"))
        .collect();
    if lines.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the profile has no samples to draw",
        ));
    }
    let mut o = flamegraph::Options::default();
    o.title = opts.title.clone().unwrap_or_else(|| default_title(profile));
    o.subtitle = Some(subtitle(profile));
    o.count_name = folded::count_name(profile).to_string();
    o.colors = palette(profile, opts.colors.as_deref())?;
    o.deterministic = true;
    if opts.reverse {
        o.direction = Direction::Inverted;
        o.reverse_stack_order = false;
    }
    if let Some(mw) = opts.min_width {
        o.min_width = mw;
    }
    flamegraph::from_lines(&mut o, lines.iter().map(String::as_str), w)
}
