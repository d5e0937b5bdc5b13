//! `--probe wall`: wall-clock time per thread, in nanoseconds: on-CPU
//! samples at `-F` (each worth its sampling period) plus the time off the
//! CPU, in one profile, so a slow request's time splits into computing and
//! waiting. Off-CPU stacks end in the kernel's scheduler frames.
//!
//! Each stack carries four values: `wall` (both), `cpu` (on-CPU samples),
//! `offcpu` (time off the CPU) and `events` (samples plus episodes off the
//! CPU), so reports can split any node or thread.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Result;
use libbpf_rs::OpenObject;

use super::cpu::CpuPart;
use super::offcpu::OffcpuPart;
use super::{Collected, Recorder, Recording, Session, SummaryInfo, Values, WhenEmpty};
use crate::probe::targets::TargetMaps;
use crate::profile::{units, ValueType};
use crate::stacks::StackCollector;

/// What time off the CPU adds to a stack: wall, no cpu, offcpu, events.
fn off_cpu_values(ns: u64, count: u64) -> Vec<u64> {
    vec![ns, 0, ns, count]
}

/// The values of a wall-clock profile.
fn values(frequency: u64) -> Values {
    Values {
        sample_types: vec![
            ValueType::new("wall", units::NANOSECONDS),
            ValueType::new("cpu", units::NANOSECONDS),
            ValueType::new("offcpu", units::NANOSECONDS),
            ValueType::new("events", units::COUNT),
        ],
        // The on-CPU half is sampled: each sample stands for a period.
        period: Some((
            ValueType::new("cpu", units::NANOSECONDS),
            super::cpu::period_ns(frequency),
        )),
        frequency: Some(frequency),
    }
}

struct WallRecorder<'obj> {
    cpu: CpuPart<'obj>,
    offcpu: OffcpuPart<'obj>,
    stacks: Rc<RefCell<StackCollector>>,
}

/// Attaches the sampler and the sched_switch program for the session's
/// targets, both feeding one stack collector.
pub(super) fn attach<'obj>(
    session: &Session<'_>,
    cpu_storage: &'obj mut MaybeUninit<OpenObject>,
    offcpu_storage: &'obj mut MaybeUninit<OpenObject>,
) -> Result<Box<dyn Recorder + 'obj>> {
    let stacks = Rc::new(RefCell::new(StackCollector::new()));
    let offcpu = OffcpuPart::attach(session, offcpu_storage, stacks.clone())?;
    let cpu = CpuPart::attach(session, cpu_storage, stacks.clone(), |period| {
        vec![period, period, 0, 1]
    })?;
    Ok(Box::new(WallRecorder {
        cpu,
        offcpu,
        stacks,
    }))
}

impl Recorder for WallRecorder<'_> {
    fn poll(&mut self, until: Instant) {
        // Waits on the samples, the busy stream; stacks off the CPU come
        // once each and are taken as they are.
        self.cpu.poll(until);
        self.offcpu.consume(until);
    }

    fn with_stacks(&self, f: &mut dyn FnMut(&mut StackCollector)) {
        f(&mut self.stacks.borrow_mut())
    }

    fn target_maps(&self) -> Vec<TargetMaps<'_>> {
        vec![self.cpu.target_maps(), self.offcpu.target_maps()]
    }

    fn progress(&self) -> String {
        let (c, o) = (self.cpu.stats(), self.offcpu.stats());
        format!(
            "{} samples, {} times off the CPU, {} lost",
            c.samples,
            o.switches,
            c.lost + o.lost()
        )
    }

    fn end_window(&mut self, session: &Session<'_>) -> Result<(Values, u64)> {
        self.offcpu.end_window(session.config, off_cpu_values);
        let lost = self.cpu.stats().lost + self.offcpu.stats().lost();
        Ok((values(session.config.frequency), lost))
    }

    fn finish(self: Box<Self>, session: &Session<'_>, rec: &Recording) -> Result<Collected> {
        let WallRecorder {
            cpu,
            offcpu,
            stacks,
        } = *self;
        let on = cpu.finish(session);
        let off = offcpu.finish(session.config, off_cpu_values);
        let stacks = Rc::try_unwrap(stacks)
            .map_err(|_| anyhow::anyhow!("stack collector still shared after detach"))?
            .into_inner();
        let mut notes = on.notes;
        notes.extend(off.notes);
        let v = values(session.config.frequency);
        Ok(Collected {
            stacks,
            sample_types: v.sample_types,
            period: v.period,
            frequency: v.frequency,
            lost: on.lost + off.lost,
            summary: SummaryInfo {
                notes,
                list_stacks: false,
                truncation_hint: on.truncation_hint,
                ..SummaryInfo::default()
            },
            when_empty: WhenEmpty::Error(format!(
                "nothing was recorded from {} in {:.1}s",
                session.describe(),
                rec.recorded.as_secs_f64()
            )),
        })
    }
}
