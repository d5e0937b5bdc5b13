//! `convert` and the input parsers on fixtures (no BPF): lossless folded
//! <-> pprof, perf script folded like inferno-collapse-perf, SVG options,
//! and clear errors for malformed input.

use std::path::{Path, PathBuf};

use crate::util::*;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn folded_to_pprof_to_folded_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("roundtrip.folded");
    let pb = dir.path().join("rt.pb.gz");
    run_ok(&["convert", s(&input), "-o", s(&pb)]);
    let bytes = std::fs::read(&pb).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip-compressed");
    let out = run_ok(&["convert", s(&pb), "-o", "-"]);
    let back = String::from_utf8(out.stdout).unwrap();
    let original = std::fs::read_to_string(&input).unwrap();
    assert_eq!(parse_folded(&back), parse_folded(&original));
    // And through stdin, as a second hop.
    let out = flameprobe()
        .args(["convert", "-", "-o", "-", "-f", "pprof"])
        .stdin(std::fs::File::open(&pb).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let again = dir.path().join("again.pb");
    std::fs::write(&again, &out.stdout).unwrap();
    let out = run_ok(&["convert", s(&again), "-o", "-"]);
    assert_eq!(
        parse_folded(&String::from_utf8(out.stdout).unwrap()),
        parse_folded(&original)
    );
}

#[test]
fn perf_script_folds_like_inferno_collapse_perf() {
    use inferno::collapse::perf::{Folder, Options};
    use inferno::collapse::Collapse;

    let input = fixture("perf-script.txt");
    let out = run_ok(&["convert", s(&input), "-o", "-"]);
    let ours = parse_folded(&String::from_utf8(out.stdout).unwrap());

    // inferno-collapse-perf --all: kernel and JIT frames annotated.
    let mut opts = Options::default();
    opts.annotate_kernel = true;
    opts.annotate_jit = true;
    let mut folder = Folder::from(opts);
    let mut theirs = Vec::new();
    folder
        .collapse(&std::fs::read(&input).unwrap()[..], &mut theirs)
        .unwrap();
    let theirs = parse_folded(&String::from_utf8(theirs).unwrap());
    assert_eq!(ours, theirs);
    // The fixture has both processes and kernel frames.
    assert!(ours
        .keys()
        .any(|k| k.starts_with("ratio;") && k.ends_with(";hot_a")));
    assert!(ours
        .keys()
        .any(|k| k.starts_with("syscalls;") && k.contains("_[k]")));
}

#[test]
fn svg_options_are_shared_with_record() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("out.svg");
    run_ok(&[
        "convert",
        s(&fixture("report.folded")),
        "-o",
        s(&svg),
        "--title",
        "Converted <profile>",
        "--reverse",
        "--colors",
        "mem",
        "--min-width",
        "0",
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_xml(&text);
    assert!(text.contains("Converted &lt;profile&gt;"), "title");
    assert!(text.contains("mul"));
    let out = run(&[
        "convert",
        s(&fixture("report.folded")),
        "-o",
        s(&svg),
        "--colors",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// Runs report and convert on `path`; both must fail with one line on
/// stderr that contains `expect`, nothing on stdout, and no panic.
fn assert_clear_error(path: &Path, expect: &str) {
    for args in [vec!["report", s(path)], vec!["convert", s(path), "-o", "-"]] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(s(path)), "names the file: {err}");
        assert!(err.contains(expect), "expected {expect:?} in: {err}");
    }
}

#[test]
fn malformed_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    // Truncated gzip: a real pprof file cut in half.
    let pb = path("good.pb.gz");
    run_ok(&["convert", s(&fixture("roundtrip.folded")), "-o", s(&pb)]);
    let bytes = std::fs::read(&pb).unwrap();
    std::fs::write(path("cut.pb.gz"), &bytes[..bytes.len() / 2]).unwrap();
    assert_clear_error(&path("cut.pb.gz"), "truncated gzip");

    // Garbage protobuf: a length that runs past the end, raw and gzipped.
    std::fs::write(path("bad.pb"), [0x0a, 0x02, 0x08, 0x01, 0x12, 0x7f, 0x08]).unwrap();
    assert_clear_error(&path("bad.pb"), "at byte offset 4");
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        e.write_all(&[0x0a, 0x02, 0x08, 0x01, 0x12, 0x7f, 0x08])
            .unwrap();
        e.finish().unwrap();
    }
    std::fs::write(path("bad.pb.gz"), &gz).unwrap();
    assert_clear_error(
        &path("bad.pb.gz"),
        "at byte offset 4 of the decompressed data",
    );

    // A folded line without a count.
    std::fs::write(path("nocount.folded"), "a;b 1\nmain;work\n").unwrap();
    assert_clear_error(&path("nocount.folded"), "nocount.folded:2: no count");

    // Binary junk (deterministic pseudo-random bytes).
    let mut x: u32 = 12345;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(path("junk.bin"), &junk).unwrap();
    assert_clear_error(&path("junk.bin"), "byte offset");

    // Empty, and missing.
    std::fs::write(path("empty"), "").unwrap();
    assert_clear_error(&path("empty"), "empty");
    assert_clear_error(&path("missing.folded"), "cannot read");
}
