//! Samples in the order they were taken: part of the profile model
//! ([`Profile::timeline`]), beside the aggregated stacks.
//!
//! Probes that stream samples (cpu, and the on-CPU half of wall) note each
//! sample's time, thread and stack here as well as adding it to its stack's
//! totals; probes that aggregate in the kernel (memleak, offcpu) have no
//! per-sample times and leave it empty, as do converted files. Aggregating
//! outputs (folded, pprof, SVG flame graphs, reports) read the stacks and
//! ignore it; the time-ordered views (speedscope, `--flamechart`) read both
//! through [`by_thread`]: a thread's samples in time order, then whatever
//! its stacks hold beyond them, merged.
//!
//! Memory is bounded: a timeline holds at most [`MAX_TIMED_SAMPLES`]
//! samples (16 bytes each); later ones only add to the stacks and are
//! counted in [`Timeline::left_out`].

use std::collections::{BTreeMap, HashMap};

use crate::profile::{Labels, Profile};

/// Most samples a timeline holds (16 MiB): at 99 Hz on 64 CPUs, about
/// 2.75 minutes of samples; the rest are merged by stack after them.
pub const MAX_TIMED_SAMPLES: usize = 1 << 20;

/// One sample: when, which stack, what it added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimedSample {
    /// CLOCK_MONOTONIC nanoseconds.
    time_ns: u64,
    /// Index of the stack (in the collector or in [`Profile::stacks`]).
    stack: u32,
    /// Index into [`Timeline::values`].
    values: u32,
}

/// Samples in arrival order, with their times.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    samples: Vec<TimedSample>,
    /// The distinct value lists samples added (a probe adds the same one
    /// per sample: `[1, period]`), one per sample type of the profile.
    values: Vec<Vec<u64>>,
    value_ids: HashMap<Vec<u64>, u32>,
    /// Samples that were not kept (beyond the limit): their values are in
    /// their stacks only.
    pub left_out: u64,
    /// Most samples held ([`MAX_TIMED_SAMPLES`] unless set).
    limit: Option<usize>,
}

impl Timeline {
    /// A timeline holding at most `limit` samples.
    pub fn with_limit(limit: usize) -> Self {
        Timeline {
            limit: Some(limit),
            ..Self::default()
        }
    }

    fn limit(&self) -> usize {
        self.limit.unwrap_or(MAX_TIMED_SAMPLES)
    }

    /// Notes a sample of stack `stack` at `time_ns` that added `values`;
    /// beyond the limit it is only counted.
    pub fn push(&mut self, time_ns: u64, stack: usize, values: &[u64]) {
        let Ok(stack) = u32::try_from(stack) else {
            self.left_out += 1;
            return;
        };
        if self.samples.len() >= self.limit() {
            self.left_out += 1;
            return;
        }
        let values = match self.value_ids.get(values) {
            Some(&id) => id,
            None => {
                let id = self.values.len() as u32;
                self.values.push(values.to_vec());
                self.value_ids.insert(values.to_vec(), id);
                id
            }
        };
        self.samples.push(TimedSample {
            time_ns,
            stack,
            values,
        });
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Samples as (time, stack index, values), in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, usize, &[u64])> + '_ {
        self.samples.iter().map(|s| {
            (
                s.time_ns,
                s.stack as usize,
                self.values[s.values as usize].as_slice(),
            )
        })
    }

    /// Hands over the samples so far and starts over with none (the
    /// limit stays): continuous mode's windows.
    pub fn take(&mut self) -> Timeline {
        let limit = self.limit;
        let mut taken = std::mem::take(self);
        self.limit = limit;
        taken.limit = limit;
        taken
    }

    /// Adds the samples of `other` whose stack `map` takes to a stack
    /// here (stack indices of `other` -> indices here), up to the limit.
    pub fn extend_mapped(&mut self, other: &Timeline, map: impl Fn(usize) -> Option<usize>) {
        for (time, stack, values) in other.iter() {
            if let Some(to) = map(stack) {
                self.push(time, to, values);
            }
        }
        self.left_out += other.left_out;
    }
}

/// One thread's samples for a time-ordered view: first those with times,
/// in time order, then what its stacks hold beyond them (everything, for
/// profiles without a timeline), merged by stack, heaviest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadSamples {
    pub labels: Labels,
    /// (stack index, weight), time-ordered part first.
    pub samples: Vec<(usize, u64)>,
    /// Times of the first `times.len()` samples (CLOCK_MONOTONIC ns).
    pub times: Vec<u64>,
}

impl ThreadSamples {
    /// Samples in time order (the rest are merged).
    pub fn timed(&self) -> usize {
        self.times.len()
    }

    pub fn total(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |sum, (_, w)| sum.saturating_add(*w))
    }
}

/// The samples of every thread of `profile`, weighed by value `index`, in
/// the order of the threads' labels (pid, tid, ...). Samples and stacks of
/// weight 0 are left out, and so are threads with nothing.
pub fn by_thread(profile: &Profile, index: usize) -> Vec<ThreadSamples> {
    /// A thread's (time, stack, weight) samples and (stack, rest) stacks.
    type Parts = (Vec<(u64, usize, u64)>, Vec<(usize, u64)>);
    let mut threads: BTreeMap<&Labels, Parts> = BTreeMap::new();
    let mut timed_sum = vec![0u64; profile.stacks.len()];
    for (time, stack, values) in profile.timeline.iter() {
        let (Some(s), Some(&w)) = (profile.stacks.get(stack), values.get(index)) else {
            continue;
        };
        timed_sum[stack] = timed_sum[stack].saturating_add(w);
        if w > 0 {
            threads
                .entry(&s.labels)
                .or_default()
                .0
                .push((time, stack, w));
        }
    }
    for (i, s) in profile.stacks.iter().enumerate() {
        let rest = s.values[index].saturating_sub(timed_sum[i]);
        if rest > 0 {
            threads.entry(&s.labels).or_default().1.push((i, rest));
        }
    }
    threads
        .into_iter()
        .map(|(labels, (mut timed, mut merged))| {
            // Samples arrive from every CPU through one buffer: nearly, not
            // exactly, in time order.
            timed.sort_by_key(|&(t, _, _)| t);
            merged.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let times = timed.iter().map(|&(t, _, _)| t).collect();
            let mut samples: Vec<(usize, u64)> = timed.iter().map(|&(_, s, w)| (s, w)).collect();
            samples.extend(merged);
            ThreadSamples {
                labels: labels.clone(),
                samples,
                times,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{units, FrameKind, Meta, ValueType};

    #[test]
    fn holds_samples_up_to_its_limit_and_counts_the_rest() {
        let mut t = Timeline::with_limit(2);
        t.push(10, 0, &[1, 100]);
        t.push(20, 1, &[1, 100]);
        t.push(30, 0, &[1, 100]);
        assert_eq!((t.len(), t.left_out), (2, 1));
        assert_eq!(t.values.len(), 1, "equal value lists are stored once");
        let got: Vec<(u64, usize, Vec<u64>)> =
            t.iter().map(|(a, b, c)| (a, b, c.to_vec())).collect();
        assert_eq!(got, [(10, 0, vec![1, 100]), (20, 1, vec![1, 100])]);
        let taken = t.take();
        assert_eq!(
            (taken.len(), taken.left_out, t.len(), t.left_out),
            (2, 1, 0, 0)
        );
        t.push(1, 0, &[1]);
        t.push(2, 0, &[1]);
        t.push(3, 0, &[1]);
        assert_eq!(t.left_out, 1, "the limit survives take");
        let mut all = Timeline::default();
        all.extend_mapped(&taken, |s| (s == 1).then_some(7));
        assert_eq!(all.iter().map(|(_, s, _)| s).collect::<Vec<_>>(), [7]);
        assert_eq!(all.left_out, 1);
    }

    fn thread(tid: u32) -> Labels {
        Labels {
            pid: Some(1),
            tid: Some(tid),
            process: Some("app".into()),
            thread: Some(format!("t{tid}")),
            ..Labels::default()
        }
    }

    #[test]
    fn threads_get_timed_samples_in_order_then_the_rest_merged() {
        let mut p = Profile::new(
            vec![
                ValueType::new("samples", units::COUNT),
                ValueType::new("cpu", units::NANOSECONDS),
            ],
            Meta::default(),
        );
        let a = p.intern_named(FrameKind::User, "a");
        let b = p.intern_named(FrameKind::User, "b");
        let c = p.intern_named(FrameKind::User, "c");
        let sa = p.add(thread(2), vec![a], &[2, 20]);
        let sb = p.add(thread(2), vec![b], &[3, 30]);
        let sc = p.add(thread(3), vec![c], &[1, 10]);
        // Out of order across CPUs; b's third sample was not kept.
        p.timeline.push(300, sa, &[1, 10]);
        p.timeline.push(100, sb, &[1, 10]);
        p.timeline.push(200, sa, &[1, 10]);
        p.timeline.push(250, sb, &[1, 10]);
        p.timeline.push(150, sc, &[1, 10]);
        let threads = by_thread(&p, 1);
        assert_eq!(threads.len(), 2);
        assert_eq!(threads[0].labels.tid, Some(2));
        assert_eq!(threads[0].times, [100, 200, 250, 300]);
        assert_eq!(
            threads[0].samples,
            [(sb, 10), (sa, 10), (sb, 10), (sa, 10), (sb, 10)]
        );
        assert_eq!(threads[0].total(), 50);
        assert_eq!(threads[1].samples, [(sc, 10)]);
        // Without a timeline: merged, heaviest first.
        p.timeline = Timeline::default();
        let threads = by_thread(&p, 0);
        assert_eq!(threads[0].samples, [(sb, 3), (sa, 2)]);
        assert_eq!(threads[0].timed(), 0);
    }
}
