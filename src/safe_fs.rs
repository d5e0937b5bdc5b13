//! Opening files that someone else controls: the binaries and perf maps of
//! a profiled process (inside its root, which may be a container or a
//! chroot) and the state files of container runtimes.
//!
//! Every open here
//! - resolves the path inside a directory with `openat2`: `RESOLVE_IN_ROOT`
//!   (absolute symlinks and `..` stay inside a process's root) or
//!   `RESOLVE_BENEATH` (nothing may leave a runtime's state directory),
//!   always with `RESOLVE_NO_MAGICLINKS` (no `/proc/*/fd` jumps);
//! - never blocks (`O_NONBLOCK`: a FIFO planted at the path cannot hang us);
//! - accepts regular files only, and opens nothing else: the path is first
//!   opened as an `O_PATH` handle, its type checked, and only a regular file
//!   is then opened for reading (through our own descriptor's `/proc` link,
//!   so it is the same inode). A device planted at the path is never
//!   opened (a driver's open can have effects: a watchdog arms itself);
//! - and reads are bounded by a size limit.
//!
//! `openat2` exists since Linux 5.6; flameprobe needs 5.8 (ring buffers).

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// How a relative path may be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// As if the directory were `/` (a process's root): absolute symlinks
    /// and `..` are resolved inside it.
    InRoot,
    /// Strictly below the directory: absolute symlinks and any `..` that
    /// would leave it are errors.
    Beneath,
}

/// Why a file was not opened.
#[derive(Debug)]
pub enum SafeOpenError {
    /// The path does not exist, escapes the directory, or cannot be read.
    Io(io::Error),
    /// It exists but is not a regular file (FIFO, device, socket, directory).
    NotRegular(&'static str),
    /// It is larger than the caller's limit.
    TooLarge { size: u64, limit: u64 },
}

impl fmt::Display for SafeOpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafeOpenError::Io(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                f.write_str("the path leads outside the directory it must stay in")
            }
            SafeOpenError::Io(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                f.write_str("the path goes through a symbolic link that is not allowed")
            }
            SafeOpenError::Io(e) if crate::limits::is_exhausted(e) => {
                f.write_str(&crate::limits::exhausted_hint())
            }
            SafeOpenError::Io(e) => write!(f, "{e}"),
            SafeOpenError::NotRegular(what) => write!(f, "not a regular file (a {what})"),
            SafeOpenError::TooLarge { size, limit } => {
                write!(f, "{size} bytes, more than the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SafeOpenError {}

impl From<io::Error> for SafeOpenError {
    fn from(e: io::Error) -> Self {
        SafeOpenError::Io(e)
    }
}

/// Opens a directory to resolve paths in (an `O_PATH` handle).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: valid NUL-terminated path; a non-negative result is a new fd.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The root directory of process `pid` (`/proc/PID/root`), as a handle.
pub fn process_root(pid: u32) -> io::Result<OwnedFd> {
    open_dir(&crate::proc::proc_path(pid, "root"))
}

/// Opens `rel` for reading, resolved inside `dir` as `scope` says, without
/// blocking; only a regular file is returned.
pub fn open_file(dir: BorrowedFd<'_>, rel: &Path, scope: Scope) -> Result<File, SafeOpenError> {
    open_regular(dir, rel, scope, 0)
}

/// Like [`open_file`], and the last component must not be a symbolic link
/// either (`O_NOFOLLOW`, an `ELOOP` error): for files a process writes
/// itself at a fixed path, where a link was planted by someone else.
pub fn open_file_nofollow(
    dir: BorrowedFd<'_>,
    rel: &Path,
    scope: Scope,
) -> Result<File, SafeOpenError> {
    open_regular(dir, rel, scope, libc::O_NOFOLLOW)
}

/// An `O_PATH` handle on `rel` of any file type (a UNIX socket, a
/// directory to create files in), resolved like [`open_file`]; a symbolic
/// link as the last component is not followed (the handle is the link).
/// The caller checks the type with `fstat`.
pub fn open_path(dir: BorrowedFd<'_>, rel: &Path, scope: Scope) -> io::Result<OwnedFd> {
    openat2(
        dir,
        rel,
        (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        scope,
    )
}

fn open_regular(
    dir: BorrowedFd<'_>,
    rel: &Path,
    scope: Scope,
    extra_flags: i32,
) -> Result<File, SafeOpenError> {
    let handle = openat2(
        dir,
        rel,
        (libc::O_PATH | libc::O_CLOEXEC | extra_flags) as u64,
        scope,
    )?;
    reopen_regular(handle, extra_flags & libc::O_NOFOLLOW != 0)
}

/// Opens the file that the mapping `start`-`end` of process `pid` maps,
/// through `/proc/PID/map_files` (the exact inode, even deleted or in
/// another mount namespace), like [`open_file`]: only a regular file, and
/// without blocking. The kernel allows it with `CAP_SYS_ADMIN` or
/// `CAP_CHECKPOINT_RESTORE` only.
pub fn open_map_file(pid: u32, start: u64, end: u64) -> Result<File, SafeOpenError> {
    let path = crate::proc::proc_path(pid, &format!("map_files/{start:x}-{end:x}"));
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // A magic link: plain open follows it to the mapped file itself.
    // SAFETY: valid NUL-terminated path; a non-negative result is a new fd.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    reopen_regular(unsafe { OwnedFd::from_raw_fd(fd) }, false)
}

/// Opens the file behind an `O_PATH` handle for reading (non-blocking) if
/// it is a regular file; `link_is_loop`: a symbolic link (the handle of an
/// `O_NOFOLLOW` open) is reported as `ELOOP`, as a plain open would.
fn reopen_regular(handle: OwnedFd, link_is_loop: bool) -> Result<File, SafeOpenError> {
    let handle = File::from(handle);
    let ft = handle.metadata()?.file_type();
    if ft.is_file() {
        // Re-opening our own descriptor's link reaches the same inode
        // without resolving any path again.
        let own = format!("/proc/self/fd/{}", handle.as_raw_fd());
        let c = CString::new(own).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: valid NUL-terminated path; a non-negative result is a new fd.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: the kernel returned a fresh descriptor that we now own.
        return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    if ft.is_symlink() && link_is_loop {
        return Err(io::Error::from_raw_os_error(libc::ELOOP).into());
    }
    let what = if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() || ft.is_block_device() {
        "device"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    };
    Err(SafeOpenError::NotRegular(what))
}

/// Opens a path of process `pid` as the process sees it, inside its root.
pub fn open_in_process_root(pid: u32, path: &Path) -> Result<File, SafeOpenError> {
    let root = process_root(pid)?;
    use std::os::fd::AsFd;
    open_file(root.as_fd(), path, Scope::InRoot)
}

/// Opens a path in flameprobe's own root (a launched command's files:
/// its program, libraries it preloads) like [`open_file`]: without
/// blocking, and only a regular file. Relative paths are from the
/// current directory.
pub fn open_own_file(path: &Path) -> Result<File, SafeOpenError> {
    let abs = std::path::absolute(path)?;
    let root = open_dir(Path::new("/"))?;
    let rel = abs.strip_prefix("/").unwrap_or(&abs);
    use std::os::fd::AsFd;
    open_file(root.as_fd(), rel, Scope::InRoot)
}

/// Reads a whole file opened by [`open_file`], refusing more than `limit`
/// bytes (checked before reading and while reading: the file may grow).
pub fn read_limited(file: &mut File, limit: u64) -> Result<Vec<u8>, SafeOpenError> {
    let size = file.metadata()?.len();
    if size > limit {
        return Err(SafeOpenError::TooLarge { size, limit });
    }
    let mut buf = Vec::with_capacity(size as usize);
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(SafeOpenError::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// The names of the entries of directory `rel` in `dir`, resolved as `scope`
/// says (for listing a runtime's state directory without leaving it).
pub fn list_dir(
    dir: BorrowedFd<'_>,
    rel: &Path,
    scope: Scope,
) -> io::Result<Vec<std::ffi::OsString>> {
    let fd = openat2(
        dir,
        rel,
        (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64,
        scope,
    )?;
    // Our own descriptor's /proc link names exactly the directory opened
    // above, whatever happens to the path meanwhile.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))? {
        names.push(entry?.file_name());
    }
    drop(fd);
    Ok(names)
}

fn openat2(dir: BorrowedFd<'_>, rel: &Path, flags: u64, scope: Scope) -> io::Result<OwnedFd> {
    // RESOLVE_IN_ROOT treats a leading '/' as the root; RESOLVE_BENEATH
    // refuses it, so make the path relative for both.
    let bytes = rel.as_os_str().as_bytes();
    let trimmed = {
        let mut b = bytes;
        while let [b'/', rest @ ..] = b {
            b = rest;
        }
        if b.is_empty() {
            b"."
        } else {
            b
        }
    };
    let c = CString::new(trimmed).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let resolve = libc::RESOLVE_NO_MAGICLINKS
        | match scope {
            Scope::InRoot => libc::RESOLVE_IN_ROOT,
            Scope::Beneath => libc::RESOLVE_BENEATH,
        };
    // SAFETY: open_how is plain data; all-zero is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags;
    how.resolve = resolve;
    // SAFETY: valid fd, NUL-terminated path and open_how of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    #[test]
    fn stays_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(dir.path().join("ok"), b"fine").unwrap();
        symlink(outside.path(), dir.path().join("abs")).unwrap();
        symlink(
            "../../../../../../../../etc/hostname",
            dir.path().join("up"),
        )
        .unwrap();
        symlink("ok", dir.path().join("rel")).unwrap();
        let d = open_dir(dir.path()).unwrap();

        let mut f = open_file(d.as_fd(), Path::new("/ok"), Scope::InRoot).unwrap();
        assert_eq!(read_limited(&mut f, 100).unwrap(), b"fine");
        assert!(open_file(d.as_fd(), Path::new("rel"), Scope::Beneath).is_ok());
        // An absolute symlink resolves inside the root: no such file there.
        let err = open_file(d.as_fd(), Path::new("abs"), Scope::InRoot).unwrap_err();
        assert!(matches!(&err, SafeOpenError::Io(e) if e.kind() == io::ErrorKind::NotFound));
        // `..` cannot climb out of the root, and beneath refuses it.
        assert!(open_file(d.as_fd(), Path::new("up"), Scope::InRoot).is_err());
        let err = open_file(d.as_fd(), Path::new("up"), Scope::Beneath).unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        assert!(open_file(d.as_fd(), Path::new("abs"), Scope::Beneath).is_err());
    }

    #[test]
    fn refuses_fifos_and_large_files_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let d = open_dir(dir.path()).unwrap();
        let err = open_file(d.as_fd(), Path::new("fifo"), Scope::Beneath).unwrap_err();
        assert!(matches!(err, SafeOpenError::NotRegular("FIFO")), "{err}");
        assert!(matches!(
            open_file(d.as_fd(), Path::new("."), Scope::Beneath),
            Err(SafeOpenError::NotRegular("directory"))
        ));

        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(10 << 30).unwrap(); // sparse
        let mut f = open_file(d.as_fd(), Path::new("big"), Scope::Beneath).unwrap();
        let err = read_limited(&mut f, 1 << 20).unwrap_err();
        assert!(matches!(err, SafeOpenError::TooLarge { .. }), "{err}");
    }

    /// A launched command's own files (its program, a preloaded library)
    /// are opened without blocking, regular files only, by absolute or
    /// relative path, through symlinks.
    #[test]
    fn own_files_are_opened_safely() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(!opened_during(&fifo, || {
            let err = open_own_file(&fifo).unwrap_err();
            assert!(matches!(err, SafeOpenError::NotRegular("FIFO")), "{err}");
        }));
        std::fs::write(dir.path().join("prog"), b"ELF").unwrap();
        std::os::unix::fs::symlink("prog", dir.path().join("link")).unwrap();
        let mut text = String::new();
        open_own_file(&dir.path().join("link"))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "ELF");
        // Relative to the current directory, as execvp resolves `./prog`.
        let rel = Path::new("Cargo.toml");
        assert!(open_own_file(rel).is_ok());
    }

    /// Whether anything opened `path` while `f` ran (inotify `IN_OPEN`; an
    /// `O_PATH` handle is not an open).
    fn opened_during(path: &Path, f: impl FnOnce()) -> bool {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain syscalls on a descriptor owned here.
        unsafe {
            let ino = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(ino >= 0);
            let ino = OwnedFd::from_raw_fd(ino);
            assert!(libc::inotify_add_watch(ino.as_raw_fd(), c.as_ptr(), libc::IN_OPEN) >= 0);
            f();
            let mut buf = [0u8; 4096];
            let n = libc::read(ino.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
            n > 0
        }
    }

    #[test]
    fn opens_nothing_but_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let d = open_dir(dir.path()).unwrap();
        assert!(!opened_during(&fifo, || {
            let err = open_file(d.as_fd(), Path::new("fifo"), Scope::InRoot).unwrap_err();
            assert!(matches!(err, SafeOpenError::NotRegular("FIFO")), "{err}");
        }));
        // The check itself sees opens.
        assert!(opened_during(&file, || {
            open_file(d.as_fd(), Path::new("file"), Scope::InRoot).unwrap();
        }));
    }

    #[test]
    fn map_files_reach_the_mapped_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, b"mapped").unwrap();
        // SAFETY: read-only private mapping of a file nobody writes.
        let map = unsafe { memmap2::Mmap::map(&File::open(&path).unwrap()) }.unwrap();
        std::fs::write(dir.path().join("new"), b"planted").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        let (start, end) = (map.as_ptr() as u64, map.as_ptr() as u64 + 4096);
        match open_map_file(std::process::id(), start, end) {
            Ok(mut f) => assert_eq!(read_limited(&mut f, 100).unwrap(), b"mapped"),
            // Without CAP_SYS_ADMIN / CAP_CHECKPOINT_RESTORE.
            Err(SafeOpenError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
            Err(e) => panic!("{e}"),
        }
        drop(map);
    }

    #[test]
    fn lists_directories_without_leaving_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), b"").unwrap();
        symlink("/etc", dir.path().join("out")).unwrap();
        let d = open_dir(dir.path()).unwrap();
        let names = list_dir(d.as_fd(), Path::new("sub"), Scope::Beneath).unwrap();
        assert_eq!(names, ["a"]);
        let mut top = list_dir(d.as_fd(), Path::new("."), Scope::Beneath).unwrap();
        top.sort();
        assert_eq!(top, ["out", "sub"]);
        let err = list_dir(d.as_fd(), Path::new("out"), Scope::Beneath).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{err}");
    }

    #[test]
    fn nofollow_and_path_handles_do_not_follow_the_last_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok"), b"fine").unwrap();
        symlink("ok", dir.path().join("link")).unwrap();
        let d = open_dir(dir.path()).unwrap();
        assert!(open_file_nofollow(d.as_fd(), Path::new("ok"), Scope::InRoot).is_ok());
        let err = open_file_nofollow(d.as_fd(), Path::new("link"), Scope::InRoot).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // The plain open follows a link that stays inside.
        assert!(open_file(d.as_fd(), Path::new("link"), Scope::InRoot).is_ok());

        let h = open_path(d.as_fd(), Path::new("link"), Scope::InRoot).unwrap();
        let st = nix::sys::stat::fstat(&h).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        let h = open_path(d.as_fd(), Path::new("/"), Scope::InRoot).unwrap();
        let st = nix::sys::stat::fstat(&h).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    }

    #[test]
    fn opens_own_files_through_the_process_root() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let f = open_in_process_root(std::process::id(), &exe).unwrap();
        assert!(f.metadata().unwrap().len() > 0);
    }
}
