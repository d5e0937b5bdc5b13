//! An HTTP server for the push contract tests: it records every request
//! (method, path, query, headers, body) and answers from a script, so
//! tests can decode what flameprobe sent and play a receiver that refuses,
//! rate-limits, fails or never answers. Loopback only; it stops when
//! dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;

use flameprobe::push::proto;

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The query's parameters, %-decoded.
    pub fn params(&self) -> Vec<(String, String)> {
        self.query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The body as the push API's request.
    pub fn push_request(&self) -> proto::PushRequest {
        proto::PushRequest::decode(&self.body[..]).expect("a PushRequest body")
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// How the server answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, extra headers, body.
    Status(u16, Vec<(String, String)>, String),
    /// No answer for this long, then the connection is closed.
    Silent(Duration),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status(
            200,
            vec![("Content-Type".into(), "application/proto".into())],
            String::new(),
        )
    }

    /// The Connect protocol's error envelope.
    pub fn connect_error(status: u16, code: &str, message: &str) -> Reply {
        Reply::Status(
            status,
            vec![("Content-Type".into(), "application/json".into())],
            format!(r#"{{"code":"{code}","message":"{message}"}}"#),
        )
    }
}

/// A recording receiver on 127.0.0.1.
pub struct Stub {
    pub port: u16,
    requests: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// Answers the requests with `script` in order, then with 200.
    pub fn start(script: Vec<Reply>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let (reqs, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (reqs, script, halt) = (reqs.clone(), script.clone(), halt.clone());
                        std::thread::spawn(move || serve(conn, &reqs, &script, &halt));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Stub {
            port,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until `n` requests came (at most `limit`).
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Req> {
        let start = Instant::now();
        while self.requests.lock().unwrap().len() < n && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.requests()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    conn: TcpStream,
    reqs: &Mutex<Vec<Req>>,
    script: &Mutex<std::vec::IntoIter<Reply>>,
    halt: &AtomicBool,
) {
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    while !halt.load(Ordering::Relaxed) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        reqs.lock().unwrap().push(Req {
            method,
            path,
            query,
            headers,
            body,
        });
        let reply = script.lock().unwrap().next().unwrap_or_else(Reply::ok);
        match reply {
            Reply::Silent(d) => {
                std::thread::sleep(d);
                return;
            }
            Reply::Status(code, extra, body) => {
                let mut head = format!(
                    "HTTP/1.1 {code} {}\r\nContent-Length: {}\r\n",
                    if code == 200 { "OK" } else { "Error" },
                    body.len()
                );
                for (n, v) in extra {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if conn.write_all(head.as_bytes()).is_err()
                    || conn.write_all(body.as_bytes()).is_err()
                {
                    return;
                }
            }
        }
    }
}

/// A series' labels as (name, value) pairs.
pub fn labels(s: &proto::RawProfileSeries) -> Vec<(String, String)> {
    s.labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

pub fn label<'a>(s: &'a proto::RawProfileSeries, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// The machine's name, as flameprobe labels series with it.
pub fn hostname() -> String {
    flameprobe::push::series::hostname()
}

/// Decodes a push request body with the second decoder (Python's
/// protobuf from src/push/push.proto); returns its JSON.
pub fn python_decode(body: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    std::fs::write(&file, body).unwrap();
    let root = crate::util::repo_root();
    let out = Command::new("python3")
        .arg(root.join("tests/push/decode_push.py"))
        .arg(root.join("src/push/push.proto"))
        .arg(&file)
        .env("PYTHONPATH", root.join("target/pydeps"))
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "decode_push.py failed (scripts/install-deps.sh installs grpcio-tools into target/pydeps): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes a series' pprof to a file, for `go tool pprof`.
pub fn write_raw(s: &proto::RawProfileSeries, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &s.samples[0].raw_profile).unwrap();
    path
}

/// The samples of `go tool pprof -raw` output: (the first value, the
/// function of each location, leaf first) per sample.
pub fn raw_samples(raw: &str) -> Vec<(i64, Vec<String>)> {
    let mut samples: Vec<(i64, Vec<u64>)> = Vec::new();
    let mut names = std::collections::HashMap::new();
    let mut section = "";
    for line in raw.lines() {
        let t = line.trim();
        match t {
            "Samples:" | "Locations" | "Mappings" => {
                section = t;
                continue;
            }
            _ => {}
        }
        let Some((head, rest)) = t.split_once(':') else {
            continue;
        };
        match section {
            // "3   30000000: 1 2 3" (values: location ids); label lines
            // ("pid:[5]") do not start with numbers.
            "Samples:" => {
                let values: Vec<i64> = head
                    .split_whitespace()
                    .map_while(|v| v.parse().ok())
                    .collect();
                if values.is_empty() || values.len() != head.split_whitespace().count() {
                    continue;
                }
                let locs = rest
                    .split_whitespace()
                    .filter_map(|l| l.parse().ok())
                    .collect();
                samples.push((values[0], locs));
            }
            // "1: 0x5100 M=1 main app.c:10 s=0"
            "Locations" => {
                if let Ok(id) = head.parse::<u64>() {
                    let name = rest.split_whitespace().nth(2).unwrap_or("").to_string();
                    names.insert(id, name);
                }
            }
            _ => {}
        }
    }
    samples
        .into_iter()
        .map(|(v, locs)| {
            (
                v,
                locs.iter()
                    .map(|l| names.get(l).cloned().unwrap_or_default())
                    .collect(),
            )
        })
        .collect()
}
