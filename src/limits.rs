//! The open-file limit (`RLIMIT_NOFILE`). A recording holds one descriptor
//! per distinct binary it has seen (for symbolization at the end) besides
//! its BPF objects, so a whole-machine recording can need thousands, while
//! the usual soft limit is 1024. `main` raises the soft limit to the hard
//! limit before anything else ([`raise_nofile`]); a launched command gets
//! the limit flameprobe started with back ([`original_nofile`]). BPF work
//! does not start without room for its objects ([`check_headroom`]), and
//! binaries are held in at most half of the limit
//! ([`binary_fd_ceiling`]), the rest is symbolization's. Running out is
//! named as what it is ([`is_exhausted`], [`exhausted_hint`]), and
//! `doctor` reports a low hard limit ([`LOW_NOFILE`]).

use std::io;
use std::sync::OnceLock;

/// Below this hard limit, `doctor` warns: a whole-machine recording of a
/// busy host sees a thousand binaries and more.
pub const LOW_NOFILE: u64 = 4096;

/// The limit as flameprobe started with it, before [`raise_nofile`].
static ORIGINAL: OnceLock<libc::rlimit> = OnceLock::new();

/// The current soft and hard open-file limits.
pub fn nofile() -> io::Result<(u64, u64)> {
    let l = get()?;
    Ok((l.rlim_cur, l.rlim_max))
}

fn get() -> io::Result<libc::rlimit> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(l)
}

/// Raises the soft open-file limit to the hard limit (once, at start),
/// remembering the original for launched commands. Returns the soft
/// limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    let l = get()?;
    let original = *ORIGINAL.get_or_init(|| l);
    if l.rlim_cur >= l.rlim_max {
        return Ok(l.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: l.rlim_max,
        rlim_max: l.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = io::Error::last_os_error();
        log::debug!("keeping the open-file limit at {}: {e}", original.rlim_cur);
        return Ok(l.rlim_cur);
    }
    log::debug!(
        "open-file limit raised from {} to the hard limit {}",
        original.rlim_cur,
        l.rlim_max
    );
    Ok(l.rlim_max)
}

/// The limit flameprobe started with, when [`raise_nofile`] changed it:
/// what a launched command gets (it must not see flameprobe's needs).
pub fn original_nofile() -> Option<libc::rlimit> {
    let original = *ORIGINAL.get()?;
    let now = get().ok()?;
    (now.rlim_cur != original.rlim_cur).then_some(original)
}

/// Whether `e` is running out of file descriptors (the process's limit,
/// `EMFILE`, or the system's, `ENFILE`).
pub fn is_exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// What running out of descriptors means and how to fix it, for messages:
/// "too many open files (...)".
pub fn exhausted_hint() -> String {
    match nofile() {
        Ok((soft, hard)) => format!(
            "too many open files (flameprobe's limit is {soft}, hard limit {hard}; raise the hard \
             limit, e.g. `ulimit -Hn 65536` as root or LimitNOFILE= in a service unit)"
        ),
        Err(_) => "too many open files (raise the open-file limit, `ulimit -n`)".to_string(),
    }
}

/// The lowest descriptor number a recording may hold a binary open at:
/// binaries take at most half of the soft limit, the other half is left
/// for symbolization, which opens each binary again at the end.
pub fn binary_fd_ceiling() -> u64 {
    static CEILING: OnceLock<u64> = OnceLock::new();
    *CEILING.get_or_init(|| match nofile() {
        Ok((soft, _)) => (soft / 2).saturating_sub(32),
        Err(_) => u64::MAX,
    })
}

/// Descriptors a recording needs before it sees any binary: its BPF
/// objects (maps, programs, links, BTF) and a perf event or two per CPU.
pub fn bpf_needs(cpus: usize) -> u64 {
    96 + 2 * cpus as u64
}

/// How many descriptors flameprobe has open (`None` when it cannot tell;
/// at the limit, reading `/proc/self/fd` fails itself).
fn open_fds() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// Refuses to start BPF work that would run out of descriptors half way
/// (libbpf then reports what follows, e.g. "Invalid argument" for a map
/// it could not create): the message says so and how to fix it.
pub fn check_headroom(need: u64) -> Result<(), String> {
    let (soft, _) = nofile().map_err(|e| e.to_string())?;
    let open = match open_fds() {
        Ok(n) => n,
        Err(e) if is_exhausted(&e) => soft,
        Err(_) => return Ok(()),
    };
    headroom(soft, open, need)
}

fn headroom(soft: u64, open: u64, need: u64) -> Result<(), String> {
    if soft.saturating_sub(open) >= need {
        return Ok(());
    }
    Err(format!(
        "{}: flameprobe needs about {need} descriptors for its BPF programs and perf events, \
         plus one per binary it sees",
        exhausted_hint()
    ))
}

/// Adds what running out of descriptors means to an error text that
/// shows `EMFILE` or `ENFILE` (libbpf's and the kernel's messages).
pub fn explain(message: String) -> String {
    let codes = [libc::EMFILE, libc::ENFILE].map(|c| format!("(os error {c})"));
    if codes.iter().any(|c| message.contains(c.as_str())) {
        format!("{message}: {}", exhausted_hint())
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_descriptor_exhaustion() {
        assert!(is_exhausted(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_exhausted(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_exhausted(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(exhausted_hint().starts_with("too many open files ("));
        assert!(
            explain("x: Too many open files (os error 24)".into()).contains("raise the hard limit")
        );
        assert_eq!(
            explain("x: Invalid argument (os error 22)".into()),
            "x: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn refuses_to_start_without_room_for_the_bpf_objects() {
        assert!(headroom(20_000, 30, bpf_needs(2)).is_ok());
        let e = headroom(16, 5, bpf_needs(2)).unwrap_err();
        assert!(e.starts_with("too many open files ("), "{e}");
        assert!(e.contains("needs about 100 descriptors"), "{e}");
        assert!(check_headroom(1).is_ok());
    }
}
