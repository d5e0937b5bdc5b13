//! docker and containerd for integration tests, for real: the daemons
//! (started here when none answers, once per test binary run, and stopped
//! when the test binary exits), images and root file systems built locally
//! ([`rootfs`], nothing pulled), docker containers, containerd tasks laid
//! out as containerd's CRI plugin lays out a Kubernetes pod, and Kubernetes
//! pods as the kubelet's cgroupfs driver places them, all removed when
//! their guards drop (also when a test panics).
//!
//! The daemons run as Debian's units would run them, minus networking
//! (this machine has none to give containers): `containerd`, then
//! `dockerd --containerd=/run/containerd/containerd.sock --iptables=false
//! --bridge=none`. A daemon started here gets SIGTERM when the test binary
//! exits (`PR_SET_PDEATHSIG` from a thread that lives as long as the
//! binary); its log is `target/test-containers/<daemon>.log`.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::containers_util::{check_installed, rootfs, succeeds, unique, Rootfs};
use crate::util::repo_root;

pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// How long a daemon may take to answer after it was started, or to exit
/// when a previous test run's one is still stopping.
const DAEMON_WAIT: Duration = Duration::from_secs(60);
/// The containerd namespace of the CRI plugin (Kubernetes).
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Runs `cmd`, asserting success; returns its trimmed stdout.
fn ok(mut cmd: Command) -> String {
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// The pids of processes whose name (comm) is `comm`.
fn processes_named(comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// The last lines of a daemon's log, for failure messages.
fn log_tail(log: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(30);
    format!(
        "last lines of {}:\n{}",
        log.display(),
        lines[from..].join("\n")
    )
}

/// A daemon this test binary started.
struct Started {
    pid: u32,
    /// Set when it exits.
    exited: Arc<Mutex<Option<String>>>,
}

/// Starts `program args` with its output in `log`, from a thread that
/// lives as long as the test binary: the daemon gets SIGTERM when the
/// binary exits (PR_SET_PDEATHSIG fires when the thread that forked it
/// ends, and test threads end after each test).
fn spawn_daemon(program: &str, args: &[&str], log: &Path) -> Started {
    let log_file = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let exited = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let flag = exited.clone();
    let name = program.to_string();
    std::thread::Builder::new()
        .name(format!("{name} keeper"))
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let status = child.wait();
                *flag.lock().unwrap() = Some(format!("{status:?}"));
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        })
        .expect("starting a daemon keeper thread");
    match rx.recv() {
        Ok(Ok(pid)) => Started { pid, exited },
        Ok(Err(e)) => panic!("starting {program}: {e}"),
        Err(_) => panic!("starting {program}: the keeper thread died"),
    }
}

/// Makes sure the daemon `comm` answers (`answers()`): uses one that runs
/// already, waits for one that is still starting or stopping (a previous
/// test run's), else starts `program args` and waits until it answers.
/// Every wait is bounded; a daemon that does not come up fails the test
/// with its log.
fn ensure_daemon(comm: &str, program: &str, args: &[&str], answers: impl Fn() -> bool) {
    let deadline = Instant::now() + DAEMON_WAIT;
    loop {
        if answers() {
            return;
        }
        let running = processes_named(comm);
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{comm} (pid {running:?}) runs but does not answer after {}s: stop it, or \
             wait for it",
            DAEMON_WAIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = repo_root().join("target/test-containers");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join(format!("{comm}.log"));
    let started = spawn_daemon(program, args, &log);
    let deadline = Instant::now() + DAEMON_WAIT;
    while !answers() {
        if let Some(status) = started.exited.lock().unwrap().clone() {
            panic!("{program} exited at start ({status}); {}", log_tail(&log));
        }
        if Instant::now() >= deadline {
            // SAFETY: plain kill(2) of the daemon started above.
            unsafe { libc::kill(started.pid as i32, libc::SIGTERM) };
            panic!(
                "{program} did not answer within {}s; {}",
                DAEMON_WAIT.as_secs(),
                log_tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("started {program} (pid {}) for the tests", started.pid);
}

/// containerd, running.
pub struct Containerd {
    _private: (),
}

static CONTAINERD: OnceLock<Option<Containerd>> = OnceLock::new();

impl Containerd {
    /// containerd, answering on its socket (started if need be); `None`
    /// when it is not installed (a failure when FLAMEPROBE_REQUIRE_ROOT_TESTS=1).
    pub fn get() -> Option<&'static Containerd> {
        CONTAINERD
            .get_or_init(|| {
                if !check_installed(&["containerd", "ctr"], "containerd") {
                    return None;
                }
                ensure_daemon("containerd", "containerd", &[], || {
                    succeeds("ctr", &["--connect-timeout", "2s", "version"])
                });
                Some(Containerd { _private: () })
            })
            .as_ref()
    }

    /// `ctr -n NAMESPACE ARGS`, asserting success; its trimmed stdout.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> String {
        let mut c = Command::new("ctr");
        c.args(["--timeout", "60s", "-n", namespace]).args(args);
        ok(c)
    }

    /// Starts a task as containerd's CRI plugin starts a container of
    /// `pod`: namespace `k8s.io`, a 64-hex id, the cgroup
    /// `/kubepods/besteffort/pod<uid>/<id>` (the kubelet's cgroupfs
    /// driver), and the CRI annotations (containerd
    /// `internal/cri/annotations`). `name` `None` is the pod's sandbox.
    fn cri_task(
        &self,
        pod: &KubePod,
        sandbox_id: Option<&str>,
        name: Option<&str>,
        rootfs: &Rootfs,
        cmd: &[&str],
    ) -> Task<'_> {
        let id = random_hex(32);
        let task = Task {
            containerd: self,
            namespace: CRI_NAMESPACE,
            id: id.clone(),
            name: name.unwrap_or("POD").to_string(),
        };
        let cgroup = format!("{}/{id}", pod.cgroup_parent());
        let sandbox_id = sandbox_id.unwrap_or(&id);
        let mut annotations = vec![
            (
                "container-type",
                if name.is_some() {
                    "container"
                } else {
                    "sandbox"
                },
            ),
            ("sandbox-id", sandbox_id),
            ("sandbox-name", &pod.name),
            ("sandbox-namespace", &pod.namespace),
            ("sandbox-uid", &pod.uid),
        ];
        if let Some(name) = name {
            annotations.push(("container-name", name));
            annotations.push(("image-name", "localhost/flameprobe-test:latest"));
        }
        let kind = format!(
            "io.cri-containerd.kind={}",
            if name.is_some() {
                "container"
            } else {
                "sandbox"
            }
        );
        let mut args: Vec<String> = ["run", "--detach", "--null-io", "--cgroup", &cgroup]
            .map(String::from)
            .to_vec();
        args.extend(["--label".to_string(), kind]);
        // What an image's config would give the process.
        args.extend(["--env".to_string(), "PATH=/bin".to_string()]);
        for (k, v) in annotations {
            args.push("--annotation".into());
            args.push(format!("io.kubernetes.cri.{k}={v}"));
        }
        args.push("--rootfs".into());
        args.push(rootfs.dir.to_str().unwrap().into());
        args.push(id);
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(CRI_NAMESPACE, &args);
        task
    }

    /// A pod's sandbox (pause) task, running `sleep`.
    pub fn cri_sandbox(&self, pod: &KubePod, rootfs: &Rootfs) -> Task<'_> {
        self.cri_task(pod, None, None, rootfs, &["sleep", "600"])
    }

    /// A container `name` of the pod whose sandbox is `sandbox`.
    pub fn cri_container(
        &self,
        pod: &KubePod,
        sandbox: &Task<'_>,
        name: &str,
        rootfs: &Rootfs,
        cmd: &[&str],
    ) -> Task<'_> {
        self.cri_task(pod, Some(&sandbox.id), Some(name), rootfs, cmd)
    }
}

/// A running containerd task (and its container), removed when dropped.
pub struct Task<'c> {
    containerd: &'c Containerd,
    namespace: &'static str,
    pub id: String,
    /// Its Kubernetes container name (`POD` for a sandbox).
    pub name: String,
}

impl Task<'_> {
    /// Host pid of the task's first process.
    pub fn pid(&self) -> u32 {
        let list = self.containerd.ctr(self.namespace, &["task", "ls"]);
        list.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(self.id.as_str())).then(|| f.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("task {} not listed:\n{list}", self.id))
    }
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        for args in [["task", "delete", "--force"], ["container", "delete", ""]] {
            let _ = Command::new("ctr")
                .args(["--timeout", "30s", "-n", self.namespace])
                .args(args.iter().filter(|a| !a.is_empty()))
                .arg(&self.id)
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// dockerd, running.
pub struct Docker {
    cli: PathBuf,
}

static DOCKER: OnceLock<Option<Docker>> = OnceLock::new();
static DOCKER_IMAGES: Mutex<()> = Mutex::new(());

impl Docker {
    /// dockerd, answering on its socket (started, after containerd, if need
    /// be); `None` when docker.io is not installed (a failure when
    /// FLAMEPROBE_REQUIRE_ROOT_TESTS=1).
    pub fn get() -> Option<&'static Docker> {
        DOCKER
            .get_or_init(|| {
                if !check_installed(&["dockerd", "docker"], "docker.io") {
                    return None;
                }
                Containerd::get()?;
                // Debian's client, the daemon's version (another may come
                // first in PATH).
                let cli = PathBuf::from(if Path::new("/usr/bin/docker").exists() {
                    "/usr/bin/docker"
                } else {
                    "docker"
                });
                let probe = cli.clone();
                let containerd = format!("--containerd={CONTAINERD_SOCKET}");
                ensure_daemon(
                    "dockerd",
                    "dockerd",
                    &[&containerd, "--iptables=false", "--bridge=none"],
                    || succeeds(&probe, &["version", "--format", "{{.Server.Version}}"]),
                );
                Some(Docker { cli })
            })
            .as_ref()
    }

    pub fn command(&self) -> Command {
        Command::new(&self.cli)
    }

    /// Runs docker, asserting success; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut c = self.command();
        c.args(args);
        ok(c)
    }

    /// An image of [`rootfs`]`(binaries)` (`docker import`, once per
    /// content). Returns its reference.
    pub fn image(&self, binaries: &[&Path]) -> String {
        let _guard = DOCKER_IMAGES.lock().unwrap_or_else(|e| e.into_inner());
        let fs = rootfs(binaries);
        let tag = format!("flameprobe-test:{}", fs.hash);
        if !succeeds(&self.cli, &["image", "inspect", &tag]) {
            self.ok(&["import", fs.tar.to_str().unwrap(), &tag]);
        }
        tag
    }

    /// Starts a detached container `name` (give a unique one) without a
    /// network, with more `docker run` options.
    pub fn run(
        &self,
        name: &str,
        options: &[&str],
        image: &str,
        cmd: &[&str],
    ) -> DockerContainer<'_> {
        let mut guard = DockerContainer {
            docker: self,
            name: name.to_string(),
            id: String::new(),
        };
        let mut args = vec!["run", "--detach", "--network", "none", "--name", name];
        args.extend(options);
        args.push(image);
        args.extend(cmd);
        guard.id = self.ok(&args);
        assert_eq!(guard.id.len(), 64, "docker run printed {:?}", guard.id);
        guard
    }

    /// Runs a container of `pod` as cri-dockerd does: named
    /// `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`, in the pod's
    /// cgroup, and, unless `labels` is false, with the kubelet's labels.
    /// `container` `POD` is the pod's sandbox.
    pub fn run_kubernetes(
        &self,
        pod: &KubePod,
        container: &str,
        attempt: u32,
        labels: bool,
        image: &str,
        cmd: &[&str],
    ) -> DockerContainer<'_> {
        let name = format!(
            "k8s_{container}_{}_{}_{}_{attempt}",
            pod.name, pod.namespace, pod.uid
        );
        let kind = if container == "POD" {
            "podsandbox"
        } else {
            "container"
        };
        let mut options: Vec<String> = vec![format!("--cgroup-parent={}", pod.cgroup_parent())];
        if labels {
            for (k, v) in [
                ("io.kubernetes.container.name", container),
                ("io.kubernetes.pod.name", &pod.name),
                ("io.kubernetes.pod.namespace", &pod.namespace),
                ("io.kubernetes.pod.uid", &pod.uid),
                ("io.kubernetes.docker.type", kind),
            ] {
                options.push(format!("--label={k}={v}"));
            }
        }
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        self.run(&name, &options, image, cmd)
    }
}

/// A running docker container, removed (killed) when dropped.
pub struct DockerContainer<'d> {
    docker: &'d Docker,
    /// docker's name for it.
    pub name: String,
    pub id: String,
}

impl DockerContainer<'_> {
    /// Host pid of the container's first process.
    pub fn pid(&self) -> u32 {
        self.docker
            .ok(&["inspect", "--format", "{{.State.Pid}}", &self.id])
            .parse()
            .expect("a pid")
    }
}

impl Drop for DockerContainer<'_> {
    fn drop(&mut self) {
        let _ = self
            .docker
            .command()
            .args(["rm", "--force", &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

/// A Kubernetes pod's identity and cgroup, as the kubelet (cgroupfs
/// driver, BestEffort QoS) gives them; its cgroup directories are removed
/// when dropped (runtimes remove their containers' cgroups, the kubelet
/// the pod's). Declare it before its containers, so it drops after them.
pub struct KubePod {
    /// Unique to this test process and `tag`.
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl KubePod {
    /// A pod named `fpt<pid>-<tag>` (the same name in every namespace),
    /// with a new UID.
    pub fn new(tag: &str, namespace: &str) -> KubePod {
        let uid = random_hex(16);
        KubePod {
            name: unique(tag),
            namespace: namespace.to_string(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                &uid[..8],
                &uid[8..12],
                &uid[12..16],
                &uid[16..20],
                &uid[20..]
            ),
        }
    }

    /// `/kubepods/besteffort/pod<uid>`.
    pub fn cgroup_parent(&self) -> String {
        format!("/kubepods/besteffort/pod{}", self.uid)
    }

    /// `namespace/name`, as `[Pod]` frames show it.
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl Drop for KubePod {
    fn drop(&mut self) {
        let rel = self.cgroup_parent();
        for mount in cgroup_mounts() {
            let dir = mount.join(rel.trim_start_matches('/'));
            // Empty once the runtimes removed their containers' cgroups.
            for _ in 0..100 {
                if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Where every cgroup hierarchy (v1 and v2) is mounted.
fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let point = left.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// `bytes` random bytes as hex (container ids, pod UIDs).
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
