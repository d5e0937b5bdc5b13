//! The JIT symbolization building blocks (`flameprobe::jit`) on real
//! runtimes and processes (needs root): the HotSpot attach client against
//! JDK 17 (also as another user in a user namespace, disabled, exited),
//! perf maps of Node and Python, and perf maps of processes in a chroot or a
//! pid namespace, including planted symlinks, FIFOs and oversized files.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flameprobe::jit::hotspot::{self, AttachError, AttachOptions};
use flameprobe::jit::names::{self, Language};
use flameprobe::jit::perfmap::{self, NameId, PerfMap, PerfMapError, PerfMapSource};
use flameprobe::jit::runtime::Runtime;

use crate::util::*;

/// A program that prints "ready" on stdout when it is warm and ends when
/// its stdin says "exit" or closes. Killed when dropped; the perf map it
/// may have left in the host's /tmp is removed.
pub(crate) struct Program {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stdout line so far.
    seen: Vec<String>,
}

impl Program {
    pub(crate) fn start(cmd: &mut Command) -> Program {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Program {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        p.wait_for("ready", Duration::from_secs(120));
        p
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn wait_for(&mut self, prefix: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    self.seen.push(line);
                    if done {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no {prefix:?} line from the program within {limit:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Kills it now (for programs that do not read their stdin).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to exit, waits, and returns all it printed.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"exit\n");
        }
        wait_timeout(&mut self.child, Duration::from_secs(60));
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Ending it normally lets a JVM remove its attach socket and
        // hsperfdata file; kill it when it does not end.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"exit\n");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    }
}

fn java(classes: &Path, options: &[&str]) -> Command {
    let mut c = Command::new("java");
    c.args(options)
        .arg("-XX:-BackgroundCompilation")
        .arg("-cp")
        .arg(classes)
        .arg("JitHot");
    c
}

/// The cleaned display names of every name in `map`.
fn displays(map: &PerfMap, language: Language) -> BTreeSet<String> {
    (0..map.name_count() as u32)
        .map(|i| names::clean(map.name(NameId(i)), language))
        .inspect(|n| assert_eq!(n.language, language, "{n:?}"))
        .map(|n| n.display)
        .collect()
}

/// Asserts the JIT-compiled methods of tests/targets/JitHot.java are named,
/// and that an address inside `fib`'s code finds it.
fn assert_jithot_methods(map: &PerfMap) {
    let shown = displays(map, Language::Java);
    let ours: Vec<_> = shown.iter().filter(|n| n.contains("JitHot")).collect();
    for want in ["JitHot.fib", "JitHot$Inner.mix", "JitHot.lambda$main$0"] {
        assert!(
            shown.contains(want),
            "{want} missing; JitHot names: {ours:?}"
        );
    }
    // The lambda's hidden class: `JitHot$$Lambda$1` (JDK 17), `JitHot$$Lambda`
    // (JDK 21+), its address dropped.
    assert!(
        ours.iter()
            .any(|n| n.starts_with("JitHot$$Lambda") && n.ends_with(".run") && !n.contains("/0x")),
        "no lambda class; JitHot names: {ours:?}"
    );
    let (start, end, raw) = map
        .ranges()
        .find(|(_, _, n)| *n == "long JitHot.fib(int)")
        .expect("fib's code");
    let sym = map.lookup(start + (end - start) / 2).unwrap();
    assert_eq!(sym.name, raw);
    assert_eq!(names::clean(sym.name, Language::Java).system, raw);
}

#[test]
fn hotspot_attach_writes_a_perf_map_naming_the_programs_methods() {
    require_root!();
    let _cpu = shared_cpu();
    let classes = build_java("JitHot.java");
    let mut jvm = Program::start(&mut java(&classes, &[]));
    let pid = jvm.pid();

    let maps = flameprobe::proc::read_maps(pid).unwrap();
    let runtime = Runtime::detect(pid, &maps);
    let Runtime::HotSpot(vm) = &runtime else {
        panic!("not detected as HotSpot: {runtime:?}")
    };
    assert_eq!(vm.version.as_ref().map(|v| v.feature), Some(17), "{vm:?}");
    assert_eq!(runtime.language(), Language::Java);

    let map_path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let _ = std::fs::remove_file(&map_path);
    let opts = AttachOptions::default();
    hotspot::write_perf_map(pid, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !Path::new(&format!("/tmp/.attach_pid{pid}")).exists(),
        "the trigger file was left behind"
    );
    let map = perfmap::read_process_perf_map(pid).unwrap();
    assert_eq!(map.stats().bad_lines, 0, "{:?}", map.stats());
    assert_jithot_methods(&map);

    // The listener now runs: the next command needs no signal.
    let version = hotspot::jcmd(pid, "VM.version", &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(version.contains("JDK 17"), "{version}");
    std::fs::remove_file(&map_path).unwrap();
    hotspot::write_perf_map(pid, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(map_path.exists());

    // A link planted where the JVM writes its map: the JVM is not asked.
    std::fs::remove_file(&map_path).unwrap();
    let victim = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::symlink(victim.path(), &map_path).unwrap();
    let err = hotspot::write_perf_map(pid, &opts).unwrap_err();
    std::fs::remove_file(&map_path).unwrap();
    assert!(matches!(err, AttachError::LinkedMap { .. }), "{err}");
    assert_eq!(std::fs::metadata(victim.path()).unwrap().len(), 0);

    // SIGQUIT started the listener; it did not make a thread dump.
    let out = jvm.finish();
    assert!(
        !out.iter().any(|l| l.contains("Full thread dump")),
        "the JVM printed a thread dump: {out:?}"
    );
}

/// A JVM of another user in its own user namespace, where host root is
/// nobody: `jcmd` run as root fails here (the JVM ignores root's trigger
/// file and refuses root's connection); the attach client acts as the
/// JVM's user.
#[test]
fn hotspot_attach_works_as_the_jvms_user_in_a_user_namespace() {
    require_root!();
    let _cpu = shared_cpu();
    let classes = build_java("JitHot.java");
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "4242",
        "--regid",
        "4242",
        "--clear-groups",
        "unshare",
        "--user",
        "--map-root-user",
    ]);
    let j = java(&classes, &[]);
    cmd.arg(j.get_program()).args(j.get_args());
    let jvm = Program::start(&mut cmd);
    let pid = jvm.pid();
    let status = flameprobe::proc::read_status(pid).unwrap();
    assert_eq!((status.euid, status.egid), (Some(4242), Some(4242)));
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "4242", "1"]
    );

    hotspot::write_perf_map(pid, &AttachOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let map = perfmap::read_process_perf_map(pid).unwrap();
    assert_jithot_methods(&map);
}

#[test]
fn hotspot_attach_is_refused_without_signalling_when_disabled() {
    require_root!();
    let _cpu = shared_cpu();
    let classes = build_java("JitHot.java");
    let mut jvm = Program::start(&mut java(&classes, &["-XX:+DisableAttachMechanism"]));
    let err = hotspot::write_perf_map(jvm.pid(), &AttachOptions::default()).unwrap_err();
    assert!(matches!(err, AttachError::Disabled { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&jvm.pid().to_string()), "{text}");
    assert!(text.contains("-XX:+DumpPerfMapAtExit"), "{text}");
    let out = jvm.finish();
    assert!(
        !out.iter().any(|l| l.contains("Full thread dump")),
        "the JVM was signalled: {out:?}"
    );
}

/// `-Xrs`: the JVM leaves SIGQUIT to its default action (a core dump) and
/// opens its attach socket at startup; the attach uses it, never signals.
#[test]
fn hotspot_attach_to_a_jvm_without_sigquit_handler_uses_its_startup_socket() {
    require_root!();
    let _cpu = shared_cpu();
    let classes = build_java("JitHot.java");
    let jvm = Program::start(&mut java(&classes, &["-Xrs"]));
    let pid = jvm.pid();
    let status = flameprobe::proc::read_status(pid).unwrap();
    assert!(!status.catches(libc::SIGQUIT));
    hotspot::write_perf_map(pid, &AttachOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(flameprobe::proc::process_alive(pid));
    assert_jithot_methods(&perfmap::read_process_perf_map(pid).unwrap());
}

/// A JVM that exits: its map written at exit is still read through the
/// source taken while it ran; attaching to it is a clear error.
#[test]
fn hotspot_exit_map_is_read_after_the_jvm_exited() {
    require_root!();
    let _cpu = shared_cpu();
    let classes = build_java("JitHot.java");
    let mut jvm = Program::start(&mut java(
        &classes,
        &["-XX:+UnlockDiagnosticVMOptions", "-XX:+DumpPerfMapAtExit"],
    ));
    let pid = jvm.pid();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let source = PerfMapSource::open(pid).unwrap();
    jvm.finish();

    let err = hotspot::write_perf_map(pid, &AttachOptions::default()).unwrap_err();
    assert!(matches!(err, AttachError::NoProcess { .. }), "{err}");
    assert!(err.to_string().contains(&pid.to_string()), "{err}");
    let map = source.read().unwrap_or_else(|e| panic!("{e}"));
    assert_jithot_methods(&map);
}

#[test]
fn hotspot_attach_refuses_other_processes() {
    require_root!();
    let sleeper = Target::start(Path::new("/bin/sleep"), &["60"]);
    let err = hotspot::write_perf_map(sleeper.pid(), &AttachOptions::default()).unwrap_err();
    assert!(matches!(err, AttachError::NotHotSpot { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&sleeper.pid().to_string()) && text.contains("sleep"),
        "{text}"
    );
    let err = hotspot::write_perf_map(u32::MAX - 1, &AttachOptions::default()).unwrap_err();
    assert!(matches!(err, AttachError::NoProcess { .. }), "{err}");
}

/// A process chrooted into a fresh directory, with a `/tmp` there.
struct Chrooted {
    program: Program,
    root: tempfile::TempDir,
}

impl Chrooted {
    fn start() -> Chrooted {
        let bin = build_c("chrooted.c", "chrooted", &["-O1"]);
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("tmp")).unwrap();
        std::fs::set_permissions(
            root.path().join("tmp"),
            std::fs::Permissions::from_mode(0o1777),
        )
        .unwrap();
        let program = Program::start(Command::new(bin).arg(root.path()));
        Chrooted { program, root }
    }

    fn pid(&self) -> u32 {
        self.program.pid()
    }

    /// Its map as the host sees the file.
    fn map_path(&self) -> PathBuf {
        self.root
            .path()
            .join(format!("tmp/perf-{}.map", self.pid()))
    }

    fn read(&self) -> Result<PerfMap, PerfMapError> {
        perfmap::read_process_perf_map(self.pid())
    }
}

#[test]
fn perf_map_is_read_inside_the_process_root() {
    require_root!();
    let p = Chrooted::start();
    let pid = p.pid();
    assert!(
        matches!(p.read(), Err(PerfMapError::Missing { .. })),
        "no map yet"
    );
    // The host's /tmp has a map for this pid too: it must not be the one read.
    let host = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    std::fs::write(&host, "1000 100 host-only\n").unwrap();
    std::fs::write(
        p.map_path(),
        "0x1000 0x100 first\n\
         2000 100 second\n\
         garbage line\n\
         \n\
         0x3000 zz bad size\n\
         0X3000 80 third with spaces\n",
    )
    .unwrap();
    let map = p.read().unwrap();
    let _ = std::fs::remove_file(&host);
    assert_eq!(map.lookup(0x1080).map(|s| s.name), Some("first"));
    assert_eq!(map.lookup(0x20ff).map(|s| s.name), Some("second"));
    assert_eq!(
        map.lookup(0x3000).map(|s| s.name),
        Some("third with spaces")
    );
    let st = map.stats();
    assert_eq!((st.lines, st.entries, st.bad_lines), (6, 3, 2), "{st:?}");
    assert_eq!(st.first_bad, Some((3, perfmap::BadLine::BadStart)));
}

#[test]
fn perf_map_symlinks_fifos_strangers_and_huge_files_are_refused() {
    require_root!();
    let p = Chrooted::start();
    let path = p.map_path();

    // Links to a host file: absolute (resolves inside the root) and
    // climbing out with `..` (stays inside too); both refused as links.
    std::fs::write(p.root.path().join("decoy"), "9000 10 decoy-inside\n").unwrap();
    for target in ["/etc/hostname", "../../../../../../etc/hostname", "/decoy"] {
        std::os::unix::fs::symlink(target, &path).unwrap();
        let err = p.read().unwrap_err();
        assert!(
            matches!(err, PerfMapError::Refused { .. }),
            "{target}: {err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    // A FIFO: refused at once (a reader would block until a writer came).
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
    let pid = p.pid();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(perfmap::read_process_perf_map(pid).map(|_| ()));
    });
    let err = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("reading a FIFO hung")
        .unwrap_err();
    assert!(err.to_string().contains("FIFO"), "{err}");
    std::fs::remove_file(&path).unwrap();

    // Written by another user than the process's (root here) or root.
    std::fs::write(&path, "1000 10 planted\n").unwrap();
    std::os::unix::fs::chown(&path, Some(4242), Some(4242)).unwrap();
    let err = p.read().unwrap_err();
    assert!(err.to_string().contains("belongs to uid 4242"), "{err}");
    std::fs::remove_file(&path).unwrap();

    // 300 MiB (sparse): refused before reading, saying the limit.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(300 << 20).unwrap();
    let err = p.read().unwrap_err();
    assert!(matches!(err, PerfMapError::TooLarge { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("300 MiB") && text.contains("256 MiB"),
        "{text}"
    );
    assert!(
        text.contains(&format!("/proc/{pid}/root/tmp/perf-{pid}.map")),
        "{text}"
    );
}

/// A process in its own pid and mount namespaces (a container without
/// the image): its map is `/tmp/perf-1.map` in its private `/tmp`.
#[test]
fn perf_map_of_a_process_in_pid_and_mount_namespaces() {
    require_root!();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount",
        "--propagation",
        "private",
        "--kill-child",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /tmp && printf '0x4000 0x40 inside-the-namespace\\n' > /tmp/perf-$$.map \
         && echo ready && exec cat > /dev/null",
    ]);
    let mut p = Program::start(&mut cmd);
    // unshare --fork: the shell is unshare's child.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", p.pid())).unwrap();
    let inner: u32 = children.trim().parse().unwrap();
    let source = PerfMapSource::open(inner).unwrap();
    assert_eq!(source.path_in_root(), Path::new("/tmp/perf-1.map"));
    let map = source.read().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        map.lookup(0x4010).map(|s| s.name),
        Some("inside-the-namespace")
    );
    // Its namespaces end with it; the source still reaches its /tmp.
    p.finish();
    assert!(!flameprobe::proc::process_alive(inner));
    let map = source.read().unwrap_or_else(|e| panic!("after exit: {e}"));
    assert_eq!(
        map.lookup(0x4010).map(|s| s.name),
        Some("inside-the-namespace")
    );
}

/// Re-reads a live process's map until `wanted` are all displayed (a
/// runtime writes its map as it goes), at most 30 s.
fn read_until_named(pid: u32, language: Language, wanted: &[String]) -> PerfMap {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let map = perfmap::read_process_perf_map(pid).unwrap_or_else(|e| panic!("{e}"));
        let shown = displays(&map, language);
        if wanted.iter().all(|w| shown.contains(w)) {
            return map;
        }
        if Instant::now() > deadline {
            panic!(
                "{wanted:?} not all in the perf map of {pid}; names: {:?}",
                shown
                    .iter()
                    .filter(|n| n.contains("jit_hot"))
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn node_perf_map_names_script_functions() {
    require_root!();
    let _cpu = shared_cpu();
    let script = repo_root().join("tests/targets/jit_hot.js");
    // Node also writes an isolate-*-v8.log into its working directory.
    let cwd = tempfile::tempdir().unwrap();
    let node = Program::start(
        Command::new("node")
            .arg("--perf-basic-prof")
            .arg(&script)
            .current_dir(cwd.path()),
    );
    let pid = node.pid();
    let runtime = Runtime::detect(pid, &flameprobe::proc::read_maps(pid).unwrap());
    assert_eq!(runtime, Runtime::Node);
    let s = script.display();
    let wanted = [format!("fibJs {s}:6"), format!("area {s}:11")];
    let map = read_until_named(pid, Language::JavaScript, &wanted);
    // Every tier of fibJs has the same display name; the system name keeps
    // the tier marker.
    let fib: Vec<_> = map
        .ranges()
        .filter(|(_, _, n)| n.contains("fibJs "))
        .collect();
    assert!(!fib.is_empty());
    for (start, _, raw) in fib {
        let sym = map.lookup(start).unwrap();
        assert_eq!(sym.name, raw);
        let name = names::clean(sym.name, runtime.language());
        assert_eq!(name.display, wanted[0]);
        assert!(name.system.starts_with("JS:"), "{name:?}");
    }
}

/// The newest Python 3.12 under ~/.pyenv/versions, if any.
pub(crate) fn python312() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join(".pyenv/versions"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("3.12"))
        .map(|e| e.path().join("bin/python3"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

#[test]
fn python_perf_map_names_script_functions() {
    require_root!();
    let Some(python) = python312() else {
        eprintln!("skipped: no Python 3.12 at ~/.pyenv/versions/3.12*/bin/python3");
        return;
    };
    let script = repo_root().join("tests/targets/jit_hot.py");
    let py = Program::start(Command::new(&python).args(["-X", "perf"]).arg(&script));
    let pid = py.pid();
    let runtime = Runtime::detect(pid, &flameprobe::proc::read_maps(pid).unwrap());
    assert_eq!(
        runtime,
        Runtime::Python {
            version: Some((3, 12))
        }
    );
    let s = script.display();
    let wanted = [format!("fib_py ({s})"), format!("Shape.area ({s})")];
    let map = read_until_named(pid, Language::Python, &wanted);
    let (start, _, raw) = map
        .ranges()
        .find(|(_, _, n)| n.starts_with("py::fib_py:"))
        .unwrap();
    assert_eq!(map.lookup(start).unwrap().name, raw);
}
