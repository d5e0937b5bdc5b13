//! `flameprobe record`: the orchestrator.
//!
//! target resolution -> probe attach -> collect until duration / signal /
//! target exit -> symbolize -> Profile -> output.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{ProbeKind, RecordConfig};
use crate::output::{self, atomic, Destination, Format, WriteOptions};
use crate::probe::cpu::{CpuConfig, CpuProbe, CpuSample, Filter};
use crate::probe::{check_bpf_support, enable_bpf_stats};
use crate::profile::{FrameNameOptions, Labels, Meta, Profile, Unit};
use crate::report::{self, ReportOptions};
use crate::signals;
use crate::stacks::{RawStack, StackCollector};
use crate::symbolize::Symbolizer;
use crate::target::{LaunchedCommand, TargetSpec};
use crate::unwind::{Unwinder, UserSnapshot};

mod memleak;

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
}

impl Recording {
    /// Start time in nanoseconds since the Unix epoch (0 if before it).
    pub fn start_unix_ns(&self) -> u64 {
        self.start_wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    /// Tells the user why the recording stopped early (unless quiet).
    pub fn report_stop(&self, config: &RecordConfig) {
        if config.quiet {
            return;
        }
        match self.reason {
            StopReason::Signal => eprintln!("flameprobe: interrupted, writing what was recorded"),
            StopReason::TargetsExited => eprintln!(
                "flameprobe: {} exited after {:.1}s",
                exit_subject(&config.target),
                self.recorded.as_secs_f64()
            ),
            StopReason::Duration => {}
        }
    }
}

/// Runs the recording loop shared by every probe: `poll` delivers records
/// for at most the given time, until the duration ends, a stop signal
/// arrives or every target has exited; `status` is the progress message.
pub(crate) fn record_until_stopped(
    config: &RecordConfig,
    mut command: Option<&mut LaunchedCommand>,
    mut poll: impl FnMut(Duration),
    mut status: impl FnMut() -> String,
) -> Recording {
    let start_wall = SystemTime::now();
    let started = Instant::now();
    let progress = progress_bar(config);
    let reason = loop {
        let elapsed = started.elapsed();
        if signals::stop_requested() {
            break StopReason::Signal;
        }
        if elapsed >= config.duration {
            break StopReason::Duration;
        }
        if targets_gone(&config.target, command.as_deref_mut()) {
            break StopReason::TargetsExited;
        }
        poll((config.duration - elapsed).min(Duration::from_millis(100)));
        if let Some(pb) = &progress {
            pb.set_position(elapsed.as_millis() as u64);
            pb.set_message(status());
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
    }
}

/// Turns samples into raw stacks as they arrive.
struct Collector {
    stacks: StackCollector,
    unwinder: Unwinder,
    samples: u64,
}

impl Collector {
    fn on_sample(&mut self, s: &CpuSample<'_>) {
        self.samples += 1;
        let pid = s.pid();
        let unwound = if s.is_kernel_thread() || pid == 0 {
            Default::default()
        } else {
            let snap = UserSnapshot {
                pid,
                regs: s.user_regs(),
                stack: s.user_stack_bytes(),
                stack_ends_in_copy: s.stack_ends_in_copy(),
                fp_frames: s.user_fp_stack(),
            };
            self.unwinder.unwind(&snap, &mut self.stacks.table)
        };
        let user = self.stacks.resolve_user(pid, &unwound.frames);
        let labels = Labels {
            pid: Some(pid),
            tid: Some(s.tid()),
            process: Some(s.process_name()),
            thread: Some(s.thread_name()),
            ..Labels::default()
        };
        self.stacks.add(
            RawStack {
                labels,
                kernel: s.kernel_stack().to_vec(),
                user,
                truncated: unwound.truncated,
            },
            1,
            1,
        );
    }
}

/// Runs a recording and writes its output.
pub fn run(config: &RecordConfig) -> Result<()> {
    if config.probe != ProbeKind::Cpu {
        return memleak::run(config);
    }
    let (mut command, filter) = prepare(config)?;
    let cpu_config = CpuConfig {
        filter,
        follow_children: command.is_some(),
        include_idle: config.include_idle,
        frequency: config.frequency,
        stack_copy_size: if config.unwind.copies_stack() {
            config.stack_size
        } else {
            0
        },
        fp_user_stack: config.unwind.walks_frame_pointers(),
    };

    let collector = Rc::new(RefCell::new(Collector {
        stacks: StackCollector::new(),
        unwinder: Unwinder::new(config.unwind),
        samples: 0,
    }));
    let sink = collector.clone();
    let stats_guard = if config.bpf_stats {
        Some(enable_bpf_stats().context("enabling BPF run-time statistics")?)
    } else {
        None
    };
    let mut storage = MaybeUninit::uninit();
    let probe = CpuProbe::attach(&mut storage, &cpu_config, move |s| {
        sink.borrow_mut().on_sample(s)
    })?;
    log::info!("attached to {}", config.target.describe());
    if let Some(cmd) = command.as_mut() {
        cmd.start()?;
    }

    let rec = record_until_stopped(
        config,
        command.as_mut(),
        |wait| probe.poll(wait),
        || {
            let stats = probe.stats();
            format!("{} samples, {} lost", stats.samples, stats.lost)
        },
    );
    probe.drain();
    let stats = probe.stats();
    let run_stats = probe.run_stats().filter(|_| stats_guard.is_some());
    drop(probe);
    drop(stats_guard);

    let collector = Rc::try_unwrap(collector)
        .map_err(|_| anyhow::anyhow!("sample collector still shared after detach"))?
        .into_inner();
    rec.report_stop(config);
    if collector.samples == 0 {
        bail!(
            "no samples were recorded from {} in {:.1}s: it did not run on a CPU \
             (idle or sleeping?); nothing written",
            config.target.describe(),
            rec.recorded.as_secs_f64()
        );
    }

    let period_ns = 1_000_000_000 / config.frequency;
    let meta = Meta {
        target: config.target.describe(),
        start_unix_ns: rec.start_unix_ns(),
        duration_ns: rec.recorded.as_nanos() as u64,
        frequency: Some(config.frequency),
        lost: stats.lost,
        probe: "cpu".into(),
    };
    let mut symbolizer = Symbolizer::new();
    let profile = collector
        .stacks
        .into_profile(Unit::Samples { period_ns }, meta, &mut symbolizer);

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
    if !config.quiet {
        eprint!("{}", summary(&profile, config.format, &config.destination));
        if let Some((runs, ns)) = run_stats {
            // Runs that the target filter rejected cost time too: charge
            // them to the recorded samples.
            eprintln!(
                "  BPF sampling program: {runs} runs, {} ns per run, {} ns per recorded sample",
                ns.checked_div(runs).unwrap_or(0),
                ns.checked_div(stats.samples).unwrap_or(0)
            );
        }
    }
    print_report(&profile, config)
}

/// What every recording does before attaching: check everything that can
/// be checked cheaply (target, output path, BPF support), install the
/// signal handlers, and launch the command (held before exec) if there is
/// one. Returns it with the in-kernel target filter.
fn prepare(config: &RecordConfig) -> Result<(Option<LaunchedCommand>, Filter)> {
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
        (TargetSpec::Pids(p), _) => Filter::Pids(p.clone()),
        (TargetSpec::Command(_), Some(c)) => Filter::Pids(vec![c.pid()]),
        (TargetSpec::Command(_), None) => unreachable!("command was launched above"),
    };
    Ok((command, filter))
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

fn progress_bar(config: &RecordConfig) -> Option<ProgressBar> {
    if config.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(config.duration.as_millis() as u64);
    let style =
        ProgressStyle::with_template("{spinner} recording {prefix}: {wide_bar} {eta} left, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_prefix(config.target.describe());
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

/// The end-of-recording summary for stderr.
pub fn summary(profile: &Profile, format: Format, dest: &Destination) -> String {
    let total = profile.total_weight();
    let mut out = format!(
        "flameprobe: {} {} ({} lost) from {} in {:.1}s, {} unique stacks\n",
        total,
        profile.unit.name(),
        profile.meta.lost,
        profile.meta.target,
        profile.meta.duration_ns as f64 / 1e9,
        profile.stacks.len()
    );
    if profile.meta.lost > 0 {
        out.push_str(&format!(
            "  warning: {} samples were lost (ring buffer full): lower -F or profile fewer targets\n",
            profile.meta.lost
        ));
    }
    let top = profile.top_self();
    if !top.is_empty() {
        out.push_str("  top functions by self time:\n");
        for (name, weight) in top.iter().take(5) {
            let pct = 100.0 * *weight as f64 / total.max(1) as f64;
            out.push_str(&format!("  {pct:6.2}%  {name}\n"));
        }
    }
    out.push_str(&crate::quality::assess(profile).to_string());
    match dest {
        Destination::Stdout => out.push_str(&format!(
            "  wrote {} to standard output\n",
            format.description()
        )),
        Destination::File(p) => out.push_str(&format!("  wrote {}\n", p.display())),
    }
    out
}
