//! Folded stacks: `frame;frame;...;leaf count` per line, root first.
//!
//! Frames are kept exactly (label frames like `[1234]app` included); the
//! `_[k]` and `_[j]` suffixes become kernel and JIT frames, and a `_[i]`
//! frame a function inlined into the frame before it (one location with
//! several lines, as recorded), which the folded writer suffixes again, so
//! folded -> profile -> folded is lossless.

use super::{InputError, Position};
use crate::profile::{units, FrameKind, Labels, Line, Location, Meta, Profile, ValueType, INLINED};

/// Splits a folded frame name into its kind and function name.
pub fn frame_kind(frame: &str) -> (FrameKind, &str) {
    if let Some(name) = frame.strip_suffix("_[k]") {
        (FrameKind::Kernel, name)
    } else if let Some(name) = frame.strip_suffix("_[j]") {
        (FrameKind::Jit, name)
    } else {
        (FrameKind::User, frame)
    }
}

pub fn parse(name: &str, text: &str) -> Result<Profile, InputError> {
    // Folded files carry no unit: plain counts.
    let mut profile = Profile::new(
        vec![ValueType::new("samples", units::COUNT)],
        Meta::default(),
    );
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| InputError::new(name, Some(Position::Line(i + 1)), msg);
        let (stack, count) = line.rsplit_once(' ').ok_or_else(|| {
            err(format!(
                "no count at the end of the line (expected 'frame;frame;... COUNT'): {}",
                excerpt(line)
            ))
        })?;
        let count: u64 = count.trim().parse().map_err(|_| {
            err(format!(
                "{} is not a count (expected 'frame;frame;... COUNT')",
                excerpt(count)
            ))
        })?;
        let stack = stack.trim_end();
        if stack.is_empty() {
            return Err(err("a count without a stack".into()));
        }
        let mut frames: Vec<Location> = Vec::new();
        for frame in stack.split(';') {
            if let (Some(name), Some(caller)) = (frame.strip_suffix(INLINED), frames.last_mut()) {
                if caller.kind == FrameKind::User {
                    caller.lines.insert(0, Line::named(name));
                    continue;
                }
            }
            let (kind, function) = frame_kind(frame);
            frames.push(Location {
                kind,
                module: None,
                address: 0,
                lines: vec![Line::named(function)],
            });
        }
        let locations = frames
            .into_iter()
            .map(|l| profile.intern_location(l))
            .collect();
        profile.add(Labels::default(), locations, &[count]);
    }
    Ok(profile)
}

/// The start of an offending line, short enough for one error line.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("'{s}'")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("'{head}...'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded;
    use crate::profile::FrameNameOptions;

    #[test]
    fn round_trips_through_the_writer() {
        let text = "[9]app;app;main;a;sys_read_[k] 1\n[9]app;app;main;b 5\nx;jitted_[j] 2\n";
        let p = parse("t", text).unwrap();
        assert_eq!(p.total_width(), 8);
        let mut out = Vec::new();
        folded::write(&p, &FrameNameOptions::default(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
        let k = p.stacks[0].locations[4];
        assert_eq!(p.locations[k].kind, FrameKind::Kernel);
        assert_eq!(p.locations[k].lines[0].function, "sys_read");
    }

    #[test]
    fn inlined_frames_join_their_caller() {
        let text = "helper_[i];x 1\nmain;work;helper_[i];leaf_[i] 3\n";
        let p = parse("t", text).unwrap();
        let work = &p.locations[p.stacks[1].locations[1]];
        let names: Vec<&str> = work.lines.iter().map(|l| l.function.as_str()).collect();
        assert_eq!(names, ["leaf", "helper", "work"]);
        assert_eq!(p.stacks[1].locations.len(), 2);
        let mut out = Vec::new();
        folded::write(&p, &FrameNameOptions::default(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn merges_repeated_stacks_and_skips_blank_lines() {
        let p = parse("t", "a;b 1\n\r\n\na;b 2\r\n").unwrap();
        assert_eq!(p.stacks.len(), 1);
        assert_eq!(p.stacks[0].values, [3]);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("f.folded", "a;b 1\na;b\n").unwrap_err();
        assert_eq!(err.position, Some(Position::Line(2)));
        assert!(
            err.to_string()
                .starts_with("f.folded:2: no count at the end of the line"),
            "{err}"
        );
        let err = parse("f.folded", "a;b 1\n\na;b x1\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.folded:3: 'x1' is not a count"),
            "{err}"
        );
        assert!(parse("f", " 5\n").is_err());
        assert!(parse("f", "a -5\n").is_err());
    }
}
