//! Pushing profiles to Grafana Pyroscope: `record --push URL` (once, or a
//! window at a time with `--every`) and `flameprobe push FILE...`.
//!
//! ```text
//! Profile -> series (labels: __name__, service_name, hostname, --label,
//!            --push-split) -> requests of one API:
//!   push    POST {URL}/push.v1.PusherService/Push (Connect, unary):
//!           PushRequest{series: [{labels, samples: [{gzipped pprof, ID}]}]}
//!   ingest  POST {URL}/ingest?name=SERVICE.TYPE{k=v,...}&from&until&...,
//!           one per series, the folded stacks as the body
//! -> client (ureq, rustls with the system roots; errors name what the
//!    server said and whether a retry can help)
//! ```
//!
//! The pprof is the project's one encoder (`output::pprof`), the folded
//! body its folded writer. Continuous mode's sender thread and bounded
//! spool are in [`sender`].

pub mod client;
pub mod proto;
pub mod sender;
pub mod series;
pub mod url;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use prost::Message;

use crate::profile::{FrameNameOptions, Profile};
use client::{Client, PushError, Request, Retry};
use series::{Series, SeriesLabels, Service, Split};
pub use url::Endpoint;

/// Content type of the push API's protobuf requests (Connect, unary).
pub const PROTO_CONTENT_TYPE: &str = "application/proto";
/// Path of the push API under the receiver's URL.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";
/// Path of the legacy ingest API.
pub const INGEST_PATH: &str = "/ingest";

/// Which of the receiver's APIs is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// The push API (`push.v1.PusherService/Push`): what Grafana Alloy and
    /// the Pyroscope SDKs use; pprof with every sample type and label.
    #[default]
    Push,
    /// The legacy `/ingest` API of older servers: folded stacks, one
    /// value per stack.
    Ingest,
}

/// Windows kept waiting while the receiver cannot take them (`--push-spool`).
pub const DEFAULT_SPOOL: usize = 16;

/// Where and how profiles are pushed (validated).
#[derive(Clone, Debug)]
pub struct PushConfig {
    pub endpoint: Endpoint,
    pub api: Api,
    /// `--push-header`s.
    pub headers: Vec<(String, String)>,
    /// `--service`.
    pub service: Option<String>,
    /// `--label`s.
    pub labels: Vec<(String, String)>,
    pub split: Option<Split>,
    /// Longest time one request may take.
    pub timeout: Duration,
    /// Continuous mode: windows held while pushes fail.
    pub spool: usize,
    /// Frame names of ingest's folded bodies.
    pub folded: FrameNameOptions,
}

impl PushConfig {
    /// Checks the user's settings: the URL, headers and labels.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        url: &str,
        api: Api,
        headers: &[String],
        service: Option<String>,
        labels: &[String],
        split: Option<Split>,
        timeout: Option<Duration>,
        spool: Option<usize>,
    ) -> Result<PushConfig, String> {
        let endpoint = Endpoint::parse(url)?;
        let headers = headers
            .iter()
            .map(|h| client::parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoint.basic_auth.is_some()
            && headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            return Err(
                "credentials in the URL and an Authorization --push-header: give one".into(),
            );
        }
        let labels = labels
            .iter()
            .map(|l| series::parse_label(l))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, (name, _)) in labels.iter().enumerate() {
            if labels[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("--label {name} is given twice"));
            }
            if split.is_some()
                && ["container", "pod", "namespace", "pid", "process_name"].contains(&name.as_str())
            {
                return Err(format!(
                    "--label {name}: --push-split sets this label on each series"
                ));
            }
        }
        let service = match service.map(|s| s.trim().to_string()) {
            Some(s) if s.is_empty() || s.chars().any(char::is_control) => {
                return Err("--service: give a non-empty name without control characters".into())
            }
            other => other,
        };
        if spool == Some(0) {
            return Err("--push-spool must be at least 1".into());
        }
        Ok(PushConfig {
            endpoint,
            api,
            headers,
            service,
            labels,
            split,
            timeout: timeout.unwrap_or(client::REQUEST_TIMEOUT),
            spool: spool.unwrap_or(DEFAULT_SPOOL),
            folded: FrameNameOptions::default(),
        })
    }

    /// The labels of every series, with `default` as the service when
    /// `--service` was not given.
    pub fn series_labels(&self, default: Service) -> SeriesLabels {
        SeriesLabels {
            service: match &self.service {
                Some(s) => Service::Fixed(s.clone()),
                None => default,
            },
            hostname: series::hostname(),
            extra: self.labels.clone(),
            split: self.split,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(self.endpoint.clone(), &self.headers, self.timeout)
    }
}

/// What a push sends: its requests, and how to describe them.
pub struct Push {
    pub requests: Vec<Request>,
    /// Series sent, and their labels (for messages).
    pub series: Vec<Vec<(String, String)>>,
    pub bytes: usize,
}

impl Push {
    /// One line for people: the type, the services and the size.
    pub fn describe(&self) -> String {
        let mut services: Vec<&str> = self
            .series
            .iter()
            .filter_map(|l| l.iter().find(|(n, _)| n == series::SERVICE))
            .map(|(_, v)| v.as_str())
            .collect();
        services.dedup();
        let kind = self
            .series
            .first()
            .and_then(|l| l.iter().find(|(n, _)| n == series::NAME))
            .map_or("", |(_, v)| v.as_str());
        let shown: Vec<&str> = services.iter().take(3).copied().collect();
        format!(
            "{kind}, {} series, service_name {}{}, {}",
            self.series.len(),
            shown.join(", "),
            if services.len() > 3 { ", ..." } else { "" },
            crate::profile::units::format(crate::profile::units::BYTES, self.bytes as u64)
        )
    }
}

/// The requests that push `profile` (its `meta` giving the time range)
/// with `labels`; none when it holds no stack.
pub fn build(profile: &Profile, config: &PushConfig, labels: &SeriesLabels) -> Push {
    let all: Vec<Series> = series::series(profile, labels)
        .into_iter()
        .filter(|s| !s.profile.stacks.is_empty())
        .collect();
    let described = all.iter().map(|s| s.labels.clone()).collect();
    let requests = match config.api {
        Api::Push => {
            if all.is_empty() {
                Vec::new()
            } else {
                vec![push_request(&all)]
            }
        }
        Api::Ingest => all
            .iter()
            .map(|s| ingest_request(s, &config.folded))
            .collect(),
    };
    let bytes = requests.iter().map(|r| r.body.len()).sum();
    Push {
        requests,
        series: described,
        bytes,
    }
}

fn push_request(all: &[Series]) -> Request {
    let series = all
        .iter()
        .map(|s| {
            let mut raw = Vec::new();
            // Writing into memory cannot fail.
            let _ = crate::output::pprof::write(&s.profile, &mut raw);
            proto::RawProfileSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| proto::LabelPair {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: vec![proto::RawSample {
                    raw_profile: raw,
                    id: uuid(),
                }],
            }
        })
        .collect();
    Request {
        path: PUSH_PATH.into(),
        content_type: PROTO_CONTENT_TYPE,
        body: proto::PushRequest { series }.encode_to_vec(),
    }
}

fn ingest_request(s: &Series, folded: &FrameNameOptions) -> Request {
    let p = &s.profile;
    let t = series::ingest_type(p);
    let service = s.label(series::SERVICE).unwrap_or("flameprobe");
    let tags: Vec<String> = s
        .labels
        .iter()
        .filter(|(n, _)| n != series::NAME && n != series::SERVICE)
        .map(|(n, v)| format!("{n}={}", ingest_value(v)))
        .collect();
    let name = format!("{}.{}{{{}}}", ingest_value(service), t.name, tags.join(","));
    let (from, until) = time_range(p);
    let mut query = format!(
        "name={}&from={}&until={}&format=folded&spyName=flameprobe&units={}&aggregationType={}",
        url::query_escape(&name),
        from / 1_000_000_000,
        until / 1_000_000_000,
        t.units,
        t.aggregation
    );
    if let Some(rate) = t.sample_rate {
        query.push_str(&format!("&sampleRate={rate}"));
    }
    let mut body = Vec::new();
    let _ = crate::output::folded::write(p, folded, &mut body);
    Request {
        path: format!("{INGEST_PATH}?{query}"),
        content_type: "text/plain",
        body,
    }
}

/// A label value inside ingest's `name`, where `{`, `}`, `,` and `=`
/// delimit: those (and white space) become `_`.
fn ingest_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if "{},=".contains(c) || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A profile's time range in nanoseconds since the epoch (start, end).
pub fn time_range(p: &Profile) -> (u64, u64) {
    let from = p.meta.start_unix_ns;
    (from, from.saturating_add(p.meta.duration_ns))
}

/// A random (version 4) UUID, for a sample's ID.
fn uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Tries of a push that is not in continuous mode.
const ONE_SHOT_TRIES: u32 = 3;
/// Longest wait between them.
const ONE_SHOT_MAX_WAIT: Duration = Duration::from_secs(10);

/// Sends `push` now, retrying what can succeed later (a rate limit, a
/// server error, no answer) twice, after 1 s and 2 s (or what the server
/// asked, up to 10 s). Every retry is said on stderr.
pub fn send_now(client: &Client, push: &Push) -> Result<(), PushError> {
    for req in &push.requests {
        let mut wait = Duration::from_secs(1);
        let mut tries = 1;
        loop {
            match client.send(req) {
                Ok(()) => break,
                Err(e) => match e.retry {
                    Retry::Later(after) if tries < ONE_SHOT_TRIES => {
                        let pause = after.unwrap_or(wait).min(ONE_SHOT_MAX_WAIT);
                        log::warn!("{e}; trying again in {}s", pause.as_secs_f64());
                        std::thread::sleep(pause);
                        wait *= 2;
                        tries += 1;
                    }
                    _ => return Err(e),
                },
            }
        }
    }
    Ok(())
}

/// Everything `flameprobe push` needs.
#[derive(Clone, Debug)]
pub struct PushFilesConfig {
    pub files: Vec<PathBuf>,
    pub push: PushConfig,
    pub quiet: bool,
}

/// `flameprobe push FILE...`: reads each profile (pprof or folded) and
/// pushes it. A file that cannot be read or pushed gets one line and the
/// others are still pushed; the exit status says if any failed.
pub fn run(config: &PushFilesConfig) -> Result<()> {
    let client = config.push.client();
    let single = config.files.len() == 1;
    let mut failed = Vec::new();
    for path in &config.files {
        match push_file(&client, config, path) {
            Ok(push) => {
                if !config.quiet {
                    eprintln!(
                        "flameprobe: pushed {} to {} ({})",
                        path.display(),
                        client.endpoint(),
                        push.describe()
                    );
                }
            }
            // One file: its error is the one line.
            Err(e) if single => return Err(e),
            Err(e) => {
                eprintln!("flameprobe: error: {e:#}");
                failed.push(path.display().to_string());
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        n => bail!(
            "{n} of {} files were not pushed: {}",
            config.files.len(),
            failed.join(", ")
        ),
    }
}

fn push_file(client: &Client, config: &PushFilesConfig, path: &std::path::Path) -> Result<Push> {
    let mut profile = crate::input::read(path).map_err(|e| anyhow::anyhow!("{e}; not pushed"))?;
    fill_time_range(&mut profile, path);
    let default = Service::PerSeries(series::hostname());
    let push = build(&profile, &config.push, &config.push.series_labels(default));
    if push.requests.is_empty() {
        bail!("{}: the profile holds no stack; not pushed", path.display());
    }
    send_now(client, &push).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(push)
}

/// A profile without a start time (folded files, some pprof files) covers
/// the time up to its file's modification (now for standard input): its
/// duration when known, else 10 s.
fn fill_time_range(p: &mut Profile, path: &std::path::Path) {
    if p.meta.start_unix_ns != 0 {
        return;
    }
    let end = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let end_ns = end
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    if p.meta.duration_ns == 0 {
        p.meta.duration_ns = 10_000_000_000;
    }
    p.meta.start_unix_ns = end_ns.saturating_sub(p.meta.duration_ns);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{units, FrameKind, Labels, Meta, ProbeKind, ValueType};

    fn config(api: Api) -> PushConfig {
        PushConfig::new(
            "http://u:p@localhost:4040/base",
            api,
            &["X-Scope-OrgID: t1".into()],
            None,
            &["env=prod".into()],
            None,
            None,
            None,
        )
        .unwrap()
    }

    fn profile() -> Profile {
        let mut p = Profile::new(
            vec![
                ValueType::new("samples", units::COUNT),
                ValueType::new("cpu", units::NANOSECONDS),
            ],
            Meta {
                probe: Some(ProbeKind::Cpu),
                frequency: Some(99),
                start_unix_ns: 1_700_000_000_500_000_000,
                duration_ns: 2_000_000_000,
                ..Meta::default()
            },
        );
        let main = p.intern_named(FrameKind::User, "main");
        let labels = Labels {
            pid: Some(5),
            process: Some("app".into()),
            ..Labels::default()
        };
        p.add(labels, vec![main], &[4, 40]);
        p
    }

    #[test]
    fn push_api_request_holds_series_and_gzipped_pprof() {
        let c = config(Api::Push);
        let labels = c.series_labels(Service::Fixed("app".into()));
        let push = build(&profile(), &c, &labels);
        assert_eq!(push.requests.len(), 1);
        let r = &push.requests[0];
        assert_eq!(r.path, PUSH_PATH);
        assert_eq!(r.content_type, PROTO_CONTENT_TYPE);
        let req = proto::PushRequest::decode(&r.body[..]).unwrap();
        assert_eq!(req.series.len(), 1);
        let names: Vec<_> = req.series[0]
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(names[0], ("__name__", "process_cpu"));
        assert_eq!(names[1], ("service_name", "app"));
        assert!(names.contains(&("env", "prod")));
        let sample = &req.series[0].samples[0];
        assert_eq!(&sample.raw_profile[..2], &[0x1f, 0x8b]);
        assert_eq!(sample.id.len(), 36);
        let back = crate::input::parse("p", &sample.raw_profile).unwrap();
        assert_eq!(back.total(0), 4);
        assert!(push
            .describe()
            .contains("process_cpu, 1 series, service_name app"));
    }

    #[test]
    fn ingest_request_has_the_query_and_folded_body() {
        let c = config(Api::Ingest);
        let labels = c.series_labels(Service::Fixed("my app".into()));
        let push = build(&profile(), &c, &labels);
        let r = &push.requests[0];
        let (path, query) = r.path.split_once('?').unwrap();
        assert_eq!(path, INGEST_PATH);
        let host = series::hostname();
        let name = format!("my_app.cpu{{env=prod,hostname={}}}", ingest_value(&host));
        assert!(
            query.starts_with(&format!("name={}&", url::query_escape(&name))),
            "{query}"
        );
        for part in [
            "from=1700000000",
            "until=1700000002",
            "format=folded",
            "units=samples",
            "aggregationType=sum",
            "sampleRate=99",
            "spyName=flameprobe",
        ] {
            assert!(query.split('&').any(|q| q == part), "{part} in {query}");
        }
        assert_eq!(String::from_utf8_lossy(&r.body), "[5]app;main 4\n");
    }

    #[test]
    fn settings_are_checked() {
        let ok = |labels: &[String], headers: &[String], split| {
            PushConfig::new(
                "http://h",
                Api::Push,
                headers,
                None,
                labels,
                split,
                None,
                None,
            )
        };
        assert!(ok(&["a=1".into(), "a=2".into()], &[], None).is_err());
        assert!(ok(&["pid=1".into()], &[], Some(Split::Pid)).is_err());
        assert!(ok(&["pid=1".into()], &[], None).is_ok());
        let err = PushConfig::new(
            "http://u:p@h",
            Api::Push,
            &["Authorization: Bearer x".into()],
            None,
            &[],
            None,
            None,
            None,
        )
        .unwrap_err();
        assert!(err.contains("give one"), "{err}");
        assert!(PushConfig::new(
            "http://h",
            Api::Push,
            &[],
            Some(" ".into()),
            &[],
            None,
            None,
            None
        )
        .is_err());
        assert!(
            PushConfig::new("http://h", Api::Push, &[], None, &[], None, None, Some(0)).is_err()
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let (a, b) = (uuid(), uuid());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[14], b'4');
    }
}
