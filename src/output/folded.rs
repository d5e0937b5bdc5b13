//! Folded stacks: one `frame;frame;...;leaf count` line per distinct stack,
//! sorted, as inferno and FlameGraph read them.
//!
//! The count is the profile's width value (samples, bytes, ...). Folded
//! files carry no unit and tools expect integers of a sensible size, so
//! time is written in microseconds rather than nanoseconds.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::profile::{units, FrameNameOptions, Profile};
use crate::text;

/// Folded lines with their counts, merged by text and sorted.
pub fn lines(profile: &Profile, opts: &FrameNameOptions) -> BTreeMap<String, u64> {
    lines_of(profile, Profile::WIDTH, opts)
}

/// Folded lines counting value `index` (not the width).
pub fn lines_of(profile: &Profile, index: usize, opts: &FrameNameOptions) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for stack in &profile.stacks {
        let count = count_of(profile, index, stack.values[index]);
        if count == 0 {
            continue;
        }
        let names = profile.frame_names(stack, opts);
        let e = out.entry(text::stack(&names)).or_default();
        *e = e.saturating_add(count);
    }
    out
}

/// What a width value becomes in a folded file: time in microseconds
/// (rounded), anything else as it is.
pub fn folded_count(profile: &Profile, width: u64) -> u64 {
    count_of(profile, Profile::WIDTH, width)
}

/// What a value of type `index` becomes in a folded file.
pub fn count_of(profile: &Profile, index: usize, v: u64) -> u64 {
    if profile.sample_types[index].unit == units::NANOSECONDS {
        v.saturating_add(500) / 1000
    } else {
        v
    }
}

/// The unit of folded counts, for people ("samples", "bytes", "us").
pub fn count_name(profile: &Profile) -> &str {
    count_name_of(profile, Profile::WIDTH)
}

/// The unit of folded counts of value `index`.
pub fn count_name_of(profile: &Profile, index: usize) -> &str {
    let t = &profile.sample_types[index];
    match t.unit.as_str() {
        units::NANOSECONDS => "us",
        units::COUNT => &t.name,
        unit => unit,
    }
}

pub fn write(profile: &Profile, opts: &FrameNameOptions, w: &mut dyn Write) -> io::Result<()> {
    for (stack, weight) in lines(profile, opts) {
        writeln!(w, "{stack} {weight}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Labels, Meta, ValueType};

    #[test]
    fn folds_sorted_and_merged() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let m = p.intern_named(FrameKind::User, "main");
        let b = p.intern_named(FrameKind::User, "b");
        let a = p.intern_named(FrameKind::User, "a");
        let k = p.intern_named(FrameKind::Kernel, "sys_read");
        let l = |tid| Labels {
            pid: Some(9),
            tid: Some(tid),
            process: Some("app".into()),
            thread: Some("app".into()),
            ..Labels::default()
        };
        p.add(l(9), vec![m, b], &[3]);
        p.add(l(10), vec![m, b], &[2]); // same names, other thread id
        p.add(l(9), vec![m, a, k], &[1]);
        let mut out = Vec::new();
        write(&p, &FrameNameOptions::default(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[9]app;app;main;a;sys_read_[k] 1\n[9]app;app;main;b 5\n"
        );
        assert_eq!(count_name(&p), "samples");
    }

    #[test]
    fn time_is_folded_in_microseconds() {
        let mut p = Profile::new(
            vec![ValueType::new("offcpu", units::NANOSECONDS)],
            Meta::default(),
        );
        let m = p.intern_named(FrameKind::User, "main");
        let s = p.intern_named(FrameKind::Kernel, "schedule");
        p.add(Labels::default(), vec![m, s], &[1_500_499]);
        p.add(Labels::default(), vec![m], &[400]); // under half a microsecond
        let mut out = Vec::new();
        write(&p, &FrameNameOptions::default(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "main;schedule_[k] 1500\n");
        assert_eq!(count_name(&p), "us");
    }
}
