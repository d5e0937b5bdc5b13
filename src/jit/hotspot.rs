//! HotSpot JVMs: telling that a process is one (and which Java version),
//! and asking it to write its perf map through the dynamic attach
//! protocol, spoken here (no `jcmd` binary, no agent in the target).
//!
//! The protocol, as HotSpot 17 implements it (`attachListener_linux.cpp`,
//! `attachListener.cpp`; observed with JDK 17.0.15):
//! 1. The attach listener thread starts lazily: on SIGQUIT the JVM looks
//!    for a file `.attach_pid<pid>` in its working directory, then in
//!    `/tmp`, owned by its effective user or root. Without that file,
//!    SIGQUIT prints a thread dump; a JVM started with `-Xrs` does not
//!    handle SIGQUIT at all (it would die) but starts the listener at
//!    startup instead.
//! 2. The listener binds the UNIX socket `/tmp/.java_pid<pid>` (mode 0600,
//!    owned by the JVM's effective user and group). `<pid>` is the JVM's pid
//!    in its own pid namespace; `/tmp` is its own, reached here through
//!    `/proc/PID/root`.
//! 3. It accepts a connection only from a peer (`SO_PEERCRED`) with its
//!    effective uid and gid, or root, as seen in the JVM's user namespace.
//!    Host root is no one in a user namespace that does not map it, so the
//!    trigger file is handed to the JVM's user and the connection is made
//!    by a short-lived thread that takes the JVM's uid and gid (credentials
//!    are per thread in the kernel). Nothing here enters a namespace
//!    (`setns` into a mount namespace is refused to a multithreaded
//!    process anyway).
//! 4. Request: NUL-terminated strings `1` (protocol version), the command,
//!    and exactly three arguments: `1\0jcmd\0Compiler.perfmap\0\0\0`.
//!    Reply: the result code as a decimal line (0 = success; for `jcmd` -1
//!    with the exception text, e.g. `Unknown diagnostic command` before
//!    JDK 17), then the command's output, then the JVM closes the socket.
//!
//! `Compiler.perfmap` (JDK 17+) writes `/tmp/perf-<pid>.map` in the JVM's
//! root before it replies. It costs the JVM a safepoint: ask once per JVM,
//! after sampling stopped. Everything here is bounded in time.

use std::ffi::CString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::proc::{self, MapEntry, Status};
use crate::safe_fs::{self, Scope};

/// A HotSpot JVM found in a process's mappings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotSpot {
    /// `libjvm.so` as the process sees it.
    pub libjvm: String,
    /// From the `release` file of its Java home, when readable.
    pub version: Option<JavaVersion>,
}

/// A Java version, as the `release` file of a Java home says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JavaVersion {
    /// `17` for `17.0.15`, `8` for `1.8.0_392`.
    pub feature: u32,
    /// As written: `17.0.15`.
    pub text: String,
}

impl fmt::Display for JavaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first Java version with `Compiler.perfmap`.
pub const PERFMAP_SINCE: u32 = 17;

/// The HotSpot `libjvm.so` among a process's mappings (OpenJ9 also ships a
/// `libjvm.so`, next to its own `libj9vm*.so`; it is not HotSpot).
pub fn find_libjvm(maps: &[MapEntry]) -> Option<&str> {
    let base = |m: &&MapEntry| m.path.rsplit('/').next().unwrap_or("").to_string();
    if maps.iter().any(|m| base(&m).starts_with("libj9vm")) {
        return None;
    }
    maps.iter()
        .find(|m| m.is_file() && base(m) == "libjvm.so")
        .map(|m| m.path.as_str())
}

/// Whether process `pid` (with these mappings) is a HotSpot JVM, and its
/// version when its Java home says (read inside the process's root).
pub fn detect(pid: u32, maps: &[MapEntry]) -> Option<HotSpot> {
    let libjvm = find_libjvm(maps)?.to_string();
    let version = release_candidates(Path::new(&libjvm))
        .into_iter()
        .find_map(|path| {
            let mut f = safe_fs::open_in_process_root(pid, &path).ok()?;
            let bytes = safe_fs::read_limited(&mut f, 64 << 10).ok()?;
            parse_release(&String::from_utf8_lossy(&bytes))
        });
    Some(HotSpot { libjvm, version })
}

/// Where the `release` file may be: the Java home is `lib/server/..` of
/// `libjvm.so` (JDK 9+) or `jre/lib/<arch>/server/..` (JDK 8, whose
/// `release` is next to `jre`).
fn release_candidates(libjvm: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dir = libjvm.parent();
    for _ in 0..4 {
        let Some(d) = dir.and_then(Path::parent) else {
            break;
        };
        out.push(d.join("release"));
        dir = Some(d);
    }
    out
}

/// Parses `JAVA_VERSION="17.0.15"` out of a Java home's `release` file.
pub fn parse_release(text: &str) -> Option<JavaVersion> {
    let value = text.lines().find_map(|l| l.strip_prefix("JAVA_VERSION="))?;
    let text = value.trim().trim_matches('"').to_string();
    let mut parts = text.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    let feature = if first == 1 {
        parts.next()?.parse().ok()?
    } else {
        first
    };
    Some(JavaVersion { feature, text })
}

/// Whether the JVM's options turn the attach mechanism off
/// (`-XX:+DisableAttachMechanism`).
pub fn attach_disabled(cmdline: &[u8], environ: &[u8]) -> bool {
    bool_flag(cmdline, environ, "DisableAttachMechanism").unwrap_or(false)
}

/// The setting of boolean `-XX:` flag `name` in a JVM's options, `None`
/// when they do not set it. The last setting wins, in HotSpot's order:
/// `JAVA_TOOL_OPTIONS`, `JDK_JAVA_OPTIONS`, the command line,
/// `_JAVA_OPTIONS`. Arguments after the main class are the program's.
/// (`@argfiles` and `-XX:Flags=` files are not read.)
pub fn bool_flag(cmdline: &[u8], environ: &[u8], name: &str) -> Option<bool> {
    let env = |name: &str| -> Vec<String> {
        environ
            .split(|&b| b == 0)
            .filter_map(|kv| kv.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut options = env("JAVA_TOOL_OPTIONS");
    options.extend(env("JDK_JAVA_OPTIONS"));
    options.extend(launcher_options(cmdline));
    options.extend(env("_JAVA_OPTIONS"));
    options.iter().rev().find_map(|o| {
        let setting = o.strip_prefix("-XX:")?;
        let (sign, flag) = setting.split_at_checked(1)?;
        if flag != name {
            return None;
        }
        match sign {
            "+" => Some(true),
            "-" => Some(false),
            _ => None,
        }
    })
}

/// What running without `-XX:+PreserveFramePointer` means for a JVM's
/// stacks ([`preserves_frame_pointer`] is false), and the fix.
pub const WITHOUT_FRAME_POINTER: &str =
    "runs without -XX:+PreserveFramePointer: its stacks through JIT code are cut short";
pub const FRAME_POINTER_FIX: &str = "restart it with -XX:+PreserveFramePointer";

/// Whether JVM `pid` was started with `-XX:+PreserveFramePointer`, which
/// makes its compiled code keep frame pointers (without it, stacks through
/// JIT code are cut short); `None` when its options cannot be read.
pub fn preserves_frame_pointer(pid: u32) -> Option<bool> {
    let cmdline = read_proc_limited(pid, "cmdline").ok()?;
    let environ = read_proc_limited(pid, "environ").unwrap_or_default();
    Some(bool_flag(&cmdline, &environ, "PreserveFramePointer").unwrap_or(false))
}

/// The JVM options of a `java` launcher command line: from the second
/// argument up to the main class, `-jar FILE` or `-m MODULE`.
fn launcher_options(cmdline: &[u8]) -> Vec<String> {
    const WITH_VALUE: &[&str] = &[
        "-cp",
        "-classpath",
        "--class-path",
        "-p",
        "--module-path",
        "--upgrade-module-path",
        "--add-modules",
        "--add-opens",
        "--add-exports",
        "--add-reads",
        "--limit-modules",
        "--patch-module",
        "--enable-native-access",
    ];
    let mut out = Vec::new();
    let mut args = cmdline
        .split(|&b| b == 0)
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') || matches!(arg.as_str(), "-jar" | "-m" | "--module") {
            break;
        }
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        }
        out.push(arg);
    }
    out
}

/// Time limits of an attach.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// How long the JVM may take to start its attach listener after
    /// SIGQUIT (jattach waits about 6 s).
    pub listener_timeout: Duration,
    /// How long the command may take, connection to reply (writing the
    /// perf map of a large code cache takes a while).
    pub reply_timeout: Duration,
    /// When everything must be over, whatever the timeouts above say (the
    /// end of a recording has one deadline for all its JVMs).
    pub deadline: Option<Instant>,
}

impl Default for AttachOptions {
    fn default() -> Self {
        AttachOptions {
            listener_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            deadline: None,
        }
    }
}

impl AttachOptions {
    /// `timeout`, cut short by the deadline.
    fn within(&self, timeout: Duration) -> Duration {
        match self.deadline {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        }
    }
}

/// The most reply text kept.
const MAX_REPLY_BYTES: u64 = 1 << 20;

/// Why an attach did not work; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("process {pid} is gone ({source})")]
    NoProcess { pid: u32, source: io::Error },
    #[error("process {pid} ({name}) is not a HotSpot JVM (no libjvm.so mapped)")]
    NotHotSpot { pid: u32, name: String },
    #[error(
        "JVM {pid} is Java {version}, which cannot write a perf map on request (Java {PERFMAP_SINCE}+ \
         can); run it with a perf-map agent to name its JIT frames"
    )]
    TooOld { pid: u32, version: JavaVersion },
    #[error(
        "JVM {pid} has the attach mechanism turned off (-XX:+DisableAttachMechanism); remove that \
         option, or start it with -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit"
    )]
    Disabled { pid: u32 },
    #[error(
        "JVM {pid} does not handle SIGQUIT (started with -Xrs?) and has no attach socket; not \
         signalling it, as that would kill it. Start it with -XX:+UnlockDiagnosticVMOptions \
         -XX:+DumpPerfMapAtExit"
    )]
    NoSigquitHandler { pid: u32 },
    #[error("JVM {pid}: cannot prepare the attach ({what}: {source})")]
    Setup {
        pid: u32,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "JVM {pid}: {path} belongs to uid {owner}, not to the JVM's user {euid}; not using it"
    )]
    SocketOwner {
        pid: u32,
        path: String,
        owner: u32,
        euid: u32,
    },
    #[error(
        "JVM {pid} did not open its attach socket within {waited:?} after SIGQUIT (attach \
         disabled, or the JVM is stuck); start it with -XX:+UnlockDiagnosticVMOptions \
         -XX:+DumpPerfMapAtExit to get a perf map at exit"
    )]
    Timeout { pid: u32, waited: Duration },
    #[error(
        "JVM {pid}: {path} is a symbolic link; not asking the JVM to write its perf map through \
         it (remove it if it is not an attack)"
    )]
    LinkedMap { pid: u32, path: String },
    #[error("JVM {pid} exited during the attach")]
    Exited { pid: u32 },
    #[error("JVM {pid}: the attach connection failed ({what}: {source})")]
    Connection {
        pid: u32,
        what: &'static str,
        source: io::Error,
    },
    #[error(
        "JVM {pid} closed the attach connection without a reply (it refused our credentials or \
         the request)"
    )]
    NoReply { pid: u32 },
    #[error("JVM {pid} sent a reply that is not the attach protocol: {start:?}")]
    BadReply { pid: u32, start: String },
    #[error(
        "JVM {pid} does not know {command} (older than Java {PERFMAP_SINCE}?): {message}; run it \
         with a perf-map agent to name its JIT frames"
    )]
    UnknownCommand {
        pid: u32,
        command: String,
        message: String,
    },
    #[error("JVM {pid} answered {command} with code {code}: {message}")]
    Failed {
        pid: u32,
        command: String,
        code: i32,
        message: String,
    },
}

impl AttachError {
    /// The JVM did not answer in time (no listener, or no reply): one that
    /// hangs, or a process that only looks like a JVM.
    pub fn is_no_answer(&self) -> bool {
        match self {
            AttachError::Timeout { .. } => true,
            AttachError::Connection { source, .. } => source.kind() == io::ErrorKind::TimedOut,
            _ => false,
        }
    }
}

/// Asks JVM `pid` to write `/tmp/perf-<nspid>.map` (in its root) with
/// `Compiler.perfmap`; read it afterwards with `jit::perfmap`. The JVM
/// writes through a symbolic link at that path (HotSpot opens it with
/// `fopen`), so with one there (planted in the shared `/tmp` by another
/// user) it is not asked.
pub fn write_perf_map(pid: u32, opts: &AttachOptions) -> Result<(), AttachError> {
    let gone = |source| AttachError::NoProcess { pid, source };
    let ns_pid = proc::read_status(pid).map_err(gone)?.ns_tgid();
    let root = safe_fs::process_root(pid).map_err(gone)?;
    let rel = format!("/tmp/perf-{ns_pid}.map");
    match safe_fs::open_path(root.as_fd(), Path::new(&rel), Scope::InRoot) {
        Ok(h) if file_type(h.as_fd()).ok() == Some(libc::S_IFLNK) => {
            return Err(AttachError::LinkedMap {
                pid,
                path: format!("/proc/{pid}/root{rel}"),
            })
        }
        _ => {}
    }
    jcmd(pid, "Compiler.perfmap", opts).map(|_| ())
}

/// Runs diagnostic command `command` (with its arguments, space separated,
/// as `jcmd` takes them) in JVM `pid`; returns its output.
pub fn jcmd(pid: u32, command: &str, opts: &AttachOptions) -> Result<String, AttachError> {
    let gone = |source| AttachError::NoProcess { pid, source };
    let status = proc::read_status(pid).map_err(gone)?;
    let maps = proc::read_maps(pid).map_err(gone)?;
    let hotspot = detect(pid, &maps).ok_or_else(|| AttachError::NotHotSpot {
        pid,
        name: status.name.clone(),
    })?;
    refuse_too_old(pid, &hotspot, command)?;
    let stream = connect(pid, &status, opts)?;
    let request = [b"1\0jcmd\0", command.as_bytes(), b"\0\0\0"].concat();
    let reply = exchange(pid, stream, &request, opts.within(opts.reply_timeout))?;
    parse_reply(pid, command, &reply)
}

/// The capabilities an attach uses, by number (linux/capability.h) and
/// name: it hands the trigger file to the JVM's user (CAP_CHOWN), sends
/// SIGQUIT to another user's process (CAP_KILL), and connects from a
/// thread that takes the JVM's user and group (CAP_SETGID, CAP_SETUID; even
/// for a JVM of one's own user, as dropping supplementary groups needs
/// CAP_SETGID). Root has them all.
pub const ATTACH_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
];

/// What asking JVM `pid` for its perf map would run into, found without
/// signalling it or connecting to it (for `flameprobe doctor`): `Ok` with
/// the JVM when nothing known stands in the way, else the error the attach
/// would end with (its text says what to do).
pub fn check_attach(pid: u32) -> Result<HotSpot, AttachError> {
    let gone = |source| AttachError::NoProcess { pid, source };
    let status = proc::read_status(pid).map_err(gone)?;
    let maps = proc::read_maps(pid).map_err(gone)?;
    let hotspot = detect(pid, &maps).ok_or_else(|| AttachError::NotHotSpot {
        pid,
        name: status.name.clone(),
    })?;
    refuse_too_old(pid, &hotspot, "Compiler.perfmap")?;
    // A listener that already runs (an earlier attach, -Xrs) is used as is.
    let socket = format!("/tmp/.java_pid{}", status.ns_tgid());
    let listening = safe_fs::process_root(pid)
        .and_then(|root| safe_fs::open_path(root.as_fd(), Path::new(&socket), Scope::InRoot))
        .and_then(|h| file_type(h.as_fd()))
        .is_ok_and(|t| t == libc::S_IFSOCK);
    if !listening {
        refuse_listener_start(pid, &status)?;
    }
    Ok(hotspot)
}

/// `command` needs a newer JVM than `hotspot` (when its version is known).
fn refuse_too_old(pid: u32, hotspot: &HotSpot, command: &str) -> Result<(), AttachError> {
    match &hotspot.version {
        Some(version)
            if version.feature < PERFMAP_SINCE && command.starts_with("Compiler.perfmap") =>
        {
            Err(AttachError::TooOld {
                pid,
                version: version.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// Why the JVM's attach listener must not or cannot be started with
/// SIGQUIT: no handler (the signal would kill it) or attach disabled.
fn refuse_listener_start(pid: u32, status: &Status) -> Result<(), AttachError> {
    if !status.catches(libc::SIGQUIT) {
        return Err(AttachError::NoSigquitHandler { pid });
    }
    let cmdline = read_proc_limited(pid, "cmdline").unwrap_or_default();
    let environ = read_proc_limited(pid, "environ").unwrap_or_default();
    if attach_disabled(&cmdline, &environ) {
        return Err(AttachError::Disabled { pid });
    }
    Ok(())
}

/// The target's identity for the attach.
struct Jvm {
    pid: u32,
    euid: u32,
    egid: u32,
    tmp: OwnedFd,
    socket_name: String,
}

/// Connects to the JVM's attach listener, starting it when needed.
fn connect(pid: u32, status: &Status, opts: &AttachOptions) -> Result<UnixStream, AttachError> {
    let setup = |what| move |source| AttachError::Setup { pid, what, source };
    let ns_pid = status.ns_tgid();
    let (Some(euid), Some(egid)) = (status.euid, status.egid) else {
        return Err(setup("reading its user")(io::Error::other(
            "no Uid/Gid in /proc/PID/status",
        )));
    };
    let root = safe_fs::process_root(pid).map_err(setup("opening its root"))?;
    let tmp = safe_fs::open_path(root.as_fd(), Path::new("/tmp"), Scope::InRoot)
        .map_err(setup("opening its /tmp"))?;
    if file_type(tmp.as_fd()).map_err(setup("opening its /tmp"))? != libc::S_IFDIR {
        return Err(setup("opening its /tmp")(io::Error::other(
            "not a directory",
        )));
    }
    let jvm = Jvm {
        pid,
        euid,
        egid,
        tmp,
        socket_name: format!(".java_pid{ns_pid}"),
    };

    // A listener that already runs (an earlier attach, -Xrs) needs no signal.
    if let Some(stream) = jvm.try_connect()? {
        return Ok(stream);
    }
    refuse_listener_start(pid, status)?;

    let _trigger = Trigger::create(&jvm.tmp, &format!(".attach_pid{ns_pid}"), euid, egid)
        .map_err(setup("creating the trigger file in its /tmp"))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGQUIT,
    )
    .map_err(|e| AttachError::NoProcess {
        pid,
        source: e.into(),
    })?;
    let start = Instant::now();
    let waited = opts.within(opts.listener_timeout);
    loop {
        std::thread::sleep(Duration::from_millis(20).min(waited));
        if let Some(stream) = jvm.try_connect()? {
            return Ok(stream);
        }
        if !proc::process_alive(pid) {
            return Err(AttachError::Exited { pid });
        }
        if start.elapsed() >= waited {
            return Err(AttachError::Timeout { pid, waited });
        }
    }
}

impl Jvm {
    /// Connects to the attach socket if there is one that accepts:
    /// `Ok(None)` when it is missing, stale (refused) or its backlog full.
    fn try_connect(&self) -> Result<Option<UnixStream>, AttachError> {
        let pid = self.pid;
        let path = format!("/proc/{pid}/root/tmp/{}", self.socket_name);
        let handle = match safe_fs::open_path(
            self.tmp.as_fd(),
            Path::new(&self.socket_name),
            Scope::Beneath,
        ) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(AttachError::Connection {
                    pid,
                    what: "opening the attach socket",
                    source,
                })
            }
        };
        let st = nix::sys::stat::fstat(&handle).map_err(|e| AttachError::Connection {
            pid,
            what: "checking the attach socket",
            source: e.into(),
        })?;
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            // Not (yet) the listener's socket; HotSpot renames it into place.
            return Ok(None);
        }
        if st.st_uid != self.euid {
            return Err(AttachError::SocketOwner {
                pid,
                path,
                owner: st.st_uid,
                euid: self.euid,
            });
        }
        // Root passes HotSpot's check only where root is mapped; the JVM's
        // own user always does.
        let creds = (self.euid != 0 || self.egid != 0).then_some((self.euid, self.egid));
        match connect_as(handle.as_fd(), creds) {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED | libc::EAGAIN | libc::ENOENT)
                ) =>
            {
                Ok(None)
            }
            Err(source) => Err(AttachError::Connection {
                pid,
                what: "connecting",
                source,
            }),
        }
    }
}

fn file_type(fd: BorrowedFd<'_>) -> io::Result<libc::mode_t> {
    Ok(nix::sys::stat::fstat(fd)?.st_mode & libc::S_IFMT)
}

/// Reads `/proc/PID/<file>` (NUL-separated lists), at most 1 MiB.
fn read_proc_limited(pid: u32, file: &str) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(proc::proc_path(pid, file))?
        .take(1 << 20)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The `.attach_pid<pid>` file we created, removed when dropped (a file
/// that was already there is someone else's and stays).
struct Trigger<'a> {
    dir: BorrowedFd<'a>,
    name: CString,
    ours: bool,
}

impl<'a> Trigger<'a> {
    fn create(dir: &'a OwnedFd, name: &str, uid: u32, gid: u32) -> io::Result<Trigger<'a>> {
        let name = CString::new(name).map_err(io::Error::other)?;
        // SAFETY: valid directory fd and NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT
                    | libc::O_EXCL
                    | libc::O_WRONLY
                    | libc::O_NOFOLLOW
                    | libc::O_NONBLOCK
                    | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        let dir = dir.as_fd();
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) {
                return Ok(Trigger {
                    dir,
                    name,
                    ours: false,
                });
            }
            return Err(e);
        }
        // SAFETY: a new descriptor that we own.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        let trigger = Trigger {
            dir,
            name,
            ours: true,
        };
        // HotSpot trusts the file only if its own user (or root, as its user
        // namespace sees it) owns it.
        nix::unistd::fchown(
            &file,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )?;
        Ok(trigger)
    }
}

impl Drop for Trigger<'_> {
    fn drop(&mut self) {
        if self.ours {
            // SAFETY: valid directory fd and NUL-terminated name.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) };
        }
    }
}

/// Connects a UNIX stream socket to the socket behind the `O_PATH` handle
/// (through `/proc/self/fd/N`, so the path is short and resolved already).
/// With `creds`, from a thread that first takes that uid and gid.
fn connect_as(socket: BorrowedFd<'_>, creds: Option<(u32, u32)>) -> io::Result<UnixStream> {
    let path = format!("/proc/self/fd/{}", socket.as_raw_fd());
    let Some((uid, gid)) = creds else {
        return connect_nonblocking(&path);
    };
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("jvm-attach".into())
            .spawn_scoped(s, || {
                become_user(uid, gid)?;
                connect_nonblocking(&path)
            })?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the connecting thread panicked")))
    })
}

/// Gives the calling thread (only it: the raw system calls, not glibc's
/// process-wide wrappers) the uid and gid, without supplementary groups.
/// The thread cannot go back; it ends after connecting.
fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on this thread's credentials.
    unsafe {
        check(libc::syscall(
            libc::SYS_setgroups,
            0,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        check(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        check(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
    }
    Ok(())
}

/// Connects without blocking (a stuck listener with a full backlog makes a
/// blocking connect wait forever), then returns a blocking stream.
fn connect_nonblocking(path: &str) -> io::Result<UnixStream> {
    // SAFETY: plain socket creation; a non-negative result is a new fd.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::other("socket path too long"));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: valid socket, address and its size.
    let r = unsafe {
        libc::connect(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = UnixStream::from(sock);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Sends the request and reads the reply to its end, within `timeout`.
fn exchange(
    pid: u32,
    mut stream: UnixStream,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, AttachError> {
    let conn = |what| move |source| AttachError::Connection { pid, what, source };
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no reply in time"))
    };
    stream
        .set_write_timeout(Some(remaining().map_err(conn("sending the request"))?))
        .map_err(conn("sending the request"))?;
    match stream.write_all(request) {
        Ok(()) => {}
        // The JVM closes connections whose credentials it refuses.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            return Err(AttachError::NoReply { pid })
        }
        Err(e) => return Err(conn("sending the request")(e)),
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(remaining().map_err(conn("reading the reply"))?))
            .map_err(conn("reading the reply"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = (MAX_REPLY_BYTES as usize).saturating_sub(reply.len());
                reply.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && reply.is_empty() => {
                return Err(AttachError::NoReply { pid })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(conn("reading the reply")(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no complete reply within {timeout:?}"),
                )))
            }
            Err(e) => return Err(conn("reading the reply")(e)),
        }
    }
    Ok(reply)
}

/// Checks the result code of a `jcmd` reply; returns the output.
fn parse_reply(pid: u32, command: &str, reply: &[u8]) -> Result<String, AttachError> {
    if reply.is_empty() {
        return Err(AttachError::NoReply { pid });
    }
    let text = String::from_utf8_lossy(reply);
    let (first, output) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(code) = first.trim().parse::<i32>() else {
        return Err(AttachError::BadReply {
            pid,
            start: text.chars().take(80).collect(),
        });
    };
    let message = || {
        let m = output.trim();
        if m.is_empty() {
            "no message".to_string()
        } else {
            m.lines().take(3).collect::<Vec<_>>().join(" / ")
        }
    };
    match code {
        0 => Ok(output.to_string()),
        _ if output.contains("Unknown diagnostic command") => Err(AttachError::UnknownCommand {
            pid,
            command: command.to_string(),
            message: message(),
        }),
        _ => Err(AttachError::Failed {
            pid,
            command: command.to_string(),
            code,
            message: message(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hotspot_but_not_openj9() {
        let maps = proc::parse_maps(
            "7f0000000000-7f0000001000 r-xp 00000000 fe:01 11 /usr/bin/java\n\
             7f1000000000-7f1000800000 r-xp 00200000 fe:01 12 /usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so\n",
        );
        assert_eq!(
            find_libjvm(&maps),
            Some("/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so")
        );
        let j9 = proc::parse_maps(
            "7f1000000000-7f1000800000 r-xp 00000000 fe:01 12 /opt/j9/lib/server/libjvm.so\n\
             7f2000000000-7f2000800000 r-xp 00000000 fe:01 13 /opt/j9/lib/default/libj9vm29.so\n",
        );
        assert_eq!(find_libjvm(&j9), None);
        assert_eq!(find_libjvm(&proc::parse_maps("")), None);
    }

    #[test]
    fn reads_java_versions_from_release_files() {
        // The Debian JDK 17 release file, trimmed.
        let text = "IMPLEMENTOR=\"Debian\"\nJAVA_RUNTIME_VERSION=\"17.0.15+6-Debian-1deb12u1\"\n\
                    JAVA_VERSION=\"17.0.15\"\nJAVA_VERSION_DATE=\"2025-04-15\"\n";
        let v = parse_release(text).unwrap();
        assert_eq!((v.feature, v.text.as_str()), (17, "17.0.15"));
        assert_eq!(
            parse_release("JAVA_VERSION=\"1.8.0_392\"\n")
                .unwrap()
                .feature,
            8
        );
        assert_eq!(parse_release("JAVA_VERSION=\"25\"\n").unwrap().feature, 25);
        assert_eq!(parse_release("IMPLEMENTOR=\"x\"\n"), None);
        assert_eq!(
            release_candidates(Path::new("/j/lib/server/libjvm.so"))[1],
            Path::new("/j/release")
        );
        assert!(
            release_candidates(Path::new("/j8/jre/lib/amd64/server/libjvm.so"))
                .contains(&PathBuf::from("/j8/release"))
        );
    }

    #[test]
    fn reads_the_real_release_file_of_the_installed_jdk() {
        let path = Path::new("/usr/lib/jvm/java-17-openjdk-amd64/release");
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipped: no JDK 17 at {}", path.display());
            return;
        };
        assert_eq!(parse_release(&text).unwrap().feature, 17);
    }

    #[test]
    fn sees_attach_disabled_in_options_not_program_arguments() {
        let cmd = |args: &[&str]| -> Vec<u8> {
            args.iter()
                .flat_map(|a| [a.as_bytes(), b"\0"].concat())
                .collect()
        };
        let off = "-XX:+DisableAttachMechanism";
        assert!(attach_disabled(
            &cmd(&["java", off, "-cp", "x", "Main"]),
            b""
        ));
        assert!(!attach_disabled(
            &cmd(&["java", "-cp", "x", "Main", off]),
            b""
        ));
        assert!(!attach_disabled(
            &cmd(&["java", "-jar", "app.jar", off]),
            b""
        ));
        assert!(!attach_disabled(&cmd(&["java", "-cp", off, "Main"]), b""));
        assert!(!attach_disabled(
            &cmd(&["java", off, "-XX:-DisableAttachMechanism", "Main"]),
            b""
        ));
        let env = b"PATH=/bin\0JAVA_TOOL_OPTIONS=-Xmx1g -XX:+DisableAttachMechanism\0";
        assert!(attach_disabled(&cmd(&["java", "Main"]), env));
        // The command line overrides JAVA_TOOL_OPTIONS; _JAVA_OPTIONS overrides both.
        assert!(!attach_disabled(
            &cmd(&["java", "-XX:-DisableAttachMechanism", "Main"]),
            env
        ));
        let env2 = b"_JAVA_OPTIONS=-XX:+DisableAttachMechanism\0";
        assert!(attach_disabled(
            &cmd(&["java", "-XX:-DisableAttachMechanism", "Main"]),
            env2
        ));
        let fp = "PreserveFramePointer";
        let java = cmd(&["java", "-XX:+PreserveFramePointer", "-cp", "x", "Main"]);
        assert_eq!(bool_flag(&java, b"", fp), Some(true));
        assert_eq!(
            bool_flag(&java, b"_JAVA_OPTIONS=-XX:-PreserveFramePointer\0", fp),
            Some(false)
        );
        assert_eq!(bool_flag(&cmd(&["java", "Main"]), b"", fp), None);
        assert_eq!(
            bool_flag(
                &cmd(&["java", "-XX:+PreserveFramePointers", "Main"]),
                b"",
                fp
            ),
            None
        );
    }

    #[test]
    fn checks_reply_codes() {
        assert_eq!(parse_reply(1, "Compiler.perfmap", b"0\n").unwrap(), "");
        assert_eq!(
            parse_reply(1, "VM.version", b"0\nOpenJDK 17\n").unwrap(),
            "OpenJDK 17\n"
        );
        // What JDK 11 answers (jcmd's exception text).
        let old = b"-1\njava.lang.IllegalArgumentException: Unknown diagnostic command\n";
        let err = parse_reply(1, "Compiler.perfmap", old).unwrap_err();
        assert!(matches!(err, AttachError::UnknownCommand { .. }), "{err}");
        assert!(err.to_string().contains("perf-map agent"), "{err}");
        let err = parse_reply(1, "x", b"101\n").unwrap_err();
        assert!(
            matches!(err, AttachError::Failed { code: 101, .. }),
            "{err}"
        );
        assert!(matches!(
            parse_reply(1, "x", b""),
            Err(AttachError::NoReply { .. })
        ));
        assert!(matches!(
            parse_reply(1, "x", b"Full thread dump"),
            Err(AttachError::BadReply { .. })
        ));
    }

    #[test]
    fn refuses_a_process_that_is_not_a_jvm() {
        let err = jcmd(std::process::id(), "VM.version", &AttachOptions::default()).unwrap_err();
        assert!(matches!(err, AttachError::NotHotSpot { .. }), "{err}");
        assert!(err.to_string().contains("not a HotSpot JVM"), "{err}");
    }
}
