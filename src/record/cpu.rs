//! `--probe cpu`: on-CPU samples, unwound as they arrive and aggregated by
//! stack; each sample weighs one sampling period.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context, Result};
use libbpf_rs::OpenObject;

use super::{Collected, Recorder, Recording, Session, WhenEmpty, FINAL_DRAIN};
use crate::probe::cpu::{CpuConfig, CpuProbe, CpuSample};
use crate::probe::enable_bpf_stats;
use crate::profile::{units, Labels, ValueType};
use crate::stacks::{RawStack, StackCollector};
use crate::unwind::{Unwinder, UserSnapshot};

/// Turns samples into raw stacks as they arrive.
struct Collector {
    stacks: StackCollector,
    unwinder: Unwinder,
    samples: u64,
    /// Nanoseconds one sample stands for.
    period_ns: u64,
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
            &[1, self.period_ns],
        );
    }
}

struct CpuRecorder<'obj> {
    probe: CpuProbe<'obj>,
    collector: Rc<RefCell<Collector>>,
    frequency: u64,
    /// What is recorded, for messages.
    target: String,
    /// Keeps the kernel's BPF run-time statistics on (--bpf-stats).
    stats_guard: Option<OwnedFd>,
}

/// Attaches the sampler for the session's targets.
pub(super) fn attach<'obj>(
    session: &Session<'_>,
    storage: &'obj mut MaybeUninit<OpenObject>,
) -> Result<Box<dyn Recorder + 'obj>> {
    let config = session.config;
    let cpu_config = CpuConfig {
        filter: session.filter.clone(),
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
        period_ns: 1_000_000_000 / config.frequency,
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
    Ok(Box::new(CpuRecorder {
        probe,
        collector,
        frequency: config.frequency,
        target: config.target.describe(),
        stats_guard,
    }))
}

impl Recorder for CpuRecorder<'_> {
    fn poll(&mut self, until: Instant) {
        self.probe.poll_until(until);
        self.collector.borrow_mut().stacks.jit.poll_exits();
    }

    fn progress(&self) -> String {
        let stats = self.probe.stats();
        format!("{} samples, {} lost", stats.samples, stats.lost)
    }

    fn finish(mut self: Box<Self>, rec: &Recording) -> Result<Collected> {
        let complete = self.probe.stop(FINAL_DRAIN);
        let stats = self.probe.stats();
        let run_stats = self
            .probe
            .run_stats()
            .filter(|_| self.stats_guard.is_some());
        let CpuRecorder {
            probe,
            collector,
            frequency,
            target,
            ..
        } = *self;
        drop(probe);
        let collector = Rc::try_unwrap(collector)
            .map_err(|_| anyhow::anyhow!("sample collector still shared after detach"))?
            .into_inner();

        let mut notes = Vec::new();
        let unread = stats.samples.saturating_sub(stats.lost + collector.samples);
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
        let cpu = ValueType::new("cpu", units::NANOSECONDS);
        let period = collector.period_ns;
        Ok(Collected {
            stacks: collector.stacks,
            sample_types: vec![ValueType::new("samples", units::COUNT), cpu.clone()],
            period: Some((cpu, period)),
            frequency: Some(frequency),
            lost: stats.lost + unread,
            notes,
            list_stacks: false,
            when_empty: WhenEmpty::Error(format!(
                "no samples were recorded from {} in {:.1}s: it did not run on a CPU \
                 (idle or sleeping?)",
                target,
                rec.recorded.as_secs_f64()
            )),
        })
    }
}
