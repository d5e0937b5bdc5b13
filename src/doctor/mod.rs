//! `flameprobe doctor`: what works on this machine and why not. Each check
//! is one line: `ok`, `missing` (a probe cannot run), `warn` (it runs, with
//! less) or `info` (a fact flameprobe does not depend on), the finding,
//! and for anything not ok the fix. A last line says which probes can run;
//! the exit status says whether `record`'s default probe (cpu) can.
//!
//! Checks test directly where that is cheap ([`features`]: a ring buffer,
//! tiny programs and links, perf events; and the parent process's memory,
//! `/proc/kallsyms`, tracefs), and fall back to the kernel version only
//! where this process may not test. Nothing is left attached, and no JVM
//! is signalled or connected.
//!
//! The knowledge used lives elsewhere and is reused here: capabilities and
//! the setcap command (`probe::setup`), perf events (`probe::perf`), the
//! cgroup layout and cgroup ids (`container::cgroup`), running containers
//! and the runtimes' state (`container`), HotSpot detection and what stops
//! an attach (`jit::hotspot`).

mod features;

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::container::{self, cgroup};
use crate::jit::hotspot;
use crate::probe::perf::{self, SamplingClock};
use crate::probe::{
    missing_capabilities, setcap_command, CAP_BPF, CAP_DAC_READ_SEARCH, CAP_PERFMON, CAP_SYSLOG,
    CAP_SYS_ADMIN, CAP_SYS_PTRACE, VMLINUX_BTF,
};
use crate::proc;
use crate::text;
use features::Tested;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Missing: a probe that needs it cannot run.
    Missing,
    /// Works with less (names, stacks, an option).
    Warn,
    /// A fact flameprobe does not depend on.
    Info,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warn => "warn",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: `kernel`, `perf events`, `CAP_BPF`, `JVM 4242`, ...
    pub check: String,
    pub status: Status,
    /// What was found, and what it means for flameprobe.
    pub finding: String,
    /// How to fix what is not ok: a package, a sysctl with its value, a
    /// setcap command, a kernel version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, finding: impl Into<String>) -> Check {
        Check::new(check, Status::Ok, finding, None)
    }

    fn info(check: impl Into<String>, finding: impl Into<String>) -> Check {
        Check::new(check, Status::Info, finding, None)
    }

    fn missing(
        check: impl Into<String>,
        finding: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(check, Status::Missing, finding, Some(fix.into()))
    }

    fn warn(check: impl Into<String>, finding: impl Into<String>, fix: impl Into<String>) -> Check {
        Check::new(check, Status::Warn, finding, Some(fix.into()))
    }

    fn new(
        check: impl Into<String>,
        status: Status,
        finding: impl Into<String>,
        fix: Option<String>,
    ) -> Check {
        Check {
            check: check.into(),
            status,
            finding: finding.into(),
            fix,
        }
    }
}

/// Whether a probe (or mode) can run here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeVerdict {
    /// `cpu`, `memleak`, `kmemleak`, `offcpu`, `wall`, `containers`, `JIT attach`.
    pub probe: &'static str,
    pub available: bool,
    /// How (`cgroup filter`, `pid fallback`) or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Everything `doctor` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub probes: Vec<ProbeVerdict>,
    /// `record`'s default probe (cpu) can run here: the exit status.
    pub record_can_run: bool,
}

/// Runs the checks and prints the report (text or JSON) on stdout; returns
/// whether `record`'s default probe can run here.
pub fn run(json: bool) -> anyhow::Result<bool> {
    let report = diagnose();
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report)?;
    }
    out.flush()?;
    Ok(report.record_can_run)
}

/// Writes the report for a terminal: one line per check, then the probes.
/// Findings name processes, containers and pods: each line is escaped
/// ([`text::printable`]), so a name cannot add a line or a control
/// sequence.
pub fn write_text(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let width = report
        .checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(0)
        .min(24);
    for c in &report.checks {
        write!(
            out,
            "{:<8} {:<width$}  {}",
            c.status.label(),
            text::printable(&c.check),
            text::printable(&c.finding)
        )?;
        if let Some(fix) = &c.fix {
            write!(out, "; fix: {}", text::printable(fix))?;
        }
        writeln!(out)?;
    }
    let probes: Vec<String> = report
        .probes
        .iter()
        .map(|p| {
            let yes = if p.available { "yes" } else { "no" };
            match &p.note {
                Some(note) => format!("{} {yes} ({note})", p.probe),
                None => format!("{} {yes}", p.probe),
            }
        })
        .collect();
    writeln!(out, "probes: {}", probes.join(", "))
}

/// A kernel version, as `uname -r` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// BPF ring buffers, which every probe delivers through.
const RING_BUFFER_SINCE: KernelVersion = KernelVersion(5, 8, 0);
/// Uprobe sessions, which `--probe memleak` attaches with.
const UPROBE_SESSION_SINCE: KernelVersion = KernelVersion(6, 13, 0);
/// `bpf_task_pt_regs`, which the off-CPU program reads blocked threads'
/// registers with.
const OFFCPU_SINCE: KernelVersion = KernelVersion(5, 15, 0);

/// Parses a kernel release (`/proc/sys/kernel/osrelease`, `uname -r`):
/// `6.18.44-fc-v769`, `5.10.0-28-amd64`, `4.18.0-513.5.1.el8_9.x86_64`,
/// `6.8.0-rc3`.
pub fn parse_kernel_release(release: &str) -> Option<KernelVersion> {
    let numeric = release
        .trim()
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = numeric.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(KernelVersion(major, minor, patch))
}

/// Parses an integer sysctl (`/proc/sys/kernel/perf_event_paranoid`).
pub fn parse_sysctl_int(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// Whether a line of `/proc/kallsyms` shows the symbol's address (the
/// kernel prints zeros to readers it hides addresses from); `None` for a
/// line that is not a symbol.
pub fn kallsyms_shows_addresses(line: &str) -> Option<bool> {
    let mut fields = line.split_whitespace();
    let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
    fields.next()?;
    fields.next()?;
    Some(addr != 0)
}

/// The privileges this process has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    /// Effective capability set (`CapEff` of `/proc/self/status`).
    pub cap_eff: u64,
}

impl Privileges {
    fn of_self() -> Privileges {
        let status = proc::read_status(std::process::id()).unwrap_or_default();
        Privileges {
            // SAFETY: geteuid has no preconditions.
            euid: status.euid.unwrap_or_else(|| unsafe { libc::geteuid() }),
            cap_eff: status.cap_eff,
        }
    }

    fn has(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }

    /// How to get the privileges flameprobe needs.
    fn fix(&self) -> String {
        format!("run it as root (sudo), or `{}`", setcap_command(&[]))
    }
}

/// The capabilities flameprobe looks at: what each enables, and what is
/// lost without it where flameprobe still runs.
const CAPABILITIES: &[(u32, &str, &str, &str)] = &[
    (
        CAP_BPF,
        "CAP_BPF",
        "load BPF programs and create BPF maps",
        "",
    ),
    (
        CAP_PERFMON,
        "CAP_PERFMON",
        "open CPU-wide perf events and attach tracing programs",
        "",
    ),
    (
        CAP_SYS_ADMIN,
        "CAP_SYS_ADMIN",
        "BPF and perf events on kernels before 5.8, --bpf-stats, mounting tracefs",
        "no --bpf-stats, and flameprobe cannot mount tracefs itself for kmemleak",
    ),
    (
        CAP_SYS_PTRACE,
        "CAP_SYS_PTRACE",
        "read other users' processes: memory maps, binaries, /proc/PID/mem",
        "other users' processes cannot be read: their user frames stay unnamed",
    ),
    (
        CAP_DAC_READ_SEARCH,
        "CAP_DAC_READ_SEARCH",
        "read files whatever their permissions: binaries, container runtimes' state",
        "files this user may not read stay unread: other users' binaries (frames unnamed), \
         runtimes' state (containers named by short id)",
    ),
    (
        CAP_SYSLOG,
        "CAP_SYSLOG",
        "see kernel addresses in /proc/kallsyms when kernel.kptr_restrict is 1",
        "kernel frames stay unnamed while /proc/kallsyms hides addresses",
    ),
];

/// One line per capability: held (ok), or what is lost without it.
/// `kallsyms_visible`: whether `/proc/kallsyms` shows addresses anyway.
pub fn capability_checks(privs: Privileges, kallsyms_visible: bool) -> Vec<Check> {
    let required = missing_capabilities(privs.cap_eff);
    CAPABILITIES
        .iter()
        .map(|&(cap, name, enables, without)| {
            if privs.has(cap) {
                return Check::ok(name, format!("held: {enables}"));
            }
            match cap {
                CAP_BPF | CAP_PERFMON => match &required {
                    Some(missing) => Check::missing(
                        name,
                        format!(
                            "not held: flameprobe cannot {enables} (missing {missing}); no probe \
                             can run"
                        ),
                        privs.fix(),
                    ),
                    None => Check::ok(name, "not held; CAP_SYS_ADMIN covers it"),
                },
                CAP_SYS_ADMIN => Check::warn(
                    name,
                    format!("not held: {without}"),
                    "run flameprobe as root for --bpf-stats",
                ),
                CAP_SYSLOG if kallsyms_visible => Check::info(
                    name,
                    "not held; not needed here: /proc/kallsyms shows addresses anyway",
                ),
                CAP_SYSLOG => Check::warn(
                    name,
                    format!("not held: {without}"),
                    format!("run it as root, or `{}`", setcap_command(&["cap_syslog"])),
                ),
                _ => Check::warn(name, format!("not held: {without}"), privs.fix()),
            }
        })
        .collect()
}

/// The meaning of a `kernel.perf_event_paranoid` value.
fn paranoid_meaning(p: i64) -> String {
    match p {
        i64::MIN..=-1 => format!("{p}: every user may use (almost) every perf event"),
        0 => "0: users without CAP_PERFMON get no raw tracepoints".into(),
        1 => "1: users without CAP_PERFMON get no CPU-wide events".into(),
        2 => "2: users without CAP_PERFMON get no CPU-wide events and no kernel profiling".into(),
        p => format!(
            "{p}: beyond the kernel's 2, a distribution's level (Debian, Ubuntu): no perf \
             events at all without CAP_SYS_ADMIN; CAP_PERFMON does not suffice"
        ),
    }
}

/// `kernel.perf_event_paranoid`: what it means for this process.
pub fn paranoid_check(value: Option<i64>, privs: Privileges) -> Check {
    const NAME: &str = "perf_event_paranoid";
    let Some(p) = value else {
        return Check::info(
            NAME,
            "/proc/sys/kernel/perf_event_paranoid is missing (a kernel without perf events)",
        );
    };
    let meaning = paranoid_meaning(p);
    if p > 2 {
        if privs.has(CAP_SYS_ADMIN) {
            return Check::ok(NAME, format!("{meaning}; flameprobe has CAP_SYS_ADMIN"));
        }
        return Check::missing(
            NAME,
            meaning,
            "sudo sysctl -w kernel.perf_event_paranoid=2 (persist it in /etc/sysctl.d/), or run \
             flameprobe as root",
        );
    }
    if privs.has(CAP_PERFMON) || privs.has(CAP_SYS_ADMIN) {
        Check::ok(NAME, format!("{meaning}; flameprobe has CAP_PERFMON"))
    } else {
        Check::warn(
            NAME,
            format!("{meaning}; flameprobe lacks CAP_PERFMON"),
            privs.fix(),
        )
    }
}

/// The software cpu-clock that `record` samples with, opened on `cpu`.
pub fn perf_event_check(
    result: &io::Result<()>,
    cpu: u32,
    paranoid: Option<i64>,
    privs: Privileges,
) -> Check {
    const NAME: &str = "perf events";
    let e = match result {
        Ok(()) => {
            return Check::ok(
                NAME,
                format!("a software cpu-clock event opens on CPU {cpu} (what record samples with)"),
            )
        }
        Err(e) => e,
    };
    let cannot = format!("cannot open a software cpu-clock event on CPU {cpu} ({e})");
    if features::is_permission(e) {
        if !privs.has(CAP_PERFMON) && !privs.has(CAP_SYS_ADMIN) {
            return Check::missing(
                NAME,
                format!("{cannot}: CPU-wide perf events need CAP_PERFMON"),
                privs.fix(),
            );
        }
        if paranoid.is_some_and(|p| p > 2) && !privs.has(CAP_SYS_ADMIN) {
            return Check::missing(
                NAME,
                format!("{cannot}: kernel.perf_event_paranoid above 2 needs CAP_SYS_ADMIN"),
                "sudo sysctl -w kernel.perf_event_paranoid=2, or run flameprobe as root",
            );
        }
        return Check::missing(
            NAME,
            format!(
                "{cannot} although flameprobe has CAP_PERFMON: a security module or a \
                     seccomp filter refuses perf_event_open"
            ),
            "allow perf_event_open to flameprobe (in a container: run it privileged, or with \
             CAP_PERFMON and CAP_BPF and a seccomp profile that allows perf_event_open and bpf)",
        );
    }
    Check::missing(
        NAME,
        format!("{cannot}: the kernel has no perf events"),
        "a kernel built with CONFIG_PERF_EVENTS",
    )
}

/// The hardware cycles counter: informational (flameprobe does not use it).
fn hardware_pmu_check(result: &io::Result<()>, cpu: u32) -> Check {
    const NAME: &str = "hardware PMU";
    match result {
        Ok(()) => Check::info(
            NAME,
            format!(
                "the hardware cycles counter opens on CPU {cpu}; flameprobe samples with the \
                 software clock all the same"
            ),
        ),
        Err(e) if features::is_permission(e) => Check::info(
            NAME,
            format!("not tested ({e}); flameprobe does not need it"),
        ),
        Err(e) => Check::info(
            NAME,
            format!(
                "no hardware cycles counter ({e}): usual in VMs without a virtual PMU; \
                 flameprobe samples with the software clock, which needs none"
            ),
        ),
    }
}

/// `kernel.kptr_restrict` and whether `/proc/kallsyms` shows this process
/// kernel addresses (kernel/kallsyms.c, `kallsyms_show_value`: 0 shows
/// them to CAP_SYSLOG, or to everyone while perf_event_paranoid <= 1; 1 to
/// CAP_SYSLOG only; 2 to no one).
pub fn kptr_check(value: Option<i64>, visible: Option<bool>, privs: Privileges) -> Check {
    const NAME: &str = "kptr_restrict";
    let meaning = match value {
        Some(0) => "0 (kernel addresses shown to CAP_SYSLOG, and to everyone while \
                    perf_event_paranoid <= 1)"
            .to_string(),
        Some(1) => "1 (kernel addresses shown to CAP_SYSLOG only)".to_string(),
        Some(v) => format!("{v} (kernel addresses shown to no one, root included)"),
        None => "unknown".to_string(),
    };
    match visible {
        Some(true) => Check::ok(
            NAME,
            format!(
                "{meaning}; /proc/kallsyms shows addresses to flameprobe: kernel frames are named"
            ),
        ),
        Some(false) => {
            let fix = match value {
                Some(v) if v >= 2 => "sudo sysctl -w kernel.kptr_restrict=1 (addresses then show \
                                      to CAP_SYSLOG, which root has)"
                    .to_string(),
                _ if privs.euid != 0 => {
                    format!("run it as root, or `{}`", setcap_command(&["cap_syslog"]))
                }
                _ => "grant flameprobe CAP_SYSLOG".to_string(),
            };
            Check::warn(
                NAME,
                format!(
                    "{meaning}; /proc/kallsyms hides addresses from flameprobe: kernel frames \
                     stay unnamed"
                ),
                fix,
            )
        }
        None => Check::warn(
            NAME,
            format!("{meaning}; /proc/kallsyms cannot be read: kernel frames stay unnamed"),
            "a kernel built with CONFIG_KALLSYMS",
        ),
    }
}

/// Reading another process's memory (`/proc/PID/mem` of the parent
/// process, which is no descendant of doctor's), which the off-CPU probes
/// do for threads already blocked when they start; Yama's
/// `kernel.yama.ptrace_scope` (0 classic, 1 descendants only without
/// CAP_SYS_PTRACE, 2 CAP_SYS_PTRACE only, 3 no one) applies to it.
/// `what`: the file and whose it is.
pub fn process_memory_check(
    scope: Option<i64>,
    what: &str,
    result: &io::Result<()>,
    privs: Privileges,
) -> Check {
    const NAME: &str = "process memory";
    let yama = match scope {
        None => "Yama is not enabled".to_string(),
        Some(0) => "kernel.yama.ptrace_scope 0 (classic)".to_string(),
        Some(1) => "kernel.yama.ptrace_scope 1 (descendants, or CAP_SYS_PTRACE)".to_string(),
        Some(2) => "kernel.yama.ptrace_scope 2 (CAP_SYS_PTRACE only)".to_string(),
        Some(s) => format!("kernel.yama.ptrace_scope {s} (no one, until reboot)"),
    };
    match result {
        Ok(()) => Check::ok(
            NAME,
            format!(
                "{what} opens ({yama}): offcpu and wall unwind threads that were already \
                 blocked when they start"
            ),
        ),
        Err(e) => {
            let fix = match scope {
                Some(s) if s >= 3 => {
                    "kernel.yama.ptrace_scope 3 cannot be lowered until reboot: set it to 1 in \
                     /etc/sysctl.d/ and reboot"
                        .to_string()
                }
                _ if privs.has(CAP_SYS_PTRACE) => {
                    "sudo sysctl -w kernel.yama.ptrace_scope=1".into()
                }
                _ => privs.fix(),
            };
            Check::warn(
                NAME,
                format!(
                    "cannot open {what} ({e}; {yama}): in offcpu and wall recordings, the \
                     user stacks of threads already blocked at the start stop at their \
                     innermost frame"
                ),
                fix,
            )
        }
    }
}

/// The open-file limit (soft, hard) as flameprobe runs with it (its soft
/// limit raised to the hard one at start): a recording holds a descriptor
/// per distinct binary it sees.
pub fn open_files_check(limits: io::Result<(u64, u64)>) -> Check {
    const NAME: &str = "open files";
    let low = crate::limits::LOW_NOFILE;
    match limits {
        Ok((soft, hard)) if soft.min(hard) >= low => Check::ok(
            NAME,
            format!("flameprobe may open {soft} files (hard limit {hard}, which it raises to)"),
        ),
        Ok((soft, hard)) => Check::warn(
            NAME,
            format!(
                "flameprobe may open only {soft} files (hard limit {hard}): a recording holds one \
                 descriptor per binary it sees, so on a busy host (a thousand binaries and more) \
                 some stay unsymbolized, or a probe fails with \"too many open files\""
            ),
            format!(
                "raise the hard limit to {low} or more: `ulimit -Hn 65536` as root before \
                 flameprobe, LimitNOFILE= in a systemd unit, --ulimit nofile= for a container"
            ),
        ),
        Err(e) => Check::info(NAME, format!("cannot read the open-file limit ({e})")),
    }
}

/// A direct test's result as a check; where this process may not test,
/// the kernel version decides (and the finding says so).
fn tested_check(
    name: &str,
    tested: &Tested,
    works: &str,
    fails: &str,
    since: Option<KernelVersion>,
    kernel: Option<KernelVersion>,
    fix: &str,
) -> (Check, bool) {
    match tested {
        Tested::Works => (Check::ok(name, works), true),
        Tested::Fails(e) => (Check::missing(name, format!("{fails} ({e})"), fix), false),
        Tested::NotPermitted(e) => match (since, kernel) {
            (Some(since), Some(k)) if k >= since => (
                Check::ok(
                    name,
                    format!(
                        "not tested ({e}: needs CAP_BPF and CAP_PERFMON); Linux {k} is {since} \
                         or later, which has them"
                    ),
                ),
                true,
            ),
            (Some(since), Some(k)) => (
                Check::missing(
                    name,
                    format!("Linux {k} is older than {since} (not tested: {e})"),
                    fix,
                ),
                false,
            ),
            _ => (
                Check::warn(
                    name,
                    format!("not tested ({e}: needs CAP_BPF and CAP_PERFMON)"),
                    "run doctor as root to test it",
                ),
                false,
            ),
        },
    }
}

/// A path's state: present, absent, or not readable to this process.
fn path_state(path: &Path) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_sysctl(name: &str) -> Option<i64> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()
        .and_then(|t| parse_sysctl_int(&t))
}

/// For a recording whose kernel frames stayed raw addresses: why (what
/// `kernel.kptr_restrict` and the privileges make `/proc/kallsyms` show)
/// and the fix, or `None` when kallsyms shows addresses after all.
pub fn kernel_names_hint() -> Option<String> {
    let visible = kallsyms_visible();
    if visible == Some(true) {
        return None;
    }
    let check = kptr_check(
        read_sysctl("kernel/kptr_restrict"),
        visible,
        Privileges::of_self(),
    );
    Some(hint_line("kernel frames are raw addresses", &check))
}

/// For a recording with binaries that were not opened: the capabilities
/// flameprobe lacks to read other users' processes and files, with the
/// fix, or `None` when it has them (then -v says why per binary).
pub fn file_access_hint() -> Option<String> {
    file_access_hint_for(Privileges::of_self())
}

fn file_access_hint_for(privs: Privileges) -> Option<String> {
    let missing: Vec<&str> = [
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        (CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
    ]
    .into_iter()
    .filter(|&(cap, _)| !privs.has(cap))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "warning: binaries were not readable: flameprobe lacks {} (other users' processes' \
         files and /proc/PID/root); fix: run it as root, or `{}`",
        missing.join(" and "),
        setcap_command(&[])
    ))
}

/// One warning line from a doctor check: what the user sees, the finding
/// and the fix.
fn hint_line(symptom: &str, check: &Check) -> String {
    match &check.fix {
        Some(fix) => format!(
            "warning: {symptom}: kptr_restrict {}; fix: {fix}",
            check.finding
        ),
        None => format!("warning: {symptom}: kptr_restrict {}", check.finding),
    }
}

/// Whether `/proc/kallsyms` shows this process addresses (its first line).
fn kallsyms_visible() -> Option<bool> {
    let file = std::fs::File::open("/proc/kallsyms").ok()?;
    let mut line = String::new();
    io::BufReader::new(file).read_line(&mut line).ok()?;
    kallsyms_shows_addresses(&line)
}

/// Opens the parent process's memory for reading (the kernel checks
/// ptrace access at open) and closes it; returns what was opened.
fn open_parent_memory() -> (String, io::Result<()>) {
    let ppid = nix::unistd::getppid().as_raw() as u32;
    let comm = proc::read_status(ppid).map(|s| s.name).unwrap_or_default();
    let path = proc::proc_path(ppid, "mem");
    let what = format!("{} ({comm}, the parent process)", path.display());
    (what, std::fs::File::open(path).map(drop))
}

/// Where tracefs is mounted, from our mountinfo (`/sys/kernel/tracing`, or
/// inside debugfs).
fn tracefs_mounts(mounts: &[proc::Mount]) -> Vec<PathBuf> {
    mounts
        .iter()
        .filter_map(|m| match m.fstype.as_str() {
            "tracefs" => Some(PathBuf::from(&m.mount_point)),
            "debugfs" => Some(Path::new(&m.mount_point).join("tracing")),
            _ => None,
        })
        .collect()
}

/// The kmem tracepoints kmemleak attaches to, by their event id file.
const KMEM_EVENT: &str = "events/kmem/kmalloc/id";

/// tracefs: mounted, and the kmem tracepoints' ids readable (libbpf reads
/// them to attach kmemleak's tracepoints). Returns whether kmemleak can
/// attach.
fn tracefs_check(dirs: &[PathBuf], privs: Privileges) -> (Check, bool) {
    const NAME: &str = "tracefs";
    let Some(dir) = dirs
        .iter()
        .find(|d| d.join("events").exists())
        .or(dirs.first())
    else {
        if privs.has(CAP_SYS_ADMIN) {
            return (
                Check::ok(
                    NAME,
                    "not mounted; flameprobe mounts it at /sys/kernel/tracing when kmemleak \
                     needs its tracepoints",
                ),
                true,
            );
        }
        return (
            Check::missing(
                NAME,
                "not mounted, and flameprobe cannot mount it without CAP_SYS_ADMIN: kmemleak \
                 needs its kmem tracepoints",
                "sudo mount -t tracefs tracefs /sys/kernel/tracing",
            ),
            false,
        );
    };
    match std::fs::read_to_string(dir.join(KMEM_EVENT)) {
        Ok(_) => (
            Check::ok(
                NAME,
                format!(
                    "mounted at {}; the kmem tracepoints are there (kmemleak)",
                    dir.display()
                ),
            ),
            true,
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => (
            Check::missing(
                NAME,
                format!(
                    "mounted at {}, without the kmem tracepoints ({KMEM_EVENT}): kmemleak \
                     cannot attach",
                    dir.display()
                ),
                "a kernel built with CONFIG_TRACEPOINTS (the kmem events)",
            ),
            false,
        ),
        Err(e) => (
            Check::missing(
                NAME,
                format!(
                    "mounted at {}, but {KMEM_EVENT} cannot be read ({e}): kmemleak cannot attach",
                    dir.display()
                ),
                privs.fix(),
            ),
            false,
        ),
    }
}

/// The cgroup layout, and whether containers can be filtered by cgroup id.
fn cgroup_check(layout: &cgroup::CgroupLayout) -> Check {
    const NAME: &str = "cgroups";
    let v1: Vec<&str> = layout.v1.iter().map(|(_, h)| h.as_str()).collect();
    match (layout.kind(), &layout.unified) {
        ("none", _) => Check::warn(
            NAME,
            "no cgroup file system is mounted: flameprobe cannot tell which container a \
             process is in",
            "mount cgroup2 at /sys/fs/cgroup (systemd does at boot)",
        ),
        ("legacy", _) => Check::warn(
            NAME,
            format!(
                "v1 only ({}): --container follows containers by pid (the fallback), not by \
                 cgroup id in the kernel",
                v1.join(", ")
            ),
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2) to filter containers \
             in the kernel",
        ),
        (kind, Some(unified)) => {
            let layout = if kind == "hybrid" {
                format!(
                    "hybrid: v1 ({}) and the unified hierarchy at {}",
                    v1.join(", "),
                    unified.display()
                )
            } else {
                format!("unified (v2 only) at {}", unified.display())
            };
            Check::ok(
                NAME,
                format!(
                    "{layout}: containers with a cgroup of their own there are filtered in the \
                     kernel by cgroup id"
                ),
            )
        }
        (kind, None) => Check::warn(
            NAME,
            format!(
                "{kind}, but only a subtree of the unified hierarchy is mounted here (in a \
                 container?): --container follows containers by pid"
            ),
            "run flameprobe on the host (or with the host's /sys/fs/cgroup)",
        ),
    }
}

/// The runtimes whose state flameprobe reads, and whether it is there.
fn runtime_checks(roots: &container::StateRoots) -> Vec<Check> {
    let candidates: [(&str, PathBuf); 3] = [
        ("podman, CRI-O", roots.storage.graph_root.clone()),
        ("docker", roots.docker.join("containers")),
        ("containerd", roots.containerd_tasks.clone()),
    ];
    let mut found = Vec::new();
    let mut absent = Vec::new();
    let mut checks = Vec::new();
    for (name, dir) in candidates {
        match path_state(&dir) {
            Ok(true) => found.push(format!("{name} ({})", dir.display())),
            Ok(false) => absent.push(format!("{name} ({})", dir.display())),
            Err(e) => checks.push(Check::warn(
                "runtimes",
                format!(
                    "{name}: cannot read {} ({e}): its containers are named by short id",
                    dir.display()
                ),
                "run flameprobe as root",
            )),
        }
    }
    let mut parts = Vec::new();
    if !found.is_empty() {
        parts.push(format!("state found: {}", found.join(", ")));
    }
    if !absent.is_empty() {
        parts.push(format!("not found: {}", absent.join(", ")));
    }
    if !parts.is_empty() {
        checks.insert(0, Check::info("runtimes", parts.join("; ")));
    }
    checks
}

/// One line per running container: how `--container` would record it.
fn container_checks(containers: &[container::Container]) -> Vec<Check> {
    if containers.is_empty() {
        return vec![Check::info("containers", "none running")];
    }
    containers
        .iter()
        .map(|c| {
            let name = format!("container {}", c.name);
            let mut what = format!(
                "{}, {}",
                c.short_id(),
                c.runtime
                    .map_or("runtime unknown".to_string(), |r| r.to_string())
            );
            if let Some(pod) = &c.pod {
                what.push_str(&format!(", pod {}", pod.display_name()));
            }
            match c.cgroup_id {
                Some(id) => Check::ok(
                    name,
                    format!("{what}: filtered in the kernel by cgroup id {id}"),
                ),
                None => Check::warn(
                    name,
                    format!(
                        "{what}: no cgroup of its own in the unified hierarchy ({}): \
                         followed by pid (the fallback)",
                        c.cgroup_path
                    ),
                    "run the runtime on cgroup v2 (systemd.unified_cgroup_hierarchy=1) to \
                     filter it in the kernel",
                ),
            }
        })
        .collect()
}

/// One line per running HotSpot JVM: its version and whether it would
/// accept the attach that names its JIT frames (not attempted here).
fn jvm_checks(privs: Privileges) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut unreadable: Vec<u32> = Vec::new();
    let me = std::process::id();
    for pid in proc::all_pids() {
        if pid == me {
            continue;
        }
        let maps = match proc::read_maps(pid) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                unreadable.push(pid);
                continue;
            }
            Err(_) => continue, // exited meanwhile
        };
        let Some(jvm) = hotspot::detect(pid, &maps) else {
            continue;
        };
        let comm = proc::read_status(pid).map(|s| s.name).unwrap_or_default();
        let version = jvm
            .version
            .as_ref()
            .map_or("Java version unknown".to_string(), |v| format!("Java {v}"));
        let without_fp = hotspot::preserves_frame_pointer(pid) == Some(false);
        let frames = if without_fp {
            format!("; {}", hotspot::WITHOUT_FRAME_POINTER)
        } else {
            String::new()
        };
        let name = format!("JVM {pid}");
        checks.push(match hotspot::check_attach(pid) {
            Ok(_) => {
                let finding = format!(
                    "{comm}, {version}: would accept the attach that names its JIT frames \
                     (Compiler.perfmap, after sampling){frames}"
                );
                if without_fp {
                    Check::warn(name, finding, hotspot::FRAME_POINTER_FIX)
                } else {
                    Check::ok(name, finding)
                }
            }
            Err(e) => {
                let mut fix = e.to_string();
                if without_fp {
                    fix = format!("{fix}; and {}", hotspot::FRAME_POINTER_FIX);
                }
                Check::warn(
                    name,
                    format!("{comm}, {version}: would refuse the attach{frames}"),
                    fix,
                )
            }
        });
    }
    if checks.is_empty() {
        checks.push(Check::info("JVMs", "no running HotSpot JVM"));
    }
    if !unreadable.is_empty() {
        let pids: Vec<String> = unreadable.iter().take(5).map(u32::to_string).collect();
        let more = if unreadable.len() > 5 { ", ..." } else { "" };
        let finding = format!(
            "the memory maps of {} process(es) cannot be read (pid {}{more}): JVMs among them \
             are not listed",
            unreadable.len(),
            pids.join(", ")
        );
        checks.push(if privs.euid == 0 {
            Check::info("JVMs", finding)
        } else {
            Check::warn("JVMs", finding, "run doctor as root")
        });
    }
    checks
}

/// Runs every check.
pub fn diagnose() -> Report {
    crate::probe::route_libbpf_log();
    let privs = Privileges::of_self();
    let mut checks = Vec::new();

    // The kernel, BTF, ring buffers.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let kernel = parse_kernel_release(&release);
    checks.push(match kernel {
        Some(k) if k >= RING_BUFFER_SINCE => Check::ok(
            "kernel",
            format!("Linux {release} ({})", std::env::consts::ARCH),
        ),
        Some(_) => Check::missing(
            "kernel",
            format!("Linux {release}: older than {RING_BUFFER_SINCE}, without BPF ring buffers"),
            format!("Linux {RING_BUFFER_SINCE} or later ({UPROBE_SESSION_SINCE} or later for --probe memleak)"),
        ),
        None => Check::info(
            "kernel",
            format!("cannot tell the kernel version from {release:?}; the checks below test"),
        ),
    });
    let btf = match std::fs::metadata(VMLINUX_BTF) {
        Ok(m) => {
            checks.push(Check::ok(
                "BTF",
                format!(
                    "{VMLINUX_BTF} ({:.1} MiB)",
                    m.len() as f64 / (1 << 20) as f64
                ),
            ));
            true
        }
        Err(e) => {
            checks.push(Check::missing(
                "BTF",
                format!("{VMLINUX_BTF}: {e}: the kernel has no BTF, which every probe needs"),
                "a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4)",
            ));
            false
        }
    };
    let bpf_ok = missing_capabilities(privs.cap_eff).is_none();
    let (check, ring_buffer) = tested_check(
        "ring buffer",
        &Tested::of(features::ring_buffer(), bpf_ok),
        "a BPF ring buffer can be created (every probe delivers through one)",
        "the kernel refused a BPF ring buffer",
        Some(RING_BUFFER_SINCE),
        kernel,
        "Linux 5.8 or later",
    );
    checks.push(check);

    // Perf events and the sysctls that govern what this process sees.
    let cpu = perf::online_cpus()
        .ok()
        .and_then(|c| c.first().copied())
        .unwrap_or(0);
    let paranoid = read_sysctl("kernel/perf_event_paranoid");
    let software = features::perf_event(SamplingClock::Software, cpu);
    checks.push(perf_event_check(&software, cpu, paranoid, privs));
    checks.push(hardware_pmu_check(
        &features::perf_event(SamplingClock::HardwareCycles, cpu),
        cpu,
    ));
    checks.push(paranoid_check(paranoid, privs));
    let visible = kallsyms_visible();
    checks.push(kptr_check(
        read_sysctl("kernel/kptr_restrict"),
        visible,
        privs,
    ));

    // Privileges.
    checks.extend(capability_checks(privs, visible == Some(true)));

    // BPF features of the other probes.
    let (check, _) = match Tested::of(features::bpf_stats(), privs.has(CAP_SYS_ADMIN)) {
        Tested::Works => (
            Check::ok("BPF statistics", "can be turned on (--bpf-stats)"),
            true,
        ),
        Tested::NotPermitted(e) => (
            Check::warn(
                "BPF statistics",
                format!("cannot be turned on ({e}): --bpf-stats needs CAP_SYS_ADMIN"),
                "run flameprobe as root for --bpf-stats",
            ),
            false,
        ),
        Tested::Fails(e) => (
            Check::warn(
                "BPF statistics",
                format!("the kernel refused them ({e}): no --bpf-stats"),
                "Linux 5.8 or later for --bpf-stats",
            ),
            false,
        ),
    };
    checks.push(check);
    let (check, sessions) = tested_check(
        "uprobe sessions",
        &Tested::of(features::uprobe_session(), bpf_ok),
        "the kernel takes uprobe session links (--probe memleak)",
        "the kernel does not know uprobe session links",
        Some(UPROBE_SESSION_SINCE),
        kernel,
        "Linux 6.13 or later for --probe memleak",
    );
    checks.push(check);
    let (mut check, tp_btf) = tested_check(
        "BTF tracepoints",
        &Tested::of(features::btf_tracepoint("sched_switch"), bpf_ok),
        "a tp_btf program on sched_switch loads (--probe offcpu, wall)",
        "a tp_btf program on sched_switch does not load",
        Some(OFFCPU_SINCE),
        kernel,
        "Linux 5.15 or later for --probe offcpu and wall",
    );
    let offcpu = tp_btf && kernel.is_none_or(|k| k >= OFFCPU_SINCE);
    if tp_btf && !offcpu {
        check = Check::missing(
            "BTF tracepoints",
            format!(
                "tp_btf programs load, but Linux {} lacks bpf_task_pt_regs, which the off-CPU \
                 program uses",
                kernel.map_or(String::new(), |k| k.to_string())
            ),
            "Linux 5.15 or later for --probe offcpu and wall",
        );
    }
    checks.push(check);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = proc::parse_mountinfo(&mountinfo);
    let tracefs = tracefs_mounts(&mounts);
    checks.push(Check::info(
        "kprobes",
        match (
            Path::new("/sys/bus/event_source/devices/kprobe").exists(),
            tracefs.iter().any(|d| d.join("kprobe_events").exists()),
        ) {
            (false, false) => {
                "none (no kprobe PMU in /sys/bus/event_source/devices, no kprobe_events in \
                 tracefs: CONFIG_KPROBE_EVENTS is off); flameprobe does not use kprobes"
            }
            _ => "available; flameprobe does not use kprobes",
        },
    ));
    checks.push(Check::info(
        "fentry",
        match Tested::of(features::fentry("bpf_fentry_test1"), bpf_ok) {
            Tested::Works => {
                "an fentry program attaches (BPF trampolines); flameprobe does not use fentry"
                    .to_string()
            }
            Tested::Fails(e) => format!(
                "the kernel refuses an fentry program ({e}); flameprobe does not use fentry"
            ),
            Tested::NotPermitted(e) => {
                format!("not tested ({e}); flameprobe does not use fentry")
            }
        },
    ));
    let (check, kmem) = tracefs_check(&tracefs, privs);
    checks.push(check);
    let (what, opened) = open_parent_memory();
    checks.push(process_memory_check(
        read_sysctl("kernel/yama/ptrace_scope"),
        &what,
        &opened,
        privs,
    ));

    checks.push(open_files_check(crate::limits::nofile()));

    // Containers and JVMs.
    let layout = cgroup::parse_cgroup_layout(&mountinfo);
    checks.push(cgroup_check(&layout));
    checks.extend(runtime_checks(&container::StateRoots::from_host()));
    checks.extend(container_checks(&container::list()));
    checks.extend(jvm_checks(privs));

    let probes = probe_verdicts(&Abilities {
        privs,
        btf,
        ring_buffer,
        perf_event: software.as_ref().map_err(|e| e.to_string()).copied(),
        uprobe_sessions: sessions,
        kmem_tracepoints: kmem,
        offcpu,
        cgroup_ids: layout.unified.is_some(),
    });
    Report {
        checks,
        record_can_run: probes[0].available,
        probes,
    }
}

/// What the checks found that decides which probes can run.
#[derive(Clone, Debug)]
pub struct Abilities {
    pub privs: Privileges,
    pub btf: bool,
    pub ring_buffer: bool,
    /// The software cpu-clock opened, or why not.
    pub perf_event: Result<(), String>,
    pub uprobe_sessions: bool,
    pub kmem_tracepoints: bool,
    /// tp_btf programs load and the off-CPU program's helpers exist.
    pub offcpu: bool,
    /// The unified hierarchy's root is mounted: containers can be filtered
    /// by cgroup id.
    pub cgroup_ids: bool,
}

/// Which probes (and modes) can run, in the order the report lists them;
/// the first is `record`'s default, cpu.
pub fn probe_verdicts(a: &Abilities) -> Vec<ProbeVerdict> {
    let base: Result<(), String> = if let Some(m) = missing_capabilities(a.privs.cap_eff) {
        Err(format!("missing {m}"))
    } else if !a.btf {
        Err("no BTF".into())
    } else if !a.ring_buffer {
        Err("no BPF ring buffers".into())
    } else {
        Ok(())
    };
    let needs = |extra: Result<(), String>| base.clone().and(extra);
    let cpu = needs(
        a.perf_event
            .clone()
            .map_err(|e| format!("no perf event: {e}")),
    );
    let offcpu = needs(if a.offcpu {
        Ok(())
    } else {
        Err("no tp_btf programs".into())
    });
    let verdict = |probe, can: Result<(), String>, note: Option<&str>| match can {
        Ok(()) => ProbeVerdict {
            probe,
            available: true,
            note: note.map(str::to_string),
        },
        Err(why) => ProbeVerdict {
            probe,
            available: false,
            note: Some(why),
        },
    };
    let lacking: Vec<&str> = hotspot::ATTACH_CAPABILITIES
        .iter()
        .filter(|(cap, _)| !a.privs.has(*cap))
        .map(|(_, name)| *name)
        .collect();
    vec![
        verdict("cpu", cpu.clone(), None),
        verdict(
            "memleak",
            needs(if a.uprobe_sessions {
                Ok(())
            } else {
                Err(format!("no uprobe sessions: Linux {UPROBE_SESSION_SINCE}+"))
            }),
            None,
        ),
        verdict(
            "kmemleak",
            needs(if a.kmem_tracepoints {
                Ok(())
            } else {
                Err("kmem tracepoints not usable".into())
            }),
            None,
        ),
        verdict("offcpu", offcpu.clone(), None),
        verdict("wall", cpu.clone().and(offcpu), None),
        verdict(
            "containers",
            cpu,
            Some(if a.cgroup_ids {
                "cgroup filter"
            } else {
                "pid fallback"
            }),
        ),
        verdict(
            "JIT attach",
            if lacking.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {}", lacking.join(", ")))
            },
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        // This machine, Debian 12, RHEL 8, a release candidate, a bare one.
        let cases = [
            ("6.18.44-fc-v769\n", KernelVersion(6, 18, 44)),
            ("6.1.0-18-cloud-amd64", KernelVersion(6, 1, 0)),
            ("4.18.0-513.5.1.el8_9.x86_64", KernelVersion(4, 18, 0)),
            ("6.8.0-rc3", KernelVersion(6, 8, 0)),
            ("6.13", KernelVersion(6, 13, 0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_kernel_release(text), Some(want), "{text}");
        }
        assert_eq!(parse_kernel_release(""), None);
        assert_eq!(parse_kernel_release("linux"), None);
        assert!(KernelVersion(6, 13, 0) >= UPROBE_SESSION_SINCE);
        assert!(KernelVersion(6, 12, 99) < UPROBE_SESSION_SINCE);
        assert!(KernelVersion(5, 10, 0) >= RING_BUFFER_SINCE);
        assert!(KernelVersion(4, 19, 0) < RING_BUFFER_SINCE);
    }

    #[test]
    fn parses_sysctls_and_kallsyms_lines() {
        assert_eq!(parse_sysctl_int("2\n"), Some(2));
        assert_eq!(parse_sysctl_int("-1\n"), Some(-1));
        assert_eq!(parse_sysctl_int("4"), Some(4));
        assert_eq!(parse_sysctl_int(""), None);
        // First lines of /proc/kallsyms: this machine as root, and as a
        // user it hides addresses from.
        assert_eq!(
            kallsyms_shows_addresses("ffffffff81000000 T srso_alias_untrain_ret\n"),
            Some(true)
        );
        assert_eq!(
            kallsyms_shows_addresses("0000000000000000 T srso_alias_untrain_ret\n"),
            Some(false)
        );
        assert_eq!(kallsyms_shows_addresses(""), None);
    }

    /// CapEff of root on this machine, and of a docker container with the
    /// default capability set.
    const ROOT: Privileges = Privileges {
        euid: 0,
        cap_eff: 0x0000_01ff_feff_ffff,
    };
    const DOCKER_DEFAULT: Privileges = Privileges {
        euid: 0,
        cap_eff: 0x0000_0000_a804_25fb,
    };
    const NOBODY: Privileges = Privileges {
        euid: 65534,
        cap_eff: 0,
    };
    /// CAP_BPF and CAP_PERFMON, granted with setcap.
    const BPF_PERFMON: Privileges = Privileges {
        euid: 1000,
        cap_eff: (1 << CAP_BPF) | (1 << CAP_PERFMON),
    };

    fn status_of<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:?}"))
    }

    #[test]
    fn names_each_capability_and_what_is_lost() {
        let root = capability_checks(ROOT, true);
        assert_eq!(root.len(), CAPABILITIES.len());
        assert!(root.iter().all(|c| c.status == Status::Ok), "{root:?}");

        let docker = capability_checks(DOCKER_DEFAULT, false);
        for name in ["CAP_BPF", "CAP_PERFMON"] {
            let c = status_of(&docker, name);
            assert_eq!(c.status, Status::Missing, "{c:?}");
            assert!(c.finding.contains("CAP_BPF and CAP_PERFMON"), "{c:?}");
            assert!(c
                .fix
                .as_deref()
                .unwrap()
                .contains("setcap cap_bpf,cap_perfmon"));
        }
        assert_eq!(status_of(&docker, "CAP_SYSLOG").status, Status::Warn);
        assert!(status_of(&docker, "CAP_SYSLOG")
            .fix
            .as_deref()
            .unwrap()
            .contains("cap_syslog+ep"));

        let granted = capability_checks(BPF_PERFMON, true);
        assert_eq!(status_of(&granted, "CAP_BPF").status, Status::Ok);
        assert_eq!(status_of(&granted, "CAP_SYS_PTRACE").status, Status::Warn);
        assert_eq!(status_of(&granted, "CAP_SYSLOG").status, Status::Info);

        // CAP_SYS_ADMIN alone (kernels before 5.8) covers BPF and perf.
        let admin = Privileges {
            euid: 0,
            cap_eff: 1 << CAP_SYS_ADMIN,
        };
        let admin = capability_checks(admin, true);
        assert_eq!(status_of(&admin, "CAP_BPF").status, Status::Ok);
        assert!(status_of(&admin, "CAP_BPF")
            .finding
            .contains("CAP_SYS_ADMIN covers"));
    }

    #[test]
    fn perf_event_paranoid_levels() {
        assert_eq!(paranoid_check(Some(2), ROOT).status, Status::Ok);
        assert_eq!(paranoid_check(Some(2), BPF_PERFMON).status, Status::Ok);
        let c = paranoid_check(Some(2), NOBODY);
        assert_eq!(c.status, Status::Warn);
        assert!(c.finding.contains("no kernel profiling"), "{c:?}");
        // Debian's and Ubuntu's extra levels need CAP_SYS_ADMIN.
        for level in [3, 4] {
            let c = paranoid_check(Some(level), BPF_PERFMON);
            assert_eq!(c.status, Status::Missing, "{c:?}");
            assert!(c
                .fix
                .as_deref()
                .unwrap()
                .contains("kernel.perf_event_paranoid=2"));
            assert_eq!(paranoid_check(Some(level), ROOT).status, Status::Ok);
        }
        assert!(paranoid_check(Some(-1), NOBODY)
            .finding
            .contains("every user"));
    }

    #[test]
    fn perf_event_errors_name_their_fix() {
        let ok = perf_event_check(&Ok(()), 0, Some(2), ROOT);
        assert_eq!(ok.status, Status::Ok);
        let eacces = || Err(io::Error::from_raw_os_error(libc::EACCES));
        let c = perf_event_check(&eacces(), 0, Some(2), NOBODY);
        assert_eq!(c.status, Status::Missing);
        assert!(c.finding.contains("CAP_PERFMON"), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("setcap"), "{c:?}");
        let c = perf_event_check(&eacces(), 0, Some(3), BPF_PERFMON);
        assert!(
            c.fix.as_deref().unwrap().contains("perf_event_paranoid=2"),
            "{c:?}"
        );
        let c = perf_event_check(
            &Err(io::Error::from_raw_os_error(libc::ENOENT)),
            1,
            None,
            ROOT,
        );
        assert_eq!(c.status, Status::Missing);
        assert!(
            c.fix.as_deref().unwrap().contains("CONFIG_PERF_EVENTS"),
            "{c:?}"
        );
    }

    #[test]
    fn record_hints_name_the_missing_capabilities() {
        assert_eq!(file_access_hint_for(ROOT), None);
        let hint = file_access_hint_for(BPF_PERFMON).unwrap();
        assert!(
            hint.contains("CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH"),
            "{hint}"
        );
        assert!(hint.contains("setcap"), "{hint}");
        let c = kptr_check(Some(2), Some(false), ROOT);
        let line = hint_line("kernel frames are raw addresses", &c);
        assert!(line.contains("kptr_restrict=1"), "{line}");
    }

    #[test]
    fn kptr_restrict_and_kallsyms() {
        let c = kptr_check(Some(0), Some(true), ROOT);
        assert_eq!(c.status, Status::Ok);
        let c = kptr_check(Some(2), Some(false), ROOT);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.fix.as_deref().unwrap().contains("kernel.kptr_restrict=1"),
            "{c:?}"
        );
        let c = kptr_check(Some(1), Some(false), BPF_PERFMON);
        assert!(c.fix.as_deref().unwrap().contains("cap_syslog"), "{c:?}");
    }

    #[test]
    fn process_memory_and_yama() {
        let what = "/proc/7/mem (bash, the parent process)";
        let ok = process_memory_check(None, what, &Ok(()), ROOT);
        assert_eq!(ok.status, Status::Ok);
        assert!(ok.finding.contains("Yama is not enabled"));
        assert!(ok.finding.starts_with(what));
        let eperm = || Err(io::Error::from_raw_os_error(libc::EPERM));
        let c = process_memory_check(Some(3), what, &eperm(), ROOT);
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.as_deref().unwrap().contains("reboot"), "{c:?}");
        let c = process_memory_check(Some(1), what, &eperm(), BPF_PERFMON);
        assert!(c.fix.as_deref().unwrap().contains("setcap"), "{c:?}");
    }

    #[test]
    fn a_low_open_file_limit_is_reported() {
        assert_eq!(open_files_check(Ok((20_000, 20_000))).status, Status::Ok);
        let c = open_files_check(Ok((16, 16)));
        assert_eq!(c.status, Status::Warn);
        assert!(c.finding.contains("only 16 files"), "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains("ulimit -Hn"), "{c:?}");
        let c = open_files_check(Err(io::Error::from_raw_os_error(libc::EPERM)));
        assert_eq!(c.status, Status::Info);
    }

    #[test]
    fn tests_without_privileges_fall_back_to_the_kernel_version() {
        let eperm = Tested::NotPermitted(io::Error::from_raw_os_error(libc::EPERM));
        let (c, ok) = tested_check(
            "uprobe sessions",
            &eperm,
            "works",
            "fails",
            Some(UPROBE_SESSION_SINCE),
            Some(KernelVersion(6, 18, 44)),
            "Linux 6.13",
        );
        assert!(ok);
        assert_eq!(c.status, Status::Ok);
        assert!(c.finding.contains("not tested"), "{c:?}");
        let (c, ok) = tested_check(
            "uprobe sessions",
            &eperm,
            "works",
            "fails",
            Some(UPROBE_SESSION_SINCE),
            Some(KernelVersion(6, 1, 0)),
            "Linux 6.13",
        );
        assert!(!ok);
        assert_eq!(c.status, Status::Missing);
        let einval = Tested::Fails(io::Error::from_raw_os_error(libc::EINVAL));
        let (c, ok) = tested_check("x", &einval, "works", "fails", None, None, "fix");
        assert!(!ok);
        assert_eq!(c.fix.as_deref(), Some("fix"));
    }

    #[test]
    fn cgroup_layouts_say_how_containers_are_filtered() {
        let text = |name: &str| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/containers")
                .join(name);
            std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let hybrid = cgroup_check(&cgroup::parse_cgroup_layout(&text("hybrid.mountinfo")));
        assert_eq!(hybrid.status, Status::Ok);
        assert!(hybrid.finding.starts_with("hybrid"), "{hybrid:?}");
        assert!(
            hybrid.finding.contains("/sys/fs/cgroup/unified"),
            "{hybrid:?}"
        );
        let legacy = cgroup_check(&cgroup::parse_cgroup_layout(&text("legacy.mountinfo")));
        assert_eq!(legacy.status, Status::Warn);
        assert!(legacy.finding.contains("by pid"), "{legacy:?}");
        assert!(legacy
            .fix
            .as_deref()
            .unwrap()
            .contains("systemd.unified_cgroup_hierarchy=1"));
    }

    #[test]
    fn finds_tracefs_in_mountinfo() {
        // This machine, and a system that only has debugfs's tracing.
        let mounts = proc::parse_mountinfo(
            "42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw\n",
        );
        assert_eq!(
            tracefs_mounts(&mounts),
            [PathBuf::from("/sys/kernel/tracing")]
        );
        let mounts = proc::parse_mountinfo(
            "42 18 0:6 / /sys/kernel/debug rw,relatime shared:27 - debugfs debugfs rw\n",
        );
        assert_eq!(
            tracefs_mounts(&mounts),
            [PathBuf::from("/sys/kernel/debug/tracing")]
        );
    }

    #[test]
    fn probes_follow_from_what_was_found() {
        let here = Abilities {
            privs: ROOT,
            btf: true,
            ring_buffer: true,
            perf_event: Ok(()),
            uprobe_sessions: true,
            kmem_tracepoints: true,
            offcpu: true,
            cgroup_ids: true,
        };
        let names = |v: &[ProbeVerdict]| -> Vec<String> {
            v.iter()
                .map(|p| match (&p.note, p.available) {
                    (Some(n), true) => format!("{} ({n})", p.probe),
                    (None, true) => p.probe.to_string(),
                    (Some(n), false) => format!("no {} ({n})", p.probe),
                    (None, false) => format!("no {}", p.probe),
                })
                .collect()
        };
        assert_eq!(
            names(&probe_verdicts(&here)),
            [
                "cpu",
                "memleak",
                "kmemleak",
                "offcpu",
                "wall",
                "containers (cgroup filter)",
                "JIT attach"
            ]
        );
        // Linux 6.1 on cgroup v1, without tp_btf: cpu runs, memleak and
        // the off-CPU modes do not, containers are followed by pid.
        let older = Abilities {
            uprobe_sessions: false,
            offcpu: false,
            cgroup_ids: false,
            ..here.clone()
        };
        assert_eq!(
            names(&probe_verdicts(&older)),
            [
                "cpu",
                "no memleak (no uprobe sessions: Linux 6.13+)",
                "kmemleak",
                "no offcpu (no tp_btf programs)",
                "no wall (no tp_btf programs)",
                "containers (pid fallback)",
                "JIT attach"
            ]
        );
        // A VM without perf events: no cpu, hence no wall and no
        // containers; the others do not sample.
        let no_perf = Abilities {
            perf_event: Err("No such file or directory (os error 2)".into()),
            ..here.clone()
        };
        let v = probe_verdicts(&no_perf);
        assert!(!v[0].available && !v[4].available && !v[5].available);
        assert!(v[1].available && v[2].available && v[3].available);
        // Without capabilities nothing runs, and each says why.
        let nobody = Abilities {
            privs: NOBODY,
            ..here
        };
        let v = probe_verdicts(&nobody);
        assert!(v.iter().all(|p| !p.available), "{v:?}");
        assert_eq!(
            v[0].note.as_deref(),
            Some("missing CAP_BPF and CAP_PERFMON")
        );
        assert_eq!(
            v[6].note.as_deref(),
            Some("missing CAP_CHOWN, CAP_KILL, CAP_SETGID, CAP_SETUID")
        );
    }

    #[test]
    fn text_report_has_one_line_per_check_and_the_probes_last() {
        let report = Report {
            checks: vec![
                Check::ok("kernel", "Linux 6.18"),
                Check::missing("CAP_BPF", "not held", "sudo setcap ..."),
            ],
            probes: vec![
                ProbeVerdict {
                    probe: "cpu",
                    available: false,
                    note: Some("missing CAP_BPF".into()),
                },
                ProbeVerdict {
                    probe: "JIT attach",
                    available: true,
                    note: None,
                },
            ],
            record_can_run: false,
        };
        let mut out = Vec::new();
        write_text(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ok       kernel "), "{text}");
        assert!(lines[1].starts_with("missing  CAP_BPF"), "{text}");
        assert!(
            lines[1].ends_with("not held; fix: sudo setcap ..."),
            "{text}"
        );
        assert_eq!(lines[2], "probes: cpu no (missing CAP_BPF), JIT attach yes");
    }
}
