//! Plain, validated configuration types: what the core sees instead of clap.

use std::path::PathBuf;
use std::time::Duration;

use crate::output::svg::SvgOptions;
use crate::output::{Destination, Format};
use crate::profile::GroupBy;
use crate::target::{TargetSpec, ThreadSelection};
use crate::unwind::UnwindMode;

/// How long `record` records when not told (and not running a command).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Highest sampling frequency accepted (per CPU).
pub const MAX_FREQUENCY: u64 = 50_000;

/// Everything `record` needs.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    pub target: TargetSpec,
    /// How long to record; `None`: until the launched command exits.
    pub duration: Option<Duration>,
    pub frequency: u64,
    pub destination: Destination,
    pub format: Format,
    pub include_idle: bool,
    /// Add the thread-name frame.
    pub threads: bool,
    /// How stacks are grouped under their process frame.
    pub group_by: GroupBy,
    pub unwind: UnwindMode,
    /// Bytes of user stack copied per sample for DWARF unwinding.
    pub stack_size: u32,
    pub svg: SvgOptions,
    /// Print the report after recording.
    pub report: bool,
    pub quiet: bool,
    /// Measure and report the BPF program's own run time per sample.
    pub bpf_stats: bool,
    /// What is recorded.
    pub probe: ProbeKind,
    /// Settings of the memory-leak probes.
    pub memleak: MemleakOptions,
    /// Settings of the off-CPU and wall-clock probes.
    pub offcpu: OffcpuOptions,
    /// Only these threads of the targets (--tid, --thread).
    pub only_threads: Option<ThreadSelection>,
    /// Ask HotSpot JVMs for their perf maps at the end (`--no-jit-attach`
    /// turns it off).
    pub jit_attach: bool,
    /// Write `destination` (continuous mode without `-o` writes none).
    pub write_output: bool,
    /// Push the profile (`--push URL` and its options).
    pub push: Option<crate::push::PushConfig>,
    /// Continuous mode: push a window of this length at a time (`--every`).
    pub every: Option<Duration>,
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
    /// How stacks are grouped under their process frame.
    pub group_by: GroupBy,
    pub svg: SvgOptions,
}

pub use crate::profile::ProbeKind;

/// Default of `--min-age`: allocations younger than this at the end of the
/// recording are in flight rather than leaked (see README).
pub const DEFAULT_MIN_AGE: Duration = Duration::from_millis(500);

/// Settings of `--probe memleak` and `--probe kmemleak`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemleakOptions {
    /// Leave out allocations younger than this at the end (of processes
    /// still running then).
    pub min_age: Duration,
    /// Mean bytes between sampled bytes; 0 tracks every allocation.
    pub sample_bytes: u64,
}

impl Default for MemleakOptions {
    fn default() -> Self {
        MemleakOptions {
            min_age: DEFAULT_MIN_AGE,
            sample_bytes: 0,
        }
    }
}

/// Which reasons to leave the CPU `--probe offcpu` records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OffcpuStates {
    /// Sleeping (S) and waiting uninterruptibly (D), preempted, stopped.
    #[default]
    All,
    /// Interruptible sleep (S): timers, locks, network, pipes.
    Sleep,
    /// Uninterruptible sleep (D): mostly disk and other I/O.
    Disk,
}

/// Default of `--min-block`.
pub const DEFAULT_MIN_BLOCK: Duration = Duration::from_micros(1);

/// Settings of `--probe offcpu` and `--probe wall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffcpuOptions {
    /// Shorter times off the CPU are left out (and counted apart).
    pub min_block: Duration,
    pub states: OffcpuStates,
}

impl Default for OffcpuOptions {
    fn default() -> Self {
        OffcpuOptions {
            min_block: DEFAULT_MIN_BLOCK,
            states: OffcpuStates::All,
        }
    }
}

/// Parses a `--min-age`: a duration as for `parse_duration`, or `0`.
pub fn parse_min_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(t)
}

/// Parses a byte count: `524288`, `512k`, `4M`, `1G` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid byte count '{s}': expected e.g. 524288 or 512k"))?;
    let mult: u64 = match unit.to_ascii_lowercase().trim_end_matches(['b', 'i']) {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("invalid byte unit in '{s}': use k, M or G")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("byte count '{s}' must be greater than zero")),
        Some(v) => Ok(v),
        None => Err(format!("byte count '{s}' is too large")),
    }
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a bare number of seconds (also
/// `us` and `ns` for short times).
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
        "ns" => value / 1e9,
        "us" | "µs" => value / 1e6,
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit '{other}' in '{s}': use ns, us, ms, s, m or h"
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
    let bytes = parse_bytes(s)
        .map_err(|_| format!("invalid stack size '{s}': expected bytes or e.g. 16K"))?;
    let max = crate::unwind::MAX_STACK_COPY;
    if !(4096..=u64::from(max)).contains(&bytes) {
        return Err(format!(
            "stack size '{s}' is out of range: use 4K to {}K (the BPF ring buffer record limit)",
            max / 1024
        ));
    }
    Ok((bytes.div_ceil(4096) * 4096) as u32)
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
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("500ns"), Ok(Duration::from_nanos(500)));
        for bad in ["", "0s", "abc", "10x", "-1s", "ms", "999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stack_sizes() {
        assert_eq!(parse_stack_size("16K"), Ok(16384));
        assert_eq!(parse_stack_size("5000"), Ok(8192));
        assert_eq!(parse_stack_size("64k"), Ok(65536));
        for bad in ["x", "16Q", "0"] {
            let err = parse_stack_size(bad).unwrap_err();
            assert!(err.contains("invalid"), "{bad}: {err}");
        }
        for big in ["1K", "65K", "1M", "99999999999"] {
            let err = parse_stack_size(big).unwrap_err();
            assert!(err.contains("out of range"), "{big}: {err}");
        }
    }

    #[test]
    fn min_ages_and_byte_counts() {
        assert_eq!(parse_min_age("0"), Ok(Duration::ZERO));
        assert_eq!(parse_min_age("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_min_age("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_min_age("x").is_err());
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        for bad in ["", "0", "k", "5x", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
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
