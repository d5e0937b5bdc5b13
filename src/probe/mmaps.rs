//! The kernel's own record of which executable files processes map, when
//! they fork and when they exec (perf's `PERF_RECORD_MMAP2`, `FORK` and
//! `COMM` records, as `perf record` keeps them), read from a dummy software
//! perf event on every CPU. A process that exits within milliseconds is gone
//! before `/proc/PID/maps` can be read; these records still tell what it
//! had mapped, so its samples unwind and symbolize like any other's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use super::perf;
use crate::proc::MapEntry;
use crate::process::{MapEvent, MapEventSource};

/// Data pages per CPU (a power of two): 1 MiB each, up to 32 MiB in all
/// (down to 256 KiB each on machines with more than 32 CPUs). Records of
/// every fork, exec and thread exit go through it; it is read at every
/// poll (100 ms) and whenever a gone process is looked up.
fn data_pages(cpus: usize) -> usize {
    let pages = (8192 / cpus.max(1)).clamp(64, 256);
    // The largest power of two not above it.
    1 << (usize::BITS - 1 - pages.leading_zeros())
}

/// A record, or how many the kernel could not write (its buffer was full).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    Event(MapEvent),
    Lost(u64),
}

/// One CPU's perf ring buffer.
struct PerfRing {
    /// The event; recording stops when it is closed.
    _fd: OwnedFd,
    base: *mut u8,
    len: usize,
    page: usize,
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped (before `fd` closes).
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The records of every CPU.
pub struct MapsWatch {
    rings: Vec<PerfRing>,
}

impl MapsWatch {
    /// Starts recording mmap, fork and exec events of every process.
    pub fn open() -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut rings = Vec::new();
        let cpus = perf::online_cpus()?;
        let pages = data_pages(cpus.len());
        for cpu in cpus {
            // SAFETY: perf_event_attr is plain old data; all-zero is its default.
            let mut attr: libbpf_sys::perf_event_attr = unsafe { std::mem::zeroed() };
            attr.type_ = libbpf_sys::PERF_TYPE_SOFTWARE;
            attr.size = std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32;
            attr.config = u64::from(libbpf_sys::PERF_COUNT_SW_DUMMY);
            attr.set_mmap(1);
            attr.set_mmap2(1);
            attr.set_comm(1);
            attr.set_comm_exec(1);
            attr.set_task(1);
            // Each record ends with its time, so the records of all CPUs
            // can be applied in order (a child's exec and mmaps may be
            // seen on another CPU than its fork).
            attr.sample_type = u64::from(libbpf_sys::PERF_SAMPLE_TIME);
            attr.set_sample_id_all(1);
            // Wake nobody: the recording polls.
            attr.set_watermark(1);
            attr.__bindgen_anon_2.wakeup_watermark = u32::MAX;
            // SAFETY: the attr pointer is valid for the call.
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
            // SAFETY: the syscall returned a new descriptor that we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            let len = (1 + pages) * page;
            // SAFETY: maps the event's ring buffer as the perf ABI defines.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            rings.push(PerfRing {
                _fd: fd,
                base: base.cast(),
                len,
                page,
            });
        }
        Ok(MapsWatch { rings })
    }
}

impl MapEventSource for MapsWatch {
    fn drain(&mut self, f: &mut dyn FnMut(MapEvent)) -> u64 {
        let mut lost = 0;
        let mut events = Vec::new();
        for ring in &self.rings {
            ring.drain(&mut |time, r| match r {
                Record::Event(ev) => events.push((time, ev)),
                Record::Lost(n) => lost += n,
            });
        }
        // Stable: records of one CPU with equal times keep their order.
        events.sort_by_key(|&(time, _)| time);
        for (_, ev) in events {
            f(ev);
        }
        lost
    }
}

impl PerfRing {
    /// Hands every record with its time to `f`.
    fn drain(&self, f: &mut impl FnMut(u64, Record)) {
        let meta = self.base.cast::<libbpf_sys::perf_event_mmap_page>();
        let data = self.base.wrapping_add(self.page);
        let size = (self.len - self.page) as u64;
        // SAFETY: the first page is the kernel's perf_event_mmap_page; the
        // head is read before the data it covers (the fence), the tail is
        // written after the data was read, as the perf ABI requires.
        let head = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_head)) };
        fence(Ordering::Acquire);
        let mut tail = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_tail)) };
        let mut record = Vec::new();
        while tail < head {
            let at = |off: u64| data.wrapping_add(((tail + off) % size) as usize);
            // SAFETY: reads bytes inside the data area (offsets are taken
            // modulo its size).
            let hdr: [u8; 8] = std::array::from_fn(|i| unsafe { *at(i as u64) });
            let kind = u32::from_ne_bytes(hdr[..4].try_into().unwrap_or_default());
            let len = u16::from_ne_bytes([hdr[6], hdr[7]]) as u64;
            let misc = u16::from_ne_bytes([hdr[4], hdr[5]]);
            if len < 8 || len > size {
                break; // corrupt: stop here
            }
            record.clear();
            // SAFETY: as above.
            record.extend((8..len).map(|i| unsafe { *at(i) }));
            if let Some(ev) = parse(kind, misc, &record) {
                f(record_time(&record), ev);
            }
            tail += len;
        }
        fence(Ordering::Release);
        // SAFETY: tells the kernel the records up to `tail` were consumed.
        unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*meta).data_tail), tail) };
    }
}

/// The time a record ends with (`sample_id_all` with only
/// `PERF_SAMPLE_TIME`), 0 if it is too short.
fn record_time(body: &[u8]) -> u64 {
    body.len()
        .checked_sub(8)
        .and_then(|at| body.get(at..))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

/// Parses one record's body (after its 8-byte header).
fn parse(kind: u32, misc: u16, body: &[u8]) -> Option<Record> {
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(body.get(o..o + 4)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(body.get(o..o + 8)?.try_into().ok()?))
    };
    match kind {
        libbpf_sys::PERF_RECORD_MMAP2 => {
            // pid tid addr len pgoff maj min ino ino_generation prot flags filename
            let path_bytes = body.get(64..)?;
            let end = path_bytes.iter().position(|&b| b == 0)?;
            let start = u64_at(8)?;
            let path = String::from_utf8_lossy(&path_bytes[..end]).into_owned();
            let (path, deleted) = match path.strip_suffix(" (deleted)") {
                Some(p) => (p.to_string(), true),
                None => (path, false),
            };
            Some(Record::Event(MapEvent::Mmap {
                pid: u32_at(0)?,
                entry: MapEntry {
                    start,
                    end: start.checked_add(u64_at(16)?)?,
                    readable: true,
                    executable: true,
                    offset: u64_at(24)?,
                    dev_major: u32_at(32)?,
                    dev_minor: u32_at(36)?,
                    inode: u64_at(40)?,
                    path,
                    deleted,
                },
            }))
        }
        libbpf_sys::PERF_RECORD_FORK => {
            // pid ppid tid ptid time: a new thread has pid == ppid.
            let (pid, ppid) = (u32_at(0)?, u32_at(4)?);
            (pid != ppid).then_some(Record::Event(MapEvent::Fork { pid, ppid }))
        }
        libbpf_sys::PERF_RECORD_COMM
            if u32::from(misc) & libbpf_sys::PERF_RECORD_MISC_COMM_EXEC != 0 =>
        {
            // pid tid comm: the exec of the thread group leader.
            let (pid, tid) = (u32_at(0)?, u32_at(4)?);
            (pid == tid).then_some(Record::Event(MapEvent::Exec { pid }))
        }
        libbpf_sys::PERF_RECORD_LOST => Some(Record::Lost(u64_at(8)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mmap2_body(pid: u32, path: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(pid.to_ne_bytes());
        b.extend(pid.to_ne_bytes()); // tid
        b.extend(0x7000u64.to_ne_bytes()); // addr
        b.extend(0x2000u64.to_ne_bytes()); // len
        b.extend(0x1000u64.to_ne_bytes()); // pgoff
        b.extend(0xfeu32.to_ne_bytes()); // maj
        b.extend(1u32.to_ne_bytes()); // min
        b.extend(1234u64.to_ne_bytes()); // ino
        b.extend(0u64.to_ne_bytes()); // ino_generation
        b.extend(5u32.to_ne_bytes()); // prot
        b.extend(2u32.to_ne_bytes()); // flags
        b.extend(path.as_bytes());
        b.extend([0u8; 8]);
        b
    }

    #[test]
    fn buffers_are_bounded_powers_of_two() {
        assert_eq!(data_pages(2), 256);
        assert_eq!(data_pages(32), 256);
        assert_eq!(data_pages(48), 128); // 170 pages, rounded down
        assert_eq!(data_pages(128), 64);
        assert_eq!(data_pages(1024), 64);
    }

    #[test]
    fn parses_the_records_it_needs() {
        assert_eq!(
            parse(libbpf_sys::PERF_RECORD_MMAP2, 0, &mmap2_body(9, "/bin/x")),
            Some(Record::Event(MapEvent::Mmap {
                pid: 9,
                entry: MapEntry {
                    start: 0x7000,
                    end: 0x9000,
                    readable: true,
                    executable: true,
                    offset: 0x1000,
                    dev_major: 0xfe,
                    dev_minor: 1,
                    inode: 1234,
                    path: "/bin/x".into(),
                    deleted: false,
                }
            }))
        );
        let fork = [10u32, 9, 10, 9]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect::<Vec<_>>();
        assert_eq!(
            parse(libbpf_sys::PERF_RECORD_FORK, 0, &fork),
            Some(Record::Event(MapEvent::Fork { pid: 10, ppid: 9 }))
        );
        let thread = [9u32, 9, 11, 9]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect::<Vec<_>>();
        assert_eq!(parse(libbpf_sys::PERF_RECORD_FORK, 0, &thread), None);
        let mut comm: Vec<u8> = [9u32, 9].iter().flat_map(|v| v.to_ne_bytes()).collect();
        comm.extend(b"true\0\0\0\0");
        let exec = libbpf_sys::PERF_RECORD_MISC_COMM_EXEC as u16;
        assert_eq!(
            parse(libbpf_sys::PERF_RECORD_COMM, exec, &comm),
            Some(Record::Event(MapEvent::Exec { pid: 9 }))
        );
        assert_eq!(
            parse(libbpf_sys::PERF_RECORD_COMM, 0, &comm),
            None,
            "a rename"
        );
        assert_eq!(parse(libbpf_sys::PERF_RECORD_MMAP2, 0, &[1, 2]), None);
    }

    /// Records end with their time (sample_id_all): read from the end,
    /// whatever the record, and the path before it still parses.
    #[test]
    fn records_carry_their_time_at_the_end() {
        let mut body = mmap2_body(9, "/bin/x");
        body.extend(123_456_789u64.to_ne_bytes());
        assert_eq!(record_time(&body), 123_456_789);
        assert!(matches!(
            parse(libbpf_sys::PERF_RECORD_MMAP2, 0, &body),
            Some(Record::Event(MapEvent::Mmap { entry, .. })) if entry.path == "/bin/x"
        ));
        assert_eq!(record_time(&[1, 2, 3]), 0);
    }
}
