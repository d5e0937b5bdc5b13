//! Command-line types (clap derive) and their conversion into plain
//! configuration. Only `main` uses this module.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    self, ConvertConfig, MemleakOptions, OffcpuOptions, OffcpuStates, ProbeKind, RecordConfig,
};
use crate::container::Selection;
use crate::output::svg::SvgOptions;
use crate::output::{Destination, Format};
use crate::profile::GroupBy;
use crate::push::series::Split;
use crate::push::{Api, PushConfig, PushFilesConfig};
use crate::report::{ReportConfig, ReportOptions};
use crate::target::{TargetSpec, ThreadSelection};
use crate::unwind::UnwindMode;

/// flameprobe's exit codes and what they mean (for main, --help and the
/// man pages).
pub const EXIT_SUCCESS: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CODES: &[(u8, &str)] = &[
    (
        EXIT_SUCCESS,
        "success (also when the reader of standard output went away)",
    ),
    (
        EXIT_ERROR,
        "error: no such process or container, missing capability, no BTF, BPF load failure, \
         output not writable, nothing recorded, malformed input file, ... (one line on \
         standard error says what and how to fix it)",
    ),
    (EXIT_USAGE, "usage error (bad option or value)"),
];

/// eBPF flame-graph profiler for Linux: processes, containers, the whole
/// machine, or a command it launches.
#[derive(Debug, Parser)]
#[command(name = "flameprobe", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 success, 1 error, 2 usage error.")]
pub struct Cli {
    /// More messages on stderr (-v: details and libbpf's log, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Record a flame graph of where targets spend CPU time, wait off the CPU or leak memory.
    Record(Box<RecordArgs>),
    /// Print the top functions and the call tree of a profile file.
    Report(ReportArgs),
    /// Convert a profile between folded, pprof, SVG and speedscope (also
    /// reads perf script).
    Convert(ConvertArgs),
    /// Compare two profiles: a differential flame graph (red: grew, blue:
    /// shrank) or `stack before after` lines.
    Diff(DiffArgs),
    /// Push profile files (pprof or folded) to Grafana Pyroscope.
    Push(PushFilesArgs),
    /// Check what works on this machine (kernel, BTF, perf events,
    /// privileges, runtimes, JVMs) and how to fix what does not.
    Doctor(DoctorArgs),
    /// Print shell completions to stdout.
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Write completions and man pages into DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// Directory that receives completions/ and man/.
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo flameprobe record -p 1234 -d 30s -o app.svg
  sudo flameprobe record -d 10s -o system.svg          (whole machine)
  sudo flameprobe record -o - -- ./my-benchmark --quick | grep main
  sudo flameprobe record -p 1234 -d 30s -o app.pb.gz --report   (pprof + table)
  sudo flameprobe record --container web -d 30s -o web.svg
  sudo flameprobe record --pod prod/web-7d4b9c6f5-x2x9k -d 30s -o pod.svg
  sudo flameprobe record --probe memleak -p 1234 -d 30s -o leak.svg
  sudo flameprobe record --probe kmemleak -d 30s -o kernel-leak.svg
  sudo flameprobe record --probe offcpu -p 1234 -d 30s -o waits.svg
  sudo flameprobe record --probe wall --thread '^worker' -p 1234 -o wall.pb.gz
  sudo flameprobe record -p 1234 -d 30s --push http://pyroscope:4040
  sudo flameprobe record -a --push http://pyroscope:4040 --every 15s   (continuous)
Exit codes: 0 success, 1 error, 2 usage error.")]
pub struct RecordArgs {
    /// Profile these processes (all their threads); repeat or comma-separate.
    #[arg(
        short,
        long = "pid",
        value_name = "PID[,PID...]",
        value_delimiter = ','
    )]
    pub pids: Vec<u32>,
    /// Record only these threads (of the --pid targets, or of their own
    /// processes when no other target is given); repeat or comma-separate.
    #[arg(long = "tid", value_name = "TID[,TID...]", value_delimiter = ',')]
    pub tids: Vec<u32>,
    /// Record only the threads whose name matches this regular expression
    /// (also threads started or renamed during the recording).
    #[arg(long = "thread", value_name = "REGEX")]
    pub thread: Option<String>,
    /// Profile every process in these containers, also those started in
    /// them later: a name, a full id or a unique id prefix (4+ hex digits);
    /// repeat or comma-separate.
    #[arg(
        long = "container",
        value_name = "NAME|ID[,...]",
        value_delimiter = ',',
        value_hint = clap::ValueHint::Other,
        conflicts_with_all = ["pids", "all"]
    )]
    pub containers: Vec<String>,
    /// Profile every container of these pods, also processes started in
    /// them later: a pod name, or namespace/name for a Kubernetes pod (or a
    /// unique pod id prefix); repeat or comma-separate.
    #[arg(
        long = "pod",
        value_name = "[NAMESPACE/]NAME[,...]",
        value_delimiter = ',',
        value_hint = clap::ValueHint::Other,
        conflicts_with_all = ["pids", "all"]
    )]
    pub pods: Vec<String>,
    /// Profile the whole machine (the default when no target is given).
    #[arg(short, long, conflicts_with = "pids")]
    pub all: bool,
    /// How long to record: e.g. 500ms, 30s, 2m [default: 10s; with a
    /// command: until it exits].
    #[arg(short, long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Samples per second on each CPU.
    #[arg(short = 'F', long, default_value_t = 99, value_parser = parse_frequency_arg)]
    pub frequency: u64,
    /// Output file; `-` writes folded stacks to stdout [default: flame.svg;
    /// with --every: none, the pushes are the output].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Output format (default: from the file extension: .svg, .folded/.txt,
    /// .pb.gz/.pprof/.pb, .speedscope.json).
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Also print the top-functions report (to stderr when the profile goes
    /// to stdout).
    #[arg(long)]
    pub report: bool,
    /// Include the idle task (CPU time spent idle) in whole-system profiles.
    #[arg(long)]
    pub include_idle: bool,
    /// Do not add a frame with the thread name under each process.
    #[arg(long)]
    pub no_threads: bool,
    /// Group stacks under their process by pid (`[1234]nginx`) or by name
    /// (`nginx`) [default: comm for the whole machine, else pid].
    #[arg(long, value_enum, value_name = "BY")]
    pub group_by: Option<GroupBy>,
    /// How user stacks are unwound: auto (DWARF where binaries have CFI,
    /// frame pointers elsewhere), dwarf, or fp (frame pointers only:
    /// smallest records, loses callers in code built without them).
    #[arg(long, value_enum, default_value_t = UnwindMode::default_mode())]
    pub unwind: UnwindMode,
    /// Bytes of user stack copied per sample for DWARF unwinding, 4K to 64K
    /// (e.g. 16K, 32768). Deeper stacks are marked [truncated].
    #[arg(long, default_value = "16K", value_parser = parse_stack_size_arg)]
    pub stack_size: u32,
    #[command(flatten)]
    pub svg: SvgArgs,
    /// What to record: CPU time, user-space memory leaks (memleak), kernel
    /// memory leaks (kmemleak), time off the CPU (offcpu: blocked,
    /// sleeping, waiting), or wall-clock time (wall: on-CPU + off-CPU).
    #[arg(long, value_enum, default_value_t = ProbeKind::Cpu)]
    pub probe: ProbeKind,
    /// offcpu/wall: leave out shorter times off the CPU (counted apart in
    /// the summary) [default: 1us].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub min_block: Option<Duration>,
    /// offcpu/wall: which reasons to be off the CPU to record: sleep
    /// (interruptible, S), disk (uninterruptible, D) or all [default: all].
    #[arg(long = "state", value_enum, value_name = "STATE")]
    pub states: Option<OffcpuStates>,
    /// memleak/kmemleak: leave out allocations younger than this at the end
    /// of the recording (in flight, not leaked); 0 keeps all [default:
    /// 500ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_min_age_arg)]
    pub min_age: Option<Duration>,
    /// memleak: sample each allocated byte with probability 1/N (estimates
    /// scaled back up) instead of tracking every allocation; e.g. 512k.
    #[arg(long, value_name = "N", value_parser = parse_bytes_arg)]
    pub sample_bytes: Option<u64>,
    /// No progress line and no summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Report the BPF program's average run time per sample (its overhead
    /// on the profiled CPUs) in the summary.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Do not ask Java VMs (HotSpot, JDK 17+) for their perf map at the end
    /// of the recording (it costs each JVM a safepoint); a map they already
    /// wrote is still read.
    #[arg(long)]
    pub no_jit_attach: bool,
    /// Also push the profile to Grafana Pyroscope at this URL (http or
    /// https; credentials as https://USER:TOKEN@host).
    #[arg(long = "push", value_name = "URL")]
    pub push_url: Option<String>,
    /// With --push: record window after window of this length, pushing each
    /// as it ends, until -d (or forever without it) or Ctrl-C; e.g. 15s.
    #[arg(long, value_name = "DURATION", value_parser = parse_every_arg)]
    pub every: Option<Duration>,
    /// With --every: windows kept while pushes fail (the oldest is dropped
    /// beyond this) [default: 16].
    #[arg(long, value_name = "N")]
    pub push_spool: Option<usize>,
    #[command(flatten)]
    pub push: PushArgs,
    /// Command to launch and profile (with its children) until it exits.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// How profiles are pushed (`record --push` and `push`).
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The receiver's API: push (push.v1.PusherService/Push, pprof) or
    /// ingest (the legacy /ingest, folded stacks) [default: push].
    #[arg(long, value_enum, value_name = "API")]
    pub push_api: Option<Api>,
    /// service_name of the pushed profiles [default: the container's name
    /// for --container, else the target program's name, else each series'
    /// own or the host name].
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Another label of the pushed series, NAME=VALUE (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// Push one series per container or per process (labels container,
    /// pod, namespace / pid, process_name), instead of one with those as
    /// sample labels.
    #[arg(long, value_enum, value_name = "BY")]
    pub push_split: Option<Split>,
    /// An HTTP header of every push, 'Name: value' (repeatable), e.g.
    /// 'X-Scope-OrgID: team-a' or 'Authorization: Bearer TOKEN'.
    #[arg(long = "push-header", value_name = "'NAME: VALUE'")]
    pub headers: Vec<String>,
    /// Longest time one push request may take [default: 30s; connecting:
    /// 5s at most].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub push_timeout: Option<Duration>,
}

impl PushArgs {
    /// The first push option given, for "needs --push" errors.
    fn given(&self) -> Option<&'static str> {
        [
            (self.push_api.is_some(), "--push-api"),
            (self.service.is_some(), "--service"),
            (!self.labels.is_empty(), "--label"),
            (self.push_split.is_some(), "--push-split"),
            (!self.headers.is_empty(), "--push-header"),
            (self.push_timeout.is_some(), "--push-timeout"),
        ]
        .into_iter()
        .find(|(given, _)| *given)
        .map(|(_, name)| name)
    }

    fn into_config(self, url: &str, spool: Option<usize>) -> Result<PushConfig, String> {
        PushConfig::new(
            url,
            self.push_api.unwrap_or_default(),
            &self.headers,
            self.service,
            &self.labels,
            self.push_split,
            self.push_timeout,
            spool,
        )
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Reads each FILE (pprof, compressed or not, or folded stacks; `-` is standard
input) and pushes it. A file without a start time covers the 10 s (or its
duration) up to its modification time.
Examples:
  flameprobe push app.pb.gz --url http://pyroscope:4040
  flameprobe push *.folded --url https://USER:TOKEN@profiles.example.net --service shop
  flameprobe push host.pb.gz --url http://pyroscope:4040 --push-split container
Exit codes: 0 success, 1 error (a file could not be read or pushed), 2 usage error.")]
pub struct PushFilesArgs {
    /// Profiles to push.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// The receiver's URL (http or https; credentials as
    /// https://USER:TOKEN@host).
    #[arg(long, value_name = "URL")]
    pub url: String,
    #[command(flatten)]
    pub push: PushArgs,
    /// Only errors on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

impl PushFilesArgs {
    pub fn into_config(self) -> Result<PushFilesConfig, String> {
        if self.files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
            return Err("standard input (-) can be pushed once".into());
        }
        Ok(PushFilesConfig {
            files: self.files,
            push: self.push.into_config(&self.url, None)?,
            quiet: self.quiet,
        })
    }
}

/// Shortest --every.
const MIN_EVERY: Duration = Duration::from_secs(1);

fn parse_every_arg(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if d < MIN_EVERY {
        return Err(format!(
            "--every {s} is too short: windows of 1s or more (15s is usual)"
        ));
    }
    Ok(d)
}

/// SVG options shared by `record` and `convert`.
#[derive(Debug, Args)]
pub struct SvgArgs {
    /// Title of the SVG.
    #[arg(long)]
    pub title: Option<String>,
    /// Draw the SVG as an icicle: the flame graph upside down, root at the
    /// top (`--reverse` is its old name).
    #[arg(long, alias = "reverse")]
    pub icicle: bool,
    /// Draw the SVG inverted: stacks merged by their leaf function, every
    /// function on the top row with its callers below it (inferno's
    /// --reverse --inverted).
    #[arg(long, conflicts_with = "flamechart")]
    pub inverted: bool,
    /// Draw the SVG as a flame chart: each thread's samples in time order,
    /// not merged (cpu and wall recordings have sample times; other
    /// profiles are merged by stack, heaviest first).
    #[arg(long)]
    pub flamechart: bool,
    /// SVG palette: hot, mem, io, red, green, blue, aqua, yellow, purple,
    /// orange, wakeup, java, js, perl, python, rust.
    #[arg(long, value_name = "PALETTE", value_parser = parse_colors_arg)]
    pub colors: Option<String>,
    /// Leave out SVG frames narrower than this many pixels (default 0.1).
    #[arg(long, value_name = "PIXELS", value_parser = parse_min_width_arg)]
    pub min_width: Option<f64>,
}

impl SvgArgs {
    fn into_options(self) -> SvgOptions {
        SvgOptions {
            title: self.title,
            icicle: self.icicle,
            inverted: self.inverted,
            flamechart: self.flamechart,
            colors: self.colors,
            min_width: self.min_width,
        }
    }
}

fn parse_colors_arg(s: &str) -> Result<String, String> {
    s.parse::<inferno::flamegraph::color::Palette>()
        .map(|_| s.to_string())
        .map_err(|e| format!("unknown palette '{s}': {e}"))
}

fn parse_min_width_arg(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if w.is_finite() && w >= 0.0 => Ok(w),
        _ => Err(format!("invalid width '{s}': expected pixels, e.g. 0.5")),
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
Reads folded stacks, pprof (.pb or .pb.gz) or `perf script` text; the format
is detected from the content. Values are in the profile's unit: CPU time
(samples x sampling period), bytes, or plain counts for folded files.
Examples:
  flameprobe report app.pb.gz
  flameprobe report --tree --min-percent 5 app.folded
  flameprobe report --focus 'crc_' --json app.pb.gz | jq '.top[0]'
  flameprobe report --diff before.pb.gz after.pb.gz   (top functions by change)
  perf script | flameprobe report -
Exit codes: 0 success, 1 error, 2 usage error.")]
pub struct ReportArgs {
    /// Profile to read; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Also print the merged call tree: total, self and count per frame.
    #[arg(long)]
    pub tree: bool,
    /// Keep only stacks with a frame matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub focus: Option<String>,
    /// Leave out tree nodes under this share of the total.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = parse_percent_arg)]
    pub min_percent: f64,
    /// Rows in the top-functions table (0 = all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Also print each thread's totals (for wall-clock profiles: total,
    /// on-CPU and off-CPU time).
    #[arg(long)]
    pub by_thread: bool,
    /// Give the time of inlined functions (`name_[i]` frames) to the
    /// function they were inlined into: the top table then agrees with
    /// profilers that do not show inlining (perf without --inline).
    #[arg(long)]
    pub no_inline: bool,
    /// Print the report (top table and tree) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compare with this base profile: the functions whose value changed
    /// most, absolute and in percent of the base's total (as go tool
    /// pprof -top -diff_base).
    #[arg(long, value_name = "BASE", conflicts_with_all = ["tree", "by_thread"])]
    pub diff: Option<PathBuf>,
    /// With --diff: the value compared, a sample type both profiles have:
    /// its name (samples, cpu, ...) or name/unit [default: the value the
    /// report shows].
    #[arg(long, value_name = "TYPE", requires = "diff")]
    pub sample_type: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Reads any format `report` reads. Frame widths come from AFTER (--negate:
from BEFORE); a frame is red where the stacks ending in it grew, blue where
they shrank, and the deeper the color the larger the change. Processes are
matched by name (--group-by comm), so two runs of a program line up.
Examples:
  flameprobe diff before.pb.gz after.pb.gz -o diff.svg
  flameprobe diff --normalize good-host.pb.gz bad-host.pb.gz -o diff.svg
  flameprobe diff before.folded after.folded -o diff.folded   (stack before after)
  flameprobe diff --sample-type cpu old.pb.gz new.pb.gz -o - | head
Exit codes: 0 success, 1 error, 2 usage error.")]
pub struct DiffArgs {
    /// The profile before (the base).
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,
    /// The profile after.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,
    /// Output file: .svg (differential flame graph) or .folded/.txt
    /// (`stack before after` lines); `-` writes the lines to stdout.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Output format (default: from the file extension).
    #[arg(short, long, value_enum)]
    pub format: Option<crate::diff::DiffFormat>,
    /// The value compared, a sample type both profiles have: its name
    /// (samples, cpu, inuse_space, ...) or name/unit [default: the first,
    /// the flame graph's width].
    #[arg(long, value_name = "TYPE")]
    pub sample_type: Option<String>,
    /// Draw the widths of BEFORE instead of AFTER (red still means more in
    /// AFTER).
    #[arg(long)]
    pub negate: bool,
    /// Scale BEFORE to AFTER's total first, so that colors show shifts in
    /// share rather than a change of load.
    #[arg(long)]
    pub normalize: bool,
    /// Do not add a frame with the thread name under each process.
    #[arg(long)]
    pub no_threads: bool,
    /// Group stacks under their process by name (`nginx`) or by pid
    /// (`[1234]nginx`).
    #[arg(long, value_enum, value_name = "BY", default_value_t = GroupBy::Comm)]
    pub group_by: GroupBy,
    /// Title of the SVG.
    #[arg(long)]
    pub title: Option<String>,
    /// Leave out SVG frames narrower than this many pixels (default 0.1).
    #[arg(long, value_name = "PIXELS", value_parser = parse_min_width_arg)]
    pub min_width: Option<f64>,
}

impl DiffArgs {
    pub fn into_config(self) -> Result<crate::diff::DiffConfig, String> {
        use crate::diff::DiffFormat;
        let destination = Destination::parse(&self.output);
        let format = match (self.format, &destination) {
            (Some(f), _) => f,
            (None, Destination::Stdout) => DiffFormat::Folded,
            (None, Destination::File(p)) => DiffFormat::from_path(p).ok_or_else(|| {
                format!(
                    "cannot tell the output format from '{}': use a .svg, .folded or .txt \
                     name, or pass --format",
                    p.display()
                )
            })?,
        };
        if self.negate && format == DiffFormat::Folded {
            return Err(
                "--negate applies to the SVG: the lines always read `stack before after`".into(),
            );
        }
        Ok(crate::diff::DiffConfig {
            before: self.before,
            after: self.after,
            destination,
            format,
            sample_type: self.sample_type,
            negate: self.negate,
            normalize: self.normalize,
            names: crate::profile::FrameNameOptions {
                threads: !self.no_threads,
                group_by: self.group_by,
                ..Default::default()
            },
            title: self.title,
            min_width: self.min_width,
        })
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
One line per check: ok, missing (a probe cannot run), warn (it runs with
less) or info, what was found, and the fix for anything not ok; the last
line says which probes can run here. Nothing is left attached, and JVMs
are not signalled.
Examples:
  sudo flameprobe doctor
  flameprobe doctor --json | jq '.probes'
Exit codes: 0 record's default probe (cpu) can run here, 1 it cannot,
2 usage error.")]
pub struct DoctorArgs {
    /// Print the checks and the probes as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_percent_arg(s: &str) -> Result<f64, String> {
    match s.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("invalid percentage '{s}': expected 0 to 100")),
    }
}

impl ReportArgs {
    pub fn into_config(self) -> Result<ReportConfig, String> {
        let focus = match &self.focus {
            Some(re) => Some(
                regex::Regex::new(re)
                    .map_err(|e| format!("invalid --focus regular expression: {e}"))?,
            ),
            None => None,
        };
        Ok(ReportConfig {
            input: self.file,
            options: ReportOptions {
                tree: self.tree,
                focus,
                min_percent: self.min_percent,
                top: self.top,
                by_thread: self.by_thread,
                no_inline: self.no_inline,
            },
            json: self.json,
            diff_base: self.diff,
            sample_type: self.sample_type,
        })
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
The input format is detected from the content: folded stacks, pprof (.pb or
.pb.gz), or `perf script` text (folded like inferno-collapse-perf --all).
Examples:
  flameprobe convert app.pb.gz -o app.svg --title 'app, 30s'
  flameprobe convert app.folded -o app.pb.gz
  perf script | flameprobe convert - -o perf.svg
  flameprobe convert app.pb.gz -o - | grep crc_block
Exit codes: 0 success, 1 error, 2 usage error.")]
pub struct ConvertArgs {
    /// Profile to read; `-` reads standard input.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Output file; `-` writes folded stacks to stdout.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Output format (default: from the file extension).
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Do not add a frame with the thread name under each process.
    #[arg(long)]
    pub no_threads: bool,
    /// Group stacks under their process by pid (`[1234]nginx`) or by name
    /// (`nginx`).
    #[arg(long, value_enum, value_name = "BY", default_value_t = GroupBy::Pid)]
    pub group_by: GroupBy,
    #[command(flatten)]
    pub svg: SvgArgs,
}

impl ConvertArgs {
    pub fn into_config(self) -> Result<ConvertConfig, String> {
        let destination = Destination::parse(&self.output);
        let format = output_format(self.format, &destination)?;
        Ok(ConvertConfig {
            input: self.input,
            destination,
            format,
            threads: !self.no_threads,
            group_by: self.group_by,
            svg: self.svg.into_options(),
        })
    }
}

/// The output format: as given, folded for stdout, else from the name.
fn output_format(format: Option<Format>, destination: &Destination) -> Result<Format, String> {
    match (format, destination) {
        (Some(f), _) => Ok(f),
        (None, Destination::Stdout) => Ok(Format::Folded),
        (None, Destination::File(p)) => Format::from_path(p).ok_or_else(|| {
            format!(
                "cannot tell the output format from '{}': use a .svg, .folded, .txt, \
                 .pb.gz, .pprof, .pb or .speedscope.json name, or pass --format",
                p.display()
            )
        }),
    }
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    config::parse_duration(s)
}

fn parse_stack_size_arg(s: &str) -> Result<u32, String> {
    config::parse_stack_size(s)
}

fn parse_frequency_arg(s: &str) -> Result<u64, String> {
    config::parse_frequency(s)
}

fn parse_min_age_arg(s: &str) -> Result<Duration, String> {
    config::parse_min_age(s)
}

fn parse_bytes_arg(s: &str) -> Result<u64, String> {
    config::parse_bytes(s)
}

impl RecordArgs {
    pub fn into_config(mut self) -> Result<RecordConfig, String> {
        let only_threads = if self.tids.is_empty() && self.thread.is_none() {
            None
        } else {
            let name = match &self.thread {
                Some(re) => Some(
                    regex::Regex::new(re)
                        .map_err(|e| format!("invalid --thread regular expression: {e}"))?,
                ),
                None => None,
            };
            Some(ThreadSelection {
                tids: self.tids.clone(),
                name,
            })
        };
        // --tid alone: the processes of those threads.
        if self.pids.is_empty()
            && !self.all
            && self.command.is_empty()
            && self.containers.is_empty()
            && self.pods.is_empty()
        {
            self.pids = self.tids.clone();
        }
        let target = if !self.command.is_empty() {
            if self.all
                || !self.pids.is_empty()
                || !self.containers.is_empty()
                || !self.pods.is_empty()
            {
                return Err(
                    "a command (after --) cannot be combined with --pid, --container, --pod \
                     or --all"
                        .into(),
                );
            }
            TargetSpec::Command(self.command)
        } else if !self.pids.is_empty() {
            let mut pids: Vec<u32> = Vec::with_capacity(self.pids.len());
            for p in self.pids {
                if !pids.contains(&p) {
                    pids.push(p);
                }
            }
            TargetSpec::Pids(pids)
        } else if !self.containers.is_empty() || !self.pods.is_empty() {
            if let Some(empty) = self.containers.iter().find(|c| c.trim().is_empty()) {
                return Err(format!(
                    "--container '{empty}': give a container name, id or id prefix \
                     (e.g. --container web)"
                ));
            }
            if let Some(empty) = self.pods.iter().find(|c| c.trim().is_empty()) {
                return Err(format!(
                    "--pod '{empty}': give a pod name or namespace/name (e.g. --pod \
                     prod/web-7d4b9c6f5-x2x9k)"
                ));
            }
            TargetSpec::Containers(Selection {
                containers: self.containers,
                pods: self.pods,
            })
        } else {
            TargetSpec::System
        };
        if self.probe == ProbeKind::Memleak && target == TargetSpec::System {
            return Err(
                "--probe memleak traces user-space allocators per process: give \
                        --pid PID, --container NAME, --pod NAME or a command after --"
                    .into(),
            );
        }
        if self.sample_bytes.is_some() && self.probe != ProbeKind::Memleak {
            return Err("--sample-bytes applies to --probe memleak only".into());
        }
        let leaks = matches!(self.probe, ProbeKind::Memleak | ProbeKind::Kmemleak);
        if self.min_age.is_some() && !leaks {
            return Err("--min-age applies to --probe memleak and kmemleak only".into());
        }
        let off_cpu = matches!(self.probe, ProbeKind::Offcpu | ProbeKind::Wall);
        if (self.min_block.is_some() || self.states.is_some()) && !off_cpu {
            return Err("--min-block and --state apply to --probe offcpu and wall only".into());
        }
        let offcpu = OffcpuOptions {
            min_block: self.min_block.unwrap_or(config::DEFAULT_MIN_BLOCK),
            states: self.states.unwrap_or_default(),
        };
        let memleak = MemleakOptions {
            min_age: self.min_age.unwrap_or(config::DEFAULT_MIN_AGE),
            sample_bytes: self.sample_bytes.unwrap_or(0),
        };
        let push = match &self.push_url {
            Some(url) => Some(self.push.into_config(url, self.push_spool)?),
            None => {
                if let Some(option) = self.push.given() {
                    return Err(format!("{option} applies with --push URL"));
                }
                None
            }
        };
        if push.is_none() && self.every.is_some() {
            return Err("--every pushes each window: give --push URL".into());
        }
        if self.push_spool.is_some() && self.every.is_none() {
            return Err("--push-spool applies with --every".into());
        }
        if let (Some(every), Some(d)) = (self.every, self.duration) {
            if every > d {
                return Err(format!(
                    "--every {} is longer than -d {}: windows must fit in the recording",
                    humantime(every),
                    humantime(d)
                ));
            }
        }
        // Continuous mode writes a local file only when asked to.
        let write_output = self.every.is_none() || self.output.is_some();
        let output = self.output.unwrap_or_else(|| PathBuf::from("flame.svg"));
        let destination = Destination::parse(&output);
        let format = output_format(self.format, &destination)?;
        let target_is_system = target == TargetSpec::System;
        let duration = match (self.duration, &target) {
            (Some(d), _) => Some(d),
            (None, TargetSpec::Command(_)) => None,
            // Continuous mode without -d: until Ctrl-C.
            (None, _) if self.every.is_some() => None,
            (None, _) => Some(config::DEFAULT_DURATION),
        };
        let mut config = RecordConfig {
            target,
            duration,
            frequency: self.frequency,
            destination,
            format,
            include_idle: self.include_idle,
            threads: !self.no_threads,
            // The whole machine: many short-lived processes, each its own
            // tower by pid (docs/benchmarks.md "Grouping").
            group_by: self.group_by.unwrap_or(if target_is_system {
                GroupBy::Comm
            } else {
                GroupBy::Pid
            }),
            unwind: self.unwind,
            stack_size: self.stack_size,
            svg: self.svg.into_options(),
            report: self.report,
            quiet: self.quiet,
            bpf_stats: self.bpf_stats,
            probe: self.probe,
            memleak,
            offcpu,
            only_threads,
            jit_attach: !self.no_jit_attach,
            write_output,
            push,
            every: self.every,
        };
        // Ingest's folded bodies name frames as the local folded file does.
        if let Some(p) = config.push.as_mut() {
            p.folded = crate::profile::FrameNameOptions {
                threads: config.threads,
                group_by: config.group_by,
                ..Default::default()
            };
        }
        Ok(config)
    }
}

/// A duration for messages: `15s`, `1.5s`, `500ms`.
fn humantime(d: Duration) -> String {
    crate::profile::units::format(crate::profile::units::NANOSECONDS, d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn record(args: &[&str]) -> Result<RecordConfig, String> {
        let mut full = vec!["flameprobe", "record"];
        full.extend_from_slice(args);
        let cli = Cli::try_parse_from(full).map_err(|e| e.to_string())?;
        match cli.command {
            Cmd::Record(r) => r.into_config(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let c = record(&[]).unwrap();
        assert_eq!(c.target, TargetSpec::System);
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        let c = record(&["--", "true"]).unwrap();
        assert_eq!(c.duration, None, "a command is recorded until it exits");
        let c = record(&["-d", "2s", "--", "true"]).unwrap();
        assert_eq!(c.duration, Some(Duration::from_secs(2)));
        assert_eq!(c.frequency, 99);
        assert_eq!(c.format, Format::Svg);
        assert!(c.threads);
    }

    #[test]
    fn pids_repeat_and_comma_separate() {
        let c = record(&["-p", "1,2", "--pid", "3,1"]).unwrap();
        assert_eq!(c.target, TargetSpec::Pids(vec![1, 2, 3]), "once each");
    }

    #[test]
    fn containers_repeat_and_comma_separate() {
        let selection = |containers: &[&str], pods: &[&str]| {
            TargetSpec::Containers(Selection {
                containers: containers.iter().map(|s| s.to_string()).collect(),
                pods: pods.iter().map(|s| s.to_string()).collect(),
            })
        };
        let c = record(&["--container", "web,8dfa34", "--container", "db"]).unwrap();
        assert_eq!(c.target, selection(&["web", "8dfa34", "db"], &[]));
        let c = record(&["--probe", "memleak", "--container", "web"]).unwrap();
        assert_eq!(c.target, selection(&["web"], &[]));
        assert!(record(&["--container", "web", "-p", "1"]).is_err());
        assert!(record(&["--container", "web", "-a"]).is_err());
        let err = record(&["--container", "web", "--", "ls"]).unwrap_err();
        assert!(err.contains("--container"), "{err}");
        let err = record(&["--container", "web,"]).unwrap_err();
        assert!(err.contains("container name"), "{err}");
    }

    #[test]
    fn pods_alone_or_with_containers() {
        let c = record(&["--pod", "prod/shop,cart", "--pod", "db"]).unwrap();
        let pods: Vec<String> = ["prod/shop", "cart", "db"].map(String::from).to_vec();
        assert_eq!(
            c.target,
            TargetSpec::Containers(Selection {
                containers: vec![],
                pods: pods.clone()
            })
        );
        let c = record(&["--probe", "memleak", "--pod", "shop", "--container", "web"]).unwrap();
        assert_eq!(
            c.target,
            TargetSpec::Containers(Selection {
                containers: vec!["web".into()],
                pods: vec!["shop".into()]
            })
        );
        assert!(record(&["--pod", "shop", "-p", "1"]).is_err());
        assert!(record(&["--pod", "shop", "-a"]).is_err());
        let err = record(&["--pod", "shop", "--", "ls"]).unwrap_err();
        assert!(err.contains("--pod"), "{err}");
        let err = record(&["--pod", ","]).unwrap_err();
        assert!(err.contains("pod name"), "{err}");
    }

    #[test]
    fn command_after_double_dash() {
        let c = record(&["-o", "-", "--", "ls", "-l"]).unwrap();
        assert_eq!(
            c.target,
            TargetSpec::Command(vec!["ls".into(), "-l".into()])
        );
        assert_eq!(c.format, Format::Folded);
        assert_eq!(c.destination, Destination::Stdout);
        assert!(record(&["-p", "1", "--", "ls"]).is_err());
    }

    #[test]
    fn memleak_options() {
        let c = record(&["--probe", "memleak", "-p", "1"]).unwrap();
        assert_eq!(c.probe, ProbeKind::Memleak);
        assert_eq!(c.memleak, MemleakOptions::default());
        let c = record(&[
            "--probe",
            "memleak",
            "--min-age",
            "0",
            "--sample-bytes",
            "512k",
            "--",
            "true",
        ])
        .unwrap();
        assert_eq!(c.memleak.min_age, Duration::ZERO);
        assert_eq!(c.memleak.sample_bytes, 512 << 10);
        assert_eq!(
            record(&["--probe", "kmemleak"]).unwrap().target,
            TargetSpec::System
        );
        let err = record(&["--probe", "memleak"]).unwrap_err();
        assert!(err.contains("--pid"), "{err}");
        assert!(record(&["--sample-bytes", "1k", "-p", "1"]).is_err());
        assert!(record(&["--probe", "kmemleak", "--sample-bytes", "1k"]).is_err());
        assert!(record(&["--min-age", "1s", "-p", "1"]).is_err());
        assert_eq!(record(&[]).unwrap().probe, ProbeKind::Cpu);
    }

    #[test]
    fn push_options() {
        let c = record(&["-p", "1", "--push", "http://h:4040"]).unwrap();
        let p = c.push.expect("push settings");
        assert_eq!(p.api, Api::Push);
        assert_eq!(p.endpoint.to_string(), "http://h:4040");
        assert!(c.write_output && c.every.is_none());
        let c = record(&[
            "--push",
            "https://u:t@h",
            "--every",
            "15s",
            "--push-api",
            "ingest",
            "--label",
            "env=prod",
            "--push-split",
            "pid",
            "--push-header",
            "X-Scope-OrgID: a",
            "--push-spool",
            "4",
        ])
        .unwrap();
        assert_eq!(c.every, Some(Duration::from_secs(15)));
        assert_eq!(c.duration, None, "continuous without -d: until Ctrl-C");
        assert!(!c.write_output, "continuous mode writes no file unless -o");
        let p = c.push.unwrap();
        assert_eq!(
            (p.api, p.split, p.spool),
            (Api::Ingest, Some(Split::Pid), 4)
        );
        let c = record(&[
            "--push", "http://h", "--every", "2s", "-d", "7s", "-o", "x.folded",
        ]);
        let c = c.unwrap();
        assert!(c.write_output && c.duration == Some(Duration::from_secs(7)));
        for (args, why) in [
            (&["--service", "x"][..], "--push URL"),
            (&["--every", "5s"][..], "--push URL"),
            (&["--push", "ftp://h"][..], "http"),
            (&["--push", "h:4040"][..], "scheme"),
            (&["--push", "http://h", "--every", "100ms"][..], "too short"),
            (
                &["--push", "http://h", "--every", "10s", "-d", "5s"][..],
                "longer than -d",
            ),
            (&["--push", "http://h", "--push-spool", "2"][..], "--every"),
            (
                &["--push", "http://h", "--label", "bad-name=1"][..],
                "label name",
            ),
            (
                &["--push", "http://h", "--push-header", "nocolon"][..],
                "Name: value",
            ),
        ] {
            let err = record(args).unwrap_err();
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }

    #[test]
    fn push_files_command() {
        let cli = Cli::try_parse_from([
            "flameprobe",
            "push",
            "a.pb.gz",
            "b.folded",
            "--url",
            "http://h",
        ])
        .unwrap();
        let Cmd::Push(args) = cli.command else {
            unreachable!()
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.files.len(), 2);
        assert!(
            Cli::try_parse_from(["flameprobe", "push", "a.pb.gz"]).is_err(),
            "--url needed"
        );
        let cli =
            Cli::try_parse_from(["flameprobe", "push", "-", "-", "--url", "http://h"]).unwrap();
        let Cmd::Push(args) = cli.command else {
            unreachable!()
        };
        assert!(args.into_config().is_err());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(record(&["-d", "0s"]).is_err());
        assert!(record(&["-d", "ten"]).is_err());
        assert!(record(&["-F", "0"]).is_err());
        assert!(record(&["-a", "-p", "1"]).is_err());
        let err = record(&["-o", "x.png"]).unwrap_err();
        assert!(err.contains("--format"), "{err}");
        assert_eq!(
            record(&["-o", "x.png", "-f", "svg"]).unwrap().format,
            Format::Svg
        );
    }
}
