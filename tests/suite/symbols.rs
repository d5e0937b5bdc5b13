//! Every frame named (needs root): the vDSO, stripped binaries (one frame
//! per function, from its CFI), inlined functions marked `_[i]` in folded
//! output and as inline lines in pprof, C names that look mangled kept as
//! written, and a stack-quality line that knows a stripped `_start`.

use std::collections::BTreeMap;

use crate::pprof_go::go_pprof;
use crate::util::*;

/// Compiler flags of a distribution-like stripped binary.
const STRIPPED_FLAGS: &[&str] = &["-O2", "-s", "-fomit-frame-pointer", "-pthread"];

/// The share of user stacks that reached the entry, from the summary.
fn reached_entry(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("stack quality:"))
        .unwrap_or_else(|| panic!("no stack quality line: {stderr}"));
    let pct = line
        .split("stack quality: ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .unwrap_or_else(|| panic!("{line}"));
    pct.parse().unwrap_or_else(|_| panic!("{line}"))
}

/// Leaf frames by weight, heaviest first.
fn leaves(folded: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut by_leaf: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, w) in folded {
        let leaf = stack.rsplit(';').next().unwrap_or_default();
        *by_leaf.entry(leaf.to_string()).or_default() += w;
    }
    let mut v: Vec<(String, u64)> = by_leaf.into_iter().collect();
    v.sort_by_key(|l| std::cmp::Reverse(l.1));
    v
}

#[test]
fn stripped_c_functions_are_one_frame_each_and_reach_the_entry() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-stripped", STRIPPED_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let out = run_ok(&["record", "-p", &pid, "-d", "3s", "-F", "999", "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    let top = leaves(&folded);
    assert!(top.len() >= 2, "{folded:#?}");
    let (a, b) = (&top[0], &top[1]);
    for (name, _) in [a, b] {
        assert!(
            name.starts_with("ratio-stripped+0x"),
            "leaf {name} is not named after its function's start: {top:?}"
        );
    }
    let share_a = 100.0 * a.1 as f64 / (a.1 + b.1) as f64;
    assert!(
        a.1 + b.1 > 100 && (share_a - 75.0).abs() <= 4.0,
        "two biggest leaves {share_a:.1}% / {:.1}%: {top:?}",
        100.0 - share_a
    );
    let reached = reached_entry(&err);
    assert!(reached >= 95.0, "{reached}% reached the entry: {err}");
}

#[test]
fn vdso_inline_and_plain_c_names() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("names.c", "names", &["-O2", "-g", "-fomit-frame-pointer"]);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("names.pb.gz");
    let pb_s = pb.to_str().unwrap();
    run_ok(&[
        "record", "-p", &pid, "-d", "3s", "-F", "499", "-q", "-o", pb_s,
    ]);
    let folded_path = dir.path().join("names.folded");
    run_ok(&["convert", pb_s, "-o", folded_path.to_str().unwrap()]);
    let folded = read_folded(&folded_path);
    let all = total(&folded).max(1) as f64;
    let share = |pred: &dyn Fn(&str) -> bool| {
        folded
            .iter()
            .filter(|(s, _)| pred(s))
            .map(|(_, w)| *w)
            .sum::<u64>() as f64
            / all
    };
    // The vDSO's clock_gettime is named (as __vdso_clock_gettime or its
    // alias), not [vdso]+0x...
    let vdso = share(&|s| s.contains("clock_loop;") && s.ends_with("clock_gettime"));
    let raw_vdso = share(&|s| s.contains("[vdso]+0x"));
    assert!(
        vdso >= 0.10 && raw_vdso <= 0.01,
        "named vDSO {vdso:.3}, unnamed {raw_vdso:.3}: {folded:#?}"
    );
    // The always-inline helper under the function named Sa (not
    // std::allocator), marked inlined.
    let inlined = share(&|s| s.contains(";run;Sa;helper_[i]"));
    assert!(inlined >= 0.2, "Sa;helper_[i] {inlined:.3}: {folded:#?}");
    assert!(
        !folded.keys().any(|s| s.contains("std::allocator")),
        "{folded:#?}"
    );
    // pprof: the helper is an inline line of Sa's location.
    let traces = go_pprof(&["-traces"], &pb);
    assert!(
        traces
            .lines()
            .any(|l| l.trim_end().ends_with(" helper (inline)")),
        "{traces}"
    );
    // report: the helper's self time, or Sa's with --no-inline.
    let report = run_ok(&["report", pb_s]);
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains("helper_[i]") && report.contains("--no-inline"),
        "{report}"
    );
    let no_inline = run_ok(&["report", "--no-inline", pb_s]);
    let no_inline = String::from_utf8_lossy(&no_inline.stdout);
    assert!(
        !no_inline.contains("helper") && no_inline.contains("  Sa\n"),
        "{no_inline}"
    );
}

/// Go's own `go tool addr2line` on `addrs` of `bin`: (function, file:line)
/// per address, `?` where Go knows none.
fn go_addr2line(bin: &std::path::Path, addrs: &[u64]) -> Vec<(String, String)> {
    use std::io::Write;
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("go")
        .args(["tool", "addr2line"])
        .arg(bin)
        .env("HOME", home.path())
        .env("GOCACHE", home.path().join("cache"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running `go tool addr2line` (apt-get install golang-go)");
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| (c[0].to_string(), c.get(1).unwrap_or(&"").to_string()))
        .collect()
}

/// Names, files and lines of `bin`'s Go code (stripped: `.gopclntab`
/// only) agree with Go's own reader at addresses spread over its text.
fn assert_gopclntab_agrees_with_go(bin: &std::path::Path) {
    use flameprobe::process::{FileKey, ModuleFile};
    use flameprobe::symbolize::functions::Segments;
    use flameprobe::symbolize::gopclntab::GoTable;
    use object::{Object, ObjectSection};

    let file = std::fs::File::open(bin).unwrap();
    let data = std::fs::read(bin).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let segments = Segments::of(&elf);
    let text = elf.section_by_name(".text").expect(".text");
    let module = ModuleFile {
        key: FileKey::of_metadata(&file.metadata().unwrap()),
        path: bin.display().to_string(),
        file,
    };
    let table = GoTable::load(&module).expect("a Go symbol table");
    let n = 400u64;
    let addrs: Vec<u64> = (0..n)
        .map(|i| text.address() + text.size() * i / n)
        .collect();
    // Go's reader (debug/gosym) places functions from the start of the
    // .text section, not from the table's own text start (the runtime's
    // `runtime.text`): the same for Go's internal linker, but the C start
    // code comes first in externally linked (cgo) binaries. Asked where it
    // believes the code is, it answers for the same function.
    let pcln = elf.section_by_name(".gopclntab").expect(".gopclntab");
    let header = pcln.data().unwrap();
    let magic = u32::from_le_bytes(header[0..4].try_into().unwrap());
    assert!(
        magic == 0xfffffff0 || magic == 0xfffffff1,
        "Go 1.18+ table: {magic:#x}"
    );
    let text_start = u64::from_le_bytes(header[24..32].try_into().unwrap());
    let shift = text_start - text.address();
    let asked: Vec<u64> = addrs.iter().map(|a| a.wrapping_sub(shift)).collect();
    let go = go_addr2line(bin, &asked);
    assert_eq!(go.len(), addrs.len());
    let mut named = 0;
    for (addr, (go_name, go_line)) in addrs.iter().zip(&go) {
        let ours = table.lookup(segments.offset_of(*addr).unwrap());
        if go_name == "?" {
            assert!(
                ours.is_none(),
                "{addr:#x}: Go knows no function, we say {ours:?}"
            );
            continue;
        }
        let lines = ours.unwrap_or_else(|| panic!("{addr:#x}: Go says {go_name}, we nothing"));
        // Go's reader names the function the code belongs to (the
        // outermost line) and the innermost position.
        assert_eq!(&lines.last().unwrap().function, go_name, "{addr:#x}");
        let inner = &lines[0];
        let ours_line = match (&inner.file, inner.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            // Go's way of saying it knows no position.
            _ => ":-1".to_string(),
        };
        assert_eq!(&ours_line, go_line, "{addr:#x} in {go_name}: {lines:?}");
        named += 1;
    }
    assert!(named >= n / 2, "{named} of {n} addresses in Go code");
}

#[test]
fn gopclntab_of_stripped_go_agrees_with_go_tool_addr2line() {
    let bin = build_go("ratio.go", "ratio-go-stripped", &["-ldflags=-s -w"]);
    assert_gopclntab_agrees_with_go(&bin);
    // Debian's own Go daemons: external linking, cgo, no symbols.
    for daemon in ["/usr/bin/podman", "/usr/bin/containerd"] {
        let path = std::path::Path::new(daemon);
        assert!(
            path.exists(),
            "{daemon} missing (apt-get install podman containerd)"
        );
        assert_gopclntab_agrees_with_go(path);
    }
}

#[test]
fn stripped_go_is_named_with_inlined_frames() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_go("ratio.go", "ratio-go-stripped", &["-ldflags=-s -w"]);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let out = run_ok(&["record", "-p", &pid, "-d", "3s", "-F", "999", "-o", "-"]);
    let folded = parse_folded(&String::from_utf8(out.stdout).unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    let weight = |pred: &dyn Fn(&str) -> bool| -> u64 {
        folded.iter().filter(|(s, _)| pred(s)).map(|(_, w)| w).sum()
    };
    let a = weight(&|s| s.contains(";main.hotA")) as f64;
    let b = weight(&|s| s.contains(";main.hotB")) as f64;
    assert!(a + b > 100.0, "{folded:#?}");
    let share_a = 100.0 * a / (a + b);
    assert!(
        (share_a - 75.0).abs() <= 4.0,
        "main.hotA {share_a:.1}%: {folded:#?}"
    );
    let complete = weight(&|s| {
        s.contains(";main.main;main.run;main.hotA") || s.contains(";main.main;main.run;main.hotB")
    }) as f64;
    assert!(
        complete / (a + b) >= 0.9,
        "{:.1}% complete from main.main: {folded:#?}",
        100.0 * complete / (a + b)
    );
    let inlined = weight(&|s| s.ends_with(";main.hotA;main.mix_[i]"));
    assert!(inlined > 0, "no inlined main.mix frame: {folded:#?}");
    assert!(reached_entry(&err) >= 90.0, "{err}");
}
