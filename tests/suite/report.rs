//! `report`: exact numbers on a fixture, focus, pruning, JSON, and (with
//! root) the tree of the 75/25 target and `record --report`.

use serde_json::Value;

use crate::util::*;

fn fixture() -> String {
    repo_root()
        .join("tests/fixtures/report.folded")
        .to_str()
        .unwrap()
        .to_string()
}

fn json(args: &[&str]) -> Value {
    let out = run_ok(args);
    serde_json::from_slice(&out.stdout).expect("report --json prints JSON")
}

fn child<'a>(node: &'a Value, name: &str) -> &'a Value {
    let list = node.get("children").unwrap_or(node);
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no child {name} in {node:#}"))
}

fn numbers(node: &Value) -> (u64, u64, u64) {
    (
        node["total"].as_u64().unwrap(),
        node["self"].as_u64().unwrap(),
        node["count"].as_u64().unwrap(),
    )
}

#[test]
fn tree_numbers_are_exact_on_the_fixture() {
    let f = fixture();
    let r = json(&["report", &f, "--tree", "--json", "--min-percent", "0"]);
    assert_eq!(r["total"], 100);
    assert_eq!(r["unit"], "count");
    let tree = &r["tree"];
    // Hand-computed from tests/fixtures/report.folded.
    let app = child(tree, "[10]app");
    assert_eq!(numbers(app), (80, 0, 80));
    let main = child(child(app, "app"), "main");
    assert_eq!(numbers(main), (80, 5, 80));
    let parse = child(main, "parse");
    assert_eq!(numbers(parse), (40, 10, 40));
    assert_eq!(numbers(child(parse, "lex")), (30, 30, 30));
    let eval = child(main, "eval");
    assert_eq!(numbers(eval), (35, 0, 35));
    assert_eq!(numbers(child(eval, "lex")), (20, 20, 20));
    let eval2 = child(eval, "eval");
    assert_eq!(numbers(eval2), (15, 0, 15));
    assert_eq!(numbers(child(eval2, "mul")), (15, 15, 15));
    let tool_main = child(child(child(tree, "[11]tool"), "tool"), "main");
    assert_eq!(numbers(tool_main), (20, 0, 20));
    assert_eq!(numbers(child(tool_main, "lex")), (20, 20, 20));
    // Heaviest child first.
    assert_eq!(main["children"][0]["name"], "parse");
    assert_eq!(tree[0]["total_percent"], 80.0);

    // Top table: self = leaf weight, total counts a recursive function once.
    let top = r["top"].as_array().unwrap();
    let row = |name: &str| {
        let t = top.iter().find(|t| t["name"] == name).unwrap();
        (t["self"].as_u64().unwrap(), t["total"].as_u64().unwrap())
    };
    assert_eq!(top[0]["name"], "lex");
    assert_eq!(row("lex"), (70, 70));
    assert_eq!(row("mul"), (15, 15));
    assert_eq!(row("parse"), (10, 40));
    assert_eq!(row("main"), (5, 100));
    assert_eq!(row("eval"), (0, 35));
    assert_eq!(top[0]["self_percent"], 70.0);
}

#[test]
fn text_report_focus_and_pruning() {
    let f = fixture();
    let out = run_ok(&["report", &f]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("Total: 100\n"), "{text}");
    let lex = text.lines().find(|l| l.ends_with("  lex")).unwrap();
    let cols: Vec<&str> = lex.split_whitespace().collect();
    assert_eq!(cols, ["70", "70.00%", "70", "70.00%", "70", "lex"]);
    assert!(!text.contains("Call tree"), "tree only with --tree");

    let out = run_ok(&["report", &f, "--tree", "--min-percent", "16"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let tree = text.split("Call tree").nth(1).expect("a tree");
    assert!(!tree.contains(" mul\n"), "mul is 15%, under 16%: {text}");
    assert!(tree.lines().any(|l| l.ends_with("80  [10]app")), "{text}");
    assert!(
        tree.lines().any(|l| l.ends_with("35        eval")),
        "{text}"
    );

    let r = json(&["report", &f, "--json", "--focus", "^mul$"]);
    assert_eq!(r["focused_total"], 15);
    assert_eq!(r["total"], 100);
    assert_eq!(r["tree"].as_array().unwrap().len(), 1);
    assert_eq!(child(&r["tree"], "[10]app")["total"], 15);
    assert_eq!(r["top"][0]["name"], "mul");

    // Stdin works too.
    let out = flameprobe()
        .args(["report", "-", "--json"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["total"], 100);
}

fn find<'a>(nodes: &'a Value, name: &str) -> Option<&'a Value> {
    for n in nodes.as_array()? {
        if n["name"] == name {
            return Some(n);
        }
        if let Some(found) = find(&n["children"], name) {
            return Some(found);
        }
    }
    None
}

#[test]
fn tree_of_the_75_25_target_shows_both_branches() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("ratio.pb.gz");
    let pid = target.pid().to_string();
    let out = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "3s",
        "-F",
        "199",
        "-o",
        pb.to_str().unwrap(),
        "--report",
    ]);
    // --report with a file output prints the table on stdout.
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Top functions by self time"), "{text}");
    assert!(text.lines().any(|l| l.ends_with("  hot_a")), "{text}");

    let r = json(&["report", pb.to_str().unwrap(), "--tree", "--json"]);
    assert_eq!(r["unit"], "nanoseconds");
    assert_eq!(r["period_ns"], 1_000_000_000u64 / 199);
    let run = find(&r["tree"], "run").expect("run in the tree");
    let a = child(run, "path_a1")["total"].as_f64().unwrap();
    let b = child(run, "path_b1")["total"].as_f64().unwrap();
    let share_a = 100.0 * a / (a + b);
    assert!(
        (share_a - 75.0).abs() <= 5.0,
        "path_a1 {share_a:.1}%: {r:#}"
    );
    // The chain below each branch is complete.
    let a3 = child(child(child(run, "path_a1"), "path_a2"), "path_a3");
    assert!(child(a3, "hot_a")["total"].as_f64().unwrap() >= 0.95 * a);
    // Total = samples x period.
    assert_eq!(
        r["total"].as_u64().unwrap(),
        r["count"].as_u64().unwrap() * (1_000_000_000u64 / 199)
    );
}

#[test]
fn record_report_to_stderr_when_profile_goes_to_stdout() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let out = run_ok(&["record", "-p", &pid, "-d", "1s", "-o", "-", "--report"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Stdout stays folded data only.
    assert!(!stdout.contains("Top functions"));
    assert!(parse_folded(&stdout).keys().any(|k| k.ends_with("hot_a")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Top functions by self time"), "{err}");
}

/// Folded files that broke report/convert before: a 10,000-frame stack
/// (stack overflow), counts whose sum overflows u64 (wrapped silently), and
/// frame names that are not UTF-8 (a misleading pprof error).
#[test]
fn hostile_folded_files_are_read_or_named() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.folded");
    let frames: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
    std::fs::write(&deep, format!("{} 5\n", frames.join(";"))).unwrap();
    let d = deep.to_str().unwrap();
    for args in [
        &["report", d][..],
        &["report", "--tree", d],
        &["report", "--json", d],
    ] {
        let out = run_ok(args);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("f9999"),
            "{args:?}"
        );
    }
    let pb = dir.path().join("deep.pb.gz");
    run_ok(&["convert", d, "-o", pb.to_str().unwrap()]);
    let out = run_ok(&["report", "--tree", pb.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("f9999"));

    let big = dir.path().join("big.folded");
    std::fs::write(&big, "a;b 18446744073709551615\na;b 18446744073709551615\n").unwrap();
    let out = run_ok(&["report", big.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("18446744073709551615"), "capped: {text}");
    assert!(
        !text.contains("18446744073709551614"),
        "not wrapped: {text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capped"), "says so: {err}");

    let latin1 = dir.path().join("latin1.folded");
    std::fs::write(&latin1, b"main;caf\xe9 3\nmain;ok 1\n").unwrap();
    let out = run_ok(&["convert", latin1.to_str().unwrap(), "-o", "-"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("main;caf\u{fffd} 3"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("latin1.folded:1: not valid UTF-8"), "{err}");
}

/// `report --tree` on stacks 40,000 and 200,000 frames deep: no panic (a
/// format width beyond 65,535 columns panicked past ~32k frames), and the
/// text grows linearly with the depth (it indented every line by its
/// depth: 200k frames made ~40 GB of spaces); the deepest frame is there
/// with its depth.
#[test]
fn tree_of_very_deep_stacks_is_linear_in_depth() {
    let dir = tempfile::tempdir().unwrap();
    for depth in [40_000usize, 200_000] {
        let frames: Vec<String> = (0..depth).map(|i| format!("f{i}")).collect();
        let path = dir.path().join(format!("deep{depth}.folded"));
        std::fs::write(&path, format!("{} 7\n", frames.join(";"))).unwrap();
        let out = run(&["report", "--tree", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let last = format!("[{}] f{}", depth - 1, depth - 1);
        let line = text
            .lines()
            .find(|l| l.ends_with(&last))
            .unwrap_or_else(|| panic!("no line for the deepest frame ({last})"));
        assert!(line.len() < 200, "{line}");
        // Each frame's line is short: at most ~150 bytes per frame.
        assert!(
            text.len() < depth * 150,
            "{} bytes for {depth} frames",
            text.len()
        );
    }
}
