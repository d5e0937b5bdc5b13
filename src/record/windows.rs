//! Continuous mode (`record --push URL --every 15s`): the recording is
//! cut into windows while every probe stays attached, and each window is
//! pushed as it ends.
//!
//! ```text
//! recording thread  poll ... window ends: recorder.end_window (the
//!                   kernel's aggregates into the collector), then the
//!                   collector's stacks taken -> channel (bounded; a
//!                   window that finds it full is dropped, counted)
//! window thread     symbolize -> Profile (meta: the window's from/until)
//!                   -> the local file's aggregate (-o) -> push::build
//!                   -> sender
//! sender thread     push, retry with backoff, bounded spool (push::sender)
//! ```
//!
//! Window `i` covers `[start + i * every, start + (i + 1) * every)` in wall
//! time, so consecutive windows meet exactly; the last one ends with the
//! recording. Samples queued in a ring buffer when a window ends go into
//! the next one (they are never lost, at most one poll late). Memory stays
//! bounded: a window's stacks leave the recording thread with it, and
//! processes gone for a whole window are forgotten (process table, JIT
//! tracker, the kernel-aggregating probes' tables).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use super::{Collected, Recorder, Session, Values};
use crate::jit::tracker::JitMaps;
use crate::profile::{Meta, Profile};
use crate::push::sender::{Job, Sender, SenderStats};
use crate::push::series::{SeriesLabels, Service};
use crate::push::PushConfig;
use crate::stacks::{WindowStacks, MAX_STACKS};
use crate::symbolize::Symbolizer;

/// Cached symbols past which the window thread starts a new symbolizer
/// (memory stays bounded; each start costs a re-read of the binaries).
const SYMBOLIZER_LIMIT: usize = 1 << 21;

/// How long a window's end waits for what the probes queued before it.
const CATCH_UP: Duration = Duration::from_millis(10);

/// A window on its way to the window thread.
struct WindowJob {
    stacks: WindowStacks,
    jit: JitMaps,
    values: Values,
    meta: Meta,
    /// The window's number, from 1.
    index: u64,
}

/// What the window thread hands back at the end.
struct WindowResults {
    /// Every window merged (sums; the last window for leak profiles,
    /// whose windows are snapshots), when a local file is written.
    aggregate: Option<Profile>,
    /// Windows with something in them, and pushed or queued.
    windows: u64,
    /// Events left out because a window held the most distinct stacks.
    dropped_stacks: u64,
    /// Windows not merged into the local file (it held the most stacks).
    not_merged: u64,
    /// The last window's JIT warnings (JVMs that did not write a map).
    jit_warnings: Vec<String>,
}

/// The windows of a continuous recording.
pub(super) struct Windows {
    every: Duration,
    started: Instant,
    start_wall: SystemTime,
    /// Windows ended so far.
    ended: u64,
    lost_before: u64,
    /// None once the window thread is gone (it failed).
    jobs: Option<SyncSender<WindowJob>>,
    worker: Option<JoinHandle<WindowResults>>,
    sender: Sender,
    /// Windows dropped because the window thread was behind.
    behind: u64,
    endpoint: String,
}

impl Windows {
    /// Starts the window and sender threads.
    pub fn start(
        session: &Session<'_>,
        push: &PushConfig,
        labels: SeriesLabels,
    ) -> Result<Windows> {
        let every = session
            .config
            .every
            .context("continuous mode needs --every")?;
        let sender = Sender::start(push.client(), push.spool)
            .context("starting the thread that pushes windows")?;
        let (tx, rx) = mpsc::sync_channel(push.spool);
        let config = push.clone();
        let merge = session.config.write_output;
        let gauge = matches!(
            session.config.probe,
            crate::config::ProbeKind::Memleak | crate::config::ProbeKind::Kmemleak
        );
        let submit = sender.handle();
        let worker = std::thread::Builder::new()
            .name("flameprobe-windows".into())
            .spawn(move || window_thread(rx, &config, &labels, merge, gauge, &submit))
            .context("starting the thread that prepares windows")?;
        Ok(Windows {
            every,
            started: Instant::now(),
            start_wall: SystemTime::now(),
            ended: 0,
            lost_before: 0,
            jobs: Some(tx),
            worker: Some(worker),
            sender,
            behind: 0,
            endpoint: push.endpoint.to_string(),
        })
    }

    /// The recording starts: at `started`, `start_wall` in wall time.
    pub fn begin(&mut self, started: Instant, start_wall: SystemTime) {
        (self.started, self.start_wall) = (started, start_wall);
    }

    /// When the current window ends.
    pub fn next_end(&self) -> Instant {
        self.started + self.every * (self.ended as u32 + 1)
    }

    /// The wall time `n` windows after the start.
    fn boundary(&self, n: u64) -> SystemTime {
        self.start_wall + self.every * n as u32
    }

    /// Ends the current window: the recorder adds what the kernel holds,
    /// the stacks are taken, processes gone for a window forgotten, and
    /// the window goes to the window thread.
    pub fn cut(&mut self, session: &Session<'_>, recorder: &mut dyn Recorder) {
        // What is queued now belongs to this window.
        recorder.poll(Instant::now() + CATCH_UP);
        let (values, lost) = match recorder.end_window(session) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("window {} could not be taken: {e:#}", self.ended + 1);
                self.ended += 1;
                return;
            }
        };
        let (from, until) = (self.boundary(self.ended), self.boundary(self.ended + 1));
        self.ended += 1;
        let mut taken = None;
        recorder.with_stacks(&mut |stacks| {
            let jit = stacks.jit.window();
            let window = stacks.take_window();
            let forgotten = stacks.table.forget_gone();
            if forgotten > 0 {
                log::debug!("forgot {forgotten} processes that are gone");
            }
            taken = Some((window, jit));
        });
        let Some((stacks, jit)) = taken else { return };
        let meta = self.meta(session, from, until, lost);
        self.send(WindowJob {
            stacks,
            jit,
            values,
            meta,
            index: self.ended,
        });
    }

    fn meta(
        &mut self,
        session: &Session<'_>,
        from: SystemTime,
        until: SystemTime,
        lost: u64,
    ) -> Meta {
        let ns = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        };
        let meta = Meta {
            target: session.describe(),
            start_unix_ns: ns(from),
            duration_ns: ns(until).saturating_sub(ns(from)),
            frequency: None,
            lost: lost.saturating_sub(self.lost_before),
            probe: Some(session.config.probe),
        };
        self.lost_before = self.lost_before.max(lost);
        meta
    }

    fn send(&mut self, job: WindowJob) {
        let Some(tx) = &self.jobs else { return };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                self.behind += 1;
                log::warn!(
                    "window {} dropped: the windows before it are still being prepared \
                     ({} dropped so far)",
                    job.index,
                    self.behind
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                log::warn!("the thread preparing windows has stopped: no more windows are pushed");
                self.jobs = None;
            }
        }
    }

    /// Progress line: windows pushed and waiting.
    pub fn progress(&self) -> String {
        let s = self.sender.stats();
        format!(
            "window {}, {} pushed, {} waiting",
            self.ended + 1,
            s.pushed,
            self.sender.waiting()
        )
    }

    /// The end of the recording: `collected` (what the recorder's finish
    /// handed over, what no window took) is the last window, up to
    /// `recorded`; it is pushed after the others, and what is still queued
    /// gets `push_limit` to go. Returns the local file's profile (every
    /// window merged) and how the pushes went.
    pub fn finish(
        mut self,
        session: &Session<'_>,
        recorded: Duration,
        collected: &mut Collected,
        jit: JitMaps,
        push_limit: Duration,
    ) -> Result<Finished> {
        let from = self.boundary(self.ended);
        let until = self.start_wall + recorded;
        let meta = self.meta(session, from.min(until), until, collected.lost);
        self.ended += 1;
        let values = Values {
            sample_types: collected.sample_types.clone(),
            period: collected.period.clone(),
            frequency: collected.frequency,
        };
        let stacks = collected.stacks.take_window();
        let job = WindowJob {
            stacks,
            jit,
            values,
            meta,
            index: self.ended,
        };
        // The last window waits for room: sampling has stopped.
        if let Some(tx) = self.jobs.take() {
            if tx.send(job).is_err() {
                log::warn!("the last window could not be prepared");
            }
        }
        let results = match self.worker.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => anyhow::bail!("the thread preparing windows failed"),
        };
        let stats = self.sender.finish(push_limit);
        Ok(Finished {
            aggregate: results.aggregate,
            windows: results.windows,
            dropped_stacks: results.dropped_stacks,
            not_merged: results.not_merged,
            behind: self.behind,
            jit_warnings: results.jit_warnings,
            push: stats,
            endpoint: self.endpoint,
        })
    }
}

/// How a continuous recording ended.
pub(super) struct Finished {
    pub aggregate: Option<Profile>,
    pub windows: u64,
    pub dropped_stacks: u64,
    pub not_merged: u64,
    pub behind: u64,
    pub jit_warnings: Vec<String>,
    pub push: SenderStats,
    pub endpoint: String,
}

impl Finished {
    /// The headline without a local profile: windows pushed.
    pub fn windows_line(&self) -> String {
        format!("{} windows with samples", self.windows)
    }

    /// The summary's line about the pushes.
    pub fn push_line(&self) -> String {
        let s = &self.push;
        let mut line = format!(
            "pushed {} of {} windows to {}",
            s.pushed, self.windows, self.endpoint
        );
        let mut parts = Vec::new();
        if s.retried > 0 {
            parts.push(format!("{} retries", s.retried));
        }
        if s.dropped + self.behind > 0 {
            parts.push(format!(
                "{} dropped from the full spool",
                s.dropped + self.behind
            ));
        }
        if s.failed > 0 {
            parts.push(format!("{} failed", s.failed));
        }
        if !parts.is_empty() {
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        if s.pushed < self.windows {
            if let Some(e) = &s.last_error {
                line.push_str(&format!("; last error: {e}"));
            }
        }
        line
    }
}

/// The window thread: each window symbolized, merged into the local
/// file's profile, pushed.
fn window_thread(
    rx: Receiver<WindowJob>,
    config: &PushConfig,
    labels: &SeriesLabels,
    merge: bool,
    gauge: bool,
    sender: &crate::push::sender::Submit,
) -> WindowResults {
    let mut symbolizer = Symbolizer::new();
    let mut results = WindowResults {
        aggregate: None,
        windows: 0,
        dropped_stacks: 0,
        not_merged: 0,
        jit_warnings: Vec::new(),
    };
    for mut job in rx {
        if symbolizer.cached() > SYMBOLIZER_LIMIT {
            symbolizer = Symbolizer::new();
        }
        results.dropped_stacks += job.stacks.dropped;
        let empty = job.stacks.is_empty();
        job.jit.install(&mut symbolizer);
        results.jit_warnings = job.jit.warnings();
        let mut meta = job.meta;
        meta.frequency = job.values.frequency;
        let mut profile = job
            .stacks
            .into_profile(job.values.sample_types, meta, &mut symbolizer);
        profile.period = job.values.period;
        if merge {
            match results.aggregate.as_mut() {
                Some(all) if gauge => {
                    // A leak window is a snapshot: the last one stands.
                    let (start, _) = crate::push::time_range(all);
                    let (_, end) = crate::push::time_range(&profile);
                    *all = profile.clone();
                    all.meta.start_unix_ns = start;
                    all.meta.duration_ns = end.saturating_sub(start);
                }
                Some(all) if all.stacks.len() >= MAX_STACKS => results.not_merged += 1,
                Some(all) => {
                    all.extend_from(&profile, |_| true);
                    let (start, _) = crate::push::time_range(all);
                    let (_, end) = crate::push::time_range(&profile);
                    all.meta.duration_ns = end.saturating_sub(start);
                    all.meta.lost += profile.meta.lost;
                }
                None => results.aggregate = Some(profile.clone()),
            }
        }
        if empty {
            log::info!("window {} recorded nothing: not pushed", job.index);
            continue;
        }
        let push = crate::push::build(&profile, config, labels);
        results.windows += 1;
        log::info!("window {}: {}", job.index, push.describe());
        let (from, until) = crate::push::time_range(&profile);
        sender.submit(Job {
            push,
            what: format!("window {} ({})", job.index, span(from, until)),
        });
    }
    results
}

/// A window's span for messages: `12:00:30-12:00:45` (UTC).
fn span(from_ns: u64, until_ns: u64) -> String {
    let t = |ns: u64| {
        let s = ns / 1_000_000_000 % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    format!("{}-{} UTC", t(from_ns), t(until_ns))
}

/// The default service of a recording's pushes, from what it records.
pub(super) fn default_service(names: &[String]) -> Service {
    crate::push::series::service_for_target(names, &crate::push::series::hostname())
}
