//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Compiler flags of the C test targets: with frame pointers (so that even
/// a frame-pointer walk gives complete stacks)...
pub const FP_FLAGS: &[&str] = &["-O1", "-g", "-fno-omit-frame-pointer", "-pthread"];
/// ... and built like most distribution binaries, without frame pointers.
pub const NOFP_FLAGS: &[&str] = &["-O2", "-g", "-fomit-frame-pointer", "-pthread"];

/// Returns early from a test that needs root when not root; fails instead
/// when FLAMEPROBE_REQUIRE_ROOT_TESTS=1 (as CI sets it).
macro_rules! require_root {
    () => {
        if !$crate::util::have_root() {
            return;
        }
    };
}

pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("FLAMEPROBE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("this test needs root and FLAMEPROBE_REQUIRE_ROOT_TESTS=1 forbids skipping it");
        }
        eprintln!("skipped: needs root (set FLAMEPROBE_REQUIRE_ROOT_TESTS=1 to make this fail)");
    }
    root
}

pub fn flameprobe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flameprobe"));
    c.env_remove("FLAMEPROBE_LOG");
    c
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());
static CPU_LOCK: RwLock<()> = RwLock::new(());

/// Held by tests that run CPU-bound targets (many may run at once).
pub fn shared_cpu() -> RwLockReadGuard<'static, ()> {
    CPU_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that needs no other test's targets on the CPUs.
pub fn exclusive_cpu() -> RwLockWriteGuard<'static, ()> {
    CPU_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// Compiles `tests/targets/<source>` with `cc` and flags into a cached
/// binary under target/test-targets; returns its path.
pub fn build_c(source: &str, out_name: &str, flags: &[&str]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("target/test-targets");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(out_name);
    let src = repo_root().join("tests/targets").join(source);
    let fresh = out.exists()
        && std::fs::metadata(&out).unwrap().modified().unwrap()
            >= std::fs::metadata(&src).unwrap().modified().unwrap();
    if !fresh {
        let tmp = dir.join(format!(".{out_name}.tmp"));
        let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
        let status = Command::new(&cc)
            .args(flags)
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {cc}: {e}"));
        assert!(status.success(), "compiling {source} failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// Compiles `tests/targets/<source>` (Rust) with rustc -O -g, without
/// forcing frame pointers; cached like `build_c`.
pub fn build_rust(source: &str, out_name: &str) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("target/test-targets");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(out_name);
    let src = repo_root().join("tests/targets").join(source);
    let fresh = out.exists()
        && std::fs::metadata(&out).unwrap().modified().unwrap()
            >= std::fs::metadata(&src).unwrap().modified().unwrap();
    if !fresh {
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args(["-C", "opt-level=2", "-g", "--edition", "2021", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("running rustc");
        assert!(status.success(), "compiling {source} failed");
    }
    out
}

/// Builds `tests/targets/<source>` (Go) with `go build` and `flags` (such
/// as `-ldflags=-s -w`) into a cached binary under target/test-targets;
/// the Go caches stay under target/ too.
pub fn build_go(source: &str, out_name: &str, flags: &[&str]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = repo_root().join("target/test-targets");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(out_name);
    let src = repo_root().join("tests/targets").join(source);
    let fresh = out.exists()
        && std::fs::metadata(&out).unwrap().modified().unwrap()
            >= std::fs::metadata(&src).unwrap().modified().unwrap();
    if !fresh {
        let tmp = dir.join(format!(".{out_name}.tmp"));
        let home = dir.join("go-home");
        let status = Command::new("go")
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .env("HOME", &home)
            .env("GOCACHE", home.join("cache"))
            .env("GOPATH", home.join("path"))
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0")
            .status()
            .expect("running `go build` (apt-get install golang-go)");
        assert!(status.success(), "building {source} failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// Compiles `tests/targets/<source>` (Java) with `javac` into a cached
/// class directory under target/test-targets; returns that directory
/// (readable by every user, for targets run as another user).
pub fn build_java(source: &str) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let stem = source.trim_end_matches(".java");
    let dir = repo_root()
        .join("target/test-targets")
        .join(format!("java-{stem}"));
    let src = repo_root().join("tests/targets").join(source);
    let class = dir.join(format!("{stem}.class"));
    let fresh = class.exists()
        && std::fs::metadata(&class).unwrap().modified().unwrap()
            >= std::fs::metadata(&src).unwrap().modified().unwrap();
    if !fresh {
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let status = Command::new("javac")
            .arg("-d")
            .arg(&tmp)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running javac (install openjdk-17-jdk-headless): {e}"));
        assert!(status.success(), "compiling {source} failed");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    dir
}

/// A started target program, killed when dropped.
pub struct Target {
    pub child: Child,
}

impl Target {
    pub fn start(path: &Path, args: &[&str]) -> Target {
        let child = Command::new(path)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        // Let it reach its steady state.
        std::thread::sleep(Duration::from_millis(200));
        Target { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs flameprobe with `args`, asserting nothing; returns its output.
pub fn run(args: &[&str]) -> Output {
    flameprobe()
        .args(args)
        .output()
        .expect("running flameprobe")
}

/// Runs flameprobe and asserts success, printing its stderr otherwise.
pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "flameprobe {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Parses folded text into stack -> weight.
pub fn parse_folded(text: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("folded line without count: {line:?}"));
        let count: u64 = count
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        *m.entry(stack.to_string()).or_default() += count;
    }
    m
}

pub fn read_folded(path: &Path) -> BTreeMap<String, u64> {
    parse_folded(&std::fs::read_to_string(path).unwrap())
}

/// Total weight of stacks whose leaf frame is `leaf`.
pub fn leaf_weight(folded: &BTreeMap<String, u64>, leaf: &str) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| s.rsplit(';').next() == Some(leaf))
        .map(|(_, w)| w)
        .sum()
}

/// Total weight of stacks containing `chain` (frames joined by ';') as a
/// contiguous run ending at the leaf.
pub fn chain_weight(folded: &BTreeMap<String, u64>, chain: &str) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| {
            s.ends_with(chain)
                && (s.len() == chain.len() || s[..s.len() - chain.len()].ends_with(';'))
        })
        .map(|(_, w)| w)
        .sum()
}

pub fn total(folded: &BTreeMap<String, u64>) -> u64 {
    folded.values().sum()
}

/// Waits for a child with a timeout; panics (after killing it) on timeout.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts `text` is well-formed XML.
pub fn assert_well_formed_xml(text: &str) {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0i64;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(_) => {}
            Err(e) => panic!(
                "SVG is not well-formed XML at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0, "unbalanced XML elements");
}

/// The ratio test program built with the given compiler flags.
pub fn ratio_target(name: &str, flags: &[&str]) -> PathBuf {
    build_c("ratio.c", name, flags)
}

/// A target speaking the ready / go / done protocol on stdin and stdout.
pub struct Handshake {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Handshake {
    pub fn start(bin: &Path, args: &[&str]) -> Handshake {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Handshake::spawn(cmd)
    }

    /// Starts `cmd` (a target, or a command that runs one, such as
    /// `podman run -i`) and waits for its "ready".
    pub fn spawn(mut cmd: Command) -> Handshake {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut t = Handshake {
            child,
            stdin,
            stdout,
        };
        t.expect("ready");
        t
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// The next line the target prints.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    pub fn expect(&mut self, word: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), word, "target protocol");
    }

    /// Lets the target do its work and waits until it is done.
    pub fn go(&mut self) {
        self.release();
        self.expect("done");
    }

    /// Lets the target do its work (without waiting for it).
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.stdin.take(); // EOF: the target exits
        if wait_child(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// flameprobe running in the background; `start` returns once its probes
/// are attached (it says so on stderr with -v).
pub struct Recording {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Recording {
    pub fn start(args: &[&str]) -> Recording {
        let mut child = flameprobe()
            .arg("record")
            .arg("-v")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running flameprobe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let text = stderr.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if line.contains("attached to") {
                    let _ = tx.send(());
                }
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = child.kill();
            panic!("flameprobe did not attach: {}", stderr.lock().unwrap());
        }
        Recording { child, stderr }
    }

    /// Stops the recording with SIGINT and returns (stdout, stderr).
    pub fn stop(self) -> (String, String) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// Waits for the recording to end by itself; returns (stdout, stderr).
    pub fn finish(mut self) -> (String, String) {
        let mut stdout = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        // Let the reader thread see EOF.
        std::thread::sleep(Duration::from_millis(50));
        let err = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "flameprobe failed: {status}\n{err}");
        (stdout, err)
    }
}
