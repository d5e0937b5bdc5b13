//! pprof written by `record`, checked with the real `go tool pprof`
//! (Debian's golang-go): -top proportions, -traces chains, -raw mappings
//! with build ids, and addresses that resolve to the right functions when
//! pprof symbolizes them itself from the binary.

use std::path::Path;
use std::process::Command;

use prost::Message;

use flameprobe::output::pprof::proto;

use crate::util::*;

pub(crate) fn go_pprof(args: &[&str], file: &Path) -> String {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .env("HOME", home.path())
        .env("GOCACHE", home.path().join("cache"))
        .env("PPROF_TMPDIR", home.path())
        .env_remove("PPROF_BINARY_PATH")
        .output()
        .expect("running `go tool pprof` (apt-get install golang-go)");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The cumulative percentage of `name` in `go tool pprof -top` output
/// (its own time and what it calls: interrupts and faults taken while it
/// runs, which a busy machine makes more frequent, stay with it).
fn cum_percent(top: &str, name: &str) -> f64 {
    let line = top
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in -top output:\n{top}"));
    line.split_whitespace()
        .nth(4)
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap()
}

#[test]
fn go_tool_pprof_reads_recorded_profile() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("cpu.pb.gz");
    let pid = target.pid().to_string();
    run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "3s",
        "-F",
        "999",
        "-q",
        "-o",
        pb.to_str().unwrap(),
    ]);
    // ~3000 samples: the 75% share is known to within 1 point (1 sigma).

    let top = go_pprof(&["-top"], &pb);
    assert!(top.contains("Type: cpu"), "{top}");
    let (a, b) = (cum_percent(&top, "hot_a"), cum_percent(&top, "hot_b"));
    let share_a = 100.0 * a / (a + b);
    assert!((share_a - 75.0).abs() <= 5.0, "hot_a {share_a:.1}%:\n{top}");
    assert!(a + b > 95.0, "hot functions hold the time:\n{top}");
    assert!(top.contains(&format!(
        "File: {}",
        bin.file_name().unwrap().to_str().unwrap()
    )));

    // -traces: complete chains, leaf first, with the sample labels.
    let traces = go_pprof(&["-traces"], &pb);
    let chain_a = "hot_a path_a3 path_a2 path_a1 run main";
    let chain_b = "hot_b path_b1 run main";
    let blocks: Vec<String> = traces
        .split("-----------+")
        .map(|b| {
            b.lines()
                .filter_map(|l| l.split_whitespace().last())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(blocks.iter().any(|b| b.contains(chain_a)), "{traces}");
    assert!(blocks.iter().any(|b| b.contains(chain_b)), "{traces}");
    assert!(traces.contains(&format!("pid:  {pid}")), "{traces}");
    assert!(traces.contains("thread_name:  ratio-fp"), "{traces}");

    // -raw: mappings with build ids, the binary's own among them.
    let raw = go_pprof(&["-raw"], &pb);
    let build_id = {
        let f = std::fs::File::open(&bin).unwrap();
        flameprobe::buildid::read(&f).expect("test binary has a build id")
    };
    let mappings = raw.split("Mappings").nth(1).expect("-raw lists mappings");
    assert!(
        mappings
            .lines()
            .any(|l| l.contains(bin.to_str().unwrap()) && l.contains(&build_id)),
        "{mappings}"
    );
    assert!(raw.contains("PeriodType: cpu nanoseconds"), "{raw}");
    assert!(
        raw.contains(&format!("Period: {}", 1_000_000_000u64 / 999)),
        "{raw}"
    );

    // Addresses: drop our function names and let pprof symbolize the
    // locations from the binary itself; it must find the same functions.
    let bytes = std::fs::read(&pb).unwrap();
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut decoded)
        .unwrap();
    let mut p = proto::Profile::decode(&decoded[..]).unwrap();
    let ours = p
        .mapping
        .iter()
        .find(|m| p.string_table[m.filename as usize] == bin.to_str().unwrap())
        .expect("mapping of the binary")
        .id;
    for loc in &mut p.location {
        if loc.mapping_id == ours {
            loc.line.clear();
        }
    }
    for m in &mut p.mapping {
        if m.id == ours {
            m.has_functions = false;
            m.has_filenames = false;
            m.has_line_numbers = false;
            m.has_inline_frames = false;
        }
    }
    let stripped = dir.path().join("stripped.pb");
    std::fs::write(&stripped, p.encode_to_vec()).unwrap();
    let traces = go_pprof(&["-symbolize=local", "-traces"], &stripped);
    let blocks: Vec<String> = traces
        .split("-----------+")
        .map(|b| {
            b.lines()
                .filter_map(|l| l.split_whitespace().last())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(
        blocks.iter().any(|b| b.contains(chain_a)),
        "re-symbolized:\n{traces}"
    );
    assert!(
        blocks.iter().any(|b| b.contains(chain_b)),
        "re-symbolized:\n{traces}"
    );
}

/// An off-CPU profile in pprof: `go tool pprof -top` reads it as time
/// (offcpu/nanoseconds) and lists the sleeping methods with their
/// durations.
#[test]
fn go_tool_pprof_reads_off_cpu_time() {
    require_root!();
    let bin = build_c("slowreq.c", "slowreq", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["1"]);
    let pid = target.pid();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("offcpu.pb.gz");
    let rec = Recording::start(&[
        "--probe",
        "offcpu",
        "-p",
        &pid,
        "-d",
        "60s",
        "-o",
        pb.to_str().unwrap(),
    ]);
    target.go();
    rec.stop();
    let top = go_pprof(&["-top", "-nodecount=100"], &pb);
    assert!(top.contains("Type: offcpu"), "{top}");
    // The cumulative time of each method, as pprof prints it (ms or s).
    let cum_ms = |name: &str| -> f64 {
        let line = top
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in -top output:\n{top}"));
        let cum = line.split_whitespace().nth(3).unwrap();
        match cum.strip_suffix("ms") {
            Some(ms) => ms.parse().unwrap(),
            None => cum.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0,
        }
    };
    for (method, ms) in [
        ("fast_method", 100.0),
        ("slow_method1", 1000.0),
        ("slow_method2", 1500.0),
    ] {
        let got = cum_ms(method);
        assert!((got / ms - 1.0).abs() < 0.05, "{method}: {got} ms\n{top}");
    }
}
