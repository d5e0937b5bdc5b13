//! Compiles every `bpf/*.bpf.c` into a libbpf skeleton (`OUT_DIR/<name>.skel.rs`).

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let bpf_dir = PathBuf::from("bpf");
    println!("cargo:rerun-if-changed=bpf");
    let mut entries: Vec<PathBuf> = fs::read_dir(&bpf_dir)
        .expect("bpf/ directory exists")
        .map(|e| e.expect("readable bpf/ entry").path())
        .collect();
    entries.sort();
    for path in &entries {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for src in entries
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
    {
        let stem = src
            .file_name()
            .and_then(OsStr::to_str)
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("bpf source name is <name>.bpf.c");
        SkeletonBuilder::new()
            .source(src)
            .clang_args([OsStr::new("-I"), bpf_dir.as_os_str(), OsStr::new("-Wall")])
            .build_and_generate(out.join(format!("{stem}.skel.rs")))
            .unwrap_or_else(|e| panic!("building BPF skeleton for {}: {e:#}", src.display()));
    }
}
