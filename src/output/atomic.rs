//! Atomic file output: write a temporary file beside the target, then rename.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks, before any work, that `path` can be written: its directory
/// exists and accepts new files, and it is not a directory itself.
pub fn check_writable(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a directory",
        ));
    }
    let dir = parent_dir(path);
    // Creating (and dropping) a temporary file proves we can create the
    // real one the same way at the end.
    tempfile::Builder::new()
        .prefix(".flameprobe-check-")
        .tempfile_in(&dir)
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("{} (in {})", e, dir.display())))
}

/// Writes a file atomically: `fill` writes into a temporary file in the same
/// directory, which is renamed over `path` only when everything succeeded.
pub fn write_file(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let tmp = tempfile::Builder::new()
        .prefix(".flameprobe-")
        .tempfile_in(&dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    // Temporary files are created 0600; give the result the usual mode.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o666 & !umask()))?;
    give_to_sudo_user(tmp.path());
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

use std::os::unix::fs::PermissionsExt;

fn umask() -> u32 {
    crate::proc::read_status(std::process::id())
        .ok()
        .and_then(|s| s.umask)
        .unwrap_or(0o022)
}

/// Under sudo, hand the file to the invoking user so they can edit and
/// delete it (as they would expect of a file they asked for).
fn give_to_sudo_user(path: &Path) {
    let id = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u32>().ok());
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        if nix::unistd::geteuid().is_root() {
            let _ = nix::unistd::chown(
                path,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_keeps_old_file_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_file(&path, |w| w.write_all(b"one")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one");
        let err = write_file(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "one");
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary file removed");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask());
    }

    #[test]
    fn check_writable_rejects_missing_dir_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_writable(&dir.path().join("ok.svg")).is_ok());
        assert!(check_writable(&dir.path().join("nope/x.svg")).is_err());
        assert!(check_writable(dir.path()).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
