//! The views beyond the flame graph: speedscope files (validated against
//! speedscope's own schema, opened in speedscope in headless Chromium),
//! flame charts and inverted graphs, differential flame graphs (also opened
//! and searched in Chromium) and `report --diff`, checked against
//! `go tool pprof -top -diff_base`.
//!
//! The npm packages (speedscope, playwright-core, ajv) and Chromium come
//! from scripts/install-deps.sh, into a cache directory outside the
//! repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The node_modules directory scripts/install-deps.sh fills (the same
/// rule: $FLAMEPROBE_TEST_CACHE, else $XDG_CACHE_HOME/flameprobe, else
/// ~/.cache/flameprobe; then node/node_modules).
fn node_modules() -> PathBuf {
    let cache = std::env::var_os("FLAMEPROBE_TEST_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("flameprobe")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/flameprobe")
        });
    let dir = cache.join("node/node_modules");
    for package in ["speedscope", "playwright-core", "ajv"] {
        assert!(
            dir.join(package).is_dir(),
            "npm package {package} not found in {}: run `bash scripts/install-deps.sh`",
            dir.display()
        );
    }
    dir
}

/// Runs `tests/browser/SCRIPT ARGS` with node and returns the JSON line it
/// prints; panics with its output when it fails or takes over 2 minutes.
fn node(script: &str, args: &[&str]) -> Value {
    let mut child = Command::new("node")
        .arg(repo_root().join("tests/browser").join(script))
        .args(args)
        .env("NODE_PATH", node_modules())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node (apt-get install nodejs)");
    let status = wait_timeout(&mut child, Duration::from_secs(120));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        status.success(),
        "node {script} {args:?} failed: {status}\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Validates a speedscope file against the schema of the npm package.
fn assert_valid_speedscope(path: &Path) {
    let v = node("validate.cjs", &[s(path)]);
    assert_eq!(v["valid"], true, "{v}");
}

/// The frame names of every sample of profile `i`, root first.
fn samples_of(file: &Value, i: usize) -> Vec<Vec<String>> {
    let frames = file["shared"]["frames"].as_array().unwrap();
    file["profiles"][i]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stack| {
            stack
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    frames[f.as_u64().unwrap() as usize]["name"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

fn leaf_is(stack: &[String], name: &str) -> bool {
    stack.last().is_some_and(|l| l == name)
}

fn profile_names(file: &Value) -> Vec<String> {
    file["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// Records `args` (a target and options) into `out`; returns stderr.
fn record(out: &Path, args: &[&str]) -> String {
    let mut full = vec!["record", "-o", s(out)];
    full.extend_from_slice(args);
    String::from_utf8_lossy(&run_ok(&full).stderr).into_owned()
}

/// Records a run of the 75/25 target (tests/targets/ratio.c) for `secs`
/// at `hz` into `out`; returns its pid and flameprobe's stderr.
fn record_ratio(out: &Path, secs: &str, hz: &str) -> (String, String) {
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let err = record(out, &["-p", &pid, "-d", secs, "-F", hz]);
    (pid, err)
}

#[test]
fn speedscope_of_75_25_target_validates_and_is_in_time_order() {
    require_root!();
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ratio.speedscope.json");
    let (pid, err) = record_ratio(&out, "2s", "999");
    assert!(
        err.contains("speedscope: samples in time order per thread"),
        "{err}"
    );
    assert_valid_speedscope(&out);
    let v = read_json(&out);
    assert_eq!(
        v["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    assert_eq!(profile_names(&v), [format!("[{pid}]ratio-fp/ratio-fp")]);
    assert_eq!(v["activeProfileIndex"], 0);
    let p = &v["profiles"][0];
    assert_eq!(
        (p["type"].as_str(), p["unit"].as_str()),
        (Some("sampled"), Some("nanoseconds"))
    );
    let samples = samples_of(&v, 0);
    assert!(samples.len() >= 100, "{} samples", samples.len());
    // Each sample weighs its sampling period, in nanoseconds.
    let weights: Vec<u64> = p["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(weights.len(), samples.len());
    assert!(
        weights.iter().all(|&w| w == 1_000_000_000 / 999),
        "{weights:?}"
    );
    assert_eq!(p["endValue"].as_u64(), Some(weights.iter().sum()));
    // Every sample has its time, and each is no earlier than the one before.
    let times: Vec<u64> = p["flameprobe"]["sample_times_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(times.len(), samples.len(), "all samples are timed");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in time order");
    // About 2 s of samples, taken about 1 ms apart.
    let span = times.last().unwrap() - times[0];
    assert!((1_500_000_000..3_000_000_000).contains(&span), "{span} ns");
    let hot_a = samples.iter().filter(|s| leaf_is(s, "hot_a")).count();
    let hot_b = samples.iter().filter(|s| leaf_is(s, "hot_b")).count();
    assert!(
        hot_a > 2 * hot_b && hot_b > 0,
        "hot_a {hot_a}, hot_b {hot_b}"
    );
    // Frames carry their source file and a line inside the function.
    let frames = v["shared"]["frames"].as_array().unwrap();
    let hot = frames
        .iter()
        .find(|f| f["name"] == "hot_a")
        .expect("a hot_a frame");
    assert!(
        hot["file"]
            .as_str()
            .unwrap()
            .ends_with("tests/targets/ratio.c"),
        "{hot}"
    );
    assert!((25..35).contains(&hot["line"].as_u64().unwrap()), "{hot}");
    let names: Vec<&str> = frames.iter().map(|f| f["name"].as_str().unwrap()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        names.len(),
        "one frame per function: {names:?}"
    );
}

#[test]
fn speedscope_and_flame_chart_follow_the_programs_phases() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("phases.c", "phases", FP_FLAGS);
    let dir = tempfile::tempdir().unwrap();
    // warm_up (0.4 s of CPU) runs before busy (0.8 s): time order puts all
    // of warm_up first; the heavier busy comes first by weight and name.
    let out = dir.path().join("phases.speedscope.json");
    record(&out, &["-F", "499", "--", s(&bin)]);
    assert_valid_speedscope(&out);
    let v = read_json(&out);
    // The command's thread: the busiest (a launched command may also show
    // a few samples under its name from before its exec).
    let main = v["activeProfileIndex"].as_u64().unwrap() as usize;
    let samples = samples_of(&v, main);
    let phase = |s: &Vec<String>| {
        if s.iter().any(|f| f == "warm_up") {
            Some(0)
        } else if s.iter().any(|f| f == "busy") {
            Some(1)
        } else {
            None
        }
    };
    let phases: Vec<u8> = samples.iter().filter_map(phase).collect();
    let first_busy = phases.iter().position(|&p| p == 1).expect("busy samples");
    assert!(first_busy > 50, "{:?}: {phases:?}", profile_names(&v));
    assert!(
        phases[first_busy..].iter().all(|&p| p == 1),
        "warm_up after busy: {phases:?}"
    );
    // The flame chart draws warm_up left of busy; the flame graph (sorted
    // by name) the other way round.
    let position = |svg: &str, name: &str| -> f64 {
        let at = svg
            .find(&format!("<title>{name} ("))
            .unwrap_or_else(|| panic!("no {name}"));
        let x = &svg[at..];
        let x = &x[x.find("x=\"").unwrap() + 3..];
        x[..x.find('%').unwrap()].parse().unwrap()
    };
    let chart = dir.path().join("chart.svg");
    let err = record(&chart, &["-F", "499", "--flamechart", "--", s(&bin)]);
    assert!(err.contains("flame chart: samples in time order"), "{err}");
    let chart = std::fs::read_to_string(&chart).unwrap();
    assert_well_formed_xml(&chart);
    assert!(chart.contains("CPU Flame Chart"));
    assert!(position(&chart, "warm_up") < position(&chart, "busy"));
    let graph = dir.path().join("graph.svg");
    record(&graph, &["-F", "499", "--", s(&bin)]);
    let graph = std::fs::read_to_string(&graph).unwrap();
    assert!(position(&graph, "busy") < position(&graph, "warm_up"));
}

#[test]
fn two_thread_program_gives_two_speedscope_profiles() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = build_c("two_threads.c", "two_threads", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("threads.speedscope.json");
    record(&out, &["-p", &pid, "-d", "1s", "-F", "499"]);
    assert_valid_speedscope(&out);
    let v = read_json(&out);
    let names = profile_names(&v);
    assert_eq!(
        names,
        [
            format!("[{pid}]two_threads/two_threads"),
            format!("[{pid}]two_threads/worker")
        ]
    );
    // Each thread's profile holds its own work.
    for (i, spin) in [(0, "main_spin"), (1, "worker_spin")] {
        let samples = samples_of(&v, i);
        let own = samples
            .iter()
            .filter(|s| s.iter().any(|f| f == spin))
            .count();
        assert!(
            own * 10 >= samples.len() * 9,
            "{spin}: {own} of {}",
            samples.len()
        );
    }
    let totals: Vec<u64> = (0..2)
        .map(|i| v["profiles"][i]["endValue"].as_u64().unwrap())
        .collect();
    let busiest = if totals[0] >= totals[1] { 0 } else { 1 };
    assert_eq!(v["activeProfileIndex"], busiest, "{totals:?}");
}

#[test]
fn memleak_speedscope_is_merged_per_thread_in_bytes() {
    require_root!();
    let bin = build_c("leaks.c", "leaks", FP_FLAGS);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("leaks.speedscope.json");
    let err = record(
        &out,
        &["--probe", "memleak", "--min-age", "0", "--", s(&bin), "cmd"],
    );
    assert!(
        err.contains("speedscope: stacks merged per thread, heaviest first"),
        "{err}"
    );
    assert_valid_speedscope(&out);
    let v = read_json(&out);
    assert!(
        v["name"]
            .as_str()
            .unwrap()
            .contains("aggregated in the kernel"),
        "{v}"
    );
    let p = &v["profiles"][0];
    assert_eq!(p["unit"], "bytes");
    let weights: Vec<u64> = p["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert!(
        weights.windows(2).all(|w| w[0] >= w[1]),
        "heaviest first: {weights:?}"
    );
    // The leaks of tests/targets/leaks.c, in bytes (see memleak.rs).
    assert_eq!(
        weights.iter().sum::<u64>(),
        3000 + 400 + 300 + 777 + 1024 + 64
    );
    // (Three call sites: three stacks of 1000 bytes.)
    let samples = samples_of(&v, 0);
    let leak_malloc: u64 = samples
        .iter()
        .zip(&weights)
        .filter(|(s, _)| leaf_is(s, "leak_malloc"))
        .map(|(_, w)| w)
        .sum();
    assert_eq!(leak_malloc, 3000);
}

#[test]
fn speedscope_opens_the_recording_in_chromium() {
    require_root!();
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ratio.speedscope.json");
    let (pid, _) = record_ratio(&out, "1s", "499");
    let name = format!("[{pid}]ratio-fp/ratio-fp");
    let seen = node("browser.cjs", &["speedscope", s(&out), &name, "hot_a"]);
    assert_eq!(seen["failed"], false, "{seen}");
    assert_eq!(seen["problems"], serde_json::json!([]), "{seen}");
    assert!(seen["toolbar"].as_str().unwrap().contains(&name), "{seen}");
    let functions: Vec<&str> = seen["sandwich"]
        .as_str()
        .unwrap()
        .lines()
        .map(str::trim)
        .collect();
    assert!(
        functions.contains(&"hot_a") && functions.contains(&"hot_b"),
        "{seen}"
    );
}

/// `stack before after` lines of a diff.folded.
fn read_diff_lines(path: &Path) -> BTreeMap<String, (u64, u64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (rest, after) = l.rsplit_once(' ').unwrap();
            let (stack, before) = rest.rsplit_once(' ').unwrap();
            (
                stack.to_string(),
                (before.parse().unwrap(), after.parse().unwrap()),
            )
        })
        .collect()
}

/// Each frame of an SVG as (name, width in samples, fill).
fn svg_frames(svg: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for part in svg.split("<g><title>").skip(1) {
        let title = &part[..part.find("</title>").unwrap()];
        let name = title[..title.rfind(" (").unwrap()].to_string();
        let attr = |key: &str| {
            let from = part.find(&format!(" {key}=\"")).unwrap() + key.len() + 3;
            part[from..from + part[from..].find('"').unwrap()].to_string()
        };
        out.push((name, attr("fg:w").parse().unwrap(), attr("fill")));
    }
    out
}

const NEUTRAL: &str = "rgb(250,250,250)";

fn is_red(fill: &str) -> bool {
    let rgb: Vec<u32> = fill
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .map(|c| c.parse().unwrap())
        .collect();
    rgb[0] == 255 && rgb[1] == rgb[2] && rgb[1] < 250
}

#[test]
fn diff_with_hot_b_doubled_is_red_at_hot_b_only() {
    require_root!();
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("before.folded");
    let (pid, _) = record_ratio(&before, "2s", "999");
    // AFTER: the same profile with hot_b's own samples doubled.
    let folded = read_folded(&before);
    let after_text: String = folded
        .iter()
        .map(|(stack, n)| {
            let n = if stack.ends_with(";hot_b") { 2 * n } else { *n };
            format!("{stack} {n}\n")
        })
        .collect();
    let after = dir.path().join("after.folded");
    std::fs::write(&after, after_text).unwrap();
    let hot_b = leaf_weight(&folded, "hot_b");
    assert!(hot_b > 100, "{folded:#?}");

    let lines = dir.path().join("diff.folded");
    run_ok(&["diff", s(&before), s(&after), "-o", s(&lines)]);
    let lines = read_diff_lines(&lines);
    assert_eq!(lines.len(), folded.len());
    for (stack, (b, a)) in &lines {
        // (Processes are matched by name: the pid frame is gone.)
        let original = folded[&format!("[{pid}]{stack}")];
        assert_eq!(*b, original, "{stack}");
        if stack.ends_with(";hot_b") {
            assert_eq!(*a, 2 * b, "{stack}");
        } else {
            assert_eq!(a, b, "{stack}");
        }
    }

    let svg_path = dir.path().join("diff.svg");
    run_ok(&["diff", s(&before), s(&after), "-o", s(&svg_path)]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_well_formed_xml(&svg);
    let frames = svg_frames(&svg);
    let total = total(&folded);
    let all = frames.iter().find(|f| f.0 == "all").unwrap();
    assert_eq!(all.1, total + hot_b, "widths from AFTER");
    let mut red_width = 0;
    for (name, width, fill) in &frames {
        if name == "hot_b" {
            if is_red(fill) {
                red_width += width;
            } else {
                // A hot_b frame with none of its own samples (only an
                // interrupt below it) did not change.
                assert_eq!(fill, NEUTRAL, "{name}");
            }
        } else {
            assert_eq!(fill, NEUTRAL, "{name} ({width}) is not neutral");
        }
    }
    let hot_b_width: u64 = frames.iter().filter(|f| f.0 == "hot_b").map(|f| f.1).sum();
    assert!(
        red_width * 100 >= hot_b_width * 99,
        "{red_width} of {hot_b_width} red"
    );

    // --negate: BEFORE's widths, the same colors.
    let negated = dir.path().join("negated.svg");
    run_ok(&["diff", "--negate", s(&before), s(&after), "-o", s(&negated)]);
    let frames = svg_frames(&std::fs::read_to_string(&negated).unwrap());
    assert_eq!(frames.iter().find(|f| f.0 == "all").unwrap().1, total);
    assert!(frames.iter().any(|f| f.0 == "hot_b" && is_red(&f.2)));
    assert!(frames.iter().all(|f| f.0 == "hot_b" || f.2 == NEUTRAL));
    // --normalize: BEFORE scaled up to AFTER's total, so hot_a's share
    // shrank (blue) while hot_b's grew.
    let normalized = dir.path().join("normalized.svg");
    run_ok(&[
        "diff",
        "--normalize",
        s(&before),
        s(&after),
        "-o",
        s(&normalized),
    ]);
    let frames = svg_frames(&std::fs::read_to_string(&normalized).unwrap());
    let blue = |f: &str| f.starts_with("rgb(") && f.ends_with(",255)") && f != "rgb(255,255,255)";
    assert!(
        frames.iter().any(|f| f.0 == "hot_a" && blue(&f.2)),
        "{frames:?}"
    );
    assert!(
        frames.iter().any(|f| f.0 == "hot_b" && is_red(&f.2)),
        "{frames:?}"
    );

    // In a real browser, the SVG's search finds hot_b.
    let seen = node("browser.cjs", &["svg-search", s(&svg_path), "hot_b"]);
    assert_eq!(seen["problems"], serde_json::json!([]), "{seen}");
    let matched = seen["matched"].as_str().unwrap();
    let pct: f64 = matched
        .trim_start_matches("Matched: ")
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|_| panic!("{seen}"));
    let expected = 100.0 * (2 * hot_b) as f64 / (total + hot_b) as f64;
    assert!((pct - expected).abs() < 1.0, "{pct} vs {expected}: {seen}");
    let hits: Vec<&str> = seen["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| *h == "hot_b"),
        "{seen}"
    );
}

/// One row of `go tool pprof -top`: name -> (flat, flat%, cum, cum%).
fn pprof_top(text: &str) -> Vec<(String, i64, f64, i64, f64)> {
    // Counts, percentages, or nanoseconds with -unit=ns.
    let num =
        |v: &str| -> Option<f64> { v.trim_end_matches('%').trim_end_matches("ns").parse().ok() };
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 6 || !cols[1].ends_with('%') {
                return None;
            }
            let (flat, flat_pct, cum, cum_pct) =
                (num(cols[0])?, num(cols[1])?, num(cols[3])?, num(cols[4])?);
            let name = cols[5..].join(" ");
            let name = name.trim_end_matches(" (inline)").to_string();
            Some((name, flat as i64, flat_pct, cum as i64, cum_pct))
        })
        .collect()
}

#[test]
fn report_diff_agrees_with_go_tool_pprof() {
    require_root!();
    let _cpu = shared_cpu();
    let dir = tempfile::tempdir().unwrap();
    let (base, new) = (dir.path().join("base.pb.gz"), dir.path().join("new.pb.gz"));
    // Two runs of the program: the same functions, other counts.
    record_ratio(&base, "1s", "999");
    record_ratio(&new, "1s", "999");
    // Samples, and CPU time (the default value) in nanoseconds.
    for (ours_args, pprof_args) in [
        (
            &["--sample-type", "samples"][..],
            &["-sample_index=samples"][..],
        ),
        (&[][..], &["-sample_index=cpu", "-unit=ns"][..]),
    ] {
        let mut args = vec![
            "report",
            s(&new),
            "--diff",
            s(&base),
            "--top",
            "0",
            "--json",
        ];
        args.extend_from_slice(ours_args);
        let ours: Value = serde_json::from_slice(&run_ok(&args).stdout).unwrap();
        let rows: Vec<(String, i64, f64, i64, f64)> = ours["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap();
                // pprof names kernel and JIT functions without our suffixes.
                let name = name
                    .trim_end_matches("_[k]")
                    .trim_end_matches("_[j]")
                    .to_string();
                (
                    name,
                    r["self_change"].as_i64().unwrap(),
                    r["self_change_percent"].as_f64().unwrap(),
                    r["total_change"].as_i64().unwrap(),
                    r["total_change_percent"].as_f64().unwrap(),
                )
            })
            .collect();
        let mut args = vec!["-top", "-nodefraction=0", "-nodecount=100000"];
        args.extend_from_slice(pprof_args);
        args.extend_from_slice(&["-diff_base", s(&base)]);
        let top = crate::pprof_go::go_pprof(&args, &new);
        let theirs = pprof_top(&top);
        assert!(rows.len() >= 3, "{ours}");
        assert_eq!(rows.len(), theirs.len(), "ours: {rows:#?}\npprof:\n{top}");
        for (o, t) in rows.iter().zip(&theirs) {
            assert_eq!(
                (&o.0, o.1, o.3),
                (&t.0, t.1, t.3),
                "ours {o:?}, pprof {t:?}\n{top}"
            );
            // pprof prints percentages of the base's total without a sign.
            assert!((o.2.abs() - t.2).abs() < 0.006, "{o:?} vs {t:?}");
            assert!((o.4.abs() - t.4).abs() < 0.006, "{o:?} vs {t:?}");
        }
        // pprof's header names the base's total.
        let base_total = ours["base_total"].as_u64().unwrap();
        assert!(
            top.contains(&format!("of {base_total} total"))
                || top.contains(&format!("of {base_total}ns total")),
            "{top}"
        );
    }
    // The text table: the same numbers, for people.
    let text = run_ok(&["report", s(&new), "--diff", s(&base)]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("Top functions by change of self cpu"),
        "{text}"
    );
    assert!(text.contains("hot_a") && text.contains(" ms"), "{text}");
}

#[test]
fn convert_writes_speedscope_charts_and_inverted_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo_root().join("tests/fixtures/report.folded");
    let out = dir.path().join("r.speedscope.json");
    run_ok(&["convert", s(&input), "-o", s(&out)]);
    assert_valid_speedscope(&out);
    let v = read_json(&out);
    assert_eq!(
        v["profiles"][0]["unit"], "none",
        "folded files count samples"
    );
    assert!(
        v["name"].as_str().unwrap().contains("no sample times"),
        "{v}"
    );
    let weights: Vec<u64> = v["profiles"][0]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap())
        .collect();
    assert_eq!(weights.iter().sum::<u64>(), total(&read_folded(&input)));
    assert!(weights.windows(2).all(|w| w[0] >= w[1]), "{weights:?}");
    // -f speedscope to stdout.
    let json = run_ok(&["convert", s(&input), "-o", "-", "-f", "speedscope"]);
    assert_eq!(serde_json::from_slice::<Value>(&json.stdout).unwrap(), v);
    for flag in ["--inverted", "--flamechart", "--icicle", "--reverse"] {
        let svg = dir.path().join("v.svg");
        run_ok(&["convert", s(&input), "-o", s(&svg), flag]);
        assert_well_formed_xml(&std::fs::read_to_string(&svg).unwrap());
    }
    let both = run(&[
        "convert",
        s(&input),
        "-o",
        "x.svg",
        "--inverted",
        "--flamechart",
    ]);
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn diff_refuses_what_it_cannot_compare_and_finds_no_change_in_a_copy() {
    let input = repo_root().join("tests/fixtures/report.folded");
    let neg = run(&["diff", s(&input), s(&input), "-o", "-", "--negate"]);
    assert_eq!(neg.status.code(), Some(2));
    let bad = run(&[
        "diff",
        s(&input),
        s(&input),
        "-o",
        "-",
        "--sample-type",
        "cpu",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no sample type 'cpu'") && err.contains("samples/count"),
        "{err}"
    );
    let same = run_ok(&["diff", s(&input), s(&input), "-o", "-"]);
    let text = String::from_utf8(same.stdout).unwrap();
    assert!(
        text.lines().all(|l| {
            let c: Vec<&str> = l.rsplitn(3, ' ').collect();
            c[0] == c[1]
        }),
        "{text}"
    );
    let flat = run_ok(&["report", s(&input), "--diff", s(&input)]);
    assert!(String::from_utf8_lossy(&flat.stdout).contains("(no function changed)"));
}
