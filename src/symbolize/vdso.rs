//! The vDSO: the kernel maps one ELF image into every (64-bit) process, the
//! same for every process of one kernel, so flameprobe reads its own
//! `[vdso]` mapping once, into a memory file the ELF symbolizer reads like
//! any binary (the mapping starts at the image's file offset 0, so a
//! frame's offset into the mapping is its file offset). Nothing is read
//! from the target.

use std::fs::File;
use std::io::{self, Write};

/// The name of the vDSO mapping in `/proc/PID/maps`.
pub const MAPPING: &str = "[vdso]";

/// A memory file holding this process's vDSO image.
pub fn own_image() -> io::Result<File> {
    let pid = std::process::id();
    let maps = crate::proc::read_maps(pid)?;
    let vdso = maps
        .iter()
        .find(|m| m.path == MAPPING)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no [vdso] mapping"))?;
    let len = usize::try_from(vdso.end - vdso.start)
        .ok()
        .filter(|&l| l <= 1 << 20)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "[vdso] too large"))?;
    let mut image = vec![0u8; len];
    let n = crate::proc::read_memory(pid, vdso.start, &mut image)?;
    image.truncate(n);
    if !image.starts_with(b"\x7fELF") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "[vdso] is not an ELF image",
        ));
    }
    let fd =
        nix::sys::memfd::memfd_create(c"flameprobe-vdso", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(io::Error::from)?;
    let mut file = File::from(fd);
    file.write_all(&image)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_vdso_image() {
        use std::io::{Read, Seek};
        let mut f = super::own_image().expect("x86_64 Linux has a vDSO");
        f.rewind().unwrap();
        let mut head = [0u8; 4];
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"\x7fELF");
    }
}
