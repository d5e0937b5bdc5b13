//! `perf script` text (from `perf record -g`) into a [`Profile`].
//!
//! inferno's `collapse-perf` (with kernel and JIT annotation, as
//! `inferno-collapse-perf --all` and FlameGraph's stackcollapse-perf.pl)
//! does the folding: the comm is the root frame, each event weighs its
//! period, only the first event type is kept, offsets and argument lists
//! are dropped, kernel frames get `_[k]`, JIT frames `_[j]`, inlined ones
//! `_[i]`. What it does not do is done here: a malformed line is an error
//! naming the line (inferno skips it with a warning), and the root frame
//! becomes the process label, as in flameprobe's own profiles.

use inferno::collapse::perf::{Folder, Options};
use inferno::collapse::Collapse;

use super::{InputError, Position};
use crate::profile::{Labels, Profile};

/// A parsed event header.
struct Header<'a> {
    event: Option<&'a str>,
    /// A frame on the header line itself (single-frame stacks).
    inline_frame: Option<&'a str>,
}

/// Whether the first event of `text` looks like `perf script` output: a
/// header line followed by a frame line.
pub fn looks_like(text: &str) -> bool {
    let mut lines = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty());
    match (lines.next(), lines.next()) {
        (Some(h), Some(f)) => {
            !h.starts_with([' ', '\t'])
                && parse_header(h).is_some()
                && f.starts_with([' ', '\t'])
                && parse_frame(f).is_some()
        }
        _ => false,
    }
}

/// The first word made of digits (a tid) or digits/digits (pid/tid) after
/// the comm: returns (comm, rest of the line after that word).
fn split_comm(line: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for word in line.split(' ') {
        let start = offset;
        offset += word.len() + 1;
        if start == 0 || word.is_empty() {
            continue;
        }
        let ids_ok = word
            .split_once('/')
            .map_or(is_digits(word), |(p, t)| is_digits(p) && is_digits(t));
        if ids_ok {
            let comm = line[..start].trim();
            let rest = line.get(offset..).unwrap_or("");
            return Some((comm, rest));
        }
    }
    None
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_header(line: &str) -> Option<Header<'_>> {
    let (_comm, rest) = split_comm(line)?;
    // rest: `[cpu] time: [period] event:[modifiers:] [frame]`
    let (_, after_time) = rest.split_once(':')?;
    let (period_event, after_event) = match after_time.split_once(':') {
        Some((pe, after)) => (pe, Some(after)),
        None => (after_time, None),
    };
    let event = period_event.split_whitespace().next_back();
    // After the event name come modifiers (`ppp:`) or, for one-frame
    // stacks, the frame itself.
    let inline_frame = after_event.and_then(|after| {
        let skip = after.find([':', ' ']).map_or(0, |i| i + 1);
        let frame = after[skip..].trim();
        (!frame.is_empty()).then_some(frame)
    });
    Some(Header {
        event,
        inline_frame,
    })
}

/// Splits a frame line into (address, symbol, module).
fn parse_frame(line: &str) -> Option<(&str, &str, &str)> {
    let line = line.trim();
    let (addr, rest) = line.split_once(' ')?;
    let (sym, module) = rest.rsplit_once(' ')?;
    let module = module.strip_prefix('(')?.strip_suffix(')')?;
    Some((addr.trim_end(), sym.trim(), module))
}

/// Checks every line (so that errors name the line), then folds with
/// inferno and reads the folded stacks.
pub fn parse(name: &str, text: &str) -> Result<Profile, InputError> {
    let mut in_event = false;
    let mut event_type = None;
    let mut stacks = 0u64;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let err = |msg: &str| {
            InputError::new(
                name,
                Some(Position::Line(i + 1)),
                format!("{msg}: '{}'", line.trim()),
            )
        };
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            in_event = false;
            continue;
        }
        if in_event {
            parse_frame(line).ok_or_else(|| err("not a perf script frame line"))?;
            stacks += 1;
            continue;
        }
        let h = parse_header(line).ok_or_else(|| err("not a perf script event line"))?;
        event_type = event_type.or(h.event);
        if h.inline_frame.is_some() {
            stacks += 1;
        } else {
            in_event = true;
        }
    }
    if stacks == 0 {
        return Err(InputError::new(
            name,
            None,
            "perf script output without any stack (was it recorded with -g?)",
        ));
    }

    let mut opts = Options::default();
    opts.annotate_kernel = true;
    opts.annotate_jit = true;
    opts.nthreads = 1;
    let mut folded = Vec::new();
    Folder::from(opts)
        .collapse(text.as_bytes(), &mut folded)
        .map_err(|e| InputError::new(name, None, format!("cannot fold: {e}")))?;
    let folded = String::from_utf8_lossy(&folded);
    let mut profile = super::folded::parse(name, &folded)?;
    // Each count is the events' period: name the value after the event.
    if let Some(event) = event_type {
        profile.sample_types[Profile::WIDTH].name = event.to_string();
    }
    Ok(root_frame_as_process(profile))
}

/// The profile with each stack's root frame (the comm) as its process
/// label instead.
fn root_frame_as_process(p: Profile) -> Profile {
    let mut out = Profile::new(p.sample_types.clone(), p.meta.clone());
    for stack in &p.stacks {
        let Some((&root, rest)) = stack.locations.split_first() else {
            continue;
        };
        let labels = Labels {
            process: Some(p.locations[root].lines[0].function.clone()),
            ..Labels::default()
        };
        let locations = rest
            .iter()
            .map(|&l| out.intern_location(p.locations[l].clone()))
            .collect();
        out.add(labels, locations, &stack.values);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded;
    use crate::profile::FrameNameOptions;

    fn fold(text: &str) -> String {
        let p = parse("t", text).unwrap();
        let mut out = Vec::new();
        folded::write(&p, &FrameNameOptions::default(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn folds_events_like_stackcollapse() {
        let text = "\
# header comment
my app 12/34 [001] 100.5: 1000 cpu-clock:ppp:
\tffffffff81000010 schedule+0x10 ([kernel.kallsyms])
\t            1234 work(int, char*)+0x4 (/usr/bin/app)
\t            5678 [unknown] (/usr/lib/libc.so.6)
\t               0 [unknown] ([unknown])

my app 12/34 [001] 100.6: 1000 cpu-clock:ppp:
\t            1234 work+0x9 (/usr/bin/app)

other 99 100.7: 5 page-faults:
\t            1234 work+0x9 (/usr/bin/app)

java 7 100.8: 1000 cpu-clock:
\t  4000 Lfoo;.bar->Lfoo;.baz+0x1 (/tmp/perf-7.map)
";
        assert_eq!(
            fold(text),
            "java;Lfoo:.bar_[j];Lfoo:.baz_[i] 1000\n\
             my_app;[unknown];[libc.so.6];work;schedule_[k] 1000\n\
             my_app;work 1000\n"
        );
    }

    #[test]
    fn single_frame_on_the_header_line() {
        let text = "false 64414 20110.539270:      34467 cycles:u:  ffffffff9aa3c8de [unknown] ([unknown])\n";
        assert_eq!(fold(text), "false;[unknown] 34467\n");
    }

    #[test]
    fn detection_and_errors() {
        assert!(looks_like("a 1 2.0: cpu-clock:\n\t 12 f+0x1 (/x)\n"));
        assert!(!looks_like("a;b 1\n"));
        assert!(!looks_like("a 1 2.0: cpu-clock:\nb;c 4\n"));
        let err = parse(
            "p.txt",
            "a 1 2.0: cpu-clock:\n\t 12 f+0x1 (/x)\n\tgarbage\n",
        )
        .unwrap_err();
        assert_eq!(err.position, Some(Position::Line(3)));
        assert!(
            err.to_string()
                .starts_with("p.txt:3: not a perf script frame line"),
            "{err}"
        );
        let err = parse("p.txt", "a 1 2.0: cpu-clock:\n\n").unwrap_err();
        assert!(err.to_string().contains("without any stack"), "{err}");
    }
}
