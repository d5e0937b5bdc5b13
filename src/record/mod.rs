//! `flameprobe record`: the orchestrator, the same for every probe.
//!
//! ```text
//! prepare   target, output path, BPF support, signals, command held before exec
//! attach    the probe kind's Recorder (record/<kind>.rs over probe/<kind>.rs)
//! record    poll the recorder until the duration ends, a signal or the
//!           targets' exit; every poll ends at a deadline
//! finish    the recorder stops its probe and hands over raw stacks with
//!           their values; symbolize -> Profile -> output, summary, quality,
//!           --report
//! ```
//!
//! A probe kind is a [`Recorder`] plus one line in [`run`]'s dispatch.

use std::io::{IsTerminal, Write};
use std::mem::MaybeUninit;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use libbpf_rs::OpenObject;

use crate::config::{ProbeKind, RecordConfig};
use crate::jit::tracker::JitOptions;
use crate::output::{self, atomic, Destination, Format, WriteOptions};
use crate::probe::check_bpf_support;
use crate::profile::{FrameNameOptions, Meta, Profile, ValueType};
use crate::report::{self, ReportOptions};
use crate::signals;
use crate::stacks::StackCollector;
use crate::symbolize::Symbolizer;
use crate::target::{Filter, LaunchedCommand, TargetSpec};

mod cpu;
mod memleak;

/// Longest a single poll runs: the deadline, the first Ctrl-C and the
/// targets' exit are noticed within this.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Longest the final delivery of queued events may take.
const FINAL_DRAIN: Duration = Duration::from_secs(1);

/// One probe kind's recording, attached and collecting.
pub(crate) trait Recorder {
    /// Takes in what the probe delivers until `until` (never later).
    fn poll(&mut self, until: Instant);
    /// The progress line's counters, e.g. "1234 samples, 0 lost".
    fn progress(&self) -> String;
    /// Stops the probe and hands over what was collected.
    fn finish(self: Box<Self>, rec: &Recording) -> Result<Collected>;
}

/// What a recorder hands over at the end.
pub(crate) struct Collected {
    pub stacks: StackCollector,
    /// What each stack's values measure (see `Profile`).
    pub sample_types: Vec<ValueType>,
    pub period: Option<(ValueType, u64)>,
    /// Sampling frequency, for profiles of samples.
    pub frequency: Option<u64>,
    /// Events lost on the way (ring buffer or table full).
    pub lost: u64,
    /// Lines for the summary after its headline (warnings, counts).
    pub notes: Vec<String>,
    /// The summary lists the largest stacks with their event counts
    /// (rather than the top functions).
    pub list_stacks: bool,
    /// What happens when nothing was collected.
    pub when_empty: WhenEmpty,
}

/// A recording that collected nothing.
pub(crate) enum WhenEmpty {
    /// An error (exit 1) with this message; nothing is written.
    Error(String),
    /// A normal outcome explained by this message; the output is written
    /// when its format can be empty (not an SVG).
    Note(String),
}

/// Why recording stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    Duration,
    Signal,
    TargetsExited,
}

/// How a recording went.
pub(crate) struct Recording {
    pub reason: StopReason,
    /// Wall-clock time the recording started.
    pub start_wall: SystemTime,
    /// How long it ran.
    pub recorded: Duration,
    /// When it stopped (for the latency of writing the output).
    pub stopped_at: Instant,
    /// The launched command's pid and exit status (None: still running).
    pub command: Option<(u32, Option<i32>)>,
}

impl Recording {
    /// Start time in nanoseconds since the Unix epoch (0 if before it).
    pub fn start_unix_ns(&self) -> u64 {
        self.start_wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    /// Tells the user why the recording stopped (unless quiet).
    fn report_stop(&self, config: &RecordConfig) {
        if config.quiet {
            return;
        }
        let secs = self.recorded.as_secs_f64();
        match (self.reason, self.command) {
            (StopReason::Signal, _) => {
                eprintln!("flameprobe: interrupted, writing what was recorded")
            }
            (StopReason::TargetsExited, Some((_, Some(code)))) if code != 0 => {
                eprintln!("flameprobe: the command exited with status {code} after {secs:.1}s")
            }
            (StopReason::TargetsExited, _) => eprintln!(
                "flameprobe: {} exited after {secs:.1}s",
                exit_subject(&config.target)
            ),
            (StopReason::Duration, Some((pid, None))) => eprintln!(
                "flameprobe: recorded for {secs:.1}s (-d); the command (pid {pid}) is still running"
            ),
            (StopReason::Duration, _) => {}
        }
    }
}

/// What every recording sets up before its probe attaches.
pub(crate) struct Session<'c> {
    pub config: &'c RecordConfig,
    /// What the BPF programs record.
    pub filter: Filter,
    /// The launched command, held before exec until the probe is attached.
    pub command: Option<LaunchedCommand>,
}

/// Runs a recording and writes its output.
pub fn run(config: &RecordConfig) -> Result<()> {
    let mut session = prepare(config)?;
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let mut recorder: Box<dyn Recorder + '_> = match config.probe {
        ProbeKind::Cpu => cpu::attach(&session, &mut storage)?,
        ProbeKind::Memleak | ProbeKind::Kmemleak => memleak::attach(&session, &mut storage)?,
    };
    log::info!(
        "attached to {} ({} ms after flameprobe started)",
        config.target.describe(),
        process_age().map_or_else(|| "?".into(), |d| d.as_millis().to_string())
    );
    if let Some(cmd) = session.command.as_mut() {
        cmd.start()?;
    }
    let rec = record_until_stopped(&mut session, recorder.as_mut());
    let collected = recorder.finish(&rec)?;
    rec.report_stop(config);
    write_profile(config, &rec, collected)
}

/// Checks everything that can be checked cheaply (target, output path, BPF
/// support), installs the signal handlers and launches the command (held
/// before exec) if there is one.
fn prepare(config: &RecordConfig) -> Result<Session<'_>> {
    config.target.validate()?;
    if let Destination::File(path) = &config.destination {
        atomic::check_writable(path)
            .with_context(|| format!("cannot write output '{}'", path.display()))?;
    }
    check_bpf_support()?;
    signals::install()?;

    let command = match &config.target {
        TargetSpec::Command(argv) => Some(LaunchedCommand::spawn(
            argv,
            config.destination == Destination::Stdout,
        )?),
        _ => None,
    };
    let filter = match (&config.target, &command) {
        (TargetSpec::System, _) => Filter::All,
        (TargetSpec::Pids(p), _) => Filter::Pids {
            pids: p.clone(),
            follow_children: false,
        },
        (TargetSpec::Command(_), Some(c)) => Filter::Pids {
            pids: vec![c.pid()],
            follow_children: true,
        },
        (TargetSpec::Command(_), None) => unreachable!("command was launched above"),
    };
    Ok(Session {
        config,
        filter,
        command,
    })
}

/// Polls the recorder until the duration ends, a stop signal arrives or
/// every target has exited.
fn record_until_stopped(session: &mut Session<'_>, recorder: &mut dyn Recorder) -> Recording {
    let config = session.config;
    let start_wall = SystemTime::now();
    let started = Instant::now();
    let progress = progress_bar(config);
    let reason = loop {
        let elapsed = started.elapsed();
        if signals::stop_requested() {
            break StopReason::Signal;
        }
        if config.duration.is_some_and(|d| elapsed >= d) {
            break StopReason::Duration;
        }
        if targets_gone(&config.target, session.command.as_mut()) {
            break StopReason::TargetsExited;
        }
        let mut until = Instant::now() + POLL_SLICE;
        if let Some(d) = config.duration {
            until = until.min(started + d);
        }
        recorder.poll(until);
        if let Some(pb) = &progress {
            pb.set_position(started.elapsed().as_millis() as u64);
            pb.set_message(recorder.progress());
        }
    };
    let recorded = started.elapsed();
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Recording {
        reason,
        start_wall,
        recorded,
        stopped_at: Instant::now(),
        command: session.command.as_mut().map(|c| (c.pid(), c.try_wait())),
    }
}

/// Symbolizes what was collected and writes the output, the summary and
/// the report.
fn write_profile(config: &RecordConfig, rec: &Recording, collected: Collected) -> Result<()> {
    if collected.stacks.is_empty() {
        match &collected.when_empty {
            WhenEmpty::Error(msg) => bail!("{msg}; nothing written"),
            WhenEmpty::Note(msg) => {
                if !config.quiet {
                    eprintln!("flameprobe: {msg}");
                }
                if config.format == Format::Svg {
                    if !config.quiet {
                        eprintln!("  an empty flame graph cannot be drawn: no file written");
                    }
                    return Ok(());
                }
            }
        }
    }
    let meta = Meta {
        target: config.target.describe(),
        start_unix_ns: rec.start_unix_ns(),
        duration_ns: rec.recorded.as_nanos() as u64,
        frequency: collected.frequency,
        lost: collected.lost,
        probe: Some(config.probe),
    };
    let mut stacks = collected.stacks;
    let jit_options = JitOptions {
        attach: config.jit_attach,
        ..JitOptions::default()
    };
    let mut jit = std::mem::take(&mut stacks.jit).finish(&jit_options);
    let mut symbolizer = Symbolizer::new();
    jit.install(&mut symbolizer);
    let mut profile = stacks.into_profile(collected.sample_types, meta, &mut symbolizer);
    profile.period = collected.period;
    let mut notes = collected.notes;
    notes.extend(jit.warnings());
    let quality_notes = jit.quality_lines(&profile);

    let opts = WriteOptions {
        svg: config.svg.clone(),
        folded: FrameNameOptions {
            threads: config.threads,
        },
    };
    output::write(&profile, config.format, &opts, &config.destination)
        .with_context(|| format!("writing {}", config.destination))?;
    log::info!(
        "output written {} ms after recording stopped",
        rec.stopped_at.elapsed().as_millis()
    );
    if !config.quiet && !profile.stacks.is_empty() {
        eprint!(
            "{}",
            summary(
                &profile,
                &notes,
                &quality_notes,
                collected.list_stacks,
                config.format,
                &config.destination
            )
        );
    }
    print_report(&profile, config)
}

/// `--report`: the top-functions report of the recorded profile, on
/// stdout, or on stderr when stdout carries the profile.
fn print_report(profile: &Profile, config: &RecordConfig) -> Result<()> {
    if !config.report {
        return Ok(());
    }
    let opts = ReportOptions::default();
    let text = report::render_text(profile, &report::build(profile, &opts), &opts);
    if config.destination == Destination::Stdout {
        eprint!("{text}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the report to standard output")
}

fn exit_subject(target: &TargetSpec) -> &'static str {
    match target {
        TargetSpec::Command(_) => "the command",
        TargetSpec::Pids(p) if p.len() > 1 => "all target processes",
        _ => "the target process",
    }
}

fn targets_gone(target: &TargetSpec, command: Option<&mut LaunchedCommand>) -> bool {
    match (target, command) {
        (_, Some(cmd)) => cmd.try_wait().is_some(),
        (TargetSpec::Pids(pids), None) => !pids.iter().any(|&p| crate::proc::process_alive(p)),
        _ => false,
    }
}

/// How long ago this process started (from /proc/self/stat), for the
/// time-to-attach report.
fn process_age() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let start_ticks = crate::proc::parse_stat_start_time(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let now = Duration::new(boot.tv_sec() as u64, boot.tv_nsec() as u32);
    let started = Duration::from_secs_f64(start_ticks as f64 / hz.max(1) as f64);
    now.checked_sub(started)
}

fn progress_bar(config: &RecordConfig) -> Option<ProgressBar> {
    if config.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let (pb, template) = match config.duration {
        Some(d) => (
            ProgressBar::new(d.as_millis() as u64),
            "{spinner} recording {prefix}: {wide_bar} {eta} left, {msg}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} recording {prefix} until it exits: {elapsed}, {msg}",
        ),
    };
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(config.target.describe());
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

/// Stacks listed in a summary that lists stacks.
const SUMMARY_STACKS: usize = 10;

/// The end-of-recording summary for stderr: totals, the recorder's notes,
/// the top functions (or largest stacks), the stack quality (followed by
/// `quality_notes`) and where the output went.
pub fn summary(
    profile: &Profile,
    notes: &[String],
    quality_notes: &[String],
    list_stacks: bool,
    format: Format,
    dest: &Destination,
) -> String {
    let (display, events) = (profile.display_index(), profile.events_index());
    let shown = &profile.sample_types[display];
    let event_type = &profile.sample_types[events];
    let mut out = format!(
        "flameprobe: {} in {} {} ({} lost) from {} in {:.1}s, {} unique stacks\n",
        shown.format(profile.total(display)),
        profile.total(events),
        event_type.noun(),
        profile.meta.lost,
        profile.meta.target,
        profile.meta.duration_ns as f64 / 1e9,
        profile.stacks.len()
    );
    for note in notes {
        out.push_str(&format!("  {note}\n"));
    }
    if profile.saturated {
        out.push_str("  warning: some totals exceeded 2^64 and were capped at the maximum\n");
    }
    if list_stacks {
        out.push_str(&largest_stacks(profile));
    } else {
        let total = profile.total_width().max(1);
        let top = profile.top_self();
        if !top.is_empty() {
            out.push_str(&format!(
                "  top functions by self {}:\n",
                if shown.unit == crate::profile::units::NANOSECONDS {
                    "time"
                } else {
                    shown.noun()
                }
            ));
            for (name, weight) in top.iter().take(5) {
                let pct = 100.0 * *weight as f64 / total as f64;
                out.push_str(&format!("  {pct:6.2}%  {name}\n"));
            }
        }
    }
    out.push_str(&crate::quality::assess(profile).to_string());
    for note in quality_notes {
        out.push_str(&format!("  {note}\n"));
    }
    match dest {
        Destination::Stdout => out.push_str(&format!(
            "  wrote {} to standard output\n",
            format.description()
        )),
        Destination::File(p) => out.push_str(&format!("  wrote {}\n", p.display())),
    }
    out
}

/// The largest stacks by the shown value, with their event counts,
/// innermost frames first. Stacks that read the same (several call sites
/// on one line, inlined copies) are merged, as in the folded output.
fn largest_stacks(profile: &Profile) -> String {
    use std::collections::HashMap;
    let (display, events) = (profile.display_index(), profile.events_index());
    let names = FrameNameOptions { threads: false };
    let mut merged: HashMap<Vec<String>, (u64, u64)> = HashMap::new();
    for s in &profile.stacks {
        let e = merged.entry(profile.frame_names(s, &names)).or_default();
        e.0 = e.0.saturating_add(s.values[display]);
        e.1 = e.1.saturating_add(s.values[events]);
    }
    let mut merged: Vec<(Vec<String>, (u64, u64))> = merged.into_iter().collect();
    merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = String::new();
    if !merged.is_empty() {
        out.push_str(&format!(
            "  largest stacks ({}, {}, innermost frames first):\n",
            profile.sample_types[display].noun(),
            profile.sample_types[events].noun()
        ));
    }
    for (frames, (value, count)) in merged.iter().take(SUMMARY_STACKS) {
        let tail: Vec<&str> = frames.iter().rev().take(5).map(String::as_str).collect();
        out.push_str(&format!(
            "  {value:>12} {count:>8}  {}\n",
            tail.join(" <- ")
        ));
    }
    out
}
