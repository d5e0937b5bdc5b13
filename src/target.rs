//! What to profile: processes by pid, the whole machine, or a command that
//! flameprobe launches. Each resolves to an in-kernel [`Filter`] (what the
//! BPF programs record) plus a way to tell when every target has gone.

use std::ffi::{CString, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::proc;

/// A set of processes named on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// Every process on the machine.
    System,
    /// These processes (all their threads).
    Pids(Vec<u32>),
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

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no such process: {0} (check the pid with `ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error("cannot start `{cmd}`: {source}")]
    Spawn { cmd: String, source: io::Error },
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
            TargetSpec::Command(argv) => format!("command `{}`", command_line(argv)),
        }
    }

    /// Checks that named processes exist (before anything is attached).
    pub fn validate(&self) -> Result<(), TargetError> {
        if let TargetSpec::Pids(pids) = self {
            if let Some(&missing) = pids.iter().find(|&&p| !proc::process_alive(p)) {
                return Err(TargetError::NoSuchProcess(missing));
            }
        }
        Ok(())
    }
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
        let spawn_err = |source: io::Error| TargetError::Spawn {
            cmd: cmd.clone(),
            source,
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
        // SAFETY: between fork and exec the child only calls
        // async-signal-safe functions on memory prepared before the fork.
        match unsafe { fork() }.map_err(|e| spawn_err(e.into()))? {
            ForkResult::Child => unsafe {
                let mut byte = 0u8;
                let n = libc::read(go_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                if n != 1 {
                    // flameprobe went away before starting us.
                    libc::_exit(127);
                }
                if stdout_to_stderr {
                    libc::dup2(stderr_fd, 1);
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
        let err = |source| TargetError::Spawn { cmd, source };
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
        // A child still held before exec exits when the pipe closes; one
        // that runs keeps running on its own, as under `perf record`.
        self.release.take();
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
    fn missing_program_fails_to_start() {
        let argv: Vec<OsString> = vec!["/nonexistent/flameprobe-test".into()];
        let mut cmd = LaunchedCommand::spawn(&argv, false).unwrap();
        let err = cmd.start().unwrap_err().to_string();
        assert!(err.contains("cannot start"), "{err}");
        assert!(err.contains("No such file"), "{err}");
    }
}
