//! Pure parsers for the /proc files flameprobe reads, plus thin readers.
//!
//! Parsers take the file's text and never touch the file system, so they are
//! unit-tested on real /proc text.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::text;

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub executable: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// Path or pseudo name (`[stack]`, `[vdso]`); empty for anonymous maps.
    pub path: String,
    /// The path ended in ` (deleted)` (file replaced or removed).
    pub deleted: bool,
}

impl MapEntry {
    /// Backed by a regular file (not anonymous, not `[pseudo]`).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// Parses the text of `/proc/PID/maps`. Malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapEntry> {
    // start-end perms offset dev inode   path (path may contain spaces)
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let t = rest.trim_start();
        let end = t.find(' ').unwrap_or(t.len());
        let (f, r) = t.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path = rest.trim_start();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let perms = perms.as_bytes();
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        readable: perms.first() == Some(&b'r'),
        executable: perms.get(2) == Some(&b'x'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode: inode.parse().ok()?,
        path: path.to_string(),
        deleted,
    })
}

/// The fields of `/proc/PID/status` flameprobe uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub tgid: u32,
    /// The pid in each nested pid namespace, outermost first.
    pub nspid: Vec<u32>,
    /// The thread group id (process id) in each nested pid namespace,
    /// outermost first: the last one is the pid the process sees itself as,
    /// which runtimes put in file names (`/tmp/perf-<pid>.map`).
    pub nstgid: Vec<u32>,
    /// Effective user and group ids, as seen from our user namespace.
    pub euid: Option<u32>,
    pub egid: Option<u32>,
    /// Signals the process has a handler for (bit `n - 1` for signal `n`).
    pub sig_cgt: u64,
    /// Effective capabilities bit set.
    pub cap_eff: u64,
    /// File mode creation mask.
    pub umask: Option<u32>,
}

/// Parses the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => s.name = value.to_string(),
            "Tgid" => s.tgid = value.parse().unwrap_or(0),
            "NSpid" => s.nspid = parse_ids(value),
            "NStgid" => s.nstgid = parse_ids(value),
            // real, effective, saved, file system
            "Uid" => s.euid = parse_ids(value).get(1).copied(),
            "Gid" => s.egid = parse_ids(value).get(1).copied(),
            "SigCgt" => s.sig_cgt = u64::from_str_radix(value, 16).unwrap_or(0),
            "CapEff" => s.cap_eff = u64::from_str_radix(value, 16).unwrap_or(0),
            "Umask" => s.umask = u32::from_str_radix(value, 8).ok(),
            _ => {}
        }
    }
    s
}

fn parse_ids(value: &str) -> Vec<u32> {
    value
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

impl Status {
    /// The process id as the process itself sees it (innermost pid
    /// namespace); the host tgid when the kernel does not say.
    pub fn ns_tgid(&self) -> u32 {
        self.nstgid.last().copied().unwrap_or(self.tgid)
    }

    /// Whether the process handles signal `sig` (else its default action
    /// applies: for SIGQUIT, a core dump).
    pub fn catches(&self, sig: i32) -> bool {
        (1..=64).contains(&sig) && self.sig_cgt & (1u64 << (sig - 1)) != 0
    }
}

pub fn proc_path(pid: u32, file: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{file}"))
}

pub fn read_maps(pid: u32) -> io::Result<Vec<MapEntry>> {
    Ok(parse_maps(&read_maps_text(pid)?))
}

/// The text of `/proc/PID/maps` (to tell whether the maps changed).
pub fn read_maps_text(pid: u32) -> io::Result<String> {
    read_text(&proc_path(pid, "maps"))
}

/// Reads `buf.len()` bytes of process `pid`'s memory at `addr` (fewer
/// where the memory ends); returns how many were read.
pub fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mem = fs::File::open(proc_path(pid, "mem"))?;
    let mut done = 0;
    while done < buf.len() {
        match mem.read_at(&mut buf[done..], addr + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// The value of variable `name` in process `pid`'s environment (as it
/// was when the process started its program).
pub fn read_environ_var(pid: u32, name: &str) -> Option<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    let environ = fs::read(proc_path(pid, "environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|kv| {
        let rest = kv.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(std::ffi::OsStr::from_bytes(rest).to_os_string())
    })
}

/// The (device, inode) of the executable process `pid` runs.
pub fn exe_key(pid: u32) -> io::Result<crate::process::FileKey> {
    fs::metadata(proc_path(pid, "exe")).map(|m| crate::process::FileKey::of_metadata(&m))
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): the state is the first.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// The kernel's task flags (field 9 of `/proc/PID/stat`).
pub fn parse_stat_flags(stat: &str) -> Option<u64> {
    stat_fields(stat)?.get(6)?.parse().ok()
}

/// Whether `pid` is a kernel thread (PF_KTHREAD).
pub fn is_kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    read_text(&proc_path(pid, "stat"))
        .ok()
        .and_then(|s| parse_stat_flags(&s))
        .is_some_and(|f| f & PF_KTHREAD != 0)
}

/// Whether flameprobe runs in the initial PID namespace, where pids are
/// the ones the kernel (and BPF) reports.
pub fn in_initial_pid_namespace() -> bool {
    // The initial PID namespace's inode number (PROC_PID_INIT_INO).
    const INIT: u64 = 0xEFFF_FFFC;
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(true, |m| m.ino() == INIT)
}

/// The process start time in clock ticks after boot (field 22 of
/// `/proc/PID/stat`).
pub fn parse_stat_start_time(stat: &str) -> Option<u64> {
    stat_fields(stat)?.get(19)?.parse().ok()
}

/// A `/proc` file as text. Names in it are the target's bytes (a comm
/// may hold 0xFF), so bytes that are not UTF-8 become `\xNN`
/// ([`text::from_bytes`]) instead of failing the whole read.
pub fn read_text(path: &std::path::Path) -> io::Result<String> {
    Ok(text::from_bytes(&fs::read(path)?))
}

pub fn read_status(pid: u32) -> io::Result<Status> {
    Ok(parse_status(&read_text(&proc_path(pid, "status"))?))
}

/// The thread's name from `/proc/PID/task/TID/comm`.
pub fn read_comm(pid: u32, tid: u32) -> io::Result<String> {
    let text = read_text(&proc_path(pid, &format!("task/{tid}/comm")))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// Every process's pid (the numeric entries of /proc).
pub fn all_pids() -> Vec<u32> {
    numeric_entries(std::path::Path::new("/proc"))
}

/// The thread ids of process `pid` (empty once it is gone).
pub fn thread_ids(pid: u32) -> Vec<u32> {
    numeric_entries(&proc_path(pid, "task"))
}

fn numeric_entries(dir: &std::path::Path) -> Vec<u32> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// True while a process with this pid exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = read_text(&proc_path(pid, "stat")) else {
        return false;
    };
    stat_fields(&stat)
        .and_then(|f| f.first().copied())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Whether thread `tid` of process `pid` is running (not a zombie).
pub fn thread_alive(pid: u32, tid: u32) -> bool {
    let Ok(stat) = read_text(&proc_path(pid, &format!("task/{tid}/stat"))) else {
        return false;
    };
    stat_fields(&stat)
        .and_then(|f| f.first().copied())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// One line of `/proc/PID/mountinfo`: the fields flameprobe uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the file system mounted here (`/` unless a subtree
    /// is bind-mounted), unescaped.
    pub root: String,
    /// Where it is mounted, unescaped.
    pub mount_point: String,
    pub fstype: String,
    /// The file system's own options (for cgroup v1: its controllers).
    pub super_options: String,
}

/// Parses the text of `/proc/PID/mountinfo`. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    let (left, right) = line.split_once(" - ")?;
    let mut right = right.split(' ');
    let fstype = right.next()?;
    let super_options = right.nth(1).unwrap_or("");
    let mut left = left.split(' ');
    Some(Mount {
        root: unescape_mountinfo(left.nth(3)?),
        mount_point: unescape_mountinfo(left.next()?),
        fstype: fstype.to_string(),
        super_options: super_options.to_string(),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a01000 r--p 00000000 fe:01 1311798                    /usr/bin/demo
55d0c8a01000-55d0c8a02000 r-xp 00001000 fe:01 1311798                    /usr/bin/demo
7f3a1c000000-7f3a1c021000 rw-p 00000000 00:00 0 
7f3a1c628000-7f3a1c7bd000 r-xp 00028000 fe:01 1050113                    /usr/lib/x86_64-linux-gnu/libc.so.6
7f3a1c900000-7f3a1c901000 r-xp 00000000 08:02 77                         /tmp/my lib.so (deleted)
7ffd6bd3b000-7ffd6bd5c000 rw-p 00000000 00:00 0                          [stack]
7ffd6bdf4000-7ffd6bdf6000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_real_mountinfo() {
        // This machine's cgroup2 and tracefs mounts, a line with several
        // optional fields (Debian 12), an escaped mount point, and junk.
        let text = "\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:2 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
624 620 0:26 /docker/fa4b /sys/fs/cgroup/my\\040dir ro,relatime master:5 - cgroup cgroup rw,xattr,name=systemd
not a mountinfo line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 4);
        assert_eq!(
            mounts[0],
            Mount {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/unified".into(),
                fstype: "cgroup2".into(),
                super_options: "rw".into(),
            }
        );
        assert_eq!(mounts[1].fstype, "tracefs");
        assert_eq!(mounts[2].mount_point, "/sys/fs/cgroup");
        assert_eq!(
            mounts[2].super_options,
            "rw,nsdelegate,memory_recursiveprot"
        );
        assert_eq!(mounts[3].root, "/docker/fa4b");
        assert_eq!(mounts[3].mount_point, "/sys/fs/cgroup/my dir");
        assert_eq!(mounts[3].super_options, "rw,xattr,name=systemd");
    }

    #[test]
    fn parses_real_maps() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 8);
        let text = &maps[1];
        assert_eq!(text.start, 0x55d0c8a01000);
        assert_eq!(text.end, 0x55d0c8a02000);
        assert!(text.executable && text.readable);
        assert_eq!(text.offset, 0x1000);
        assert_eq!((text.dev_major, text.dev_minor), (0xfe, 1));
        assert_eq!(text.inode, 1311798);
        assert_eq!(text.path, "/usr/bin/demo");
        assert!(text.is_file());
        assert!(!maps[2].is_file());
        assert_eq!(maps[2].path, "");
        assert_eq!(maps[4].path, "/tmp/my lib.so");
        assert!(maps[4].deleted);
        assert_eq!(maps[6].path, "[vdso]");
        assert!(!maps[6].is_file());
        assert!(maps[3].contains(0x7f3a1c628000) && !maps[3].contains(0x7f3a1c7bd000));
    }

    #[test]
    fn skips_malformed_maps_lines() {
        assert!(parse_maps("garbage\n\n1-2 r-xp zz 00:00 0 x\n").is_empty());
    }

    #[test]
    fn parses_real_status() {
        let text = "Name:\tjava\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
                    Pid:\t4242\nNSpid:\t4242\t1\nCapEff:\t000001ffffffffff\n";
        let s = parse_status(text);
        assert_eq!(s.name, "java");
        assert_eq!(s.tgid, 4242);
        assert_eq!(s.nspid, [4242, 1]);
        assert_eq!(s.cap_eff, 0x1ff_ffff_ffff);
        assert_eq!(s.umask, Some(0o022));
    }

    /// A JVM in a pid namespace (`unshare -p -f`), run as uid 1234; the
    /// lines as the host's /proc shows them (trimmed).
    #[test]
    fn parses_namespaced_ids_and_signals() {
        let text = "Name:\tjava\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t15618\n\
                    Ngid:\t0\nPid:\t15620\nPPid:\t15617\nTracerPid:\t0\n\
                    Uid:\t1234\t1235\t1234\t1235\nGid:\t2000\t2001\t2000\t2001\n\
                    FDSize:\t256\nGroups:\t \nNStgid:\t15618\t1\nNSpid:\t15620\t3\n\
                    NSpgid:\t15617\t0\nSigQ:\t0/96364\nSigPnd:\t0000000000000000\n\
                    SigBlk:\t0000000000000000\nSigIgn:\t0000000000000002\n\
                    SigCgt:\t0000000101005ccd\nCapEff:\t0000000000000000\n";
        let s = parse_status(text);
        assert_eq!(s.tgid, 15618);
        assert_eq!(s.nstgid, [15618, 1]);
        assert_eq!(s.nspid, [15620, 3]);
        assert_eq!(s.ns_tgid(), 1);
        assert_eq!((s.euid, s.egid), (Some(1235), Some(2001)));
        assert!(s.catches(libc::SIGQUIT));
        assert!(s.catches(libc::SIGHUP));
        // A JVM started with -Xrs leaves SIGQUIT to its default action.
        let xrs = parse_status("Tgid:\t7\nSigCgt:\t0000000101001cc8\n");
        assert!(!xrs.catches(libc::SIGQUIT));
        assert!(!xrs.catches(0) && !xrs.catches(65));
        // Without NStgid (Linux before 4.1) the host tgid is all there is.
        assert_eq!(xrs.ns_tgid(), 7);
        assert_eq!(xrs.euid, None);
    }

    #[test]
    fn parses_stat_start_time() {
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 98 0 0 0 1 2 0 0 20 0 1 0 \
                    123456 2531328 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(parse_stat_start_time(stat), Some(123456));
        assert_eq!(parse_stat_flags(stat), Some(4194560));
        assert!(is_kernel_thread(2), "kthreadd");
        assert!(!is_kernel_thread(std::process::id()));
        assert!(in_initial_pid_namespace());
        assert_eq!(parse_stat_start_time("garbage"), None);
    }

    #[test]
    fn reads_environment_variables() {
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .env("FLAMEPROBE_TEST_VAR", "a=b c")
            .spawn()
            .unwrap();
        // spawn may return before the child's exec has set up its new
        // environment: read until it has (bounded).
        let mut got = None;
        for _ in 0..500 {
            got = read_environ_var(child.id(), "FLAMEPROBE_TEST_VAR");
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.as_deref(), Some(std::ffi::OsStr::new("a=b c")));
        assert_eq!(read_environ_var(std::process::id(), "NO_SUCH_VAR_X"), None);
    }

    #[test]
    fn reads_process_memory() {
        let data = *b"flameprobe reads this";
        let mut buf = [0u8; 21];
        let n = read_memory(std::process::id(), data.as_ptr() as u64, &mut buf).unwrap();
        assert_eq!((n, &buf), (21, &data));
    }

    #[test]
    fn lists_processes_and_threads() {
        let me = std::process::id();
        assert!(all_pids().contains(&me));
        assert!(thread_ids(me).contains(&me));
        assert!(thread_ids(u32::MAX - 1).is_empty());
    }

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }
}
