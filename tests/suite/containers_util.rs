//! podman for integration tests: a containers.conf that works on this kind
//! of VM, a minimal image built from busybox-static plus given static
//! binaries (`podman import`, no registry), and containers and pods that
//! are removed when their guards drop (also when a test panics). Besides,
//! cgroups made by tests ([`TestCgroup`]), for what podman does not make
//! on demand: a process in a sub-cgroup of a container, containers whose
//! ids share a prefix, a container without a cgroup of its own in the
//! unified hierarchy.
//!
//! On the development VM podman needs `runtime = "runc"` (crun refuses the
//! hybrid cgroup layout), the cgroupfs manager (no systemd as PID 1), and
//! ulimits root can set without CAP_SYS_RESOURCE. Containers run without a
//! network. Pods need `catatonit` for their infra container (podman builds
//! its pause image locally from it).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::util::repo_root;

const CONTAINERS_CONF: &str = r#"# Written by flameprobe's tests.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"#;

/// The podman installation the tests use.
pub struct Podman {
    conf: PathBuf,
}

static PODMAN: OnceLock<Option<Podman>> = OnceLock::new();
static IMAGES: Mutex<()> = Mutex::new(());

impl Podman {
    /// podman, configured for tests; `None` when podman is not installed
    /// (a failure instead when FLAMEPROBE_REQUIRE_ROOT_TESTS=1: CI installs it).
    pub fn get() -> Option<&'static Podman> {
        PODMAN
            .get_or_init(|| {
                if !check_installed(&["podman"], "podman") {
                    return None;
                }
                let dir = repo_root().join("target/test-containers");
                std::fs::create_dir_all(&dir).unwrap();
                let conf = dir.join("containers.conf");
                write_atomically(&conf, CONTAINERS_CONF.as_bytes());
                Some(Podman { conf })
            })
            .as_ref()
    }

    /// A podman command using the tests' containers.conf.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf);
        c
    }

    /// Runs podman, asserting success; returns its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("running podman");
        assert_success(args, &out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An image of [`rootfs`]`(binaries)`, imported once per content, so
    /// parallel tests and test runs share it. Returns its reference.
    pub fn image(&self, binaries: &[&Path]) -> String {
        let _images = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
        let fs = rootfs(binaries);
        let tag = format!("localhost/flameprobe-test:{}", fs.hash);
        let present = self
            .command()
            .args(["image", "exists", &tag])
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            self.ok(&["import", "--quiet", fs.tar.to_str().unwrap(), &tag]);
        }
        tag
    }

    /// Starts a detached container named `<prefix>-<name>` (unique to this
    /// test process) running `cmd`, in `pod` if given.
    pub fn run(
        &self,
        name: &str,
        image: &str,
        pod: Option<&PodGuard>,
        cmd: &[&str],
    ) -> ContainerGuard<'_> {
        self.run_with(name, image, pod, &[], cmd)
    }

    /// [`run`](Self::run) with more `podman run` options (`-v` mounts...).
    pub fn run_with(
        &self,
        name: &str,
        image: &str,
        pod: Option<&PodGuard>,
        options: &[&str],
        cmd: &[&str],
    ) -> ContainerGuard<'_> {
        let name = unique(name);
        let guard = ContainerGuard {
            podman: self,
            name: name.clone(),
        };
        let mut args = vec!["run", "-d", "--name", &name];
        if let Some(p) = pod {
            args.extend(["--pod", &p.name]);
        } else {
            args.extend(["--network", "none"]);
        }
        args.extend(options);
        args.push(image);
        args.extend(cmd);
        let id = self.ok(&args);
        assert_eq!(id.len(), 64, "podman run printed {id:?}");
        guard
    }

    /// A `podman run -i` of a container named `<prefix>-<name>`, to be
    /// spawned by the caller with its stdin and stdout (the container's)
    /// piped; the guard removes the container.
    pub fn run_interactive(
        &self,
        name: &str,
        image: &str,
        cmd: &[&str],
    ) -> (ContainerGuard<'_>, Command) {
        let name = unique(name);
        let mut c = self.command();
        c.args(["run", "-i", "--name", &name, "--network", "none", image])
            .args(cmd);
        let guard = ContainerGuard { podman: self, name };
        (guard, c)
    }

    /// Creates a pod (with its infra container) named `<prefix>-<name>`.
    pub fn pod(&self, name: &str) -> PodGuard<'_> {
        let name = unique(name);
        let guard = PodGuard {
            podman: self,
            name: name.clone(),
        };
        self.ok(&["pod", "create", "--network", "none", "--name", &name]);
        guard
    }
}

/// A running container, removed (killed) when dropped.
pub struct ContainerGuard<'p> {
    podman: &'p Podman,
    pub name: String,
}

impl ContainerGuard<'_> {
    /// `podman inspect --format` of this container.
    pub fn inspect(&self, format: &str) -> String {
        self.podman.ok(&["inspect", "--format", format, &self.name])
    }

    pub fn id(&self) -> String {
        self.inspect("{{.Id}}")
    }

    /// Host pid of the container's first process.
    pub fn pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().expect("a pid")
    }

    /// Stops the container at once (SIGKILL to its processes).
    pub fn kill(&self) {
        self.podman.ok(&["kill", &self.name]);
    }
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .command()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

/// A pod, removed with its containers when dropped.
pub struct PodGuard<'p> {
    podman: &'p Podman,
    pub name: String,
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .command()
            .args(["pod", "rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

/// Host pids in a cgroup of the unified hierarchy (its `cgroup.procs`).
pub fn cgroup_procs(unified_mount: &Path, cgroup_path: &str) -> Vec<u32> {
    let file = unified_mount
        .join(cgroup_path.trim_start_matches('/'))
        .join("cgroup.procs");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// `name`, unique to this test process.
pub fn unique(name: &str) -> String {
    format!("fpt{}-{name}", std::process::id())
}

fn assert_success(args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(bytes).unwrap();
    drop(f);
    std::fs::rename(&tmp, path).unwrap();
}

/// Whether `command` with `args` runs and succeeds (output discarded).
pub fn succeeds(command: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> bool {
    Command::new(command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `programs` are installed; a test without them skips, or fails
/// when FLAMEPROBE_REQUIRE_ROOT_TESTS=1 (CI installs `package`).
pub fn check_installed(programs: &[&str], package: &str) -> bool {
    let installed = |program: &str| {
        ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).exists())
    };
    if programs.iter().all(|p| installed(p)) {
        return true;
    }
    let msg = format!("{package} is not installed (scripts/install-deps.sh installs it)");
    if std::env::var("FLAMEPROBE_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("skipped: {msg}");
    false
}

/// A container root file system: busybox-static (with `sh`, `sleep` and
/// friends) plus `binaries` in `/bin`, as a directory (for `ctr run
/// --rootfs`) and a tarball of it (for `podman import`, `docker import`).
pub struct Rootfs {
    pub dir: PathBuf,
    pub tar: PathBuf,
    /// Names this content (image tags).
    pub hash: String,
}

static ROOTFS_LOCK: Mutex<()> = Mutex::new(());

/// The [`Rootfs`] of `binaries`, built once per content under
/// target/test-containers/rootfs (kept across test runs).
pub fn rootfs(binaries: &[&Path]) -> Rootfs {
    let _guard = ROOTFS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox-static is not installed (scripts/install-deps.sh installs it)");
    let mut key = String::new();
    for b in std::iter::once(&busybox).chain(binaries) {
        let m = std::fs::metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
        use std::os::unix::fs::MetadataExt;
        key.push_str(&format!("{}:{}:{};", b.display(), m.len(), m.mtime()));
    }
    let hash = format!("{:016x}", fnv(&key));
    let top = repo_root().join("target/test-containers/rootfs");
    let rootfs = Rootfs {
        dir: top.join(&hash),
        tar: top.join(format!("{hash}.tar")),
        hash,
    };
    if rootfs.tar.exists() {
        return rootfs;
    }
    std::fs::create_dir_all(&top).unwrap();
    let tmp = tempfile::tempdir_in(&top).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(tmp.path().join("tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "sleep", "cat", "true", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for b in binaries {
        std::fs::copy(b, bin.join(b.file_name().unwrap())).unwrap();
    }
    let _ = std::fs::remove_dir_all(&rootfs.dir);
    let tmp = tmp.keep();
    std::fs::rename(&tmp, &rootfs.dir).unwrap();
    // The tarball last: its presence says the directory is complete.
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs.dir)
        .arg("-cf")
        .arg(rootfs.tar.with_extension("tmp"))
        .args(["bin", "tmp"])
        .status()
        .expect("running tar");
    assert!(status.success(), "tar failed");
    std::fs::rename(rootfs.tar.with_extension("tmp"), &rootfs.tar).unwrap();
    rootfs
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A cgroup made by a test (with the parents it had to create); on drop,
/// the processes in it are killed and it is removed.
pub struct TestCgroup {
    dir: PathBuf,
    /// Directories created, outermost first.
    created: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `rel` below the cgroup directory `parent` (of any hierarchy).
    pub fn create(parent: &Path, rel: &str) -> TestCgroup {
        assert!(
            parent.is_dir(),
            "{} is not a cgroup directory",
            parent.display()
        );
        let mut created = Vec::new();
        let mut dir = parent.to_path_buf();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        TestCgroup { dir, created }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` into this cgroup.
    pub fn add(&self, pid: u32) {
        let procs = self.dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.dir.display()));
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for dir in self.created.iter().rev() {
            // Killed processes leave the cgroup once they have exited.
            for _ in 0..250 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Where a cgroup v1 hierarchy is mounted (systemd's named one when there
/// is one, it has no controllers), from /proc/self/mountinfo.
pub fn v1_hierarchy() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mounts: Vec<(PathBuf, String)> = text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split(' ');
            let (fstype, _source, opts) = (r.next()?, r.next()?, r.next()?);
            let point = left.split(' ').nth(4)?;
            (fstype == "cgroup").then(|| (PathBuf::from(point), opts.to_string()))
        })
        .collect();
    mounts
        .iter()
        .find(|(_, opts)| opts.split(',').any(|o| o == "name=systemd"))
        .or(mounts.first())
        .map(|(p, _)| p.clone())
}

/// A container id (64 hex digits) starting with `prefix`, unique to this
/// test process and `n`.
pub fn fake_container_id(prefix: &str, n: u32) -> String {
    let tail = format!("{:08x}{n:08x}", std::process::id());
    format!(
        "{prefix}{tail}{}",
        "0".repeat(64 - prefix.len() - tail.len())
    )
}

/// The cgroup path (below a hierarchy's root) of a container that no
/// runtime made, named like docker names its containers with cgroupfs;
/// `tag` keeps the tests that make them apart.
pub fn fake_container_cgroup(tag: &str, id: &str) -> String {
    format!("{}/docker/{id}", unique(tag))
}
