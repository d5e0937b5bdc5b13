//! What to profile: processes by pid, containers, the whole machine, or a
//! command that flameprobe launches. Each resolves to an in-kernel
//! [`Filter`] (what the BPF programs record) plus a way to tell when every
//! target has gone.

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::container::{cgroup, Container, Selection};
use crate::proc;

/// A set of processes named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// Every process on the machine.
    System,
    /// These processes (all their threads).
    Pids(Vec<u32>),
    /// Every process in these containers (names, ids or id prefixes, as
    /// given) and in every container of these pods, including those
    /// started in them later.
    Containers(Selection),
    /// A command flameprobe starts; it and its children are profiled.
    Command(Vec<OsString>),
}

/// Which tasks the BPF programs record (bpf/targets.h). flameprobe's own
/// threads are never recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every task on the machine.
    All,
    /// These processes (thread groups), and with `follow_children` the
    /// processes they start, transitively.
    Pids {
        pids: Vec<u32>,
        follow_children: bool,
    },
    /// Tasks in these cgroup v2 or below them (containers).
    Cgroups(Vec<CgroupTarget>),
}

/// A cgroup of the unified (v2) hierarchy whose tasks, and those of the
/// cgroups below it, are targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupTarget {
    /// Its id, as `bpf_get_current_cgroup_id()` returns it.
    pub id: u64,
    /// Its depth (the root is 0).
    pub level: u32,
}

/// Most distinct cgroup depths a [`Filter::Cgroups`] may have (the BPF
/// filter checks one ancestor per depth).
pub const MAX_CGROUP_LEVELS: usize = 4;

impl Filter {
    /// The filter for `containers`: their cgroups when every one has its
    /// own in the unified hierarchy; else (pure cgroup v1, a container in a
    /// shared or the root cgroup) their processes now and the processes
    /// these start, with a message saying why.
    pub fn of_containers(containers: &[Container]) -> (Filter, Option<String>) {
        let cgroups: Option<Vec<CgroupTarget>> = containers
            .iter()
            .map(|c| {
                Some(CgroupTarget {
                    id: c.cgroup_id?,
                    level: cgroup::cgroup_level(&c.cgroup_path),
                })
            })
            .collect();
        let why = match cgroups {
            Some(cgroups) if Self::levels(&cgroups).len() <= MAX_CGROUP_LEVELS => {
                return (Filter::Cgroups(cgroups), None)
            }
            Some(_) => format!(
                "the containers' cgroups sit at more than {MAX_CGROUP_LEVELS} different depths"
            ),
            None => {
                let names: Vec<&str> = containers
                    .iter()
                    .filter(|c| c.cgroup_id.is_none())
                    .map(|c| c.name.as_str())
                    .collect();
                format!(
                    "container {} has no cgroup of its own in the unified (v2) hierarchy \
                     (cgroup v1 only, or a shared or the root cgroup)",
                    names.join(", ")
                )
            }
        };
        let mut pids: Vec<u32> = containers.iter().flat_map(|c| c.pids.clone()).collect();
        pids.sort_unstable();
        pids.dedup();
        let msg = format!(
            "{why}: following the containers' {} processes by pid and the processes they \
             start; other processes that join the containers are added within {}s",
            pids.len(),
            crate::container::members::PROC_SCAN_INTERVAL.as_secs()
        );
        let filter = Filter::Pids {
            pids,
            follow_children: true,
        };
        (filter, Some(msg))
    }

    /// The distinct depths of `cgroups`, ascending.
    pub fn levels(cgroups: &[CgroupTarget]) -> Vec<u32> {
        let mut levels: Vec<u32> = cgroups.iter().map(|c| c.level).collect();
        levels.sort_unstable();
        levels.dedup();
        levels
    }

    /// The processes named at the start (none for the whole machine or
    /// cgroups).
    pub fn pids(&self) -> &[u32] {
        match self {
            Filter::All | Filter::Cgroups(_) => &[],
            Filter::Pids { pids, .. } => pids,
        }
    }

    pub fn follows_children(&self) -> bool {
        matches!(
            self,
            Filter::Pids {
                follow_children: true,
                ..
            }
        )
    }
}

/// `--tid` / `--thread`: only some threads of the targets are recorded.
#[derive(Clone, Debug)]
pub struct ThreadSelection {
    /// These thread ids.
    pub tids: Vec<u32>,
    /// Threads whose name matches (checked as threads appear).
    pub name: Option<regex::Regex>,
}

impl ThreadSelection {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tids.is_empty() {
            let list: Vec<String> = self.tids.iter().map(u32::to_string).collect();
            parts.push(format!("threads {}", list.join(",")));
        }
        if let Some(re) = &self.name {
            parts.push(format!("threads named /{re}/"));
        }
        parts.join(" and ")
    }
}

/// The thread filter the BPF programs apply (bpf/targets.h): `None`
/// records every thread of the targets; `Some` only the thread ids in the
/// in-kernel set, which starts with these and grows as matching threads
/// appear.
pub type ThreadFilter = Option<Vec<u32>>;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no such process: {0} (check the pid with `ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error(
        "flameprobe runs inside a PID namespace (a container?), where pids differ from the \
         kernel's: run it on the host (or in a container sharing the host's PID namespace, \
         e.g. `--pid=host`) to profile by pid"
    )]
    InPidNamespace,
    #[error("cannot start `{cmd}`: {cause}")]
    Spawn { cmd: String, cause: io::Error },
}

impl TargetSpec {
    /// Short description for titles and summaries.
    pub fn describe(&self) -> String {
        match self {
            TargetSpec::System => "whole system".into(),
            TargetSpec::Pids(p) if p.len() == 1 => format!("pid {}", p[0]),
            TargetSpec::Pids(p) => {
                let list: Vec<String> = p.iter().map(u32::to_string).collect();
                format!("pids {}", list.join(","))
            }
            TargetSpec::Containers(selection) => selection.describe(),
            TargetSpec::Command(argv) => format!("command `{}`", command_line(argv)),
        }
    }

    /// Checks that named processes exist (before anything is attached).
    pub fn validate(&self) -> Result<(), TargetError> {
        if let TargetSpec::Pids(pids) = self {
            resolve_pids(pids, &[])?;
        }
        Ok(())
    }
}

/// The processes to profile for the pids given with `--pid`: each must
/// exist; a thread id stands for its process, a pid given twice counts
/// once, and a kernel thread is allowed but said to be one. Pids are the
/// kernel's (the initial PID namespace's): inside another one, an error.
///
/// Thread ids in `named_threads` (given with `--tid`) stand for their
/// process silently: only those threads are recorded.
pub fn resolve_pids(pids: &[u32], named_threads: &[u32]) -> Result<Vec<u32>, TargetError> {
    if !proc::in_initial_pid_namespace() {
        return Err(TargetError::InPidNamespace);
    }
    let mut out: Vec<u32> = Vec::with_capacity(pids.len());
    for &pid in pids {
        let status = match proc::read_status(pid) {
            Ok(s) if proc::process_alive(pid) => s,
            _ => return Err(TargetError::NoSuchProcess(pid)),
        };
        let process = if status.tgid != 0 && status.tgid != pid && named_threads.contains(&pid) {
            status.tgid
        } else if status.tgid != 0 && status.tgid != pid {
            let name = proc::read_status(status.tgid)
                .map(|s| s.name)
                .unwrap_or_default();
            log::warn!(
                "{pid} is a thread of process {} ({name}): profiling the whole process",
                status.tgid
            );
            status.tgid
        } else {
            pid
        };
        if proc::is_kernel_thread(process) {
            log::warn!(
                "pid {process} ({}) is a kernel thread: its stacks have kernel frames only",
                status.name
            );
        }
        if !out.contains(&process) {
            out.push(process);
        }
    }
    Ok(out)
}

fn command_line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command started but held before `exec` until the probes are attached,
/// so that its very first instructions are profiled.
pub struct LaunchedCommand {
    pid: Pid,
    cmd: String,
    /// Writing a byte here lets the child exec.
    release: Option<OwnedFd>,
    /// The child writes its errno here if exec fails (closed on exec).
    exec_error: Option<OwnedFd>,
    status: Option<i32>,
}

impl LaunchedCommand {
    /// Forks the command; it waits for [`start`](Self::start) to exec.
    /// With `stdout_to_stderr` its output goes to our stderr, keeping our
    /// stdout for profile data.
    pub fn spawn(argv: &[OsString], stdout_to_stderr: bool) -> Result<Self, TargetError> {
        let cmd = command_line(argv);
        let spawn_err = |cause: io::Error| TargetError::Spawn {
            cmd: cmd.clone(),
            cause,
        };
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|e| spawn_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let stderr_fd = io::stderr().as_raw_fd();
        // The command gets the open-file limit flameprobe was started with.
        let nofile = crate::limits::original_nofile();
        // SAFETY: between fork and exec the child only calls
        // async-signal-safe functions on memory prepared before the fork.
        match unsafe { fork() }.map_err(|e| spawn_err(e.into()))? {
            ForkResult::Child => unsafe {
                // Only flameprobe holds the release end: if it goes away,
                // the read below sees EOF instead of waiting forever.
                libc::close(go_w.as_raw_fd());
                libc::close(err_r.as_raw_fd());
                let mut byte = 0u8;
                let n = libc::read(go_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                if n != 1 {
                    // flameprobe went away before starting us.
                    libc::_exit(127);
                }
                if stdout_to_stderr {
                    libc::dup2(stderr_fd, 1);
                }
                if let Some(limit) = &nofile {
                    libc::setrlimit(libc::RLIMIT_NOFILE, limit);
                }
                libc::execvp(argp[0], argp.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            },
            ForkResult::Parent { child } => {
                drop(go_r);
                drop(err_w);
                Ok(LaunchedCommand {
                    pid: child,
                    cmd,
                    release: Some(go_w),
                    exec_error: Some(err_r),
                    status: None,
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Lets the command exec and reports whether exec succeeded.
    pub fn start(&mut self) -> Result<(), TargetError> {
        let cmd = self.cmd.clone();
        let err = |cause| TargetError::Spawn { cmd, cause };
        if let Some(fd) = self.release.take() {
            if let Err(e) = std::fs::File::from(fd).write_all(&[1]) {
                return Err(err(e));
            }
        }
        if let Some(fd) = self.exec_error.take() {
            let mut buf = [0u8; 4];
            // EOF (0 bytes) means the pipe was closed by a successful exec.
            let n = std::fs::File::from(fd).read(&mut buf);
            if matches!(n, Ok(4)) {
                let _ = self.try_wait();
                return Err(err(io::Error::from_raw_os_error(i32::from_ne_bytes(buf))));
            }
        }
        Ok(())
    }

    /// The exit code (128+signal when killed) once the command has exited.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
                Err(_) => Some(-1), // not our child any more
                Ok(_) => None,
            };
        }
        self.status
    }
}

impl Drop for LaunchedCommand {
    fn drop(&mut self) {
        // A child still held before exec (recording never started: an
        // attach error) is killed and reaped; one that runs keeps running
        // on its own, as under `perf record`.
        if self.release.take().is_some() && self.status.is_none() {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
            return;
        }
        let _ = self.try_wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn describes_targets() {
        assert_eq!(TargetSpec::System.describe(), "whole system");
        assert_eq!(TargetSpec::Pids(vec![5]).describe(), "pid 5");
        assert_eq!(TargetSpec::Pids(vec![5, 6]).describe(), "pids 5,6");
        let cmd = TargetSpec::Command(vec!["sleep".into(), "1".into()]);
        assert_eq!(cmd.describe(), "command `sleep 1`");
        let containers = |containers: &[&str], pods: &[&str]| {
            TargetSpec::Containers(Selection {
                containers: containers.iter().map(|s| s.to_string()).collect(),
                pods: pods.iter().map(|s| s.to_string()).collect(),
            })
            .describe()
        };
        assert_eq!(containers(&["web"], &[]), "container web");
        assert_eq!(containers(&["web", "8dfa34"], &[]), "containers web,8dfa34");
        assert_eq!(containers(&[], &["prod/shop"]), "pod prod/shop");
        assert_eq!(
            containers(&["db"], &["prod/shop", "cart"]),
            "pods prod/shop,cart and container db"
        );
    }

    fn ctr(name: &str, path: &str, cgroup_id: Option<u64>, pids: Vec<u32>) -> Container {
        Container {
            id: format!("{name:0>64}"),
            name: name.into(),
            runtime: None,
            pod: None,
            cgroup_path: path.into(),
            cgroup_id,
            pids,
        }
    }

    #[test]
    fn containers_are_filtered_by_cgroup_or_else_by_pid() {
        let web = ctr("web", "/libpod_parent/libpod-1", Some(7), vec![5, 6]);
        let db = ctr("db", "/machine.slice/x/libpod-2.scope", Some(9), vec![8]);
        let (f, why) = Filter::of_containers(&[web.clone(), db.clone()]);
        assert_eq!(
            f,
            Filter::Cgroups(vec![
                CgroupTarget { id: 7, level: 2 },
                CgroupTarget { id: 9, level: 3 }
            ])
        );
        assert_eq!(why, None);
        assert!(f.pids().is_empty() && !f.follows_children());

        // One without a cgroup of its own: every container by pid.
        let v1 = ctr("old", "/docker/3", None, vec![6, 11]);
        let (f, why) = Filter::of_containers(&[web.clone(), v1]);
        assert_eq!(
            f,
            Filter::Pids {
                pids: vec![5, 6, 11],
                follow_children: true
            }
        );
        let why = why.unwrap();
        assert!(why.contains("container old has no cgroup"), "{why}");
        assert!(why.contains("3 processes"), "{why}");

        // Too many depths for the BPF filter.
        let deep: Vec<Container> = (1..=MAX_CGROUP_LEVELS + 1)
            .map(|n| ctr("x", &"/a".repeat(n), Some(n as u64), vec![n as u32]))
            .collect();
        let (f, why) = Filter::of_containers(&deep);
        assert!(matches!(f, Filter::Pids { .. }), "{f:?}");
        assert!(why.unwrap().contains("depths"));
    }

    #[test]
    fn threads_stand_for_their_process_and_duplicates_count_once() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(resolve_pids(&[tid, me, me], &[]).unwrap(), vec![me]);
        assert_eq!(resolve_pids(&[tid], &[tid]).unwrap(), vec![me]);
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn validate_rejects_missing_pid() {
        let err = TargetSpec::Pids(vec![std::process::id(), u32::MAX - 7])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("no such process: 4294967288"));
        assert!(TargetSpec::Pids(vec![std::process::id()])
            .validate()
            .is_ok());
    }

    #[test]
    fn launched_command_waits_for_start() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let argv: Vec<OsString> = vec![
            "sh".into(),
            "-c".into(),
            format!("touch {}", marker.display()).into(),
        ];
        let mut cmd = LaunchedCommand::spawn(&argv, false).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!marker.exists(), "held before start");
        assert!(cmd.try_wait().is_none());
        cmd.start().unwrap();
        let t = Instant::now();
        while cmd.try_wait().is_none() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cmd.try_wait(), Some(0));
        assert!(marker.exists());
    }

    #[test]
    fn a_command_never_started_is_killed_and_reaped() {
        let argv: Vec<OsString> = vec!["sleep".into(), "100".into()];
        let cmd = LaunchedCommand::spawn(&argv, false).unwrap();
        let pid = cmd.pid();
        drop(cmd);
        // Reaped: no such child any more (not even a zombie).
        let gone = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
        assert!(gone.is_err(), "{gone:?}");
        assert!(!proc::process_alive(pid));
    }

    #[test]
    fn missing_program_fails_to_start() {
        let argv: Vec<OsString> = vec!["/nonexistent/flameprobe-test".into()];
        let mut cmd = LaunchedCommand::spawn(&argv, false).unwrap();
        let err = format!("{:#}", anyhow::Error::from(cmd.start().unwrap_err()));
        assert!(err.contains("cannot start"), "{err}");
        assert_eq!(err.matches("No such file").count(), 1, "said once: {err}");
    }
}
