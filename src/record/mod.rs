//! `flameprobe record`: the orchestrator, the same for every probe.
//!
//! ```text
//! prepare   target (containers resolved), output path, BPF support,
//!           signals, command held before exec
//! attach    the probe kind's Recorder (record/<kind>.rs over probe/<kind>.rs)
//! record    poll the recorder until the duration ends, a signal or the
//!           targets' exit; every poll ends at a deadline; processes that
//!           join the recorded containers are handed to the recorder
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
use crate::container::members::ContainerWatch;
use crate::container::{self, Container};
use crate::jit::tracker::JitOptions;
use crate::output::{self, Destination, Format, Output, WriteOptions};
use crate::probe::check_bpf_support;
use crate::probe::mmaps::MapsWatch;
use crate::probe::targets::TargetMaps;
use crate::profile::{FrameKind, FrameNameOptions, Meta, Profile, ValueType};
use crate::push::series::Service;
use crate::report::{self, ReportOptions};
use crate::signals;
use crate::stacks::StackCollector;
use crate::symbolize::Symbolizer;
use crate::target::{CgroupTarget, Filter, LaunchedCommand, TargetSpec, ThreadFilter};
use crate::text;
use threads::ThreadWatch;

mod cpu;
mod memleak;
mod offcpu;
mod stack_book;
mod threads;
mod unwind_sync;
mod wall;
mod windows;

/// Longest a single poll runs: the deadline, the first Ctrl-C and the
/// targets' exit are noticed within this.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Longest the final delivery of queued events may take.
const FINAL_DRAIN: Duration = Duration::from_secs(1);

/// One probe kind's recording, attached and collecting.
pub(crate) trait Recorder {
    /// Takes in what the probe delivers until `until` (never later).
    fn poll(&mut self, until: Instant);
    /// Runs `f` on the stack collector the probe feeds.
    fn with_stacks(&self, f: &mut dyn FnMut(&mut StackCollector));
    /// The target maps of its BPF programs (threads matching --thread
    /// are added as they appear).
    fn target_maps(&self) -> Vec<TargetMaps<'_>>;
    /// The progress line's counters, e.g. "1234 samples, 0 lost".
    fn progress(&self) -> String;
    /// Processes that joined the recorded containers since the last poll
    /// (found in user space; already in the in-kernel filter): anything
    /// else the probe needs for them (memleak probes their allocators).
    fn add_processes(&mut self, _pids: &[u32]) {}
    /// Continuous mode (`--every`): ends the window now, with every probe
    /// still attached. What the probe streams (cpu, wall's samples) is in
    /// the stack collector already; what the kernel aggregates is added
    /// to it now: offcpu (and wall's off-CPU half) the time off the CPU
    /// *in* the window (a thread asleep across windows counts in each, up
    /// to its end), memleak what is outstanding at the window's end (a
    /// snapshot, as the end of a recording is). The orchestrator then
    /// takes the window's stacks (`StackCollector::take_window`); what
    /// arrives after goes into the next window. Returns what the values
    /// are and the events lost so far.
    fn end_window(&mut self, session: &Session<'_>) -> Result<(Values, u64)>;
    /// Stops the probe and hands over what was collected (in continuous
    /// mode, what no window took).
    fn finish(self: Box<Self>, session: &Session<'_>, rec: &Recording) -> Result<Collected>;
}

/// What a recorder's values are: one per sample type, the sampling period
/// and frequency of sampled profiles.
pub(crate) struct Values {
    pub sample_types: Vec<ValueType>,
    pub period: Option<(ValueType, u64)>,
    pub frequency: Option<u64>,
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
    /// What the summary says besides the totals.
    pub summary: SummaryInfo,
    /// What happens when nothing was collected.
    pub when_empty: WhenEmpty,
}

/// A recorder's part of the summary.
#[derive(Default)]
pub(crate) struct SummaryInfo {
    /// Lines after the headline (warnings, counts).
    pub notes: Vec<String>,
    /// List the largest stacks with their event counts (rather than the
    /// top functions).
    pub list_stacks: bool,
    /// What would give longer stacks where some were truncated (only when
    /// something would).
    pub truncation_hint: Option<String>,
    /// Lines after the stack quality (JIT frames left unnamed, and why).
    pub quality_notes: Vec<String>,
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
    /// Recorded containers that stopped, and how far into the recording.
    pub containers_stopped: Vec<(String, Duration)>,
    /// Containers that started in a recorded pod, and when.
    pub containers_joined: Vec<(Container, Duration)>,
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
    fn report_stop(&self, config: &RecordConfig, target: &TargetSpec) {
        if config.quiet {
            return;
        }
        let secs = self.recorded.as_secs_f64();
        for (c, after) in &self.containers_joined {
            let pod = c.pod.as_ref().map(|p| p.display_name()).unwrap_or_default();
            eprintln!(
                "flameprobe: container {} started in pod {} {:.1}s into the recording",
                text::printable(&c.name),
                text::printable(&pod),
                after.as_secs_f64()
            );
        }
        for (name, after) in &self.containers_stopped {
            eprintln!(
                "flameprobe: container {} stopped {:.1}s into the recording",
                text::printable(name),
                after.as_secs_f64()
            );
        }
        match (self.reason, self.command) {
            (StopReason::Signal, _) => {
                eprintln!("flameprobe: interrupted, writing what was recorded")
            }
            (StopReason::TargetsExited, Some((_, Some(code)))) if code != 0 => {
                eprintln!("flameprobe: the command exited with status {code} after {secs:.1}s")
            }
            // Each container's stop was told above.
            (StopReason::TargetsExited, _) if !self.containers_stopped.is_empty() => {}
            (StopReason::TargetsExited, _) => eprintln!(
                "flameprobe: {} exited after {secs:.1}s",
                exit_subject(target)
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
    /// The targets as resolved (a thread id replaced by its process).
    pub target: TargetSpec,
    /// What the BPF programs record.
    pub filter: Filter,
    /// Only these threads of the targets (--tid/--thread), at the start.
    pub threads: ThreadFilter,
    /// Adds threads matching --thread as they appear.
    pub thread_watch: Option<ThreadWatch>,
    /// The kernel's record of executable mappings, forks and execs, for
    /// processes that exit before their maps can be read (handed to the
    /// recorder's process table).
    pub maps_watch: Option<MapsWatch>,
    /// The launched command, held before exec until the probe is attached.
    pub command: Option<LaunchedCommand>,
    /// The recorded containers' processes.
    pub containers: Option<ContainerWatch>,
    /// The `service_name` of pushes without `--service`.
    pub service: Service,
}

impl Session<'_> {
    /// What is recorded, for titles and messages: the targets, and the
    /// threads when only some are.
    pub fn describe(&self) -> String {
        match &self.config.only_threads {
            Some(sel) => format!("{} ({})", self.target.describe(), sel.describe()),
            None => self.target.describe(),
        }
    }
}

/// Runs a recording and writes its output.
pub fn run(config: &RecordConfig) -> Result<()> {
    let (mut session, out) = prepare(config)?;
    // Room for the BPF objects of the probe kind (wall-clock uses two).
    let (mut first, mut second) = (MaybeUninit::<OpenObject>::uninit(), MaybeUninit::uninit());
    let mut recorder: Box<dyn Recorder + '_> = match config.probe {
        ProbeKind::Cpu => cpu::attach(&session, &mut first)?,
        ProbeKind::Memleak | ProbeKind::Kmemleak => memleak::attach(&session, &mut first)?,
        ProbeKind::Offcpu => offcpu::attach(&session, &mut first)?,
        ProbeKind::Wall => wall::attach(&session, &mut first, &mut second)?,
    };
    if let Some(watch) = session.maps_watch.take() {
        let mut watch = Some(watch);
        recorder.with_stacks(&mut |stacks| {
            if let Some(w) = watch.take() {
                stacks.table.set_event_source(Box::new(w));
            }
        });
    }
    log::info!(
        "attached to {} ({} ms after flameprobe started)",
        session.describe(),
        process_age().map_or_else(|| "?".into(), |d| d.as_millis().to_string())
    );
    if let Some(cmd) = session.command.as_mut() {
        cmd.start()?;
    }
    let mut windows = match (&config.push, config.every) {
        (Some(push), Some(_)) => Some(windows::Windows::start(
            &session,
            push,
            push.series_labels(session.service.clone()),
        )?),
        _ => None,
    };
    let rec = record_until_stopped(&mut session, recorder.as_mut(), windows.as_mut());
    let collected = recorder.finish(&session, &rec)?;
    rec.report_stop(config, &session.target);
    if let Some(windows) = windows {
        return finish_windows(&session, &rec, collected, windows, out);
    }
    let Some(done) = build_profile(&session, &rec, collected)? else {
        return Ok(());
    };
    write_and_report(&session, &rec, &done, out, &[])?;
    match &config.push {
        Some(push) => push_once(&session, push, &done.profile),
        None => Ok(()),
    }
}

/// Checks everything that can be checked cheaply (target, output, BPF
/// support), installs the signal handlers and launches the command (held
/// before exec) if there is one. Returns the session and the checked output.
fn prepare(config: &RecordConfig) -> Result<(Session<'_>, Option<Output>)> {
    let named_threads: &[u32] = config.only_threads.as_ref().map_or(&[], |t| &t.tids);
    let pids = match &config.target {
        TargetSpec::Pids(p) => crate::target::resolve_pids(p, named_threads)?,
        _ => Vec::new(),
    };
    let out = if config.write_output {
        Some(Output::prepare(&config.destination)?)
    } else {
        None
    };
    check_bpf_support()?;
    signals::install()?;

    let command = match &config.target {
        TargetSpec::Command(argv) => Some(LaunchedCommand::spawn(
            argv,
            out.as_ref().is_some_and(Output::shares_stdout),
        )?),
        _ => None,
    };
    let selected = match &config.target {
        TargetSpec::Containers(selection) => Some(container::resolve_selection(selection)?),
        _ => None,
    };
    let filter = match (&config.target, &command) {
        (TargetSpec::System, _) => Filter::All,
        (TargetSpec::Containers(_), _) => {
            container_filter(selected.as_ref().map_or(&[], |s| &s.containers))
        }
        (TargetSpec::Pids(_), _) => Filter::Pids {
            pids,
            follow_children: false,
        },
        (TargetSpec::Command(_), Some(c)) => Filter::Pids {
            pids: vec![c.pid()],
            follow_children: true,
        },
        (TargetSpec::Command(_), None) => unreachable!("command was launched above"),
    };
    let target = match &config.target {
        TargetSpec::Pids(_) => TargetSpec::Pids(filter.pids().to_vec()),
        other => other.clone(),
    };
    let (threads, thread_watch) = match &config.only_threads {
        Some(sel) => {
            let mut watch = ThreadWatch::new(sel, &filter);
            let tids = watch.initial();
            (Some(tids), Some(watch))
        }
        None => (None, None),
    };
    let maps_watch = MapsWatch::open()
        .map_err(|e| {
            log::warn!(
                "cannot follow mappings of short-lived processes ({e}): those that exit \
                 within milliseconds may show [unmapped] frames"
            )
        })
        .ok();
    let service = match &config.push {
        Some(_) => push_service(selected.as_ref().map_or(&[], |s| &s.containers), &target),
        None => Service::PerSeries(String::new()),
    };
    let session = Session {
        config,
        service,
        target,
        filter,
        threads,
        thread_watch,
        maps_watch,
        command,
        containers: selected.map(|s| ContainerWatch::new(&s.containers).follow_pods(s.pods)),
    };
    Ok((session, out))
}

/// The default `service_name` of pushes: what the target is called (its
/// containers, its programs), or each series' own for the whole machine.
fn push_service(containers: &[Container], target: &TargetSpec) -> Service {
    let names: Vec<String> = match target {
        TargetSpec::Containers(_) => containers.iter().map(|c| c.name.clone()).collect(),
        TargetSpec::Pids(pids) => pids
            .iter()
            .filter_map(|&p| crate::proc::read_status(p).ok().map(|s| s.name))
            .collect(),
        TargetSpec::Command(argv) => argv
            .first()
            .and_then(|a| std::path::Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .into_iter()
            .collect(),
        TargetSpec::System => Vec::new(),
    };
    windows::default_service(&names)
}

/// The filter for the recorded containers, saying with -v what was
/// found and when the pid fallback is used.
fn container_filter(containers: &[Container]) -> Filter {
    for c in containers {
        log::info!(
            "container {} ({}, {}): cgroup {}, {} processes",
            c.name,
            c.short_id(),
            c.runtime
                .map_or("unknown runtime".into(), |r| r.to_string()),
            c.cgroup_path,
            c.pids.len()
        );
    }
    let (filter, fallback) = Filter::of_containers(containers);
    if let Some(why) = fallback {
        log::info!("{why}");
    }
    filter
}

/// Polls the recorder until the duration ends, a stop signal arrives or
/// every target has exited.
fn record_until_stopped(
    session: &mut Session<'_>,
    recorder: &mut dyn Recorder,
    mut windows: Option<&mut windows::Windows>,
) -> Recording {
    let config = session.config;
    let start_wall = SystemTime::now();
    let started = Instant::now();
    if let Some(w) = windows.as_deref_mut() {
        w.begin(started, start_wall);
    }
    let progress = progress_bar(config, &session.describe());
    let mut containers_stopped = Vec::new();
    let mut containers_joined = Vec::new();
    let reason = loop {
        if let Some(watch) = session.containers.as_mut() {
            let changes = watch.update();
            let after = started.elapsed();
            containers_stopped.extend(changes.stopped.into_iter().map(|name| (name, after)));
            for c in &changes.new_containers {
                if let Some(why) = add_container(session, recorder, c) {
                    log::warn!("{why}");
                }
                containers_joined.push((c.clone(), after));
            }
            if !changes.joined.is_empty() {
                log::info!("processes joined the containers: {:?}", changes.joined);
                // A filter by pid learns of them here; a cgroup filter
                // covers them already.
                if matches!(session.filter, Filter::Pids { .. }) {
                    for maps in recorder.target_maps() {
                        for &pid in &changes.joined {
                            if let Err(e) = maps.add_process(pid) {
                                log::warn!("pid {pid} is not recorded: {e}");
                            }
                        }
                    }
                }
                recorder.add_processes(&changes.joined);
            }
        }
        let elapsed = started.elapsed();
        if signals::stop_requested() {
            break StopReason::Signal;
        }
        if config.duration.is_some_and(|d| elapsed >= d) {
            break StopReason::Duration;
        }
        if targets_gone(session) {
            break StopReason::TargetsExited;
        }
        let mut until = Instant::now() + POLL_SLICE;
        if let Some(d) = config.duration {
            until = until.min(started + d);
        }
        if let Some(w) = windows.as_deref() {
            until = until.min(w.next_end());
        }
        recorder.poll(until);
        if let Some(watch) = &mut session.thread_watch {
            watch.scan(&recorder.target_maps());
        }
        if let Some(w) = windows.as_deref_mut() {
            // A window that ends with the recording is its last one.
            let last = config.duration.is_some_and(|d| started.elapsed() >= d);
            if Instant::now() >= w.next_end() && !last {
                w.cut(session, recorder);
            }
        }
        if let Some(pb) = &progress {
            pb.set_position(started.elapsed().as_millis() as u64);
            let mut message = recorder.progress();
            if let Some(w) = windows.as_deref() {
                message = format!("{message}; {}", w.progress());
            }
            pb.set_message(message);
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
        containers_stopped,
        containers_joined,
    }
}

/// Adds a container that appeared in a recorded pod to the in-kernel
/// cgroup filter (a filter by pid gets its processes as they join);
/// `Some(why)` when it cannot be recorded.
fn add_container(
    session: &mut Session<'_>,
    recorder: &dyn Recorder,
    c: &Container,
) -> Option<String> {
    let Filter::Cgroups(cgroups) = &mut session.filter else {
        return None;
    };
    let level = crate::container::cgroup::cgroup_level(&c.cgroup_path);
    let why = match c.cgroup_id {
        None => "it has no cgroup of its own in the unified (v2) hierarchy".to_string(),
        Some(_) if !Filter::levels(cgroups).contains(&level) => {
            format!("its cgroup is at depth {level}, where the recording's filter has no container")
        }
        Some(id) => {
            let failed: Vec<String> = recorder
                .target_maps()
                .iter()
                .filter_map(|maps| maps.add_cgroup(id).err().map(|e| e.to_string()))
                .collect();
            if failed.is_empty() {
                cgroups.push(CgroupTarget { id, level });
                return None;
            }
            failed.join("; ")
        }
    };
    Some(format!(
        "container {} ({}) started in a recorded pod but is not recorded: {why}",
        c.name,
        c.short_id()
    ))
}

/// A recording's profile, symbolized, and what its summary says.
struct Done {
    profile: Profile,
    summary: SummaryInfo,
}

/// Symbolizes what was collected (asking JVMs for their perf maps first)
/// into the profile; `None` when nothing was collected and that is
/// normal but nothing can be written (an empty SVG), said on stderr.
fn build_profile(
    session: &Session<'_>,
    rec: &Recording,
    collected: Collected,
) -> Result<Option<Done>> {
    let config = session.config;
    if collected.stacks.is_empty() && !when_empty(config, &collected.when_empty)? {
        return Ok(None);
    }
    let meta = Meta {
        target: session.describe(),
        start_unix_ns: rec.start_unix_ns(),
        duration_ns: rec.recorded.as_nanos() as u64,
        frequency: collected.frequency,
        lost: collected.lost,
        probe: Some(config.probe),
    };
    let mut stacks = collected.stacks;
    let dropped = stacks.dropped;
    let map_events_lost = stacks.table.events_lost;
    let fds_exhausted = stacks.table.fds_exhausted;
    let mut jit = std::mem::take(&mut stacks.jit).finish(&jit_options(config));
    let mut symbolizer = Symbolizer::new();
    jit.install(&mut symbolizer);
    let mut profile = stacks.into_profile(collected.sample_types, meta, &mut symbolizer);
    profile.period = collected.period;
    let mut summary_info = collected.summary;
    loss_notes(&mut summary_info, dropped, map_events_lost, fds_exhausted);
    summary_info.notes.extend(jit.warnings());
    summary_info.quality_notes = jit.quality_lines(&profile);
    Ok(Some(Done {
        profile,
        summary: summary_info,
    }))
}

/// What an empty recording means: an error (Err), or a note said on
/// stderr after which the (empty) output is written, unless it is an SVG
/// (false).
fn when_empty(config: &RecordConfig, when: &WhenEmpty) -> Result<bool> {
    match when {
        WhenEmpty::Error(msg) => bail!("{msg}; nothing written"),
        WhenEmpty::Note(msg) => {
            if !config.quiet {
                eprintln!("flameprobe: {}", text::message(msg));
            }
            if matches!(config.format, Format::Svg | Format::Speedscope) && config.write_output {
                if !config.quiet {
                    let what = match config.format {
                        Format::Svg => "an empty flame graph cannot be drawn",
                        _ => "a speedscope file of no samples cannot be opened",
                    };
                    eprintln!("  {what}: no file written");
                }
                return Ok(false);
            }
            Ok(true)
        }
    }
}

fn jit_options(config: &RecordConfig) -> JitOptions {
    JitOptions {
        attach: config.jit_attach,
        ..JitOptions::default()
    }
}

/// The summary's warnings about what was left out.
fn loss_notes(info: &mut SummaryInfo, dropped: u64, map_events_lost: u64, fds_exhausted: u64) {
    if dropped > 0 {
        info.notes.push(format!(
            "warning: {dropped} events of new stacks were left out: more than {} distinct \
             stacks (memory stays bounded); record fewer targets or for less time",
            crate::stacks::MAX_STACKS
        ));
    }
    if map_events_lost > 0 {
        info.notes.push(format!(
            "warning: {map_events_lost} of the kernel's mmap/fork/exec records were lost (its \
             buffer was full): processes that lived only milliseconds may show [unmapped] frames"
        ));
    }
    if fds_exhausted > 0 {
        info.notes.push(format!(
            "warning: {fds_exhausted} binaries were not opened, so their frames stay \
             unsymbolized: {}",
            crate::limits::exhausted_hint()
        ));
    }
}

/// Writes the output (when there is one), then the summary and the
/// report.
fn write_and_report(
    session: &Session<'_>,
    rec: &Recording,
    done: &Done,
    out: Option<Output>,
    extra: &[String],
) -> Result<()> {
    let config = session.config;
    let profile = &done.profile;
    let report_to_stderr = out.as_ref().is_some_and(Output::shares_stdout);
    let opts = WriteOptions {
        svg: config.svg.clone(),
        folded: FrameNameOptions {
            threads: config.threads,
            group_by: config.group_by,
            ..FrameNameOptions::default()
        },
    };
    let order = output::order_note(profile, config.format, &opts).filter(|_| out.is_some());
    let written = match out {
        Some(out) => {
            output::write(profile, config.format, &opts, out)?;
            log::info!(
                "output written {} ms after recording stopped",
                rec.stopped_at.elapsed().as_millis()
            );
            Some(&config.destination)
        }
        None => None,
    };
    if !config.quiet && !profile.stacks.is_empty() {
        let summary = summary(profile, &done.summary, config.format, written);
        eprint!("{}", text::message(&summary));
    }
    if !config.quiet {
        for line in order.iter().chain(extra) {
            eprintln!("  {}", text::message(line));
        }
    }
    print_report(profile, config, report_to_stderr)
}

/// `record --push` without `--every`: the profile is pushed once it was
/// written (a push that fails never loses the local file; it is an error,
/// exit 1).
fn push_once(
    session: &Session<'_>,
    push: &crate::push::PushConfig,
    profile: &Profile,
) -> Result<()> {
    let config = session.config;
    let labels = push.series_labels(session.service.clone());
    let request = crate::push::build(profile, push, &labels);
    if request.requests.is_empty() {
        if !config.quiet {
            eprintln!("  nothing to push: the profile holds no stack");
        }
        return Ok(());
    }
    let client = push.client();
    match crate::push::send_now(&client, &request) {
        Ok(()) => {
            if !config.quiet {
                eprintln!("  pushed to {} ({})", client.endpoint(), request.describe());
            }
            Ok(())
        }
        Err(e) if config.write_output => {
            bail!("{e}; the profile was written to {}", config.destination)
        }
        Err(e) => Err(e.into()),
    }
}

/// The end of a continuous recording: the last window pushed after the
/// others, the local file (every window merged, with `-o`), the summary
/// with what was pushed. An error when no window reached the receiver.
fn finish_windows(
    session: &Session<'_>,
    rec: &Recording,
    mut collected: Collected,
    windows: windows::Windows,
    out: Option<Output>,
) -> Result<()> {
    let config = session.config;
    let push = config
        .push
        .as_ref()
        .context("continuous mode needs --push")?;
    let dropped = collected.stacks.dropped;
    let map_events_lost = collected.stacks.table.events_lost;
    let fds_exhausted = collected.stacks.table.fds_exhausted;
    let jit = std::mem::take(&mut collected.stacks.jit).finish(&jit_options(config));
    let limit = push.timeout + Duration::from_secs(5);
    let finished = windows.finish(session, rec.recorded, &mut collected, jit, limit)?;
    let mut info = std::mem::take(&mut collected.summary);
    loss_notes(
        &mut info,
        dropped + finished.dropped_stacks,
        map_events_lost,
        fds_exhausted,
    );
    info.notes.extend(finished.jit_warnings.iter().cloned());
    if finished.not_merged > 0 {
        info.notes.push(format!(
            "warning: {} windows were pushed but not added to the local file: it held {} \
             distinct stacks (memory stays bounded)",
            finished.not_merged,
            crate::stacks::MAX_STACKS
        ));
    }
    let pushed = finished.push_line();
    let empty = match &finished.aggregate {
        Some(p) => p.stacks.is_empty(),
        None => finished.windows == 0,
    };
    let write = if empty {
        when_empty(config, &collected.when_empty)?
    } else {
        true
    };
    match finished.aggregate {
        Some(profile) if write => {
            let done = Done {
                profile,
                summary: info,
            };
            write_and_report(session, rec, &done, out, &[pushed])?;
        }
        _ => {
            if !config.quiet {
                eprintln!(
                    "flameprobe: {} from {} in {:.1}s, {} lost",
                    finished.windows_line(),
                    session.describe(),
                    rec.recorded.as_secs_f64(),
                    collected.lost
                );
                for note in &info.notes {
                    eprintln!("  {}", text::message(note));
                }
                eprintln!("  {pushed}");
            }
        }
    }
    if finished.windows > 0 && finished.push.pushed == 0 {
        bail!(
            "no window was pushed to {}{}",
            finished.endpoint,
            finished
                .push
                .last_error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        );
    }
    Ok(())
}

/// `--report`: the top-functions report of the recorded profile, on
/// stdout, or on stderr when stdout carries the profile.
fn print_report(profile: &Profile, config: &RecordConfig, to_stderr: bool) -> Result<()> {
    if !config.report {
        return Ok(());
    }
    let opts = ReportOptions::default();
    let text = report::render_text(profile, &report::build(profile, &opts), &opts);
    if to_stderr {
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

/// Whether every target has gone: the command exited, the processes
/// exited, the containers stopped.
fn targets_gone(session: &mut Session<'_>) -> bool {
    if let Some(watch) = &session.containers {
        return watch.all_stopped();
    }
    match (&session.filter, session.command.as_mut()) {
        (_, Some(cmd)) => cmd.try_wait().is_some(),
        (Filter::Pids { pids, .. }, None) => !pids.iter().any(|&p| crate::proc::process_alive(p)),
        (Filter::All | Filter::Cgroups(_), None) => false,
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

fn progress_bar(config: &RecordConfig, target: &str) -> Option<ProgressBar> {
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
    pb.set_prefix(target.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    Some(pb)
}

/// Stacks listed in a summary that lists stacks.
const SUMMARY_STACKS: usize = 10;

/// The end-of-recording summary for stderr: totals, the recorder's notes,
/// the top functions (or largest stacks), the stack quality and where the
/// output went.
pub(crate) fn summary(
    profile: &Profile,
    info: &SummaryInfo,
    format: Format,
    dest: Option<&Destination>,
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
    for note in &info.notes {
        out.push_str(&format!("  {note}\n"));
    }
    if profile.saturated {
        out.push_str("  warning: some totals exceeded 2^64 and were capped at the maximum\n");
    }
    // Time off the CPU always ends in the scheduler: the top functions
    // would all be kernel ones; the code that waited is above them.
    let waits = matches!(
        profile.meta.probe,
        Some(crate::profile::ProbeKind::Offcpu | crate::profile::ProbeKind::Wall)
    );
    if info.list_stacks {
        out.push_str(&largest_stacks(profile));
    } else if waits {
        out.push_str(&longest_waits(profile));
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
            if top
                .iter()
                .take(5)
                .any(|(n, _)| n.ends_with(crate::profile::INLINED))
            {
                out.push_str(crate::report::INLINED_NOTE);
                out.push('\n');
            }
        }
    }
    let mut quality = crate::quality::assess(profile);
    quality.truncation_hint = info.truncation_hint.clone();
    out.push_str(&quality.to_string());
    for note in &info.quality_notes {
        out.push_str(&format!("  {note}\n"));
    }
    // With reduced privileges: which capability or sysctl names the frames.
    let raw_kernel = profile.locations.iter().any(|l| {
        l.kind == FrameKind::Kernel
            && l.lines
                .first()
                .is_some_and(|l| l.function.starts_with("0x"))
    });
    let hints = [
        raw_kernel.then(crate::doctor::kernel_names_hint).flatten(),
        (!quality.unopened.is_empty())
            .then(crate::doctor::file_access_hint)
            .flatten(),
    ];
    for hint in hints.into_iter().flatten() {
        out.push_str(&format!("  {hint}\n"));
    }
    match dest {
        Some(Destination::Stdout) => out.push_str(&format!(
            "  wrote {} to standard output\n",
            format.description()
        )),
        Some(Destination::File(p)) => out.push_str(&format!("  wrote {}\n", p.display())),
        None => {}
    }
    out
}

/// The largest stacks by the shown value, with their event counts,
/// innermost frames first. Stacks that read the same (several call sites
/// on one line, inlined copies) are merged, as in the folded output.
/// The stacks holding the most time, by their frames outside the kernel
/// (innermost first), for time off the CPU and wall-clock profiles.
fn longest_waits(profile: &Profile) -> String {
    use std::collections::HashMap;
    let (display, events) = (profile.display_index(), profile.events_index());
    let shown = &profile.sample_types[display];
    let names = FrameNameOptions::threads(false);
    let mut merged: HashMap<Vec<String>, (u64, u64)> = HashMap::new();
    for s in &profile.stacks {
        let user: Vec<String> = profile
            .frame_names(s, &names)
            .into_iter()
            .filter(|f| !f.ends_with("_[k]"))
            .collect();
        let e = merged.entry(user).or_default();
        e.0 = e.0.saturating_add(s.values[display]);
        e.1 = e.1.saturating_add(s.values[events]);
    }
    let mut merged: Vec<(Vec<String>, (u64, u64))> = merged.into_iter().collect();
    merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = String::new();
    if !merged.is_empty() {
        out.push_str(&format!(
            "  largest stacks by {} ({}; frames outside the kernel, innermost first):\n",
            shown.name,
            profile.sample_types[events].noun()
        ));
    }
    for (frames, (value, count)) in merged.iter().take(5) {
        let tail: Vec<&str> = frames.iter().rev().take(5).map(String::as_str).collect();
        out.push_str(&format!(
            "  {:>10} {count:>8}  {}\n",
            shown.format(*value),
            tail.join(" <- ")
        ));
    }
    out
}

fn largest_stacks(profile: &Profile) -> String {
    use std::collections::HashMap;
    let (display, events) = (profile.display_index(), profile.events_index());
    let names = FrameNameOptions::threads(false);
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
