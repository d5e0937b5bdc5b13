//! GNU build ids of ELF binaries (hex), for pprof mappings and caches.

use std::fs::File;

use object::Object;

/// The build id of an opened ELF file, if it has one.
pub fn read(file: &File) -> Option<String> {
    // SAFETY: the file is only read; a concurrent truncation could fault,
    // which is the accepted risk of every mmap-based ELF reader.
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    let elf = object::File::parse(&*map).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_build_id_or_none() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        // Rust test binaries carry a build id on Linux when linked by gcc/ld.
        if let Some(id) = super::read(&exe) {
            assert!(id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit()));
        }
        let not_elf = tempfile::tempfile().unwrap();
        assert_eq!(super::read(&not_elf), None);
    }
}
