//! The DWARF unwinder on a captured sample (registers + stack bytes +
//! memory map), without BPF and without root.

use flameprobe::process::ProcessTable;
use flameprobe::profile::{units, FrameNameOptions, Labels, Meta, ValueType};
use flameprobe::stacks::{RawStack, StackCollector};
use flameprobe::symbolize::Symbolizer;
use flameprobe::unwind::{UnwindMode, Unwinder, UserRegs, UserSnapshot};

use crate::util::*;

struct Captured {
    regs: UserRegs,
    stack: Vec<u8>,
    ends_in_copy: bool,
    maps: String,
}

/// Reads a capture written by tests/targets/selfdump.c.
fn load(dir: &std::path::Path, maps: String) -> Captured {
    let regs = std::fs::read_to_string(dir.join("regs.txt")).unwrap();
    let f: Vec<u64> = regs
        .split_whitespace()
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .collect();
    Captured {
        regs: UserRegs {
            ip: f[0],
            sp: f[1],
            bp: f[2],
        },
        ends_in_copy: f[3] == 1,
        stack: std::fs::read(dir.join("stack.bin")).unwrap(),
        maps,
    }
}

/// Captures a sample now, from a freshly built selfdump.
fn capture(flags: &[&str], name: &str) -> Captured {
    let bin = build_c("selfdump.c", name, flags);
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(&bin)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let maps = std::fs::read_to_string(dir.path().join("maps.txt")).unwrap();
    load(dir.path(), maps)
}

/// The checked-in capture (tests/fixtures/unwind/README.md).
fn fixture() -> Captured {
    let dir = repo_root().join("tests/fixtures/unwind");
    let maps = std::fs::read_to_string(dir.join("maps.txt"))
        .unwrap()
        .replace("@FIXTURE_DIR@", dir.to_str().unwrap());
    load(&dir, maps)
}

/// Unwinds and symbolizes a captured sample; returns the folded stack.
fn unwind(c: &Captured, mode: UnwindMode, stack: &[u8]) -> (String, bool) {
    let pid = 4_000_000; // not a live process: everything comes from the capture
    let mut collector = StackCollector::new();
    collector
        .table
        .adopt(pid, "selfdump", flameprobe::proc::parse_maps(&c.maps));
    let mut unwinder = Unwinder::new(mode);
    let snap = UserSnapshot {
        pid,
        regs: Some(c.regs),
        stack,
        stack_ends_in_copy: c.ends_in_copy && stack.len() == c.stack.len(),
        fp_frames: &[],
    };
    let unwound = unwinder.unwind(&snap, &mut collector.table);
    let user = collector.resolve_user(pid, &unwound.frames);
    collector.add(
        RawStack {
            labels: Labels::default(),
            kernel: vec![],
            user,
            truncated: unwound.truncated,
        },
        &[1],
    );
    let types = vec![ValueType::new("samples", units::COUNT)];
    let profile = collector.into_profile(types, Meta::default(), &mut Symbolizer::new());
    let names = profile.frame_names(&profile.stacks[0], &FrameNameOptions::default());
    (names.join(";"), unwound.truncated)
}

#[test]
fn dwarf_unwinds_captured_sample_without_frame_pointers() {
    let c = capture(&["-O2", "-g", "-fomit-frame-pointer"], "selfdump-nofp");
    let (stack, truncated) = unwind(&c, UnwindMode::Dwarf, &c.stack);
    assert!(!truncated, "{stack}");
    assert!(
        stack.ends_with("main;level1;level2;level3;capture"),
        "complete chain expected: {stack}"
    );
    assert!(
        stack.starts_with("_start;"),
        "down to the entry point: {stack}"
    );
}

#[test]
fn dwarf_unwinds_checked_in_fixture() {
    let c = fixture();
    let (stack, truncated) = unwind(&c, UnwindMode::Dwarf, &c.stack);
    assert!(!truncated, "{stack}");
    // libc is not part of the fixture: the walk ends at main's caller.
    let names: Vec<&str> = stack.split(';').collect();
    let main = names.iter().position(|&n| n == "main").expect(&stack);
    assert_eq!(
        names[main..],
        ["main", "level1", "level2", "level3", "capture"],
        "{stack}"
    );
    assert!(main <= 1, "at most main's caller above main: {stack}");
}

#[test]
fn short_stack_copy_is_marked_truncated() {
    let c = capture(&["-O2", "-g", "-fomit-frame-pointer"], "selfdump-nofp");
    // Only the leaf's own frame fits in 64 bytes.
    let (stack, truncated) = unwind(&c, UnwindMode::Dwarf, &c.stack[..64]);
    assert!(truncated, "{stack}");
    assert!(stack.starts_with("[truncated];"), "{stack}");
    assert!(stack.ends_with("capture"), "{stack}");
}

#[test]
fn unwinder_ignores_missing_modules() {
    let c = capture(&["-O2", "-g", "-fomit-frame-pointer"], "selfdump-nofp");
    let mut table = ProcessTable::new();
    table.adopt(1, "x", vec![]); // no modules at all
    let mut unwinder = Unwinder::new(UnwindMode::Dwarf);
    let snap = UserSnapshot {
        pid: 1,
        regs: Some(c.regs),
        stack: &c.stack,
        stack_ends_in_copy: true,
        fp_frames: &[],
    };
    // No CFI anywhere: framehop may still follow frame pointers, but it must
    // not panic, and the first frame is always the instruction pointer.
    let u = unwinder.unwind(&snap, &mut table);
    assert_eq!(u.frames.first(), Some(&c.regs.ip));
}
