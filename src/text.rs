//! The one escaping rule for names a target controls (process and thread
//! names, container and pod names, JIT and perf-map names, kernel and
//! user symbols) on their way into text.
//!
//! The model ([`crate::profile`]) keeps names as the target gave them
//! (pprof, being length-delimited, carries them exactly); text outputs
//! escape them here, so a name can never add a line, a frame or a count,
//! nor reach a terminal as a control sequence:
//! - [`frame`]: a frame of a folded line (folded files, SVG, speedscope,
//!   `report`, summaries): `;` becomes `:`, control characters `\xNN`,
//!   invisible direction and line-separator characters `\u{NNNN}`;
//! - [`stack`]: frames joined into a folded stack, whose end never reads
//!   as a number (a count column to inferno and FlameGraph);
//! - [`printable`]: a name in a message: control characters escaped;
//! - [`message`]: a whole message for a terminal, its own line breaks and
//!   tabs kept, every other control character escaped.
//!
//! Bytes that are not UTF-8 (a comm holding 0xFF) become text through
//! [`from_bytes`]: `\xNN` for each byte that is not part of a character.

use std::borrow::Cow;
use std::fmt::Write;

/// Bytes a target controls (a comm from the kernel or `/proc`) as text:
/// valid UTF-8 as it is, each other byte as `\xNN`.
pub fn from_bytes(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_string();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Characters that change how text is laid out without being seen:
/// bidirectional overrides and isolates, marks, line and paragraph
/// separators (a line break to some readers).
fn invisible_layout(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

fn needs_escape(c: char, keep: &[char]) -> bool {
    (c.is_control() && !keep.contains(&c)) || invisible_layout(c)
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        // Every control character is below U+0100.
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:04x}}}", c as u32);
    }
}

fn escape<'a>(s: &'a str, semicolon: bool, keep: &[char]) -> Cow<'a, str> {
    let bad = |c: char| needs_escape(c, keep) || (semicolon && c == ';');
    if !s.contains(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if semicolon && c == ';' {
            out.push(':');
        } else if needs_escape(c, keep) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A name as one frame of a folded line: no `;` (it would split the
/// frame), no line break or other control character (a new line, a count,
/// a terminal sequence).
pub fn frame(name: &str) -> Cow<'_, str> {
    escape(name, true, &[])
}

/// A name inside a message or a report line: control characters escaped.
pub fn printable(name: &str) -> Cow<'_, str> {
    escape(name, false, &[])
}

/// A message for a terminal: its line breaks and tabs kept, every other
/// control character (ESC, CR, BEL) escaped. The last defence for text
/// built from names; the names themselves go through [`printable`].
pub fn message(text: &str) -> Cow<'_, str> {
    escape(text, false, &['\n', '\t'])
}

/// Frames (each already through [`frame`]) joined into a folded stack.
/// When the last frame ends in ` NUMBER`, that space is written `\x20`:
/// inferno and FlameGraph read a second number before the count as a
/// differential column, so a leaf named `w 2` would lose its number and
/// color the graph.
pub fn stack<S: AsRef<str>>(frames: &[S]) -> String {
    let mut out = String::new();
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(f.as_ref());
    }
    if let Some(space) = trailing_number_space(&out) {
        out.replace_range(space..space + 1, "\\x20");
    }
    out
}

/// Where the space before a trailing number (`12`, `1.5`) of the last
/// frame is, if there is one.
fn trailing_number_space(stack: &str) -> Option<usize> {
    // Readers trim the stack before looking for a second number.
    let stack = stack.trim_end();
    let leaf_start = stack.rfind(';').map_or(0, |i| i + 1);
    let space = stack.rfind(' ')?;
    if space < leaf_start {
        return None;
    }
    let number = &stack[space + 1..];
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (!int.is_empty() && digits(int) && digits(frac)).then_some(space)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a folded-line reader sees one line: stack and count split at
    /// the last space.
    fn parse_line(line: &str) -> (&str, u64) {
        let (stack, count) = line.rsplit_once(' ').expect("a count");
        (stack, count.parse().expect("a number"))
    }

    #[test]
    fn frames_lose_separators_and_controls() {
        assert_eq!(frame("main"), "main");
        assert!(matches!(frame("main"), Cow::Borrowed(_)));
        assert_eq!(frame("w;1 2"), "w:1 2");
        assert_eq!(frame("x 999999999\n"), "x 999999999\\x0a");
        assert_eq!(frame("a\r\tb\x7f"), "a\\x0d\\x09b\\x7f");
        assert_eq!(frame("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(frame("c1\u{9b}2J"), "c1\\x9b2J");
        assert_eq!(frame("abc\u{202e}txt"), "abc\\u{202e}txt");
        assert_eq!(frame("line\u{2028}sep"), "line\\u{2028}sep");
        // Non-ASCII text is kept.
        assert_eq!(frame("café_日本"), "café_日本");
        // Escaping is idempotent: an escaped name stays as it is.
        let once = frame("x\n;y").into_owned();
        assert_eq!(frame(&once), once);
    }

    #[test]
    fn printable_keeps_semicolons_and_message_keeps_lines() {
        assert_eq!(printable("a;b\x1b]0;t\x07"), "a;b\\x1b]0;t\\x07");
        assert_eq!(printable("a\nb"), "a\\x0ab");
        assert_eq!(
            message("one\n  two\tx\x1b[2J\r"),
            "one\n  two\tx\\x1b[2J\\x0d"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_escaped() {
        assert_eq!(from_bytes(b"app"), "app");
        assert_eq!(from_bytes(b"\xffname"), "\\xffname");
        assert_eq!(from_bytes("é\u{1b}".as_bytes()), "é\u{1b}");
        // A character cut by the kernel's 16-byte comm.
        assert_eq!(from_bytes(b"ab\xe2\x82"), "ab\\xe2\\x82");
    }

    #[test]
    fn a_stack_never_ends_in_a_number() {
        assert_eq!(stack(&["a", "b"]), "a;b");
        assert_eq!(stack(&["a", "w:1 2"]), "a;w:1\\x202");
        assert_eq!(stack(&["x 9", "main"]), "x 9;main");
        assert_eq!(stack(&["t 1.5"]), "t\\x201.5");
        assert_eq!(stack(&["t 1a"]), "t 1a");
        assert_eq!(stack(&["a", " 8 "]), "a;\\x208 ");
        assert_eq!(stack::<&str>(&[]), "");
    }

    #[test]
    fn no_name_adds_a_line_a_frame_or_a_count() {
        let hostile = [
            "x 999999999\n",
            "w;1 2",
            "\x1b[2J\x1b]0;pwned\x07",
            "a\r\nb 5\n",
            "7",
            " 8 ",
            "\u{85}next",
        ];
        for name in hostile {
            for leaf in [true, false] {
                let frames: Vec<String> = if leaf {
                    vec!["[1]app".into(), frame(name).into_owned()]
                } else {
                    vec!["[1]app".into(), frame(name).into_owned(), "main".into()]
                };
                let line = format!("{} 3", stack(&frames));
                assert_eq!(line.lines().count(), 1, "{name:?}: {line:?}");
                assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
                let (s, count) = parse_line(&line);
                assert_eq!(count, 3, "{line:?}");
                assert_eq!(s.split(';').count(), frames.len(), "{line:?}");
                // inferno's reader: the count, then a second number if
                // the stack ends in one.
                let second = s.trim_end().rsplit_once(' ').map(|(_, n)| n);
                assert!(second.is_none_or(|n| n.parse::<f64>().is_err()), "{line:?}");
            }
        }
    }
}
