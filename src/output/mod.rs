//! Output writers. Each is a function from `&Profile` to `impl Write`; this
//! module picks the format, and [`sink`] where and how the bytes go.

pub mod folded;
pub mod pprof;
pub mod sink;
pub mod speedscope;
pub mod svg;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::profile::Profile;

pub use sink::{Output, OutputError};

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Interactive flame graph (SVG).
    Svg,
    /// Folded stacks: `frame;frame;... count` per line.
    Folded,
    /// gzip-compressed pprof protobuf (go tool pprof, Pyroscope, Grafana).
    Pprof,
    /// speedscope JSON: one profile per thread, samples in time order
    /// (https://www.speedscope.app, `npx speedscope FILE`).
    Speedscope,
}

impl Format {
    /// What the format is, for messages ("folded stacks").
    pub fn description(self) -> &'static str {
        match self {
            Format::Svg => "an SVG flame graph",
            Format::Folded => "folded stacks",
            Format::Pprof => "a pprof profile",
            Format::Speedscope => "a speedscope profile",
        }
    }

    /// The format implied by a file name, if its extension names one.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".svg") {
            Some(Format::Svg)
        } else if name.ends_with(".folded") || name.ends_with(".txt") {
            Some(Format::Folded)
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Some(Format::Pprof)
        } else if name.ends_with(".speedscope.json") {
            Some(Format::Speedscope)
        } else {
            None
        }
    }
}

/// Where output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    pub fn parse(arg: &Path) -> Destination {
        if arg.as_os_str() == "-" {
            Destination::Stdout
        } else {
            Destination::File(arg.to_path_buf())
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("standard output"),
            Destination::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Options shared by the writers.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub svg: svg::SvgOptions,
    pub folded: crate::profile::FrameNameOptions,
}

/// Writes `profile` in `format` to any writer.
pub fn write_to(
    profile: &Profile,
    format: Format,
    opts: &WriteOptions,
    w: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Folded => folded::write(profile, &opts.folded, w),
        Format::Svg => svg::write(profile, &opts.svg, &opts.folded, w),
        Format::Pprof => pprof::write(profile, w),
        Format::Speedscope => speedscope::write(profile, w),
    }
}

/// How a time-ordered output (speedscope, a flame chart) orders the
/// samples of `profile`, for summaries: `None` for the other outputs.
pub fn order_note(profile: &Profile, format: Format, opts: &WriteOptions) -> Option<String> {
    let what = match format {
        Format::Speedscope => "speedscope",
        Format::Svg if opts.svg.flamechart => "flame chart",
        _ => return None,
    };
    Some(format!("{what}: {}", speedscope::order_note(profile)))
}

/// Writes `profile` to an output prepared (checked) before the work began;
/// a closed pipe surfaces as a `BrokenPipe` source of the error.
pub fn write(
    profile: &Profile,
    format: Format,
    opts: &WriteOptions,
    out: Output,
) -> Result<(), OutputError> {
    out.write(|w| write_to(profile, format, opts, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_from_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/flame.SVG")),
            Some(Format::Svg)
        );
        assert_eq!(
            Format::from_path(Path::new("x.folded")),
            Some(Format::Folded)
        );
        assert_eq!(Format::from_path(Path::new("x.txt")), Some(Format::Folded));
        assert_eq!(Format::from_path(Path::new("x.bin")), None);
        assert_eq!(
            Format::from_path(Path::new("app.speedscope.json")),
            Some(Format::Speedscope)
        );
        assert_eq!(Format::from_path(Path::new("x.json")), None);
        for name in ["p.pb.gz", "p.pprof", "p.pb"] {
            assert_eq!(Format::from_path(Path::new(name)), Some(Format::Pprof));
        }
        assert_eq!(Destination::parse(Path::new("-")), Destination::Stdout);
    }
}
