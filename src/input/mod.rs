//! Reading profiles back: folded stacks, pprof (`.pb` or `.pb.gz`) and
//! `perf script` text, each parsed into a [`Profile`]. The format is
//! detected from the content, never from the file name.
//!
//! Errors name the input and the line (text formats) or byte offset
//! (binary formats) where parsing failed.

pub mod folded;
pub mod perf;
pub mod pprof;

use std::fmt;
use std::io::Read;
use std::path::Path;

use crate::profile::Profile;

/// Where in the input an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a text input.
    Line(usize),
    /// Byte offset into a binary input.
    Offset(u64),
    /// Byte offset into the decompressed content of a gzip input.
    DecompressedOffset(u64),
}

/// A parse or read error: input name, position, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub name: String,
    pub position: Option<Position>,
    pub message: String,
}

impl InputError {
    pub fn new(name: &str, position: Option<Position>, message: impl Into<String>) -> Self {
        InputError {
            name: name.to_string(),
            position,
            message: message.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position::Line(n)) => write!(f, "{}:{}: {}", self.name, n, self.message),
            Some(Position::Offset(o)) => {
                write!(f, "{}: at byte offset {}: {}", self.name, o, self.message)
            }
            Some(Position::DecompressedOffset(o)) => write!(
                f,
                "{}: at byte offset {} of the decompressed data: {}",
                self.name, o, self.message
            ),
            None => write!(f, "{}: {}", self.name, self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// Input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    Folded,
    PerfScript,
    Pprof,
}

/// Reads and parses a profile from a file, or from stdin for `-`.
pub fn read(path: &Path) -> Result<Profile, InputError> {
    let (name, bytes) = if path.as_os_str() == "-" {
        let name = "standard input";
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| InputError::new(name, None, format!("cannot read: {e}")))?;
        (name.to_string(), buf)
    } else {
        let name = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| InputError::new(&name, None, format!("cannot read: {e}")))?;
        (name, bytes)
    };
    let profile = parse(&name, &bytes)?;
    if profile.saturated {
        log::warn!(
            "{name}: some values add up to more than 2^64 - 1; those totals are capped at \
             18446744073709551615"
        );
    }
    Ok(profile)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Parses a profile from bytes; `name` is used in error messages.
pub fn parse(name: &str, bytes: &[u8]) -> Result<Profile, InputError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let data = gunzip(name, bytes)?;
        return parse_plain(name, &data, true);
    }
    parse_plain(name, bytes, false)
}

fn parse_plain(name: &str, bytes: &[u8], decompressed: bool) -> Result<Profile, InputError> {
    match detect(bytes) {
        None => Err(InputError::new(name, None, "the input is empty")),
        Some(InputFormat::Pprof) => pprof::parse(name, bytes, decompressed),
        Some(InputFormat::PerfScript) => perf::parse(name, &as_text(name, bytes)),
        Some(InputFormat::Folded) => folded::parse(name, &as_text(name, bytes)),
    }
}

/// Text input; bytes that are not UTF-8 (a frame name in another
/// encoding) are read as U+FFFD, and the first such line is named.
fn as_text<'a>(name: &str, bytes: &'a [u8]) -> std::borrow::Cow<'a, str> {
    if let Err(e) = std::str::from_utf8(bytes) {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        log::warn!("{name}:{line}: not valid UTF-8: the bytes that are not are shown as U+FFFD");
    }
    String::from_utf8_lossy(bytes)
}

/// Text has no control characters but tabs and line ends; protobuf always
/// has some (field tags, lengths).
fn is_text(bytes: &[u8]) -> bool {
    !bytes
        .iter()
        .any(|&b| (b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t')) || b == 0x7f)
}

/// The format of (decompressed) content, `None` when there is nothing.
pub fn detect(bytes: &[u8]) -> Option<InputFormat> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if !is_text(bytes) {
        return Some(InputFormat::Pprof);
    }
    let text = String::from_utf8_lossy(bytes);
    if perf::looks_like(&text) {
        Some(InputFormat::PerfScript)
    } else {
        Some(InputFormat::Folded)
    }
}

fn gunzip(name: &str, bytes: &[u8]) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(bytes);
    match decoder.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(InputError::new(
            name,
            Some(Position::Offset(bytes.len() as u64)),
            "truncated gzip data (the file ends before the compressed stream does)",
        )),
        Err(e) => Err(InputError::new(
            name,
            None,
            format!(
                "corrupt gzip data after {} decompressed bytes: {e}",
                out.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_content() {
        assert_eq!(detect(b""), None);
        assert_eq!(detect(b" \n"), None);
        assert_eq!(detect(b"a;b 1\n"), Some(InputFormat::Folded));
        assert_eq!(
            detect(b"app 12 1.5: 1 cpu-clock:\n\t  1234 main+0x1 (/bin/app)\n"),
            Some(InputFormat::PerfScript)
        );
        assert_eq!(detect(b"\x0a\x02\x08\x01"), Some(InputFormat::Pprof));
        assert_eq!(detect(&[0xff, 0xfe, 0x00]), Some(InputFormat::Pprof));
        // Text in another encoding is still text.
        assert_eq!(detect(b"a;b\xff\xfe 3\n"), Some(InputFormat::Folded));
    }

    #[test]
    fn non_utf8_frames_are_read_lossily() {
        let p = parse("l.folded", b"main;caf\xe9 3\nmain;ok 1\n").unwrap();
        assert_eq!(p.total_width(), 4);
        let names: Vec<&str> = p
            .locations
            .iter()
            .map(|l| l.lines[0].function.as_str())
            .collect();
        assert!(names.contains(&"caf\u{fffd}"), "{names:?}");
    }

    #[test]
    fn truncated_gzip_names_the_offset() {
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
            e.write_all(&[b'x'; 1000]).unwrap();
            e.finish().unwrap();
        }
        let cut = &gz[..gz.len() / 2];
        let err = parse("p.pb.gz", cut).unwrap_err();
        assert_eq!(err.position, Some(Position::Offset(cut.len() as u64)));
        let text = err.to_string();
        assert!(text.starts_with("p.pb.gz: at byte offset"), "{text}");
        assert!(text.contains("truncated gzip"), "{text}");
    }

    #[test]
    fn empty_input_is_an_error() {
        let err = parse("e.folded", b"").unwrap_err();
        assert_eq!(err.to_string(), "e.folded: the input is empty");
    }
}
