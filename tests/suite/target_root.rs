//! Binaries of a target are read inside its root, and only when they are
//! the files it mapped: a static program runs in a root of its own (as in
//! a container), something else is planted at its path after it started (a symbolic link to a host
//! file, a FIFO, a different ELF, a 10 GB sparse file), and flameprobe runs
//! with the capabilities the README recommends, without CAP_SYS_ADMIN (so
//! `/proc/PID/map_files` is refused and the root path is all there is).
//! It must finish, exit 0, never open or use the planted file, leave the
//! target's frames as `<path>/prog+0x...` and name the binary in the summary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::util::*;

/// CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: what the
/// README recommends, and enough for BPF recording on this kernel.
const REDUCED_CAPS: &str = "-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search";
const STATIC: &[&str] = &["-static", "-O1", "-fno-omit-frame-pointer"];

/// How the target gets a root of its own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Root {
    /// `chroot DIR /prog`: its maps show the path as the host sees it.
    Chroot,
    /// As a container runtime does (mount namespace, pivot_root): its maps
    /// show `/prog`, a path that means something else outside its root.
    Pivot,
}

/// The spinning target, run as `/prog` in a root of its own.
struct Rooted {
    dir: tempfile::TempDir,
    child: Child,
    shown: String,
}

impl Rooted {
    fn start(how: Root) -> Rooted {
        let bin = build_c("rootspin.c", "rootspin-static", STATIC);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&bin, dir.path().join("prog")).unwrap();
        let mut command = match how {
            Root::Chroot => {
                let mut c = Command::new("chroot");
                c.arg(dir.path()).arg("/prog");
                c
            }
            Root::Pivot => {
                let mut c = Command::new(&bin);
                c.arg("--root").arg(dir.path());
                c
            }
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the target");
        let shown = match how {
            Root::Chroot => dir.path().join("prog").to_string_lossy().into_owned(),
            Root::Pivot => "/prog".to_string(),
        };
        let t = Rooted { dir, child, shown };
        // Wait until it runs /prog in its root (the same pid execs it).
        let line_end = format!(" {}", t.shown);
        for _ in 0..500 {
            if t.maps().lines().any(|l| l.ends_with(&line_end)) {
                return t;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the target did not start in its root: {}", t.maps());
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.child.id())).unwrap_or_default()
    }

    /// The target's binary as seen from the host.
    fn prog(&self) -> PathBuf {
        self.dir.path().join("prog")
    }

    /// Removes the binary (the process keeps running it) and lets `plant`
    /// put something else at its path.
    fn replace_binary(&self, plant: impl FnOnce(&Path)) {
        std::fs::remove_file(self.prog()).unwrap();
        plant(&self.prog());
        assert!(
            self.maps().contains(&format!(" {} (deleted)", self.shown)),
            "the mapping now shows a deleted file: {}",
            self.maps()
        );
    }
}

impl Drop for Rooted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `flameprobe record -p PID -d 1s -o -` with the reduced capabilities;
/// returns its status, stdout and stderr. A flameprobe that hangs (as on a
/// planted FIFO before) fails the test instead of hanging it.
fn record_reduced(pid: &str) -> (ExitStatus, String, String) {
    let child = Command::new("setpriv")
        .arg(format!("--bounding-set={REDUCED_CAPS}"))
        .arg("--inh-caps=-all")
        .arg(env!("CARGO_BIN_EXE_flameprobe"))
        .args(["record", "-p", pid, "-d", "1s", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running setpriv");
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(id as i32, libc::SIGKILL) };
            panic!("flameprobe did not finish: it hangs on the planted file");
        }
    }
}

/// The recording succeeded, sampled the target, and left its binary's
/// frames unsymbolized: nothing from the original (unreadable) binary nor
/// from the planted one, and the summary names the binary.
fn assert_left_unsymbolized(target: &Rooted, status: ExitStatus, stdout: &str, stderr: &str) {
    assert!(status.success(), "{status}: {stderr}");
    let folded = parse_folded(stdout);
    let frame = format!("{}+0x", target.shown);
    let prog_frames: u64 = folded
        .iter()
        .filter(|(stack, _)| stack.split(';').any(|f| f.starts_with(&frame)))
        .map(|(_, n)| n)
        .sum();
    assert!(
        prog_frames > 0,
        "the target's frames are {frame}...: {stdout}"
    );
    for symbol in ["rootspin_", "planted_only_"] {
        assert!(!stdout.contains(symbol), "{symbol}* in {stdout}");
    }
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("not opened ("))
        .unwrap_or_else(|| panic!("no 'not opened' line: {stderr}"));
    assert!(line.ends_with(": prog"), "{line}");
    assert!(line.contains("inside the process's root"), "{line}");
}

#[test]
fn the_mapped_binary_is_used_through_the_root() {
    require_root!();
    let _cpu = shared_cpu();
    for how in [Root::Chroot, Root::Pivot] {
        let target = Rooted::start(how);
        let (status, stdout, stderr) = record_reduced(&target.pid());
        assert!(status.success(), "{status}: {stderr}");
        // The same checks accept the right file: symbolized.
        let folded = parse_folded(&stdout);
        assert!(
            chain_weight(&folded, "rootspin_outer;rootspin_hot") > 0,
            "{stdout}"
        );
        assert!(!stderr.contains("not opened"), "{stderr}");
    }
}

#[test]
fn a_symlink_to_a_host_file_is_not_followed() {
    require_root!();
    let _cpu = shared_cpu();
    let target = Rooted::start(Root::Pivot);
    // The host file is an ELF with symbols of its own, at an absolute path
    // that exists on the host only.
    let host = tempfile::tempdir().unwrap();
    let host_file = host.path().join("host-elf");
    std::fs::copy(
        build_c(
            "rootspin.c",
            "rootspin-planted",
            &[STATIC, &["-DPLANTED"]].concat(),
        ),
        &host_file,
    )
    .unwrap();
    target.replace_binary(|p| std::os::unix::fs::symlink(&host_file, p).unwrap());
    let watch = Inotify::watch(&host_file);
    let (status, stdout, stderr) = record_reduced(&target.pid());
    assert!(!watch.saw_events(), "flameprobe opened the host file");
    assert_left_unsymbolized(&target, status, &stdout, &stderr);
}

#[test]
fn a_planted_fifo_does_not_block() {
    require_root!();
    let _cpu = shared_cpu();
    let target = Rooted::start(Root::Pivot);
    target.replace_binary(|p| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
    });
    let (status, stdout, stderr) = record_reduced(&target.pid());
    assert_left_unsymbolized(&target, status, &stdout, &stderr);
}

#[test]
fn a_different_elf_is_not_used() {
    require_root!();
    let _cpu = shared_cpu();
    let target = Rooted::start(Root::Pivot);
    let planted = build_c(
        "rootspin.c",
        "rootspin-planted",
        &[STATIC, &["-DPLANTED"]].concat(),
    );
    target.replace_binary(|p| {
        std::fs::copy(&planted, p).unwrap();
    });
    let (status, stdout, stderr) = record_reduced(&target.pid());
    assert_left_unsymbolized(&target, status, &stdout, &stderr);
}

#[test]
fn a_huge_sparse_file_is_not_used() {
    require_root!();
    let _cpu = shared_cpu();
    let target = Rooted::start(Root::Pivot);
    target.replace_binary(|p| {
        std::fs::File::create(p).unwrap().set_len(10 << 30).unwrap();
    });
    let (status, stdout, stderr) = record_reduced(&target.pid());
    assert_left_unsymbolized(&target, status, &stdout, &stderr);
}

/// An inotify watch for opens and reads of one file.
struct Inotify {
    fd: std::fs::File,
}

impl Inotify {
    fn watch(path: &Path) -> Inotify {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscalls; the descriptor is owned by the File.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let w = libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS);
            assert!(w >= 0);
            Inotify {
                fd: std::fs::File::from_raw_fd(fd),
            }
        }
    }

    fn saw_events(mut self) -> bool {
        let mut buf = [0u8; 4096];
        matches!(self.fd.read(&mut buf), Ok(n) if n > 0)
    }
}

/// With only CAP_BPF and CAP_PERFMON (uid 0, no CAP_SYSLOG, no
/// CAP_SYS_PTRACE or CAP_DAC_READ_SEARCH), another user's program in a
/// directory only it can read: the recording works, and the summary says
/// which capability or sysctl would name the frames left unnamed.
#[test]
fn reduced_capabilities_say_what_would_name_the_frames() {
    require_root!();
    let bin = build_c("syscalls.c", "syscalls", FP_FLAGS);
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("syscalls");
    std::fs::copy(&bin, &prog).unwrap();
    let status = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut target = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .arg(&prog)
        .arg("30")
        .spawn()
        .expect("starting the target as nobody");
    let out = Command::new("setpriv")
        .args(["--bounding-set=-all,+bpf,+perfmon", "--inh-caps=-all"])
        .arg(env!("CARGO_BIN_EXE_flameprobe"))
        .args([
            "record",
            "-p",
            &target.id().to_string(),
            "-d",
            "1s",
            "-o",
            "-",
        ])
        .output()
        .expect("running flameprobe with reduced capabilities");
    let _ = target.kill();
    let _ = target.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let folded = String::from_utf8_lossy(&out.stdout);
    assert!(
        !folded.contains("read_loop"),
        "its binary cannot be read: {folded}"
    );
    // Its frames are named by file offset (what addr2line takes): each
    // lies in one of the program's functions.
    let nm = Command::new("nm").arg("-S").arg(&bin).output().unwrap();
    let functions: Vec<(u64, u64)> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let start = u64::from_str_radix(f.first()?, 16).ok()?;
            let size = u64::from_str_radix(f.get(1)?, 16).ok()?;
            Some((start, start + size))
        })
        .collect();
    let offsets: Vec<u64> = folded
        .split(';')
        .filter_map(|f| f.split_once("/syscalls+0x"))
        .filter_map(|(_, hex)| u64::from_str_radix(hex.split(' ').next()?, 16).ok())
        .collect();
    assert!(!offsets.is_empty(), "{folded}");
    for off in offsets {
        assert!(
            functions.iter().any(|&(a, b)| a <= off && off < b),
            "syscalls+{off:#x} is in none of {functions:x?}: {folded}"
        );
    }
    assert!(
        err.contains("lacks CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH") && err.contains("setcap"),
        "{err}"
    );
    // /proc/kallsyms hides addresses from a process without CAP_SYSLOG
    // (unless perf_event_paranoid <= 1 with kptr_restrict 0).
    if folded.contains(";0xffffffff") {
        assert!(
            err.contains("kernel frames are raw addresses") && err.contains("fix:"),
            "{err}"
        );
    } else {
        assert!(!err.contains("kernel frames are raw addresses"), "{err}");
    }
}
