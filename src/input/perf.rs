//! `perf script` text (from `perf record -g`) into a [`Profile`], folded the
//! way `inferno-collapse-perf --all` (and FlameGraph's
//! stackcollapse-perf.pl) does, so both give the same folded stacks:
//!
//! - an event is a header line `comm [pid/]tid [cpu] time: [period] event:`
//!   followed by indented frame lines `addr symbol+0xoff (module)`, leaf
//!   first, and a blank line;
//! - the comm (spaces replaced by `_`) is the root frame;
//! - each event weighs its period when the header has one, else 1;
//! - only events of the first event type seen are kept;
//! - symbol offsets (`+0x1f`) and argument lists are dropped, `;` becomes `:`;
//! - `[unknown]` symbols are named after their module, `[libc.so.6]`;
//! - frames in `[kernel.kallsyms]` (and other `[...]`, `.ko` and vmlinux
//!   modules) are kernel frames (`_[k]`), perf-map JIT frames get `_[j]`,
//!   and Java-style `a->b` inlining gives `b_[i]` frames; in `java`
//!   processes, class names lose their leading `L`.

use super::{InputError, Position};
use crate::profile::{units, FrameKind, Labels, Line, Location, Meta, Module, Profile, ValueType};

/// A parsed event header.
struct Header<'a> {
    comm: &'a str,
    period: Option<u64>,
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
    let (comm, rest) = split_comm(line)?;
    // rest: `[cpu] time: [period] event:[modifiers:] [frame]`
    let (_, after_time) = rest.split_once(':')?;
    let (period_event, after_event) = match after_time.split_once(':') {
        Some((pe, after)) => (pe, Some(after)),
        None => (after_time, None),
    };
    let mut words = period_event.split_whitespace().rev();
    let event = words.next();
    let period = words.next().and_then(|p| p.parse().ok());
    // After the event name come modifiers (`ppp:`) or, for one-frame
    // stacks, the frame itself.
    let inline_frame = after_event.and_then(|after| {
        let skip = after.find([':', ' ']).map_or(0, |i| i + 1);
        let frame = after[skip..].trim();
        (!frame.is_empty()).then_some(frame)
    });
    Some(Header {
        comm,
        period,
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

fn strip_offset(sym: &str) -> &str {
    match sym.rfind("+0x") {
        Some(i) if sym[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => &sym[..i],
        _ => sym,
    }
}

/// Drops a top-level argument list (`f(int)` -> `f`), keeping Go method
/// receivers (`pkg.(*T).M`) and `(anonymous namespace)`; `;` becomes `:`.
fn tidy(name: &str) -> String {
    let name = name.replace(';', ":");
    let mut depth = 0i32;
    let mut after_dot = false;
    for (i, c) in name.char_indices() {
        match c {
            '<' | '{' | '[' => depth += 1,
            '>' | '}' | ']' | ')' => depth -= 1,
            '(' => {
                if depth == 0 && !after_dot && !name[i..].starts_with("(anonymous namespace)") {
                    return name[..i].to_string();
                }
                depth += 1;
            }
            _ => {}
        }
        after_dot = c == '.';
    }
    name
}

fn is_vmlinux(module: &str) -> bool {
    module.rfind("vmlinux").is_some_and(|i| {
        module[i..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    })
}

fn frame_kind(module: &str) -> FrameKind {
    if module != "[unknown]"
        && (module.starts_with('[') || module.ends_with(".ko") || is_vmlinux(module))
    {
        FrameKind::Kernel
    } else if (module.starts_with("/tmp/perf-") && module.ends_with(".map"))
        || (module.contains("/jitted-") && module.ends_with(".so"))
    {
        FrameKind::Jit
    } else {
        FrameKind::User
    }
}

/// Builds the profile event by event.
struct Folder<'a> {
    profile: Profile,
    event_type: Option<&'a str>,
    comm: String,
    weight: u64,
    skip: bool,
    /// Locations of the current event, leaf first.
    frames: Vec<usize>,
    samples: u64,
}

impl Folder<'_> {
    fn frame(&mut self, addr: &str, sym: &str, module: &str) {
        let sym = strip_offset(sym);
        if sym.starts_with('(') {
            return;
        }
        let kind = frame_kind(module);
        let base = module.rsplit('/').next().unwrap_or(module);
        let names: Vec<String> = sym
            .split("->")
            .enumerate()
            .map(|(i, part)| {
                let mut name = if part == "[unknown]" && module != "[unknown]" {
                    format!("[{base}]")
                } else {
                    tidy(part)
                };
                if self.comm.starts_with("java") && name.starts_with('L') && name.contains('/') {
                    name.remove(0);
                }
                if i > 0 && !name.contains("_[i]") {
                    format!("{name}_[i]")
                } else {
                    name
                }
            })
            .collect();
        let address = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or(0);
        let module = match kind {
            FrameKind::User | FrameKind::Jit if module != "[unknown]" => {
                Some(self.profile.intern_module(Module {
                    path: module.to_string(),
                    build_id: None,
                    start: 0,
                    end: 0,
                    file_offset: 0,
                }))
            }
            _ => None,
        };
        // `outer->inner` names the caller first and frames are collected
        // leaf first. Only the outer part takes the module's kind; inlined
        // parts are plain frames named `..._[i]`.
        for (i, name) in names.into_iter().enumerate().rev() {
            let loc = self.profile.intern_location(Location {
                kind: if i == 0 { kind } else { FrameKind::User },
                module,
                address,
                lines: vec![Line::named(name)],
            });
            self.frames.push(loc);
        }
    }

    fn end_event(&mut self) {
        if !self.skip && !self.frames.is_empty() {
            let labels = Labels {
                process: Some(self.comm.clone()),
                ..Labels::default()
            };
            let stack = self.frames.iter().rev().copied().collect();
            self.profile.add(labels, stack, &[self.weight, 1]);
            self.samples += 1;
        }
        self.frames.clear();
        self.skip = false;
    }
}

pub fn parse(name: &str, text: &str) -> Result<Profile, InputError> {
    let mut f = Folder {
        // Each event weighs its period (named after the event below), and
        // counts as one sample.
        profile: Profile::new(
            vec![
                ValueType::new("period", units::COUNT),
                ValueType::new("samples", units::COUNT),
            ],
            Meta::default(),
        ),
        event_type: None,
        comm: String::new(),
        weight: 1,
        skip: false,
        frames: Vec::new(),
        samples: 0,
    };
    let mut in_event = false;
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
            if in_event {
                f.end_event();
            }
            in_event = false;
            continue;
        }
        if in_event {
            let (addr, sym, module) =
                parse_frame(line).ok_or_else(|| err("not a perf script frame line"))?;
            if !f.skip {
                f.frame(addr, sym, module);
            }
            continue;
        }
        let h = parse_header(line).ok_or_else(|| err("not a perf script event line"))?;
        in_event = true;
        if let Some(event) = h.event {
            match f.event_type {
                Some(first) if first != event => f.skip = true,
                Some(_) => {}
                None => f.event_type = Some(event),
            }
        }
        f.comm = h.comm.replace(' ', "_");
        f.weight = h.period.unwrap_or(1);
        if let Some(frame) = h.inline_frame {
            if let Some((addr, sym, module)) = parse_frame(frame) {
                if !f.skip {
                    f.frame(addr, sym, module);
                }
            }
            f.end_event();
            in_event = false;
        }
    }
    if in_event {
        f.end_event();
    }
    if f.samples == 0 {
        return Err(InputError::new(
            name,
            None,
            "perf script output without any stack (was it recorded with -g?)",
        ));
    }
    if let Some(event) = f.event_type {
        f.profile.sample_types[Profile::WIDTH].name = event.to_string();
    }
    Ok(f.profile)
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

    #[test]
    fn tidies_names() {
        assert_eq!(tidy("f(int)"), "f");
        assert_eq!(tidy("ns::f<int(char)>(x)"), "ns::f<int(char)>");
        assert_eq!(tidy("net/http.(*Client).Do"), "net/http.(*Client).Do");
        assert_eq!(
            tidy("(anonymous namespace)::g(int)"),
            "(anonymous namespace)::g"
        );
        assert_eq!(tidy("a;b"), "a:b");
    }
}
