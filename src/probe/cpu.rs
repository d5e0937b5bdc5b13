//! On-CPU sampling: a perf_event BPF program on every online CPU streams one
//! record per sample through a ring buffer.

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, IntoRawFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};

use super::c_string;
use super::perf;
use super::profile_skel::{types, ProfileSkel, ProfileSkelBuilder};
use super::ring::{Delivery, Ring};
use super::setup::{self, load_reporting, percpu_counter, request_verifier_stats, ProbeError};
use super::targets::{
    self, autoload_target_tracking, set_filter_rodata, target_maps_of, TargetMaps,
};
use crate::target::{Filter, ThreadFilter};
use crate::unwind::{UserRegs, MAX_STACK_COPY, STACK_COPY_PAGE};

/// Settings of one recording.
#[derive(Clone, Debug)]
pub struct CpuConfig {
    pub filter: Filter,
    pub threads: ThreadFilter,
    pub include_idle: bool,
    pub frequency: u64,
    /// Bytes of user stack copied per sample (0 = none, frame pointers only).
    pub stack_copy_size: u32,
    /// Walk user frame pointers in the kernel.
    pub fp_user_stack: bool,
}

/// One sample as the BPF program recorded it.
pub struct CpuSample<'a> {
    hdr: types::sample_hdr,
    stack: &'a [u8],
}

impl<'a> CpuSample<'a> {
    /// Parses a ring-buffer record; `None` if it is not a CPU sample.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let size = std::mem::size_of::<types::sample_hdr>();
        if data.len() < size {
            return None;
        }
        // SAFETY: the record is at least as long as the header, which is a
        // plain-old-data type generated from the program's BTF.
        let hdr: types::sample_hdr = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
        if hdr.kind != types::record_kind::RECORD_CPU_SAMPLE.0 {
            return None;
        }
        let copied = (hdr.stack_copy_len as usize).min(data.len() - size);
        Some(CpuSample {
            hdr,
            stack: &data[size..size + copied],
        })
    }

    pub fn pid(&self) -> u32 {
        self.hdr.pid
    }
    pub fn tid(&self) -> u32 {
        self.hdr.tid
    }
    pub fn timestamp_ns(&self) -> u64 {
        self.hdr.ts
    }
    pub fn cgroup_id(&self) -> u64 {
        self.hdr.cgroup_id
    }
    /// Thread name.
    pub fn thread_name(&self) -> String {
        c_string(&self.hdr.comm)
    }
    /// Process (thread group leader) name.
    pub fn process_name(&self) -> String {
        c_string(&self.hdr.proc_comm)
    }
    /// Kernel return addresses, leaf first.
    pub fn kernel_stack(&self) -> &[u64] {
        stack_slice(&self.hdr.kstack, self.hdr.kstack_len)
    }
    /// User return addresses from frame-pointer walking, leaf first.
    pub fn user_fp_stack(&self) -> &[u64] {
        stack_slice(&self.hdr.ustack, self.hdr.ustack_len)
    }
    pub fn is_kernel_thread(&self) -> bool {
        self.hdr.flags & types::sample_flags::SAMPLE_KERNEL_THREAD.0 != 0
    }
    /// User registers (ip, sp, bp) when the task has a user context.
    pub fn user_regs(&self) -> Option<UserRegs> {
        (self.hdr.flags & types::sample_flags::SAMPLE_USER_REGS.0 != 0).then_some(UserRegs {
            ip: self.hdr.ip,
            sp: self.hdr.sp,
            bp: self.hdr.bp,
        })
    }
    /// Bytes copied from the user stack, starting at `user_regs().sp`.
    pub fn user_stack_bytes(&self) -> &'a [u8] {
        self.stack
    }
    /// The stack copy ended where the stack's mapping ends.
    pub fn stack_ends_in_copy(&self) -> bool {
        self.hdr.flags & types::sample_flags::SAMPLE_STACK_END.0 != 0
    }
}

fn stack_slice(stack: &[u64], len_bytes: i32) -> &[u64] {
    let n = usize::try_from(len_bytes).unwrap_or(0) / 8;
    &stack[..n.min(stack.len())]
}

/// Counters kept by the BPF program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Samples that passed the target filter.
    pub samples: u64,
    /// Samples dropped because the ring buffer was full.
    pub lost: u64,
    /// Samples whose user stack could not be copied.
    pub copy_failed: u64,
    /// Processes started by targets that could not be followed.
    pub targets_full: u64,
}

/// An attached on-CPU sampler; detaches when dropped.
pub struct CpuProbe<'obj> {
    skel: ProfileSkel<'obj>,
    ring: Ring<'obj>,
    // Dropped after `ring` and before `skel`; each perf event link also
    // owns (and closes) its perf event.
    links: Vec<Link>,
}

impl<'obj> Delivery<'obj> for CpuProbe<'obj> {
    fn ring(&self) -> &Ring<'obj> {
        &self.ring
    }

    fn links(&mut self) -> &mut Vec<Link> {
        &mut self.links
    }
}

impl<'obj> CpuProbe<'obj> {
    /// Loads and attaches the sampler. `on_sample` receives every record.
    pub fn attach(
        storage: &'obj mut MaybeUninit<OpenObject>,
        config: &CpuConfig,
        mut on_sample: impl FnMut(&CpuSample<'_>) + 'obj,
    ) -> Result<Self, ProbeError> {
        let mut open = ProfileSkelBuilder::default()
            .open(storage)
            .map_err(ProbeError::load)?;
        // Half a second of samples fits; the reader drains it at least
        // every 100 ms and is woken early only past a quarter of it.
        let ring_bytes = ring_buffer_bytes(config);
        {
            let rodata = setup::rodata(open.maps.rodata_data.as_deref_mut())?;
            set_filter_rodata!(rodata, &config.filter, &config.threads);
            rodata.include_idle = config.include_idle;
            rodata.stack_copy_size = stack_copy_size(config.stack_copy_size);
            rodata.fp_user_stack = config.fp_user_stack;
            rodata.wakeup_bytes = u64::from(ring_bytes / 4);
        }
        open.maps
            .events
            .set_max_entries(ring_bytes)
            .map_err(ProbeError::load)?;
        autoload_target_tracking!(open.progs, &config.filter);
        request_verifier_stats(open.open_object_mut());
        let skel = load_reporting("cpu", || open.load()).map_err(ProbeError::load)?;

        let p = &skel.progs;
        let mut links = targets::start(
            &target_maps_of!(skel.maps),
            &p.on_fork,
            &p.on_exit,
            &config.filter,
            &config.threads,
        )?;
        let cpus = perf::online_cpus().map_err(|e| ProbeError::attach("online CPUs", &e))?;
        for cpu in cpus {
            let fd = perf::open_cpu_clock(cpu, config.frequency)
                .map_err(|e| ProbeError::attach(&format!("perf event on CPU {cpu}"), &e))?;
            links.push(
                skel.progs
                    .on_cpu_sample
                    .attach_perf_event(fd.as_raw_fd())
                    .map_err(|e| ProbeError::attach("perf event program", &e))?,
            );
            // The link owns the perf event now and closes it on detach.
            let _ = fd.into_raw_fd();
        }

        let ring = Ring::new(&skel.maps.events, move |data: &[u8]| {
            if let Some(sample) = CpuSample::parse(data) {
                on_sample(&sample);
            }
        })?;
        Ok(CpuProbe { skel, ring, links })
    }

    /// Run count and total run time (ns) of the sampling program, counted
    /// while BPF statistics are enabled (see `setup::enable_bpf_stats`).
    pub fn run_stats(&self) -> Option<(u64, u64)> {
        use std::os::fd::AsFd;
        let fd = self.skel.progs.on_cpu_sample.as_fd();
        // SAFETY: bpf_prog_info is plain old data; the kernel fills at most
        // `len` bytes of it.
        let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: valid fd, info and len pointers for the duration of the call.
        let rc =
            unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) };
        (rc == 0).then_some((info.run_cnt, info.run_time_ns))
    }

    /// The target maps of this program.
    pub fn target_maps(&self) -> TargetMaps<'_> {
        target_maps_of!(self.skel.maps)
    }

    /// The program's counters, summed over CPUs.
    pub fn stats(&self) -> CpuStats {
        use types::stat_idx as s;
        let read = |idx: s| percpu_counter(&self.skel.maps.stats, idx.0);
        CpuStats {
            samples: read(s::STAT_SAMPLES),
            lost: read(s::STAT_LOST),
            copy_failed: read(s::STAT_COPY_FAILED),
            targets_full: read(s::STAT_TARGETS_FULL),
        }
    }
}

/// The copy size the BPF program gets: whole pages, at most MAX_STACK_COPY.
pub fn stack_copy_size(requested: u32) -> u32 {
    let pages = requested.div_ceil(STACK_COPY_PAGE);
    (pages * STACK_COPY_PAGE).min(MAX_STACK_COPY)
}

/// Ring buffer size: room for about half a second of samples on every CPU
/// at the configured rate, as a power of two between 4 MiB and 64 MiB (at
/// rates that need more, the reader could not keep up anyway: samples are
/// dropped and counted instead of using more memory).
fn ring_buffer_bytes(config: &CpuConfig) -> u32 {
    let copy = u64::from(stack_copy_size(config.stack_copy_size));
    let slack = if copy > 0 {
        u64::from(STACK_COPY_PAGE)
    } else {
        0
    };
    let record = std::mem::size_of::<types::sample_hdr>() as u64 + copy + slack + 8;
    let cpus = perf::online_cpus().map(|c| c.len()).unwrap_or(1) as u64;
    let want = record * config.frequency.max(1) * cpus / 2;
    want.clamp(4 << 20, 64 << 20).next_power_of_two() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_copy_rounds_to_pages_and_caps() {
        assert_eq!(stack_copy_size(0), 0);
        assert_eq!(stack_copy_size(1), 4096);
        assert_eq!(stack_copy_size(16 * 1024), 16 * 1024);
        assert_eq!(stack_copy_size(1 << 20), MAX_STACK_COPY);
    }

    #[test]
    fn parse_rejects_short_records() {
        assert!(CpuSample::parse(&[0u8; 8]).is_none());
    }
}
