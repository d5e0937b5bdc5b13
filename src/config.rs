//! Plain, validated configuration types: what the core sees instead of clap.

use std::path::PathBuf;
use std::time::Duration;

use crate::output::svg::SvgOptions;
use crate::output::{Destination, Format};
use crate::report::ReportOptions;
use crate::target::TargetSpec;
use crate::unwind::UnwindMode;

/// Highest sampling frequency accepted (per CPU).
pub const MAX_FREQUENCY: u64 = 50_000;

/// Everything `record` needs.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    pub target: TargetSpec,
    pub duration: Duration,
    pub frequency: u64,
    pub destination: Destination,
    pub format: Format,
    pub include_idle: bool,
    /// Add the thread-name frame.
    pub threads: bool,
    pub unwind: UnwindMode,
    /// Bytes of user stack copied per sample for DWARF unwinding.
    pub stack_size: u32,
    pub svg: SvgOptions,
    /// Print the report after recording.
    pub report: bool,
    pub quiet: bool,
    /// Measure and report the BPF program's own run time per sample.
    pub bpf_stats: bool,
}

/// Everything `report` needs.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// Profile file; `-` is standard input.
    pub input: PathBuf,
    pub options: ReportOptions,
    pub json: bool,
}

/// Everything `convert` needs.
#[derive(Clone, Debug)]
pub struct ConvertConfig {
    /// Profile file; `-` is standard input.
    pub input: PathBuf,
    pub destination: Destination,
    pub format: Format,
    /// Add the thread-name frame.
    pub threads: bool,
    pub svg: SvgOptions,
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}': expected e.g. 500ms, 30s, 2m"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit '{other}' in '{s}': use ms, s, m or h"
            ))
        }
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("duration '{s}' must be greater than zero"));
    }
    if secs > 30.0 * 24.0 * 3600.0 {
        return Err(format!("duration '{s}' is longer than 30 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a user-stack copy size: bytes, or with a K suffix; 4K to 64K,
/// rounded up to whole 4 KiB pages.
pub fn parse_stack_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.strip_suffix(['K', 'k']) {
        Some(n) => (n, 1024),
        None => (t, 1),
    };
    let bytes = num
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid stack size '{s}': expected bytes or e.g. 16K"))?;
    let max = crate::probe::cpu::MAX_STACK_COPY;
    if !(4096..=max).contains(&bytes) {
        return Err(format!(
            "stack size '{s}' is out of range: use 4K to {}K (the BPF ring buffer record limit)",
            max / 1024
        ));
    }
    Ok(bytes.div_ceil(4096) * 4096)
}

/// Parses a sampling frequency in Hz (1 to MAX_FREQUENCY).
pub fn parse_frequency(s: &str) -> Result<u64, String> {
    let hz: u64 = s
        .trim()
        .trim_end_matches("Hz")
        .trim_end_matches("hz")
        .parse()
        .map_err(|_| format!("invalid frequency '{s}': expected a number of Hz, e.g. 99"))?;
    if hz == 0 || hz > MAX_FREQUENCY {
        return Err(format!(
            "frequency {hz} Hz is out of range: use 1 to {MAX_FREQUENCY}"
        ));
    }
    Ok(hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "0s", "abc", "10x", "-1s", "ms", "999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stack_sizes() {
        assert_eq!(parse_stack_size("16K"), Ok(16384));
        assert_eq!(parse_stack_size("5000"), Ok(8192));
        assert_eq!(parse_stack_size("64k"), Ok(65536));
        for bad in ["1K", "65K", "x", "1M"] {
            assert!(parse_stack_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn frequencies() {
        assert_eq!(parse_frequency("99"), Ok(99));
        assert_eq!(parse_frequency("999Hz"), Ok(999));
        for bad in ["0", "-5", "x", "1000000"] {
            assert!(parse_frequency(bad).is_err(), "{bad}");
        }
    }
}
