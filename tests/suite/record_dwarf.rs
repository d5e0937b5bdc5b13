//! Complete stacks without frame pointers (needs root): DWARF unwinding of
//! the copied user stack, truncation marking, threads, Rust.

use std::collections::BTreeMap;

use crate::util::*;

fn record_pid(pid: u32, extra: &[&str]) -> (BTreeMap<String, u64>, String) {
    let pid = pid.to_string();
    let mut args = vec!["record", "-p", &pid, "-o", "-"];
    args.extend_from_slice(extra);
    let out = run_ok(&args);
    (
        parse_folded(&String::from_utf8(out.stdout).unwrap()),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Share of `folded`'s weight in stacks matching `pred`.
fn share(folded: &BTreeMap<String, u64>, pred: impl Fn(&str) -> bool) -> f64 {
    let hit: u64 = folded.iter().filter(|(s, _)| pred(s)).map(|(_, w)| w).sum();
    hit as f64 / total(folded).max(1) as f64
}

#[test]
fn no_frame_pointers_75_25_with_complete_chains_to_entry() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-nofp", NOFP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let (folded, err) = record_pid(target.pid(), &["-d", "3s", "-F", "999"]);
    let a = leaf_weight(&folded, "hot_a") as f64;
    let b = leaf_weight(&folded, "hot_b") as f64;
    assert!(a + b > 100.0, "{folded:#?}");
    let share_a = 100.0 * a / (a + b);
    assert!(
        (share_a - 75.0).abs() <= 3.0,
        "hot_a {share_a:.1}%: {folded:#?}"
    );
    // Complete from the entry point through main to the leaf.
    let entry = "_start;__libc_start_main_impl;__libc_start_call_main;main;run;";
    let full: u64 = folded
        .iter()
        .filter(|(s, _)| {
            s.contains(&format!("{entry}path_a1;path_a2;path_a3;hot_a"))
                || s.contains(&format!("{entry}path_b1;hot_b"))
        })
        .map(|(_, w)| w)
        .sum();
    let complete = full as f64 / (a + b);
    assert!(
        complete >= 0.95,
        "{:.1}% complete: {folded:#?}",
        100.0 * complete
    );
    assert!(err.contains("stack quality:"), "{err}");
}

#[test]
fn frame_pointer_mode_loses_callers_without_frame_pointers() {
    // The contrast that motivates DWARF unwinding, and proof that --unwind
    // fp really uses only frame pointers.
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-nofp", NOFP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let (folded, _) = record_pid(target.pid(), &["-d", "2s", "--unwind", "fp"]);
    let complete = share(&folded, |s| {
        s.contains("main;run;path_a1;path_a2;path_a3;hot_a")
    });
    assert!(
        complete < 0.5,
        "fp should not see full chains here: {folded:#?}"
    );
}

#[test]
fn callback_from_libc_qsort_keeps_caller_and_main() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("qsort.c", "qsort-nofp", NOFP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let (folded, _) = record_pid(target.pid(), &["-d", "3s", "-F", "199"]);
    let callback: u64 = leaf_weight(&folded, "cmp_values");
    assert!(callback > 25, "{folded:#?}");
    let chained: u64 = folded
        .iter()
        .filter(|(s, _)| {
            s.ends_with(";cmp_values")
                && s.contains("main;sort_loop;")
                && s.split(';')
                    .skip_while(|f| *f != "sort_loop")
                    .nth(1)
                    .is_some_and(|f| f.contains("qsort"))
        })
        .map(|(_, w)| w)
        .sum();
    let pct = chained as f64 / callback as f64;
    assert!(
        pct >= 0.90,
        "{:.1}% of callback samples chained: {folded:#?}",
        100.0 * pct
    );
}

/// Frames between the root marker and the leaf must all be `recurse`.
fn assert_recursion_order(folded: &BTreeMap<String, u64>) -> (u64, u64) {
    let (mut complete, mut truncated) = (0, 0);
    for (stack, w) in folded {
        if !stack.ends_with("recurse;spin_at_bottom") {
            continue;
        }
        let frames: Vec<&str> = stack.split(';').collect();
        let leaf = frames.len() - 1;
        let first_recurse = frames.iter().position(|f| *f == "recurse").unwrap();
        assert!(
            frames[first_recurse..leaf].iter().all(|f| *f == "recurse"),
            "wrong frame order: {stack}"
        );
        let below = frames[first_recurse - 1];
        if below == "[truncated]" {
            truncated += w;
        } else {
            assert_eq!(below, "main", "{stack}");
            assert_eq!(leaf - first_recurse, 300, "all 300 frames: {stack}");
            complete += w;
        }
    }
    (complete, truncated)
}

#[test]
fn deep_recursion_is_complete_or_marked_truncated() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("recurse.c", "recurse-nofp", NOFP_FLAGS);
    let target = Target::start(&bin, &["300", "60"]);
    // 300 frames of ~100 bytes do not fit in the default 16 KiB copy ...
    let (folded, err) = record_pid(target.pid(), &["-d", "2s"]);
    let (complete, truncated) = assert_recursion_order(&folded);
    assert!(
        truncated > 25 && complete == 0,
        "{complete}/{truncated}: {folded:#?}"
    );
    assert!(err.contains("truncated (a larger --stack-size"), "{err}");
    // ... but fit in 64 KiB.
    let (folded, _) = record_pid(target.pid(), &["-d", "2s", "--stack-size", "64K"]);
    let (complete, truncated) = assert_recursion_order(&folded);
    assert!(
        complete > 25 && truncated == 0,
        "{complete}/{truncated}: {folded:#?}"
    );
}

#[test]
fn threads_reach_start_thread_with_names() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("threads.c", "threads-nofp", NOFP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let (folded, _) = record_pid(target.pid(), &["-d", "3s"]);
    for n in 1..=3 {
        let name = format!(";worker-{n};");
        let thread: BTreeMap<String, u64> = folded
            .iter()
            .filter(|(s, _)| s.contains(&name))
            .map(|(s, w)| (s.clone(), *w))
            .collect();
        assert!(
            total(&thread) > 10,
            "thread worker-{n} missing: {folded:#?}"
        );
        let ok = share(&thread, |s| {
            (s.contains("start_thread;") || s.contains("clone3;"))
                && s.ends_with("thread_main;worker_spin")
                || s.contains("start_thread;thread_main;worker_spin;")
        });
        assert!(
            ok >= 0.95,
            "worker-{n}: {:.1}% reach start_thread: {thread:#?}",
            100.0 * ok
        );
    }
}

#[test]
fn rust_program_without_frame_pointers_is_demangled_and_complete() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_rust("rusty.rs", "rusty");
    let target = Target::start(&bin, &["60"]);
    let (folded, _) = record_pid(target.pid(), &["-d", "3s"]);
    // Inlined callees of mix (wrapping_mul, ...) show as frames above it.
    let in_mix = |s: &str| s.contains(";rusty::mix");
    let hot: u64 = folded
        .iter()
        .filter(|(s, _)| in_mix(s))
        .map(|(_, w)| w)
        .sum();
    assert!(hot > 40, "{folded:#?}");
    let chained = share(&folded, |s| {
        in_mix(s)
            && s.contains(";_start;__libc_start_main_impl;__libc_start_call_main;main;")
            && s.contains("std::rt::lang_start")
            && s.contains("rusty::main;rusty::run;rusty::Checksummer::digest;rusty::mix")
    });
    let pct = chained * total(&folded) as f64 / hot as f64;
    assert!(pct >= 0.95, "{:.1}% complete: {folded:#?}", 100.0 * pct);
    assert!(
        !folded.keys().any(|s| s.contains("_ZN")),
        "mangled names left"
    );
}
