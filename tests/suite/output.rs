//! `-o PATH` never destroys what is at the path: devices stay devices,
//! descriptors are written into, FIFOs are fed, symbolic and hard links are
//! kept, an existing file keeps its mode and owner, and every path that
//! cannot be written is refused (naming it) before any work is done.
//! Mostly through `convert` (no BPF); devices are made with mknod in a
//! temporary directory, never the machine's /dev.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::*;

fn fixture() -> PathBuf {
    repo_root().join("tests/fixtures/report.folded")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The folded text `convert` writes for the fixture (to standard output).
fn expected_folded() -> Vec<u8> {
    let out = run_ok(&["convert", s(&fixture()), "-o", "-"]);
    assert!(!out.stdout.is_empty());
    out.stdout
}

fn convert_to(path: &Path, format: &str) -> std::process::Output {
    run(&["convert", s(&fixture()), "-o", s(path), "-f", format])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mknod(path: &Path, major: u64, minor: u64) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr").arg(flag).arg(path).status().unwrap();
    assert!(status.success(), "chattr {flag} {}", path.display());
}

#[test]
fn character_devices_stay_devices() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    mknod(&null, 1, 3);
    let out = convert_to(&null, "svg");
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::symlink_metadata(&null).unwrap();
    assert!(meta.file_type().is_char_device(), "{meta:?}");
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));

    // /dev/full refuses the data: a write error naming the path, and the
    // device is still there.
    let full = dir.path().join("full");
    mknod(&full, 1, 7);
    let out = convert_to(&full, "folded");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("writing output '{}'", full.display())),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    let meta = std::fs::symlink_metadata(&full).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 7));
}

/// Runs a bash `script` in a private mount namespace whose /dev is a fresh
/// tmpfs with the usual `fd`, `stdout`, `stderr` links and a null device,
/// so that a flameprobe that got `-o /dev/...` wrong cannot damage the
/// machine's /dev. Returns its output (stdout piped).
fn in_private_dev(script: &str) -> std::process::Output {
    let setup = "mount -t tmpfs -o mode=755 none /dev && ln -s /proc/self/fd /dev/fd \
                 && ln -s /proc/self/fd/1 /dev/stdout && ln -s /proc/self/fd/2 /dev/stderr \
                 && mknod -m 666 /dev/null c 1 3 && exec bash -c \"$0\"";
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "bash", "-c", setup])
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running unshare")
}

#[test]
fn descriptors_named_by_path_are_written_into() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let expected = expected_folded();
    let bin = env!("CARGO_BIN_EXE_flameprobe");
    let convert = format!("'{bin}' convert '{}' -f folded -o", s(&fixture()));

    // A file the shell opened as descriptor 3 (appending to what is there).
    let file = dir.path().join("fd3.txt");
    std::fs::write(&file, "before\n").unwrap();
    let out = in_private_dev(&format!("{convert} /dev/fd/3 3>>'{}'", s(&file)));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut want = b"before\n".to_vec();
    want.extend_from_slice(&expected);
    assert_eq!(std::fs::read(&file).unwrap(), want);

    // A pipe as descriptor 3, as `-o >(cmd)` gives.
    let out = in_private_dev(&format!("{convert} /dev/fd/3 3>&1 >/dev/null"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, expected);

    // /dev/stdout and /proc/self/fd/1 with standard output piped.
    for path in ["/dev/stdout", "/proc/self/fd/1"] {
        let out = in_private_dev(&format!("{convert} {path}"));
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        assert_eq!(out.stdout, expected, "{path}");
    }

    // A descriptor that is not open is refused by name.
    let out = in_private_dev(&format!("{convert} /dev/fd/9"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("file descriptor 9 is not open"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_fifo_reader_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || tx.send(std::fs::read(fifo).unwrap()));
    }
    let out = convert_to(&fifo, "folded");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo(),
        "still a FIFO"
    );
    // A reader that is never fed would wait forever: fail instead.
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the FIFO's reader got no data");
    assert_eq!(got, expected_folded());
}

#[test]
fn links_are_followed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let expected = expected_folded();

    let target = dir.path().join("target.folded");
    std::fs::write(&target, "old").unwrap();
    let link = dir.path().join("link.folded");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = convert_to(&link, "folded");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), expected);

    let dangling = dir.path().join("dangling.folded");
    let created = dir.path().join("created.folded");
    std::os::unix::fs::symlink("created.folded", &dangling).unwrap();
    let out = convert_to(&dangling, "folded");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&created).unwrap(), expected);

    let a = dir.path().join("a.folded");
    let b = dir.path().join("b.folded");
    std::fs::write(&a, "x".repeat(100_000)).unwrap();
    std::fs::hard_link(&a, &b).unwrap();
    let out = convert_to(&a, "folded");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(&a).unwrap().ino(),
        std::fs::metadata(&b).unwrap().ino()
    );
    assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 2);
    assert_eq!(
        std::fs::read(&b).unwrap(),
        expected,
        "truncated and rewritten"
    );
}

#[test]
fn a_replaced_file_keeps_mode_and_owner() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.folded");
    std::fs::write(&path, "old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    nix::unistd::chown(&path, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let out = convert_to(&path, "folded");
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (nobody.uid.as_raw(), nobody.gid.as_raw())
    );
    assert_eq!(std::fs::read(&path).unwrap(), expected_folded());
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file left");
}

#[test]
fn immutable_output_fails_before_recording() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.svg");
    std::fs::write(&path, "precious").unwrap();
    chattr("+i", &path);
    let target = Target::start(Path::new("/bin/sleep"), &["30"]);
    let pid = target.pid().to_string();
    let out = run(&["record", "-v", "-p", &pid, "-d", "1s", "-o", s(&path)]);
    chattr("-i", &path);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot write output '{}'", path.display())),
        "{err}"
    );
    assert!(
        err.contains("immutable (chattr +i)") && err.contains("chattr -i"),
        "{err}"
    );
    assert!(!err.contains("attached"), "checked before attaching: {err}");
    assert!(!err.contains(".flameprobe-"), "no internal names: {err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // Append-only: refused the same way.
    chattr("+a", &path);
    let out = convert_to(&path, "svg");
    chattr("-a", &path);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("append-only (chattr +a)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn unwritable_places_are_named() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let expect_error = |path: &Path, needle: &str| {
        let out = convert_to(path, "svg");
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot write output '{}'", path.display())),
            "{err}"
        );
        assert!(err.contains(needle), "{needle:?} in {err}");
        assert!(!err.contains(".flameprobe-"), "no internal names: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    };
    expect_error(&dir.path().join("missing/x.svg"), "missing' does not exist");
    expect_error(dir.path(), "it is a directory");

    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    chattr("+i", &locked);
    let out = convert_to(&locked.join("x.svg"), "svg");
    chattr("-i", &locked);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is immutable (chattr +i), so no file"),
        "{}",
        stderr(&out)
    );

    // A directory another user owns, for an unprivileged flameprobe.
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_flameprobe"))
        .args(["convert", s(&fixture()), "-o"])
        .arg(private.join("x.svg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot create files in directory"),
        "{}",
        stderr(&out)
    );

    // A read-only file system (a tmpfs mounted in a private mount namespace).
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o ro none '{}' && exec '{}' convert '{}' -o '{}/x.svg'",
            s(&ro),
            env!("CARGO_BIN_EXE_flameprobe"),
            s(&fixture()),
            s(&ro)
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is on a read-only file system"),
        "{}",
        stderr(&out)
    );
}

/// A launched command's own output never mixes with a profile that goes
/// to flameprobe's stdout, however stdout is named (`-o -`,
/// `/dev/stdout`): the command writes to stderr instead, and so does
/// `--report`.
#[test]
fn a_command_never_writes_into_the_profile() {
    require_root!();
    let bin = env!("CARGO_BIN_EXE_flameprobe");
    for path in ["-", "/dev/stdout"] {
        let script = format!(
            "'{bin}' record -q --report -F 999 -o {path} -f folded -- \
             sh -c 'echo NOISE-FROM-COMMAND; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'"
        );
        let out = in_private_dev(&script);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(!text.is_empty(), "{path}: no profile");
        for line in text.lines() {
            let (_, count) = line.rsplit_once(' ').unwrap_or_default();
            assert!(
                count.parse::<u64>().is_ok() && !line.contains("NOISE"),
                "{path}: not a folded line: {line:?}"
            );
        }
        let err = stderr(&out);
        assert!(err.contains("NOISE-FROM-COMMAND"), "{path}: {err}");
        assert!(
            err.contains("self"),
            "{path}: the report goes to stderr: {err}"
        );
    }
}

/// A folded file of `stacks` distinct stacks (about 40 bytes each).
fn many_stacks(path: &Path, stacks: usize) {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(stacks * 40);
    for i in 0..stacks {
        let _ = writeln!(text, "main;worker_{};leaf_{} {}", i % 97, i, i % 7 + 1);
    }
    std::fs::write(path, text).unwrap();
}

/// A file with two hard links on a full disk (a small tmpfs in a private
/// mount namespace): a write that does not fit fails and the old content
/// stays, through both names; with room for one copy only the write still
/// succeeds; with room it succeeds and the links stay shared. Nothing else
/// is left in the directory. The file used to be truncated and written in
/// place, so a full disk destroyed it.
#[test]
fn a_full_disk_keeps_a_hard_linked_file() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.folded");
    many_stacks(&input, 12_000);
    let new = run_ok(&["convert", s(&input), "-o", "-"]).stdout;
    assert!(new.len() > 250_000 && new.len() < 450_000, "{}", new.len());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // tmpfs sizes: no room for the new content; room for one copy only;
    // room for both.
    for (size_k, fits) in [(200, false), (600, true), (2048, true)] {
        let script = format!(
            "set -e; mount -t tmpfs -o size={size_k}k none '{m}'; printf 'old 1\\n' > '{m}/a'; \
             ln '{m}/a' '{m}/b'; set +e; '{bin}' convert '{input}' -f folded -o '{m}/a'; echo \"rc=$?\" >&2; \
             stat -c 'links=%h' '{m}/b' >&2; ls -A '{m}' | tr '\\n' ' ' >&2; echo >&2; \
             exec cat '{m}/b'",
            m = s(&mnt),
            bin = env!("CARGO_BIN_EXE_flameprobe"),
            input = s(&input),
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(err.contains("links=2\na b \n"), "{size_k}k: {err}");
        if fits {
            assert!(err.contains("rc=0"), "{size_k}k: {err}");
            assert!(
                out.stdout == new,
                "{size_k}k: the new content through the other link"
            );
        } else {
            assert!(err.contains("rc=1"), "{size_k}k: {err}");
            assert!(
                err.contains("No space left on device") && err.contains("the old content is kept"),
                "{size_k}k: {err}"
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "old 1\n",
                "{size_k}k: {err}"
            );
        }
    }
}

/// Killed while it writes its output (SIGKILL, the OOM killer), flameprobe
/// leaves no `.flameprobe-*` temporary file behind, and the old file is
/// intact: the temporary file has no name until it is complete.
#[test]
fn a_kill_during_the_write_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.folded");
    many_stacks(&input, 600_000);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let old = out_dir.join("p.folded");
    std::fs::write(&old, "old 1\n").unwrap();
    let mut caught = 0;
    for _ in 0..10 {
        let mut child = flameprobe()
            .args(["convert", s(&input), "-o", s(&old)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let fds = format!("/proc/{}/fd", child.id());
        // Until the output's temporary file is open (or the child ended).
        let writing = loop {
            let open: Vec<PathBuf> = std::fs::read_dir(&fds)
                .map(|d| {
                    d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                        .collect()
                })
                .unwrap_or_default();
            if open.iter().any(|p| p.starts_with(&out_dir) && *p != old) {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_micros(300));
        };
        if writing {
            let _ = child.kill();
            caught += 1;
        }
        let _ = child.wait();
        let names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["p.folded"], "left behind");
        // The old file, or (killed just after the rename) all of the new.
        let now = std::fs::read(&old).unwrap();
        assert!(
            now == b"old 1\n" || now.len() > 1_000_000,
            "{} bytes",
            now.len()
        );
        if caught >= 3 {
            break;
        }
        std::fs::write(&old, "old 1\n").unwrap();
    }
    assert!(caught > 0, "never caught flameprobe while it wrote");
}
