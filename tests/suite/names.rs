//! Names a target controls (thread names, comm) cannot forge a profile
//! or reach the terminal as control sequences (needs root): threads named
//! `"x 999999999\n"`, `"w;1 2"` and with ESC sequences, a comm holding
//! byte 0xFF.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::*;

/// The hostile-names target, started and past the naming of its threads.
fn start(mode: &[&str]) -> Target {
    let bin = build_c("hostile_names.c", "hostile_names", FP_FLAGS);
    let mut child = Command::new(&bin)
        .args(mode)
        .arg("60")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting hostile_names");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    let target = Target { child };
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    target
}

/// The sample count of a summary's first line (`... in N samples ...`).
fn summary_samples(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" samples (") && l.starts_with("flameprobe: "))
        .unwrap_or_else(|| panic!("no summary line: {stderr}"));
    let before = line.split(" samples (").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Every line of a folded file is `stack count`, with no control
/// character; returns the counts' sum.
fn assert_folded_lines(text: &str) -> u64 {
    assert!(text.ends_with('\n'), "{text:?}");
    let mut sum = 0u64;
    for line in text.lines() {
        assert!(
            !line.chars().any(char::is_control),
            "control character in {line:?}"
        );
        let (stack, count) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no count in {line:?}"));
        let count: u64 = count
            .parse()
            .unwrap_or_else(|_| panic!("{count:?} is not a count: {line:?}"));
        assert!(!stack.is_empty(), "{line:?}");
        sum += count;
    }
    sum
}

fn assert_no_escape(what: &str, text: &[u8]) {
    assert!(
        !text.contains(&0x1b) && !text.contains(&0x07),
        "{what} holds a raw ESC or BEL: {}",
        String::from_utf8_lossy(text)
    );
}

/// The target (with `mode`) recorded for 2 s into `file` of a fresh
/// directory: (target, directory, pid, output file, flameprobe's output).
fn recorded(
    mode: &[&str],
    file: &str,
    extra: &[&str],
) -> (
    Target,
    tempfile::TempDir,
    String,
    std::path::PathBuf,
    std::process::Output,
) {
    let target = start(mode);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(file);
    let pid = target.pid().to_string();
    let mut args = vec!["record", "-p", &pid, "-d", "2s", "-F", "199", "-o"];
    args.push(out.to_str().unwrap());
    args.extend(extra);
    let rec = run_ok(&args);
    assert_no_escape("record's stderr", &rec.stderr);
    (target, dir, pid, out, rec)
}

/// The frames the three threads' names become.
const THREAD_FRAMES: [&str; 3] = [
    ";x 999999999\\x0a;",
    ";w:1 2;",
    ";\\x1b[31mE\\x1b]0:t\\x07;",
];

#[test]
fn thread_names_cannot_forge_folded_lines() {
    require_root!();
    let _cpu = shared_cpu();
    let (_target, dir, pid, out, rec) = recorded(&[], "x.folded", &["-v", "--report"]);
    let stderr = String::from_utf8_lossy(&rec.stderr);
    assert_no_escape("record's --report", &rec.stdout);
    let text = std::fs::read_to_string(&out).unwrap();
    let sum = assert_folded_lines(&text);
    assert_eq!(sum, summary_samples(&stderr), "{text}\n{stderr}");
    for frame in THREAD_FRAMES {
        let weight: u64 = parse_folded(&text)
            .iter()
            .filter(|(s, _)| s.contains(frame) && s.ends_with(";name_spin"))
            .map(|(_, w)| w)
            .sum();
        assert!(
            weight > 20,
            "thread frame {frame} has {weight} samples:\n{text}"
        );
    }
    // Each stack: process frame, thread frame, then the code.
    let prefix = format!("[{pid}]hostile_names;");
    assert!(text.lines().all(|l| l.starts_with(&prefix)), "{text}");

    let report = run_ok(&["report", out.to_str().unwrap()]);
    let report_text = String::from_utf8_lossy(&report.stdout);
    assert!(report_text.contains("name_spin"), "{report_text}");
    assert!(
        !report_text.contains("999999999 "),
        "a name became a count: {report_text}"
    );
    assert_no_escape("report", &report.stdout);

    // convert writes the same lines.
    let again = dir.path().join("again.folded");
    run_ok(&[
        "convert",
        out.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text);
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn comm_with_byte_ff_is_a_process_and_pprof_keeps_names() {
    require_root!();
    let _cpu = shared_cpu();
    let (_target, dir, pid, pprof, rec) = recorded(&["ff"], "x.pb.gz", &[]);
    // pprof is length-delimited: the names as the threads set them.
    let raw = gunzip(&pprof);
    for name in [&b"x 999999999\n"[..], b"w;1 2", b"\x1b[31mE\x1b]0;t\x07"] {
        assert!(
            raw.windows(name.len()).any(|w| w == name),
            "{:?} not in the pprof file",
            String::from_utf8_lossy(name)
        );
    }
    // Text outputs of it are escaped, the comm's 0xFF as \xff.
    let folded = dir.path().join("x.folded");
    run_ok(&[
        "convert",
        pprof.to_str().unwrap(),
        "-o",
        folded.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&folded).unwrap();
    let sum = assert_folded_lines(&text);
    assert_eq!(sum, summary_samples(&String::from_utf8_lossy(&rec.stderr)));
    let prefix = format!("[{pid}]proc\\xff;");
    assert!(text.lines().all(|l| l.starts_with(&prefix)), "{text}");
    for frame in THREAD_FRAMES {
        assert!(text.contains(frame), "{frame} not in:\n{text}");
    }
    let report = run_ok(&["report", "--by-thread", pprof.to_str().unwrap()]);
    assert_no_escape("report --by-thread", &report.stdout);
    let report_text = String::from_utf8_lossy(&report.stdout);
    assert!(report_text.contains("\\x1b[31mE"), "{report_text}");
    let svg = dir.path().join("x.svg");
    run_ok(&[
        "convert",
        pprof.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    let svg_text = std::fs::read(&svg).unwrap();
    assert_no_escape("the SVG", &svg_text);
    assert_well_formed_xml(&String::from_utf8_lossy(&svg_text));
}
