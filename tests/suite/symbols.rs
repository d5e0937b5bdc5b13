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
