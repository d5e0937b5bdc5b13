//! perf_event_open for sampling timers, and the online-CPU list.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A clock that drives sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplingClock {
    /// The software cpu-clock (a kernel timer): what flameprobe samples
    /// with, available wherever perf events are, VMs included.
    Software,
    /// The hardware CPU-cycles counter: needs a PMU, which VMs often lack.
    HardwareCycles,
}

/// Opens a software cpu-clock event on `cpu` for all tasks, sampling at
/// `frequency` Hz (frequency mode).
pub fn open_cpu_clock(cpu: u32, frequency: u64) -> io::Result<OwnedFd> {
    open_sampling(SamplingClock::Software, cpu, frequency)
}

/// Opens a sampling event of `clock` on `cpu` for all tasks, at
/// `frequency` Hz (frequency mode).
pub fn open_sampling(clock: SamplingClock, cpu: u32, frequency: u64) -> io::Result<OwnedFd> {
    // SAFETY: perf_event_attr is plain old data; all-zero is its default.
    let mut attr: libbpf_sys::perf_event_attr = unsafe { std::mem::zeroed() };
    (attr.type_, attr.config) = match clock {
        SamplingClock::Software => (
            libbpf_sys::PERF_TYPE_SOFTWARE,
            u64::from(libbpf_sys::PERF_COUNT_SW_CPU_CLOCK),
        ),
        SamplingClock::HardwareCycles => (
            libbpf_sys::PERF_TYPE_HARDWARE,
            u64::from(libbpf_sys::PERF_COUNT_HW_CPU_CYCLES),
        ),
    };
    attr.size = std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32;
    attr.__bindgen_anon_1.sample_freq = frequency;
    attr.set_freq(1);
    // SAFETY: the attr pointer is valid for the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const libbpf_sys::perf_event_attr,
            -1i32,
            cpu as i32,
            -1i32,
            libbpf_sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// CPUs listed in /sys/devices/system/cpu/online.
pub fn online_cpus() -> io::Result<Vec<u32>> {
    let text = fs::read_to_string("/sys/devices/system/cpu/online")?;
    parse_cpu_list(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse CPU list {text:?}"),
        )
    })
}

/// Parses a kernel CPU list such as `0-3,5,7-8`.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
