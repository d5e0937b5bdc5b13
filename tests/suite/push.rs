//! Contract tests of the pushes to Grafana Pyroscope, against an in-test
//! server that records requests (push_util.rs): the push API's protobuf
//! decoded with the project's prost messages and, independently, with
//! Python's protobuf compiled from src/push/push.proto; the pprof inside
//! read back by `go tool pprof -raw`; the legacy ingest API's query and
//! body; and the server refusing, rate-limiting, failing or not answering.
//! No Pyroscope server runs here: these check the documented API.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;

use crate::pprof_go::go_pprof;
use crate::push_util::*;
use crate::util::*;

/// A pprof file with known samples (from folded stacks).
fn sample_pprof(dir: &Path) -> std::path::PathBuf {
    let folded = dir.join("t.folded");
    std::fs::write(&folded, "[12]app;main;work 30\n[12]app;main;idle 10\n").unwrap();
    let pb = dir.join("t.pb.gz");
    run_ok(&[
        "convert",
        folded.to_str().unwrap(),
        "-o",
        pb.to_str().unwrap(),
    ]);
    pb
}

fn push(args: &[&str]) -> std::process::Output {
    flameprobe()
        .arg("push")
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .expect("running flameprobe push")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The gzipped pprof of a series, decoded with the project's messages.
fn pprof_of(
    s: &flameprobe::push::proto::RawProfileSeries,
) -> flameprobe::output::pprof::proto::Profile {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&s.samples[0].raw_profile[..])
        .read_to_end(&mut raw)
        .expect("raw_profile is gzip");
    flameprobe::output::pprof::proto::Profile::decode(&raw[..]).expect("raw_profile is a pprof")
}

#[test]
fn push_api_request_decodes_with_both_decoders_and_go_pprof() {
    let dir = tempfile::tempdir().unwrap();
    let pb = sample_pprof(dir.path());
    let stub = Stub::start(vec![]);
    let out = push(&[
        pb.to_str().unwrap(),
        "--url",
        &stub.url(),
        "--service",
        "shop",
        "--label",
        "env=test",
        "--push-header",
        "X-Scope-OrgID: team-a",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("pushed"), "{}", stderr(&out));
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/push.v1.PusherService/Push")
    );
    assert_eq!(r.header("content-type"), Some("application/proto"));
    assert_eq!(r.header("connect-protocol-version"), Some("1"));
    assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
    assert_eq!(r.header("authorization"), None);

    let req = r.push_request();
    assert_eq!(req.series.len(), 1);
    let s = &req.series[0];
    let expected = vec![
        ("__name__".to_string(), "process_cpu".to_string()),
        ("service_name".into(), "shop".into()),
        ("env".into(), "test".into()),
        ("hostname".into(), hostname()),
    ];
    assert_eq!(labels(s), expected);
    assert_eq!(s.samples.len(), 1);
    assert_eq!(s.samples[0].id.len(), 36, "a UUID");

    // The pprof inside, read by go tool pprof.
    let raw = go_pprof(&["-raw"], &write_raw(s, dir.path(), "pushed.pb.gz"));
    let mut samples = raw_samples(&raw);
    samples.sort();
    assert_eq!(
        samples,
        [
            (
                10,
                vec!["idle".to_string(), "main".into(), "[12]app".into()]
            ),
            (
                30,
                vec!["work".to_string(), "main".into(), "[12]app".into()]
            ),
        ],
        "{raw}"
    );

    // A decoder that is not ours: Python's protobuf from push.proto.
    let py = python_decode(&r.body);
    assert_eq!(
        py["round_trip"], true,
        "re-encoded the same: nothing unknown"
    );
    let py_series = py["series"].as_array().unwrap();
    assert_eq!(py_series.len(), 1);
    let py_labels: Vec<(String, String)> = py_series[0]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(py_labels, expected);
    let py_sample = &py_series[0]["samples"][0];
    assert_eq!(py_sample["id"].as_str(), Some(s.samples[0].id.as_str()));
    let hex: String = s.samples[0]
        .raw_profile
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(py_sample["raw_profile"].as_str(), Some(hex.as_str()));
}

#[test]
fn url_credentials_become_basic_auth_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pb = sample_pprof(dir.path());
    let stub = Stub::start(vec![Reply::connect_error(
        401,
        "unauthenticated",
        "bad token",
    )]);
    let url = format!("http://12345:s3cr%40t@127.0.0.1:{}", stub.port);
    let out = push(&[pb.to_str().unwrap(), "--url", &url]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // base64("12345:s3cr@t")
    assert_eq!(
        stub.requests()[0].header("authorization"),
        Some("Basic MTIzNDU6czNjckB0")
    );
    assert!(
        err.contains("HTTP 401") && err.contains("unauthenticated: bad token"),
        "{err}"
    );
    assert!(!err.contains("s3cr"), "credentials never shown: {err}");
    assert_eq!(stub.requests().len(), 1, "a 401 is not retried");
}

#[test]
fn ingest_api_query_and_folded_body() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("t.folded");
    std::fs::write(&folded, "app;main;work 30\napp;main;idle 10\n").unwrap();
    let stub = Stub::start(vec![]);
    let out = push(&[
        folded.to_str().unwrap(),
        "--url",
        &format!("{}/pyro/", stub.url()),
        "--push-api",
        "ingest",
        "--label",
        "env=test",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/pyro/ingest");
    // No --service, no process labels in a folded file: the host's name.
    let host: String = hostname()
        .chars()
        .map(|c| {
            if "{},=".contains(c) || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    assert_eq!(
        r.param("name").as_deref(),
        Some(format!("{host}.cpu{{env=test,hostname={host}}}").as_str())
    );
    let mtime = std::fs::metadata(&folded)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until: u64 = r.param("until").unwrap().parse().unwrap();
    let from: u64 = r.param("from").unwrap().parse().unwrap();
    assert!(until.abs_diff(mtime) <= 1, "until {until}, mtime {mtime}");
    assert_eq!(until - from, 10, "10 s up to the file's time");
    for (k, v) in [
        ("format", "folded"),
        ("units", "samples"),
        ("aggregationType", "sum"),
        ("spyName", "flameprobe"),
    ] {
        assert_eq!(r.param(k).as_deref(), Some(v), "{k} in {}", r.query);
    }
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "app;main;idle 10\napp;main;work 30\n"
    );
}

#[test]
fn refused_profile_gives_the_servers_message_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pb = sample_pprof(dir.path());
    let stub = Stub::start(vec![Reply::connect_error(
        400,
        "invalid_argument",
        "invalid labels '{}' with error: service name is not provided",
    )]);
    let out = push(&[pb.to_str().unwrap(), "--url", &stub.url()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("HTTP 400, the server refused the profile"),
        "{err}"
    );
    assert!(
        err.contains(
            "invalid_argument: invalid labels '{}' with error: service name is not provided"
        ),
        "{err}"
    );
    assert_eq!(stub.requests().len(), 1, "a 400 is not retried");
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let pb = sample_pprof(dir.path());
    let limited = Reply::Status(
        429,
        vec![("Retry-After".into(), "1".into())],
        "slow down".into(),
    );
    let stub = Stub::start(vec![limited, Reply::Status(503, vec![], "busy".into())]);
    let out = push(&[pb.to_str().unwrap(), "--url", &stub.url()]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(stub.requests().len(), 3, "429, 503, then 200");
    assert!(
        err.contains("HTTP 429, rate limited (server said: slow down); trying again in 1s"),
        "{err}"
    );
    assert!(
        err.contains("HTTP 503, server error (server said: busy); trying again in 2s"),
        "{err}"
    );
    // The same body each time.
    let reqs = stub.requests();
    assert!(reqs.windows(2).all(|w| w[0].body == w[1].body));

    // Always failing: three tries, then exit 1.
    let fail = || Reply::Status(503, vec![], String::new());
    let stub = Stub::start(vec![fail(), fail(), fail()]);
    let out = push(&[pb.to_str().unwrap(), "--url", &stub.url()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stub.requests().len(), 3);
}

#[test]
fn a_server_that_does_not_answer_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let pb = sample_pprof(dir.path());
    let silent = || Reply::Silent(Duration::from_secs(8));
    let stub = Stub::start(vec![silent(), silent(), silent()]);
    let started = Instant::now();
    let out = push(&[
        pb.to_str().unwrap(),
        "--url",
        &stub.url(),
        "--push-timeout",
        "1s",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no answer within 1.00 s (--push-timeout)"),
        "{err}"
    );
    assert_eq!(stub.requests().len(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the timeout held"
    );
}

#[test]
fn refused_connections_and_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let pb = sample_pprof(dir.path());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = push(&[
        pb.to_str().unwrap(),
        "--url",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("connection refused"), "{err}");

    for (url, why) in [
        ("ftp://127.0.0.1", "only http:// and https://"),
        ("127.0.0.1:4040", "not an http(s) URL"),
        ("http://127.0.0.1:99999", "not a port number"),
    ] {
        let out = push(&[pb.to_str().unwrap(), "--url", url]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        assert!(stderr(&out).contains(why), "{url}: {}", stderr(&out));
    }
    // A file that is not a profile: one line, exit 1, nothing sent.
    let stub = Stub::start(vec![]);
    let bad = dir.path().join("bad.folded");
    std::fs::write(&bad, "not a profile\n").unwrap();
    let out = push(&[bad.to_str().unwrap(), "--url", &stub.url()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not pushed"), "{}", stderr(&out));
    assert!(stub.requests().is_empty());
}

/// `record --push`: the local file first, then the push, whose labels
/// name the target's program and whose pprof go tool pprof reads.
#[test]
fn record_push_sends_the_recorded_profile() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["30"]);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("cpu.pb.gz");
    let stub = Stub::start(vec![]);
    let pid = target.pid().to_string();
    let out = run_ok(&[
        "record",
        "-p",
        &pid,
        "-d",
        "2s",
        "-F",
        "199",
        "-o",
        local.to_str().unwrap(),
        "--push",
        &stub.url(),
        "--label",
        "env=ci",
    ]);
    let err = stderr(&out);
    assert!(err.contains(&format!("pushed to {}", stub.url())), "{err}");
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    let req = reqs[0].push_request();
    let s = &req.series[0];
    assert_eq!(label(s, "__name__"), Some("process_cpu"));
    assert_eq!(
        label(s, "service_name"),
        Some("ratio-fp"),
        "the target's program"
    );
    assert_eq!(label(s, "hostname"), Some(hostname().as_str()));
    assert_eq!(label(s, "env"), Some("ci"));
    let raw = go_pprof(&["-raw"], &write_raw(s, dir.path(), "pushed.pb.gz"));
    let samples = raw_samples(&raw);
    let leaf = |name: &str| -> i64 {
        samples
            .iter()
            .filter(|(_, f)| f.first().map(String::as_str) == Some(name))
            .map(|(n, _)| n)
            .sum()
    };
    let (a, b) = (leaf("hot_a"), leaf("hot_b"));
    assert!(a > 2 * b && b > 0, "hot_a {a}, hot_b {b}:\n{raw}");
    // The same profile as the local file.
    let local_profile = flameprobe::input::read(&local).unwrap();
    let pushed: i64 = samples.iter().map(|(n, _)| n).sum();
    assert_eq!(pushed as u64, local_profile.total(0));
    let p = pprof_of(s);
    assert!(p.time_nanos > 0 && (p.duration_nanos - 2_000_000_000).abs() < 300_000_000);
    // The second decoder reads a real recording too.
    assert_eq!(python_decode(&reqs[0].body)["round_trip"], true);
}

#[test]
fn record_push_refused_keeps_the_local_file() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["30"]);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("cpu.folded");
    let stub = Stub::start(vec![Reply::connect_error(
        413,
        "resource_exhausted",
        "too big",
    )]);
    let out = run(&[
        "record",
        "-p",
        &target.pid().to_string(),
        "-d",
        "1s",
        "-q",
        "-o",
        local.to_str().unwrap(),
        "--push",
        &stub.url(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("HTTP 413") && err.contains("resource_exhausted: too big"),
        "{err}"
    );
    assert!(
        err.contains(&format!("the profile was written to {}", local.display())),
        "{err}"
    );
    assert!(total(&read_folded(&local)) > 0, "the local file is kept");
}

/// The windows of one push each: (start ns, duration ns, samples).
fn windows_of(stub: &Stub) -> Vec<(i64, i64, i64)> {
    stub.requests()
        .iter()
        .map(|r| {
            let req = r.push_request();
            assert_eq!(req.series.len(), 1);
            let p = pprof_of(&req.series[0]);
            let samples = p.sample.iter().map(|s| s.value[0]).sum();
            (p.time_nanos, p.duration_nanos, samples)
        })
        .collect()
}

/// `--every 2s -d 7s`: three full windows and the last second, back to
/// back, adding up to what the local file holds and to what one 7 s
/// recording of the same target records.
#[test]
fn continuous_windows_cover_the_recording_without_gaps() {
    require_root!();
    let _cpu = exclusive_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let pid = target.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("all.pb.gz");
    let stub = Stub::start(vec![]);
    // One 7 s recording of the same target at the same time (so that both
    // see the same machine), to compare with.
    let once = dir.path().join("once.pb.gz");
    let reference = Recording::start(&["-p", &pid, "-d", "7s", "-q", "-o", once.to_str().unwrap()]);
    let out = run_ok(&[
        "record",
        "-p",
        &pid,
        "--every",
        "2s",
        "-d",
        "7s",
        "-o",
        local.to_str().unwrap(),
        "--push",
        &stub.url(),
    ]);
    let err = stderr(&out);
    assert!(err.contains("pushed 4 of 4 windows"), "{err}");
    let windows = windows_of(&stub);
    assert_eq!(windows.len(), 4, "{windows:?}");
    for w in windows.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0, "consecutive, no gap: {windows:?}");
    }
    for w in &windows[..3] {
        assert_eq!(w.1, 2_000_000_000, "{windows:?}");
    }
    let last = windows[3].1;
    assert!((900_000_000..1_300_000_000).contains(&last), "{windows:?}");
    let sum: i64 = windows.iter().map(|w| w.2).sum();
    let local_profile = flameprobe::input::read(&local).unwrap();
    assert_eq!(
        sum as u64,
        local_profile.total(0),
        "the local file holds every window"
    );
    assert_eq!(local_profile.meta.start_unix_ns as i64, windows[0].0);

    reference.finish();
    let expected = flameprobe::input::read(&once).unwrap().total(0) as f64;
    let ratio = sum as f64 / expected;
    assert!(
        (0.95..=1.05).contains(&ratio),
        "windows {sum}, one recording {expected}"
    );
}

/// offcpu windows hold the time off the CPU in them: a process asleep
/// for the whole recording gives each window its length.
#[test]
fn continuous_offcpu_windows_hold_the_time_in_the_window() {
    require_root!();
    let sleeper = Target::start(Path::new("/bin/sleep"), &["60"]);
    let stub = Stub::start(vec![]);
    let out = run_ok(&[
        "record",
        "--probe",
        "offcpu",
        "-p",
        &sleeper.pid().to_string(),
        "--every",
        "2s",
        "-d",
        "5s",
        "-q",
        "--push",
        &stub.url(),
    ]);
    assert!(out.stdout.is_empty());
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3, "2 s, 2 s and the last 1 s");
    for r in &reqs {
        let req = r.push_request();
        let s = &req.series[0];
        assert_eq!(label(s, "__name__"), Some("offcpu"));
        assert_eq!(label(s, "service_name"), Some("sleep"));
        let p = pprof_of(s);
        let off: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        let ratio = off as f64 / p.duration_nanos as f64;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "off-CPU {off} ns in a window of {} ns",
            p.duration_nanos
        );
    }
}

/// A receiver that never answers: the windows wait in the spool, the
/// oldest are dropped (said and counted), the local file is written and
/// the exit status says nothing was pushed.
#[test]
fn continuous_mode_keeps_the_spool_bounded_when_the_server_hangs() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let target = Target::start(&bin, &["60"]);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("all.folded");
    let stub = Stub::start(vec![Reply::Silent(Duration::from_secs(30)); 40]);
    let started = Instant::now();
    let out = run(&[
        "record",
        "-p",
        &target.pid().to_string(),
        "--every",
        "1s",
        "-d",
        "5s",
        "-o",
        local.to_str().unwrap(),
        "--push",
        &stub.url(),
        "--push-timeout",
        "1s",
        "--push-spool",
        "1",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the push spool is full (1 windows waiting): dropped the oldest"),
        "{err}"
    );
    assert!(err.contains("no answer within 1.00 s"), "{err}");
    assert!(err.contains("pushed 0 of 5 windows"), "{err}");
    assert!(err.contains("dropped from the full spool"), "{err}");
    assert!(err.contains("error: no window was pushed"), "{err}");
    assert!(total(&read_folded(&local)) > 0, "the local file is written");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "bounded at the end"
    );
}

/// memleak windows are snapshots: each window after the leaks holds what
/// is outstanding at its end, the leaks exactly (the churn was freed).
#[test]
fn continuous_memleak_windows_hold_what_is_outstanding() {
    require_root!();
    let bin = build_c("leaks.c", "leaks-fp", FP_FLAGS);
    let mut target = Handshake::start(&bin, &["wait"]);
    let stub = Stub::start(vec![]);
    let pid = target.pid();
    let rec = Recording::start(&[
        "--probe",
        "memleak",
        "-p",
        &pid,
        "--every",
        "1s",
        "-d",
        "4s",
        "--min-age",
        "0",
        "--push",
        &stub.url(),
    ]);
    target.go();
    let (_, err) = rec.finish();
    assert!(err.contains("pushed 4 of 4 windows"), "{err}");
    let leaked: i64 = crate::memleak::LEAKS.iter().map(|l| l.1 as i64).sum();
    let reqs = stub.requests();
    for r in &reqs[1..] {
        let req = r.push_request();
        let s = &req.series[0];
        assert_eq!(label(s, "__name__"), Some("memory"));
        let p = pprof_of(s);
        let bytes: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        assert_eq!(bytes, leaked, "outstanding at the window's end");
    }
}

/// --push-split pid: one series per process, with its pid and program.
#[test]
fn record_push_split_gives_a_series_per_process() {
    require_root!();
    let _cpu = shared_cpu();
    let bin = ratio_target("ratio-fp", FP_FLAGS);
    let (a, b) = (Target::start(&bin, &["30"]), Target::start(&bin, &["30"]));
    let stub = Stub::start(vec![]);
    let pids = format!("{},{}", a.pid(), b.pid());
    run_ok(&[
        "record",
        "-p",
        &pids,
        "-d",
        "1s",
        "-q",
        "-o",
        "/dev/null",
        "-f",
        "folded",
        "--push",
        &stub.url(),
        "--push-split",
        "pid",
    ]);
    let req = stub.requests()[0].push_request();
    let mut seen: Vec<String> = req
        .series
        .iter()
        .map(|s| {
            assert_eq!(label(s, "process_name"), Some("ratio-fp"));
            assert_eq!(label(s, "service_name"), Some("ratio-fp"));
            let pid = label(s, "pid").unwrap().to_string();
            // Each series holds that process's samples only.
            let p = pprof_of(s);
            let pid_key = p.string_table.iter().position(|x| x == "pid").unwrap() as i64;
            assert!(p.sample.iter().all(|x| x
                .label
                .iter()
                .any(|l| l.key == pid_key && l.num.to_string() == pid)));
            pid
        })
        .collect();
    seen.sort();
    let mut want = vec![a.pid().to_string(), b.pid().to_string()];
    want.sort();
    assert_eq!(seen, want);
}
