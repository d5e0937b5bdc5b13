//! `--probe cpu`: on-CPU samples, unwound as they arrive and aggregated by
//! stack; each sample weighs one sampling period. [`CpuPart`] is also the
//! on-CPU half of `--probe wall`.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::OpenObject;

use super::{Collected, Recorder, Recording, Session, SummaryInfo, Values, WhenEmpty, FINAL_DRAIN};
use crate::probe::cpu::{CpuConfig, CpuProbe, CpuSample, CpuStats};
use crate::probe::enable_bpf_stats;
use crate::probe::targets::TargetMaps;
use crate::probe::Delivery;
use crate::profile::{units, ValueType};
use crate::stacks::{RawStack, StackCollector};
use crate::unwind::{Unwinder, UserSnapshot, MAX_STACK_COPY};

/// The time one sample stands for at `frequency` samples per second.
pub(super) fn period_ns(frequency: u64) -> u64 {
    1_000_000_000 / frequency.max(1)
}

/// The values one sample adds to its stack, given the sampling period.
pub(super) type SampleValues = fn(period_ns: u64) -> Vec<u64>;

/// Turns samples into raw stacks as they arrive.
struct Collector {
    stacks: Rc<RefCell<StackCollector>>,
    unwinder: Unwinder,
    samples: u64,
    /// Nanoseconds one sample stands for.
    period_ns: u64,
    values: SampleValues,
}

impl Collector {
    fn on_sample(&mut self, s: &CpuSample<'_>) {
        self.samples += 1;
        let stacks = &mut *self.stacks.borrow_mut();
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
            self.unwinder.unwind(&snap, &mut stacks.table)
        };
        let user = stacks.resolve_user(pid, &unwound.frames);
        let labels =
            stacks
                .table
                .labels(pid, Some(s.tid()), s.process_name(), Some(s.thread_name()));
        stacks.add_sample(
            RawStack {
                labels,
                kernel: s.kernel_stack().to_vec(),
                user,
                truncated: unwound.truncated,
            },
            &(self.values)(self.period_ns),
            s.timestamp_ns(),
        );
    }
}

/// The attached sampler feeding a stack collector (shared with the other
/// half of a wall-clock recording).
pub(super) struct CpuPart<'obj> {
    probe: CpuProbe<'obj>,
    collector: Rc<RefCell<Collector>>,
    /// Keeps the kernel's BPF run-time statistics on (--bpf-stats).
    stats_guard: Option<OwnedFd>,
}

/// What the sampler reports when it stops.
pub(super) struct CpuOutcome {
    pub lost: u64,
    pub notes: Vec<String>,
    pub truncation_hint: Option<String>,
}

impl<'obj> CpuPart<'obj> {
    /// Attaches the sampler for the session's targets; each sample adds
    /// `values(period)` to its stack in `stacks`.
    pub fn attach(
        session: &Session<'_>,
        storage: &'obj mut MaybeUninit<OpenObject>,
        stacks: Rc<RefCell<StackCollector>>,
        values: SampleValues,
    ) -> Result<Self> {
        let config = session.config;
        let cpu_config = CpuConfig {
            filter: session.filter.clone(),
            threads: session.threads.clone(),
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
            stacks,
            unwinder: Unwinder::new(config.unwind),
            samples: 0,
            period_ns: period_ns(config.frequency),
            values,
        }));
        let stats_guard = if config.bpf_stats {
            Some(enable_bpf_stats().context("enabling BPF run-time statistics")?)
        } else {
            None
        };
        let sink = collector.clone();
        let probe = CpuProbe::attach(storage, &cpu_config, move |s| {
            sink.borrow_mut().on_sample(s)
        })?;
        Ok(CpuPart {
            probe,
            collector,
            stats_guard,
        })
    }

    pub fn poll(&mut self, until: Instant) {
        self.probe.wait(until);
        // Processes' mappings first: the samples queued now came after.
        self.collector.borrow().stacks.borrow_mut().sync();
        self.probe.consume(until);
    }

    pub fn stats(&self) -> CpuStats {
        self.probe.stats()
    }

    pub fn target_maps(&self) -> TargetMaps<'_> {
        self.probe.target_maps()
    }

    /// Stops sampling, takes in what is still queued and says how it went.
    pub fn finish(mut self, session: &Session<'_>) -> CpuOutcome {
        let config = session.config;
        let complete = self.probe.stop(FINAL_DRAIN);
        let stats = self.probe.stats();
        let run_stats = self
            .probe
            .run_stats()
            .filter(|_| self.stats_guard.is_some());
        let samples = self.collector.borrow().samples;
        let mut notes = Vec::new();
        let unread = stats.samples.saturating_sub(stats.lost + samples);
        if !complete && unread > 0 {
            notes.push(format!(
                "warning: {unread} samples were still queued when the recording ended and \
                 were not read (flameprobe could not keep up): lower -F"
            ));
        }
        if stats.lost > 0 {
            notes.push(format!(
                "warning: {} samples were lost (ring buffer full): lower -F or profile fewer targets",
                stats.lost
            ));
        }
        if stats.targets_full > 0 {
            notes.push(format!(
                "warning: {} processes started by the targets were not followed (target table full)",
                stats.targets_full
            ));
        }
        if let Some((runs, ns)) = run_stats {
            // Runs that the target filter rejected cost time too: charge
            // them to the recorded samples.
            notes.push(format!(
                "BPF sampling program: {runs} runs, {} ns per run, {} ns per recorded sample",
                ns.checked_div(runs).unwrap_or(0),
                ns.checked_div(stats.samples).unwrap_or(0)
            ));
        }
        // Only a larger stack copy can help, and only up to its maximum.
        let truncation_hint = (config.unwind.copies_stack() && config.stack_size < MAX_STACK_COPY)
            .then(|| "a larger --stack-size copies more of the stack".to_string());
        CpuOutcome {
            lost: stats.lost + unread,
            notes,
            truncation_hint,
        }
    }
}

/// The values of a CPU profile: samples and their time.
fn values(frequency: u64) -> Values {
    let cpu = ValueType::new("cpu", units::NANOSECONDS);
    Values {
        sample_types: vec![ValueType::new("samples", units::COUNT), cpu.clone()],
        period: Some((cpu, period_ns(frequency))),
        frequency: Some(frequency),
    }
}

struct CpuRecorder<'obj> {
    part: CpuPart<'obj>,
    stacks: Rc<RefCell<StackCollector>>,
}

/// Attaches the sampler for the session's targets.
pub(super) fn attach<'obj>(
    session: &Session<'_>,
    storage: &'obj mut MaybeUninit<OpenObject>,
) -> Result<Box<dyn Recorder + 'obj>> {
    let stacks = Rc::new(RefCell::new(StackCollector::new()));
    let part = CpuPart::attach(session, storage, stacks.clone(), |period| vec![1, period])?;
    Ok(Box::new(CpuRecorder { part, stacks }))
}

impl Recorder for CpuRecorder<'_> {
    fn poll(&mut self, until: Instant) {
        self.part.poll(until);
    }

    fn target_maps(&self) -> Vec<TargetMaps<'_>> {
        vec![self.part.target_maps()]
    }

    fn with_stacks(&self, f: &mut dyn FnMut(&mut StackCollector)) {
        f(&mut self.stacks.borrow_mut())
    }

    fn progress(&self) -> String {
        let stats = self.part.stats();
        format!("{} samples, {} lost", stats.samples, stats.lost)
    }

    /// Samples are in the collector as they arrive: nothing to add.
    fn end_window(&mut self, session: &Session<'_>) -> Result<(Values, u64)> {
        Ok((values(session.config.frequency), self.part.stats().lost))
    }

    fn finish(self: Box<Self>, session: &Session<'_>, rec: &Recording) -> Result<Collected> {
        let CpuRecorder { part, stacks } = *self;
        let out = part.finish(session);
        let stacks = Rc::try_unwrap(stacks)
            .map_err(|_| anyhow::anyhow!("sample collector still shared after detach"))?
            .into_inner();
        let v = values(session.config.frequency);
        Ok(Collected {
            stacks,
            sample_types: v.sample_types,
            period: v.period,
            frequency: v.frequency,
            lost: out.lost,
            summary: SummaryInfo {
                notes: out.notes,
                list_stacks: false,
                truncation_hint: out.truncation_hint,
                ..SummaryInfo::default()
            },
            when_empty: WhenEmpty::Error(format!(
                "no samples were recorded from {} in {:.1}s: it did not run on a CPU \
                 (idle or sleeping? --probe offcpu shows where it waits)",
                session.describe(),
                rec.recorded.as_secs_f64()
            )),
        })
    }
}
