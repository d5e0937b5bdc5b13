//! Where a profile is written, and how, so that writing never destroys what
//! is at the output path.
//!
//! [`Output::prepare`] runs before anything is recorded: it resolves the
//! path, decides how it will be written and checks everything that would
//! make the write fail (missing or unwritable directory, read-only file
//! system, immutable or append-only file, a directory, a socket, a file
//! that cannot be opened for writing, a closed file descriptor), without
//! opening devices or FIFOs (opening a FIFO blocks until a reader comes,
//! and closing it again hands that reader an early end of file).
//! [`Output::write`] runs at the end:
//!
//! - `-`: standard output, which carries profile data only;
//! - a file descriptor of flameprobe named by a path (`/dev/stdout`,
//!   `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`): written into that
//!   descriptor itself, at its current position, never re-opened;
//! - a new path, or an existing regular file with one link: written to a
//!   temporary file in the same directory and renamed over the name
//!   (atomic). The temporary file has no name until it is complete
//!   (`O_TMPFILE`, then linked and renamed), so nothing is left behind
//!   when flameprobe is killed while writing. An existing file keeps its
//!   mode and owner; a new one gets 0666 minus the umask and, under sudo,
//!   the invoking user as owner. When the owner cannot be kept (no
//!   `CAP_CHOWN`) the file is written in place instead (as below);
//! - character and block devices, FIFOs and regular files with more than
//!   one link: opened and written in place, so a device stays a device and
//!   hard links stay shared. A regular file's new content is written to an
//!   unnamed temporary file in its directory first and room for it
//!   reserved in the file before it is copied over the old content, so a
//!   full disk fails before the old content is touched; where no
//!   temporary file can be made there, `prepare` warns that a failed
//!   write loses the old content;
//! - a symbolic link is followed to its target, as `cp` and shells do; a
//!   dangling link creates its target. Like the kernel with
//!   `fs.protected_symlinks`, a link that another user planted in a
//!   world-writable sticky directory (`/tmp`) is not followed.
//!
//! The directory of the final name is held open from `prepare` to `write`
//! and the name is replaced relative to it, so nothing planted at the name
//! in between (a symbolic link in `/tmp`) is followed. An existing file
//! that changed in between is looked at again once.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use nix::unistd::{AccessFlags, Gid, Uid, UnlinkatFlags};

use super::Destination;

/// Most symbolic links followed from the output path (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// `FS_IMMUTABLE_FL` and `FS_APPEND_FL` of `FS_IOC_GETFLAGS` (linux/fs.h).
const FS_IMMUTABLE_FL: libc::c_int = 0x10;
const FS_APPEND_FL: libc::c_int = 0x20;
/// Capability number of `CAP_CHOWN` (linux/capability.h).
const CAP_CHOWN: u32 = 0;

/// The output of a command, checked and ready to be written once.
#[derive(Debug)]
pub struct Output {
    /// Where the user asked the output to go, for messages.
    dest: Destination,
    plan: Plan,
}

#[derive(Debug)]
enum Plan {
    Stdout,
    /// A duplicate of one of our file descriptors (same open file).
    Fd(OwnedFd),
    /// Write a temporary file in `dir` and rename it over `name`.
    Replace {
        dir: OwnedFd,
        name: OsString,
        existing: Option<Existing>,
    },
    /// Open `name` in `dir` and write into it.
    InPlace {
        dir: OwnedFd,
        name: OsString,
        existing: Existing,
    },
}

/// What was at the name when the output was prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Existing {
    kind: Kind,
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    links: u64,
}

impl Existing {
    fn of(st: &FileStat) -> Existing {
        Existing {
            kind: Kind::of(st),
            dev: st.st_dev,
            ino: st.st_ino,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            links: st.st_nlink,
        }
    }
}

/// The kinds of file an output path can lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Regular,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    Directory,
    Symlink,
}

impl Kind {
    fn of(st: &FileStat) -> Kind {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::Regular,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFDIR => Kind::Directory,
            // S_IFLNK, the only other type there is.
            _ => Kind::Symlink,
        }
    }
}

/// How an existing file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Replace,
    InPlace,
}

/// A file attribute (`chattr`) that forbids writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attribute {
    Immutable,
    AppendOnly,
}

impl Attribute {
    /// The attribute that forbids replacing or truncating a file with
    /// these `FS_IOC_GETFLAGS` flags, if any.
    fn forbidding(flags: libc::c_int) -> Option<Attribute> {
        if flags & FS_IMMUTABLE_FL != 0 {
            Some(Attribute::Immutable)
        } else if flags & FS_APPEND_FL != 0 {
            Some(Attribute::AppendOnly)
        } else {
            None
        }
    }

    fn letter(self) -> char {
        match self {
            Attribute::Immutable => 'i',
            Attribute::AppendOnly => 'a',
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Immutable => f.write_str("immutable (chattr +i)"),
            Attribute::AppendOnly => f.write_str("append-only (chattr +a)"),
        }
    }
}

/// Why an output cannot be written, with what to do about it. Paths are
/// what the user's path led to (after symbolic links).
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    #[error("directory '{}' does not exist: create it or choose another path", dir.display())]
    NoDirectory { dir: PathBuf },
    #[error("'{}' is not a directory: choose another path", dir.display())]
    NotADirectory { dir: PathBuf },
    #[error(
        "cannot create files in directory '{}' ({error}): choose a directory you can write to",
        dir.display()
    )]
    DirectoryNotWritable { dir: PathBuf, error: io::Error },
    #[error("'{}' is on a read-only file system: write the output elsewhere", path.display())]
    ReadOnlyFileSystem { path: PathBuf },
    #[error(
        "directory '{}' is {attr}, so no file can be created in it: choose another directory \
         or remove the attribute with `chattr -{} '{}'`",
        dir.display(), attr.letter(), dir.display()
    )]
    DirectoryAttribute { dir: PathBuf, attr: Attribute },
    #[error("it is a directory: name a file in it, e.g. '{}'", path.join("flame.svg").display())]
    IsDirectory { path: PathBuf },
    #[error(
        "'{}' is {attr}: choose another path or remove the attribute with `chattr -{} '{}'`",
        path.display(), attr.letter(), path.display()
    )]
    FileAttribute { path: PathBuf, attr: Attribute },
    #[error(
        "'{}' cannot be opened for writing ({error}): choose another path or change its permissions",
        path.display()
    )]
    FileNotWritable { path: PathBuf, error: io::Error },
    #[error("'{}' is a socket, which cannot be opened for writing: give a file path", path.display())]
    Socket { path: PathBuf },
    #[error("file descriptor {fd} is not open: open it in the shell (e.g. `{fd}>file`) or give a file path")]
    FdNotOpen { fd: RawFd },
    #[error(
        "file descriptor {fd} is open for reading only: open it for writing (e.g. `{fd}>file`) \
         or give a file path"
    )]
    FdReadOnly { fd: RawFd },
    #[error("too many levels of symbolic links: give the path of the file itself")]
    SymlinkLoop,
    #[error(
        "refusing to follow the symbolic link '{}': it belongs to another user and sits in a \
         world-writable sticky directory (the kernel refuses such links too, see \
         fs.protected_symlinks): give the path of the file itself",
        link.display()
    )]
    ProtectedSymlink { link: PathBuf },
    #[error("cannot look at '{}': {error}", path.display())]
    Inspect { path: PathBuf, error: io::Error },
}

/// An output that cannot be written, or whose writing failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Found before anything was written (by [`Output::prepare`]).
    #[error("cannot write output '{path}': {reason}")]
    Unusable { path: Destination, reason: Reason },
    /// Writing failed; the I/O error is the source (so a closed pipe can
    /// be told apart).
    #[error("writing output '{path}' failed")]
    Write {
        path: Destination,
        #[source]
        source: io::Error,
    },
}

impl Output {
    /// Resolves and checks `dest` before any work is done; nothing is
    /// created, truncated or opened for writing yet.
    pub fn prepare(dest: &Destination) -> Result<Output, OutputError> {
        let plan = match dest {
            Destination::Stdout => Plan::Stdout,
            Destination::File(path) => plan_for(path).map_err(|reason| OutputError::Unusable {
                path: dest.clone(),
                reason,
            })?,
        };
        Ok(Output {
            dest: dest.clone(),
            plan,
        })
    }

    /// Whether the output ends up where flameprobe's standard output goes
    /// (`-o -`, `/dev/stdout`, `/dev/fd/1`, or the very file or pipe stdout
    /// is): then a launched command's stdout and `--report` must go to
    /// stderr instead, or they would mix with the profile.
    pub fn shares_stdout(&self) -> bool {
        let target = match &self.plan {
            Plan::Stdout => return true,
            Plan::Fd(fd) => nix::sys::stat::fstat(fd)
                .ok()
                .map(|st| (st.st_dev, st.st_ino)),
            Plan::Replace { existing, .. } => existing.map(|e| (e.dev, e.ino)),
            Plan::InPlace { existing, .. } => Some((existing.dev, existing.ino)),
        };
        let ours = nix::sys::stat::fstat(std::io::stdout())
            .ok()
            .map(|st| (st.st_dev, st.st_ino));
        target.is_some() && target == ours
    }

    /// Writes the output: `fill` writes everything into the writer it is
    /// given (buffered). A file that is replaced is only replaced when
    /// `fill` succeeded; a failed write leaves no temporary file behind.
    pub fn write(
        self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), OutputError> {
        self.write_checked(fill, true)
    }

    fn write_checked(
        self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        may_retry: bool,
    ) -> Result<(), OutputError> {
        let failed = |source: io::Error| OutputError::Write {
            path: self.dest.clone(),
            source,
        };
        match &self.plan {
            Plan::Stdout => {
                let stdout = io::stdout();
                write_through(stdout.lock(), fill).map_err(failed)
            }
            Plan::Fd(fd) => {
                let file = File::from(fd.try_clone().map_err(failed)?);
                write_through(file, fill).map_err(failed)
            }
            Plan::Replace {
                dir,
                name,
                existing,
            } => {
                if let Some(old) = existing {
                    if !still_there(dir.as_fd(), name, old) {
                        return self.look_again(fill, may_retry);
                    }
                }
                replace(dir.as_fd(), name, existing.as_ref(), fill).map_err(failed)
            }
            Plan::InPlace {
                dir,
                name,
                existing,
            } => {
                // Blocks until a FIFO has a reader, as a shell does.
                let fd = nix::fcntl::openat(
                    dir.as_fd(),
                    name.as_os_str(),
                    OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| failed(e.into()))?;
                let file = File::from(fd);
                let st = nix::sys::stat::fstat(&file).map_err(|e| failed(e.into()))?;
                if !same_file(&st, existing) {
                    drop(file);
                    return self.look_again(fill, may_retry);
                }
                if existing.kind == Kind::Regular {
                    return write_regular_in_place(dir.as_fd(), file, fill).map_err(failed);
                }
                write_through(file, fill).map_err(failed)
            }
        }
    }

    /// The file at the output path changed since it was prepared: prepare
    /// it again (once) and write what is there now.
    fn look_again(
        self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
        may_retry: bool,
    ) -> Result<(), OutputError> {
        if !may_retry {
            return Err(OutputError::Write {
                path: self.dest,
                source: io::Error::other("it keeps changing while flameprobe writes it"),
            });
        }
        log::info!(
            "{} changed since it was checked; checking it again",
            self.dest
        );
        let again = Output::prepare(&self.dest)?;
        again.write_checked(fill, false)
    }
}

/// Writes through a buffer and flushes.
fn write_through(
    inner: impl Write,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = BufWriter::new(inner);
    fill(&mut w)?;
    w.flush()
}

/// What the path leads to once symbolic links are followed.
enum Resolved {
    /// One of our file descriptors (`/proc/self/fd/N` and what leads there).
    Fd(RawFd),
    /// A name in a directory, and what is there now (`None`: nothing).
    Entry {
        /// The path that led here (the user's, or a link's target).
        path: PathBuf,
        dir: OwnedFd,
        /// The directory's path as reached from `path`.
        dir_path: PathBuf,
        name: OsString,
        existing: Option<Existing>,
    },
}

fn plan_for(path: &Path) -> Result<Plan, Reason> {
    match resolve(path)? {
        Resolved::Fd(n) => own_fd(n).map(Plan::Fd),
        Resolved::Entry {
            path: file_path,
            dir,
            dir_path,
            name,
            existing,
        } => {
            let Some(existing) = existing else {
                check_directory(dir.as_fd(), &dir_path)?;
                return Ok(Plan::Replace {
                    dir,
                    name,
                    existing: None,
                });
            };
            let facts = Facts {
                kind: existing.kind,
                links: existing.links,
                owner_differs: existing.uid != Uid::effective().as_raw()
                    || existing.gid != Gid::effective().as_raw(),
                can_chown: can_chown(),
                attribute: attribute_of(dir.as_fd(), &name, existing.kind),
            };
            let method = choose(&facts, &file_path)?;
            check_file_writable(dir.as_fd(), &name, &file_path)?;
            match method {
                Method::Replace => {
                    check_directory(dir.as_fd(), &dir_path)?;
                    Ok(Plan::Replace {
                        dir,
                        name,
                        existing: Some(existing),
                    })
                }
                Method::InPlace => {
                    if existing.kind == Kind::Regular {
                        warn_if_unstaged(dir.as_fd(), &file_path, &existing);
                    }
                    Ok(Plan::InPlace {
                        dir,
                        name,
                        existing,
                    })
                }
            }
        }
    }
}

/// Says before anything is recorded when a regular file written in place
/// cannot have its new content staged beside it (see
/// [`write_regular_in_place`]): then a failed write loses the old content.
fn warn_if_unstaged(dir: BorrowedFd<'_>, path: &Path, existing: &Existing) {
    match Temp::create(dir, 0o600) {
        Ok(temp) => temp.discard(dir),
        Err(e) if cannot_stage(&e) => {
            let why = if existing.links > 1 {
                format!("it has {} hard links", existing.links)
            } else {
                "its owner cannot be kept by a replacement".to_string()
            };
            log::warn!(
                "'{}' is written in place ({why}) and no temporary file can be made beside it \
                 ({e}): if writing fails (a full disk), its old content is lost",
                path.display()
            );
        }
        Err(e) => log::debug!("no temporary file beside '{}': {e}", path.display()),
    }
}

/// What decides how an existing file is written.
#[derive(Clone, Copy, Debug)]
struct Facts {
    kind: Kind,
    links: u64,
    /// Its owner or group is not ours: a replacement must be given away.
    owner_differs: bool,
    can_chown: bool,
    attribute: Option<Attribute>,
}

/// How an existing file is written, or why it cannot be.
fn choose(f: &Facts, path: &Path) -> Result<Method, Reason> {
    match f.kind {
        Kind::Directory => {
            return Err(Reason::IsDirectory {
                path: path.to_path_buf(),
            })
        }
        Kind::Socket => {
            return Err(Reason::Socket {
                path: path.to_path_buf(),
            })
        }
        _ => {}
    }
    if let Some(attr) = f.attribute {
        return Err(Reason::FileAttribute {
            path: path.to_path_buf(),
            attr,
        });
    }
    match f.kind {
        Kind::Regular if f.links == 1 && (!f.owner_differs || f.can_chown) => Ok(Method::Replace),
        _ => Ok(Method::InPlace),
    }
}

/// Follows the path to what it names: symbolic links one at a time (so
/// `/dev/stdout` is recognized as our descriptor 1 on the way), and each
/// directory opened by the kernel.
fn resolve(path: &Path) -> Result<Resolved, Reason> {
    let fd_dirs = own_fd_dirs();
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_SYMLINKS {
        let Some(name) = current.file_name().map(OsStr::to_os_string) else {
            // "/", "..": a directory, or a path through something missing.
            return Err(match nix::sys::stat::stat(&current) {
                Ok(_) => Reason::IsDirectory { path: current },
                Err(e) => Reason::Inspect {
                    path: current,
                    error: e.into(),
                },
            });
        };
        let dir_path = match current.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = open_dir(&dir_path)?;
        if let Some(n) = fd_number(dir.as_fd(), &name, &fd_dirs) {
            return Ok(Resolved::Fd(n));
        }
        let st = match nix::sys::stat::fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                return Ok(Resolved::Entry {
                    path: current,
                    dir,
                    dir_path,
                    name,
                    existing: None,
                })
            }
            Err(e) => {
                return Err(Reason::Inspect {
                    path: current,
                    error: e.into(),
                })
            }
        };
        if Kind::of(&st) != Kind::Symlink {
            return Ok(Resolved::Entry {
                path: current,
                dir,
                dir_path,
                name,
                existing: Some(Existing::of(&st)),
            });
        }
        let dir_st = nix::sys::stat::fstat(&dir).map_err(|e| Reason::Inspect {
            path: dir_path.clone(),
            error: e.into(),
        })?;
        if !may_follow(
            protected_symlinks(),
            Uid::effective().as_raw(),
            st.st_uid,
            dir_st.st_mode,
            dir_st.st_uid,
        ) {
            return Err(Reason::ProtectedSymlink { link: current });
        }
        let target =
            nix::fcntl::readlinkat(&dir, name.as_os_str()).map_err(|e| Reason::Inspect {
                path: current.clone(),
                error: e.into(),
            })?;
        // Relative targets are relative to the link's directory; the
        // kernel resolves `dir_path` the same way it reached the link.
        current = dir_path.join(target);
    }
    Err(Reason::SymlinkLoop)
}

/// Whether the kernel would follow a symbolic link owned by `link_uid` in
/// a directory with `dir_mode` owned by `dir_uid`, for a process with
/// file-system uid `uid` (fs/namei.c `may_follow_link`).
fn may_follow(protected: bool, uid: u32, link_uid: u32, dir_mode: u32, dir_uid: u32) -> bool {
    let sticky_world_writable = libc::S_ISVTX | libc::S_IWOTH;
    !protected
        || link_uid == uid
        || dir_mode & sticky_world_writable != sticky_world_writable
        || dir_uid == link_uid
}

fn protected_symlinks() -> bool {
    std::fs::read_to_string("/proc/sys/fs/protected_symlinks")
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
}

/// Opens a directory to resolve names in (an `O_PATH` handle).
fn open_dir(path: &Path) -> Result<OwnedFd, Reason> {
    crate::safe_fs::open_dir(path).map_err(|e| {
        match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            Errno::ENOENT => Reason::NoDirectory {
                dir: path.to_path_buf(),
            },
            Errno::ENOTDIR => Reason::NotADirectory {
                dir: path.to_path_buf(),
            },
            _ => Reason::Inspect {
                path: path.to_path_buf(),
                error: e,
            },
        }
    })
}

/// The descriptor directories of this process and thread
/// (`/proc/self/fd`, `/proc/thread-self/fd`), held open so their inodes
/// can be compared with a directory reached from the output path.
fn own_fd_dirs() -> Vec<OwnedFd> {
    ["/proc/self/fd", "/proc/thread-self/fd"]
        .iter()
        .filter_map(|p| crate::safe_fs::open_dir(Path::new(p)).ok())
        .collect()
}

/// The descriptor number when `name` in `dir` is an entry of our own
/// descriptor directory.
fn fd_number(dir: BorrowedFd<'_>, name: &OsStr, fd_dirs: &[OwnedFd]) -> Option<RawFd> {
    let n: RawFd = std::str::from_utf8(name.as_bytes()).ok()?.parse().ok()?;
    let st = nix::sys::stat::fstat(dir).ok()?;
    fd_dirs
        .iter()
        .filter_map(|d| nix::sys::stat::fstat(d).ok())
        .any(|d| d.st_dev == st.st_dev && d.st_ino == st.st_ino)
        .then_some(n)
}

/// A duplicate of our descriptor `n`, which must be open for writing.
fn own_fd(n: RawFd) -> Result<OwnedFd, Reason> {
    let shown = || PathBuf::from(format!("/proc/self/fd/{n}"));
    // SAFETY: fcntl on a number that may not be an open descriptor only
    // fails (EBADF); nothing is closed or aliased.
    let flags = unsafe { libc::fcntl(n, libc::F_GETFL) };
    if flags < 0 {
        return Err(match Errno::last() {
            Errno::EBADF => Reason::FdNotOpen { fd: n },
            e => Reason::Inspect {
                path: shown(),
                error: e.into(),
            },
        });
    }
    if flags & libc::O_ACCMODE == libc::O_RDONLY {
        return Err(Reason::FdReadOnly { fd: n });
    }
    // SAFETY: as above; a non-negative result is a new descriptor we own.
    let dup = unsafe { libc::fcntl(n, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(Reason::Inspect {
            path: shown(),
            error: io::Error::last_os_error(),
        });
    }
    // SAFETY: `dup` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(dup) })
}

/// Checks that a new file can be created in (and renamed into) `dir`.
fn check_directory(dir: BorrowedFd<'_>, dir_path: &Path) -> Result<(), Reason> {
    if let Some(attr) = attribute_of(dir, OsStr::new("."), Kind::Directory) {
        return Err(Reason::DirectoryAttribute {
            dir: dir_path.to_path_buf(),
            attr,
        });
    }
    nix::unistd::faccessat(
        dir,
        ".",
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    )
    .map_err(|e| match e {
        Errno::EROFS => Reason::ReadOnlyFileSystem {
            path: dir_path.to_path_buf(),
        },
        e => Reason::DirectoryNotWritable {
            dir: dir_path.to_path_buf(),
            error: e.into(),
        },
    })
}

/// Checks that the file `name` in `dir` could be opened for writing.
fn check_file_writable(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<(), Reason> {
    nix::unistd::faccessat(
        dir,
        name,
        AccessFlags::W_OK,
        AtFlags::AT_EACCESS | AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| match e {
        Errno::EROFS => Reason::ReadOnlyFileSystem {
            path: path.to_path_buf(),
        },
        e => Reason::FileNotWritable {
            path: path.to_path_buf(),
            error: e.into(),
        },
    })
}

/// The `chattr` attribute of a regular file or directory that forbids
/// writing it, from `FS_IOC_GETFLAGS`. Devices and FIFOs are not opened
/// (that has effects of its own); file systems without the ioctl have
/// none.
fn attribute_of(dir: BorrowedFd<'_>, name: &OsStr, kind: Kind) -> Option<Attribute> {
    let extra = match kind {
        Kind::Regular => OFlag::empty(),
        Kind::Directory => OFlag::O_DIRECTORY,
        _ => return None,
    };
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | extra,
        Mode::empty(),
    )
    .ok()?;
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer (the
    // kernel's uapi says long, every file system writes an int).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if r != 0 {
        return None;
    }
    Attribute::forbidding(flags)
}

/// Whether we may give a file away (`CAP_CHOWN` in our effective set).
fn can_chown() -> bool {
    crate::proc::read_status(std::process::id())
        .map(|s| s.cap_eff & (1 << CAP_CHOWN) != 0)
        .unwrap_or(false)
}

fn same_file(st: &FileStat, old: &Existing) -> bool {
    st.st_dev == old.dev && st.st_ino == old.ino
}

/// The name still leads to the file that was prepared (not replaced,
/// still with one link).
fn still_there(dir: BorrowedFd<'_>, name: &OsStr, old: &Existing) -> bool {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => same_file(&st, old) && st.st_nlink == 1,
        Err(_) => false,
    }
}

/// Writes a temporary file in `dir` and renames it over `name`; the
/// temporary file is unnamed while it is written (`O_TMPFILE`), so nothing
/// is left behind whatever ends flameprobe before the rename, and removed
/// when anything fails.
fn replace(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    existing: Option<&Existing>,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    // A new file is created as a shell would (0666 minus the umask, or the
    // directory's default ACL); a replacement gets the old mode below.
    let mode = if existing.is_some() { 0o600 } else { 0o666 };
    let temp = Temp::create(dir, mode)?;
    let result = (|| {
        let mut w = BufWriter::new(temp.file());
        fill(&mut w).and_then(|()| w.flush()).map_err(|e| {
            if existing.is_some() {
                no_room(e)
            } else {
                e
            }
        })?;
        drop(w);
        match existing {
            Some(old) => keep_owner_and_mode(temp.file(), old)?,
            None => give_to_sudo_user(temp.file()),
        }
        temp.file().sync_all()?;
        let linked = temp.link(dir)?;
        nix::fcntl::renameat(dir, linked.as_str(), dir, name).inspect_err(|_| {
            let _ = nix::unistd::unlinkat(dir, linked.as_str(), UnlinkatFlags::NoRemoveDir);
        })?;
        Ok(())
    })();
    temp.discard(dir);
    result
}

/// Writes a regular file in place (it has other hard links, or its owner
/// cannot be kept) without risking its old content: the new content is
/// written to a temporary file in the same directory first (so a full disk
/// fails there), room for it is reserved in the file (`fallocate`), and
/// only then is it copied over the old content. Where no temporary file
/// can be made in the directory (said when the output was prepared), the
/// file is truncated and written directly.
fn write_regular_in_place(
    dir: BorrowedFd<'_>,
    file: File,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let temp = match Temp::create(dir, 0o600) {
        Ok(t) => t,
        Err(e) if cannot_stage(&e) => {
            log::debug!("no temporary file beside the output ({e}); writing in place");
            file.set_len(0)?;
            return write_through(file, fill);
        }
        Err(e) => return Err(e),
    };
    let result = (|| {
        let mut w = BufWriter::new(temp.file());
        fill(&mut w).and_then(|()| w.flush()).map_err(no_room)?;
        drop(w);
        let len = temp.file().metadata()?.len();
        let mut from = temp.file();
        io::Seek::rewind(&mut from)?;
        match reserve(&file, len) {
            Ok(()) => {
                let copied = io::copy(&mut from, &mut &file)?;
                if copied != len {
                    return Err(io::Error::other(
                        "the temporary copy changed while it was copied",
                    ));
                }
            }
            // Room for one copy only: hold the new content in memory, free
            // the temporary file and try again.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && len <= MAX_HELD_OUTPUT => {
                let mut held = Vec::new();
                held.try_reserve_exact(len as usize)
                    .map_err(|_| no_room_beside(e))?;
                io::Read::read_to_end(&mut from, &mut held)?;
                temp.truncate()?;
                reserve(&file, len).map_err(no_room)?;
                (&file).write_all(&held)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Err(no_room_beside(e)),
            Err(e) => return Err(e),
        }
        file.set_len(len)?;
        Ok(())
    })();
    temp.discard(dir);
    result
}

/// The most output held in memory when the disk has room for one copy
/// only (see [`write_regular_in_place`]).
const MAX_HELD_OUTPUT: u64 = 256 << 20;

/// A full disk (or quota) says that nothing was lost; other errors pass.
fn no_room(e: io::Error) -> io::Error {
    if !matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!("{e}; the old content is kept: free some space and try again"),
    )
}

fn no_room_beside(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "{e}: no room for the new content beside the old one; the old content is kept: free \
             some space and try again"
        ),
    )
}

/// A temporary file cannot be made in the directory, for a reason that a
/// direct write does not share (no write permission on the directory, no
/// `O_TMPFILE` and no free name).
fn cannot_stage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::EEXIST)
    ) || e.kind() == io::ErrorKind::AlreadyExists
}

/// Reserves the blocks of `len` bytes of `file` without changing its size
/// or content, so that writing them cannot fail for lack of space; a file
/// system without `fallocate` goes without.
fn reserve(file: &File, len: u64) -> io::Result<()> {
    let Ok(len) = libc::off_t::try_from(len) else {
        return Ok(());
    };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on a descriptor we own; it touches no memory of ours.
    let r = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

/// A temporary file in the output's directory: unnamed (`O_TMPFILE`) where
/// the file system allows it, else named `.flameprobe-<random>` (and
/// removed by [`discard`](Self::discard)).
struct Temp {
    file: File,
    name: Option<String>,
}

impl Temp {
    fn create(dir: BorrowedFd<'_>, mode: u32) -> io::Result<Temp> {
        match nix::fcntl::openat(
            dir,
            ".",
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(fd) => {
                return Ok(Temp {
                    file: File::from(fd),
                    name: None,
                })
            }
            // A kernel or file system without O_TMPFILE.
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {}
            Err(e) => return Err(e.into()),
        }
        let (name, file) = create_temp(dir, mode)?;
        Ok(Temp {
            file,
            name: Some(name),
        })
    }

    fn file(&self) -> &File {
        &self.file
    }

    /// Frees the file's blocks (its content was taken elsewhere).
    fn truncate(&self) -> io::Result<()> {
        self.file.set_len(0)
    }

    /// Gives the file a temporary name in `dir` (it has one already when
    /// it is not unnamed), to be renamed over the output.
    fn link(&self, dir: BorrowedFd<'_>) -> io::Result<String> {
        if let Some(name) = &self.name {
            return Ok(name.clone());
        }
        let own = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        let (name, ()) = with_temp_name(|name| {
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                own.as_str(),
                dir,
                name,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
            .or_else(|e| match e {
                // No /proc: the descriptor itself (needs CAP_DAC_READ_SEARCH).
                Errno::ENOENT => {
                    nix::unistd::linkat(self.file.as_fd(), "", dir, name, AtFlags::AT_EMPTY_PATH)
                }
                e => Err(e),
            })
        })?;
        Ok(name)
    }

    /// Removes a named temporary file that was not renamed (an unnamed one
    /// goes with its descriptor).
    fn discard(self, dir: BorrowedFd<'_>) {
        if let Some(name) = &self.name {
            let _ = nix::unistd::unlinkat(dir, name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// Calls `make` with fresh `.flameprobe-<random>` names until one is free.
fn with_temp_name<T>(mut make: impl FnMut(&str) -> nix::Result<T>) -> io::Result<(String, T)> {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0u32..100 {
        let name = format!(".flameprobe-{:016x}", seed.hash_one(attempt));
        match make(&name) {
            Ok(v) => return Ok((name, v)),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a temporary file",
    ))
}

/// Creates a new named temporary file in `dir` (never following anything).
fn create_temp(dir: BorrowedFd<'_>, mode: u32) -> io::Result<(String, File)> {
    let (name, fd) = with_temp_name(|name| {
        nix::fcntl::openat(
            dir,
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
    })?;
    Ok((name, File::from(fd)))
}

/// Gives the replacement the owner, group and mode of the file it replaces
/// (owner first: chown clears set-id bits).
fn keep_owner_and_mode(file: &File, old: &Existing) -> io::Result<()> {
    let st = nix::sys::stat::fstat(file)?;
    if st.st_uid != old.uid || st.st_gid != old.gid {
        nix::unistd::fchown(
            file,
            Some(Uid::from_raw(old.uid)),
            Some(Gid::from_raw(old.gid)),
        )?;
    }
    nix::sys::stat::fchmod(file, Mode::from_bits_truncate(old.mode & 0o7777))?;
    Ok(())
}

/// Under sudo, hands a new file to the invoking user so they can edit and
/// delete it (as they would expect of a file they asked for).
fn give_to_sudo_user(file: &File) {
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        if Uid::effective().is_root() {
            let _ = nix::unistd::fchown(file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};

    fn facts(kind: Kind, links: u64) -> Facts {
        Facts {
            kind,
            links,
            owner_differs: false,
            can_chown: false,
            attribute: None,
        }
    }

    #[test]
    fn chooses_replace_only_for_plain_regular_files() {
        let p = Path::new("/x/out.svg");
        assert_eq!(
            choose(&facts(Kind::Regular, 1), p).unwrap(),
            Method::Replace
        );
        // Hard links stay shared; devices and FIFOs stay what they are.
        assert_eq!(
            choose(&facts(Kind::Regular, 2), p).unwrap(),
            Method::InPlace
        );
        for kind in [Kind::CharDevice, Kind::BlockDevice, Kind::Fifo] {
            assert_eq!(choose(&facts(kind, 1), p).unwrap(), Method::InPlace);
        }
        // Another user's file is replaced only if we can give it back.
        let theirs = Facts {
            owner_differs: true,
            ..facts(Kind::Regular, 1)
        };
        assert_eq!(choose(&theirs, p).unwrap(), Method::InPlace);
        let theirs = Facts {
            can_chown: true,
            ..theirs
        };
        assert_eq!(choose(&theirs, p).unwrap(), Method::Replace);
    }

    #[test]
    fn refuses_directories_sockets_and_protected_files() {
        let p = Path::new("/x/out");
        assert!(matches!(
            choose(&facts(Kind::Directory, 2), p),
            Err(Reason::IsDirectory { .. })
        ));
        assert!(matches!(
            choose(&facts(Kind::Socket, 1), p),
            Err(Reason::Socket { .. })
        ));
        for (flags, attr) in [
            (FS_IMMUTABLE_FL, Attribute::Immutable),
            (FS_APPEND_FL, Attribute::AppendOnly),
        ] {
            let f = Facts {
                attribute: Attribute::forbidding(flags | 0x80000 /* extents */),
                ..facts(Kind::Regular, 2)
            };
            let err = choose(&f, p).unwrap_err();
            assert!(
                matches!(err, Reason::FileAttribute { attr: a, .. } if a == attr),
                "{err}"
            );
            assert!(err
                .to_string()
                .contains(&format!("chattr -{} '/x/out'", attr.letter())));
        }
        assert_eq!(Attribute::forbidding(0x80000), None);
    }

    #[test]
    fn follows_symlinks_as_the_kernel_would() {
        const STICKY_TMP: u32 = 0o41777;
        // Not protected, or our own link, or a normal directory: followed.
        assert!(may_follow(false, 0, 1000, STICKY_TMP, 0));
        assert!(may_follow(true, 1000, 1000, STICKY_TMP, 0));
        assert!(may_follow(true, 0, 1000, 0o40755, 1000));
        // The directory's owner planted it: followed.
        assert!(may_follow(true, 0, 1000, STICKY_TMP, 1000));
        // Someone else's link in /tmp: not even for root.
        assert!(!may_follow(true, 0, 1000, STICKY_TMP, 0));
    }

    fn write_str(path: &Path, text: &str) -> Result<(), OutputError> {
        let out = Output::prepare(&Destination::File(path.to_path_buf()))?;
        out.write(|w| w.write_all(text.as_bytes()))
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_and_existing_files_are_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_str(&path, "one").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        let umask = crate::proc::read_status(std::process::id())
            .unwrap()
            .umask
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o666 & !umask);

        // An existing file keeps its mode; a failed write keeps its content.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        write_str(&path, "two").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_ne!(meta.ino(), before, "replaced by rename");
        let out = Output::prepare(&Destination::File(path.clone())).unwrap();
        let err = out
            .write(|w| {
                w.write_all(b"partial")?;
                Err(io::Error::other("boom"))
            })
            .unwrap_err();
        assert!(matches!(&err, OutputError::Write { source, .. } if source.to_string() == "boom"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(entries(dir.path()), ["out.txt"], "no temporary file left");
    }

    #[test]
    fn symlinks_are_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        let target = dir.path().join("real/target.txt");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link");
        symlink("real/target.txt", &link).unwrap();
        let link2 = dir.path().join("link2");
        symlink(&link, &link2).unwrap();
        write_str(&link2, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::symlink_metadata(&link2)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(entries(&dir.path().join("real")), ["target.txt"]);

        // A dangling link creates its target.
        let dangling = dir.path().join("dangling");
        symlink("real/created.txt", &dangling).unwrap();
        write_str(&dangling, "made").unwrap();
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("real/created.txt")).unwrap(),
            "made"
        );

        // A dangling link into a missing directory names that directory.
        let nowhere = dir.path().join("nowhere");
        symlink("missing/x.txt", &nowhere).unwrap();
        let err = write_str(&nowhere, "x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("'{}'", nowhere.display())), "{msg}");
        assert!(msg.contains("missing' does not exist"), "{msg}");

        let looped = dir.path().join("loop");
        symlink("loop", &looped).unwrap();
        let err = write_str(&looped, "x").unwrap_err();
        assert!(matches!(
            err,
            OutputError::Unusable {
                reason: Reason::SymlinkLoop,
                ..
            }
        ));
    }

    #[test]
    fn hard_links_and_fifos_are_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        std::fs::write(&a, "a much longer old content").unwrap();
        std::fs::hard_link(&a, &b).unwrap();
        write_str(&a, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new");
        assert_eq!(std::fs::metadata(&a).unwrap().nlink(), 2);

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        // Preparing does not open the FIFO (it would block without a reader).
        let out = Output::prepare(&Destination::File(fifo.clone())).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let data = vec![b'x'; 1 << 20];
        out.write(|w| w.write_all(&data)).unwrap();
        assert_eq!(reader.join().unwrap().len(), data.len());
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn own_descriptors_are_written_directly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("through-fd.txt");
        let file = File::create(&path).unwrap();
        let fd = file.as_raw_fd();
        let before = std::fs::metadata(&path).unwrap().ino();
        for shown in [format!("/proc/self/fd/{fd}"), format!("/dev/fd/{fd}")] {
            write_str(Path::new(&shown), "via fd;").unwrap();
        }
        drop(file);
        // Both writes went to the same open file, one after the other.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "via fd;via fd;");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), before);

        let reading = File::open(&path).unwrap();
        let err =
            write_str(Path::new(&format!("/dev/fd/{}", reading.as_raw_fd())), "x").unwrap_err();
        assert!(err.to_string().contains("open for reading only"), "{err}");
        let err = write_str(Path::new("/dev/fd/999999"), "x").unwrap_err();
        assert!(err.to_string().contains("999999 is not open"), "{err}");
    }

    #[test]
    fn unusable_paths_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_str(&dir.path().join("no/such/dir/x.svg"), "x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no/such/dir' does not exist"), "{msg}");
        assert!(msg.starts_with("cannot write output '"), "{msg}");

        let err = write_str(dir.path(), "x").unwrap_err();
        assert!(err.to_string().contains("it is a directory"), "{err}");

        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let err = write_str(&file.join("x.svg"), "x").unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");

        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let err = write_str(&sock, "x").unwrap_err();
        assert!(err.to_string().contains("is a socket"), "{err}");
        // Nothing was created by any of the checks.
        assert_eq!(entries(dir.path()), ["plain", "sock"]);
    }
}
