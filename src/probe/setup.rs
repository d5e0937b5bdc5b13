//! Checks that BPF profiling can work here, with errors that say how to fix
//! what is missing, and routing of libbpf's own log into ours.

use std::fs;
use std::path::Path;

use crate::proc;

// Capability numbers (linux/capability.h) flameprobe checks for.
pub(crate) const CAP_DAC_READ_SEARCH: u32 = 2;
pub(crate) const CAP_SYS_PTRACE: u32 = 19;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_SYSLOG: u32 = 34;
pub(crate) const CAP_PERFMON: u32 = 38;
pub(crate) const CAP_BPF: u32 = 39;

/// The kernel's own BTF, which every probe needs.
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// How to let flameprobe run without root: grant its binary the
/// capabilities it needs (BPF, perf events), those that let it read other
/// users' processes, and `extra` ones (`cap_syslog`).
pub(crate) fn setcap_command(extra: &[&str]) -> String {
    let mut caps = vec![
        "cap_bpf",
        "cap_perfmon",
        "cap_sys_ptrace",
        "cap_dac_read_search",
    ];
    caps.extend_from_slice(extra);
    format!("sudo setcap {}+ep $(command -v flameprobe)", caps.join(","))
}

/// Why a probe cannot be used, each with the fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "missing capability {missing}: flameprobe loads BPF programs and opens perf events, \
         which needs CAP_BPF and CAP_PERFMON (or root); run it with sudo, or grant them with \
         `{setcap}`",
        setcap = setcap_command(&[])
    )]
    MissingCapability { missing: String },
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): flameprobe needs a kernel \
         built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 have it)"
    )]
    NoBtf,
    #[error("loading the BPF program failed: {0} (run with -v to see libbpf's log)")]
    Load(String),
    #[error("{0}")]
    Descriptors(String),
    #[error("attaching the BPF program failed: {0}")]
    Attach(String),
}

impl ProbeError {
    /// A libbpf error while opening or loading a program.
    pub(crate) fn load(e: libbpf_rs::Error) -> Self {
        ProbeError::Load(crate::limits::explain(format!("{e:#}")))
    }

    /// An error while attaching `what`.
    pub(crate) fn attach(what: &str, e: impl std::fmt::Display) -> Self {
        ProbeError::Attach(crate::limits::explain(format!("{what}: {e:#}")))
    }
}

/// A counter of a per-CPU u64 array (a program's `stats`), summed over
/// CPUs; 0 when it cannot be read.
pub(crate) fn percpu_counter(stats: &dyn libbpf_rs::MapCore, idx: u32) -> u64 {
    match stats.lookup_percpu(&idx.to_ne_bytes(), libbpf_rs::MapFlags::ANY) {
        Ok(Some(per_cpu)) => per_cpu
            .iter()
            .filter_map(|v| v.get(..8))
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
            .sum(),
        _ => 0,
    }
}

/// Checks privileges and BTF before any BPF work, and routes libbpf's log.
pub fn check_bpf_support() -> Result<(), ProbeError> {
    route_libbpf_log();
    let cap_eff = proc::read_status(std::process::id())
        .map(|s| s.cap_eff)
        .unwrap_or(0);
    if let Some(missing) = missing_capabilities(cap_eff) {
        return Err(ProbeError::MissingCapability { missing });
    }
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(ProbeError::NoBtf);
    }
    let cpus = super::perf::online_cpus().map_or(1, |c| c.len());
    crate::limits::check_headroom(crate::limits::bpf_needs(cpus))
        .map_err(ProbeError::Descriptors)?;
    Ok(())
}

/// Names the missing capabilities, or `None` when BPF profiling is allowed.
/// CAP_SYS_ADMIN alone also suffices (kernels before 5.8 know nothing else).
pub fn missing_capabilities(cap_eff: u64) -> Option<String> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return None;
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|(cap, _)| !has(*cap))
        .map(|(_, name)| name)
        .collect();
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Tracepoints are attached through tracefs; mount it when the system has
/// not (it stays mounted, as on any system where tracing was used).
pub fn ensure_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return;
    }
    let _ = fs::create_dir_all(dir);
    if let Err(e) = nix::mount::mount(
        Some("tracefs"),
        dir,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    ) {
        log::warn!("could not mount tracefs at {}: {e}", dir.display());
    } else {
        log::debug!("mounted tracefs at {}", dir.display());
    }
}

/// Turns on the kernel's BPF run-time statistics for as long as the
/// returned descriptor is open (scoped to this process, unlike the
/// kernel.bpf_stats_enabled sysctl).
pub fn enable_bpf_stats() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscall wrapper; a non-negative result is a new fd.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// What the verifier reported for one program (BPF_LOG_STATS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierStat {
    pub program: String,
    pub micros: u64,
    pub insns: u64,
}

static VERIFIER_STATS: std::sync::Mutex<Vec<VerifierStat>> = std::sync::Mutex::new(Vec::new());

/// Asks the verifier for its statistics (time, instructions processed) of
/// every program of `obj` that will be loaded; libbpf hands them to the
/// log router, and [`take_verifier_stats`] returns them after the load.
pub(crate) fn request_verifier_stats(obj: &mut libbpf_rs::OpenObject) {
    const BPF_LOG_STATS: u32 = 4;
    for mut prog in obj.progs_mut() {
        if prog.autoload() {
            prog.set_log_level(BPF_LOG_STATS);
        }
    }
}

/// Loads an opened object (`load`), reporting with -v how long it took
/// and what the verifier spent on each program (after
/// [`request_verifier_stats`]).
pub(crate) fn load_reporting<T>(
    what: &str,
    load: impl FnOnce() -> Result<T, libbpf_rs::Error>,
) -> Result<T, libbpf_rs::Error> {
    take_verifier_stats();
    let started = std::time::Instant::now();
    let loaded = load()?;
    let took = started.elapsed();
    let per_prog: Vec<String> = take_verifier_stats()
        .iter()
        .map(|s| {
            format!(
                "{} {:.1} ms/{} insns",
                s.program,
                s.micros as f64 / 1000.0,
                s.insns
            )
        })
        .collect();
    log::info!(
        "{what}: BPF programs loaded in {:.1} ms (verifier: {})",
        took.as_secs_f64() * 1000.0,
        per_prog.join(", ")
    );
    Ok(loaded)
}

/// The verifier statistics gathered since the last call.
pub(crate) fn take_verifier_stats() -> Vec<VerifierStat> {
    std::mem::take(&mut *VERIFIER_STATS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Parses libbpf's "prog 'NAME': -- BEGIN PROG LOAD LOG --" message of a
/// program loaded with BPF_LOG_STATS.
fn parse_verifier_log(msg: &str) -> Option<VerifierStat> {
    let rest = msg.split("prog '").nth(1)?;
    let (program, log) = rest.split_once("': -- BEGIN PROG LOAD LOG --")?;
    let number_after = |key: &str| -> Option<u64> {
        let tail = log.split(key).nth(1)?.trim_start();
        tail.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some(VerifierStat {
        program: program.to_string(),
        micros: number_after("verification time")?,
        insns: number_after("processed").unwrap_or(0),
    })
}

pub(crate) fn route_libbpf_log() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        if let Some(stat) = parse_verifier_log(&msg) {
            VERIFIER_STATS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(stat);
        }
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => log::info!(target: "libbpf", "{msg}"),
            _ => log::debug!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, print)));
}

/// The `.rodata` of an open skeleton (its per-run settings), which every
/// program has: they all declare `const volatile` settings.
pub(crate) fn rodata<T>(data: Option<&mut T>) -> Result<&mut T, ProbeError> {
    data.ok_or_else(|| ProbeError::Load("program has no .rodata".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verifier_statistics() {
        let msg = "prog 'on_alloc': -- BEGIN PROG LOAD LOG --\nverification time 51234 usec\n\
                   stack depth 0+24\nprocessed 12345 insns (limit 1000000) max_states_per_insn 4 \
                   total_states 900 peak_states 300 mark_read 0\n-- END PROG LOAD LOG --\n";
        assert_eq!(
            parse_verifier_log(msg),
            Some(VerifierStat {
                program: "on_alloc".into(),
                micros: 51234,
                insns: 12345
            })
        );
        assert_eq!(parse_verifier_log("libbpf: map 'x': created"), None);
    }

    #[test]
    fn names_missing_capabilities() {
        assert_eq!(
            missing_capabilities(0).as_deref(),
            Some("CAP_BPF and CAP_PERFMON")
        );
        assert_eq!(
            missing_capabilities(1 << CAP_BPF).as_deref(),
            Some("CAP_PERFMON")
        );
        assert_eq!(
            missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)),
            None
        );
        assert_eq!(missing_capabilities(1 << CAP_SYS_ADMIN), None);
    }
}
