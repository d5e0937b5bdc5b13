//! A profile as the receiver stores it: series, each its labels
//! (`__name__` = the profile type, `service_name`, `hostname`, `--label`s,
//! and with `--push-split` the container or process) and a part of the
//! profile.

use std::collections::BTreeMap;

use crate::profile::{units, Labels, ProbeKind, Profile, Stack};

/// Label names the receiver gives a meaning.
pub const NAME: &str = "__name__";
pub const SERVICE: &str = "service_name";
pub const HOSTNAME: &str = "hostname";

/// One series per container or per process (`--push-split`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// One series per container (labels container, pod, namespace);
    /// processes outside containers in one more.
    Container,
    /// One series per process (labels pid, process_name, and its
    /// container's).
    Pid,
}

/// Where `service_name` comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Service {
    /// This name for every series (`--service`, or what the target is
    /// called: its container, its program).
    Fixed(String),
    /// Each series after what it holds: its one container, else its one
    /// program, else this (the host name). For the whole machine and for
    /// files.
    PerSeries(String),
}

/// One series: labels, sorted by name after `__name__` and
/// `service_name`, and its part of the profile.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub profile: Profile,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The receiver's profile type (`__name__`) of a profile: the names
/// Pyroscope knows for CPU (`process_cpu`, with Go's sample types) and
/// memory (`memory`), and one of flameprobe's for the others.
pub fn profile_type(profile: &Profile) -> &'static str {
    match profile.meta.probe {
        Some(ProbeKind::Cpu) => "process_cpu",
        Some(ProbeKind::Memleak) => "memory",
        Some(ProbeKind::Kmemleak) => "kernel_memory",
        Some(ProbeKind::Offcpu) => "offcpu",
        Some(ProbeKind::Wall) => "wall",
        None => {
            let has = |names: &[&str]| {
                profile
                    .sample_types
                    .iter()
                    .any(|t| names.contains(&t.name.as_str()))
            };
            if has(&[
                "inuse_space",
                "alloc_space",
                "inuse_objects",
                "alloc_objects",
            ]) {
                "memory"
            } else if has(&["offcpu"]) {
                "offcpu"
            } else if has(&["wall"]) {
                "wall"
            } else {
                "process_cpu"
            }
        }
    }
}

/// What the legacy ingest API calls the profile type (the last segment of
/// `name`), its `units`, `aggregationType`, and the `sampleRate` that turns
/// folded counts into time.
pub struct IngestType {
    pub name: &'static str,
    pub units: &'static str,
    pub aggregation: &'static str,
    pub sample_rate: Option<u64>,
}

/// The ingest type of a profile whose folded counts are its width (see
/// `output::folded`): samples at the frequency, microseconds (a sample
/// rate of 1 MHz makes them time), or bytes.
pub fn ingest_type(profile: &Profile) -> IngestType {
    let width = &profile.sample_types[Profile::WIDTH];
    let name = match profile_type(profile) {
        "process_cpu" => "cpu",
        "memory" => "inuse_space",
        "kernel_memory" => "kernel_inuse_space",
        other => other,
    };
    match width.unit.as_str() {
        units::BYTES => IngestType {
            name,
            units: "bytes",
            aggregation: "average",
            sample_rate: None,
        },
        units::NANOSECONDS => IngestType {
            name,
            units: "samples",
            aggregation: "sum",
            sample_rate: Some(1_000_000),
        },
        _ if name == "inuse_space" => IngestType {
            name: "inuse_objects",
            units: "objects",
            aggregation: "average",
            sample_rate: None,
        },
        _ => IngestType {
            name,
            units: "samples",
            aggregation: "sum",
            sample_rate: profile.meta.frequency,
        },
    }
}

/// The labels every series of a push carries.
#[derive(Clone, Debug)]
pub struct SeriesLabels {
    pub service: Service,
    pub hostname: String,
    /// `--label k=v`, checked.
    pub extra: Vec<(String, String)>,
    pub split: Option<Split>,
}

/// Splits `profile` into the series it is pushed as.
pub fn series(profile: &Profile, labels: &SeriesLabels) -> Vec<Series> {
    let parts: Vec<(Vec<(String, String)>, Profile)> = match labels.split {
        None => vec![(Vec::new(), profile.clone())],
        Some(split) => {
            let mut keys: BTreeMap<Vec<(String, String)>, ()> = BTreeMap::new();
            for s in &profile.stacks {
                keys.insert(split_labels(&s.labels, split), ());
            }
            keys.into_keys()
                .map(|key| {
                    let mut part = Profile::new(profile.sample_types.clone(), profile.meta.clone());
                    part.period = profile.period.clone();
                    part.extend_from(profile, |s: &Stack| split_labels(&s.labels, split) == key);
                    (key, part)
                })
                .collect()
        }
    };
    let kind = profile_type(profile);
    parts
        .into_iter()
        .map(|(split, part)| {
            let service = match &labels.service {
                Service::Fixed(name) => name.clone(),
                Service::PerSeries(fallback) => {
                    service_of(&part).unwrap_or_else(|| fallback.clone())
                }
            };
            let mut rest: Vec<(String, String)> = vec![(HOSTNAME.into(), labels.hostname.clone())];
            rest.extend(labels.extra.iter().cloned());
            rest.extend(split);
            rest.sort();
            rest.dedup_by(|a, b| a.0 == b.0);
            let mut all = vec![
                (NAME.to_string(), kind.to_string()),
                (SERVICE.into(), service),
            ];
            all.extend(rest);
            Series {
                labels: all,
                profile: part,
            }
        })
        .collect()
}

/// The series labels of a stack under `split`.
fn split_labels(l: &Labels, split: Split) -> Vec<(String, String)> {
    use crate::output::pprof::label;
    let mut out = Vec::new();
    if split == Split::Pid {
        if let Some(pid) = l.pid {
            out.push((label::PID.to_string(), pid.to_string()));
        }
        if let Some(p) = &l.process {
            out.push((label::PROCESS.to_string(), p.clone()));
        }
    }
    for (key, value) in [
        (label::CONTAINER, &l.container),
        (label::POD, &l.pod),
        (label::NAMESPACE, &l.namespace),
    ] {
        if let Some(v) = value {
            out.push((key.to_string(), v.clone()));
        }
    }
    out.sort();
    out
}

/// What a profile's stacks are, as a service: their one container, else
/// their one program.
pub fn service_of(profile: &Profile) -> Option<String> {
    let one = |f: &dyn Fn(&Labels) -> Option<&String>| {
        let mut names = profile.stacks.iter().map(|s| f(&s.labels));
        let first = names.next()??;
        names.all(|n| n == Some(first)).then(|| first.clone())
    };
    one(&|l| l.container.as_ref()).or_else(|| one(&|l| l.process.as_ref()))
}

/// The default `service_name` of a recording: the containers' names for
/// `--container`, the programs' for `--pid` and a command (joined with
/// `,` when several), each series' own on the whole machine.
pub fn service_for_target(names: &[String], hostname: &str) -> Service {
    let mut distinct: Vec<&str> = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !distinct.contains(&n) {
            distinct.push(n);
        }
    }
    if distinct.is_empty() {
        Service::PerSeries(hostname.to_string())
    } else {
        Service::Fixed(distinct.join(","))
    }
}

/// This machine's name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Checks a `--label NAME=VALUE`: a Prometheus label name (letters,
/// digits, `_`, not starting with a digit or `__`), not one flameprobe
/// sets itself, and a non-empty value.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!("--label '{s}': expected NAME=VALUE, e.g. env=prod"));
    };
    let (name, value) = (name.trim(), value.trim());
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid {
        return Err(format!(
            "--label '{s}': '{name}' is not a label name (letters, digits and _, not \
             starting with a digit)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "--label '{s}': names starting with __ are reserved by the receiver"
        ));
    }
    if name == SERVICE {
        return Err(format!(
            "--label '{s}': set the service with --service NAME"
        ));
    }
    if name == HOSTNAME {
        return Err(format!(
            "--label '{s}': flameprobe sets hostname itself (to this machine's name)"
        ));
    }
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(format!(
            "--label '{s}': the value must be non-empty, without control characters"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Meta, ValueType};

    fn profile() -> Profile {
        let mut p = Profile::new(
            vec![
                ValueType::new("samples", units::COUNT),
                ValueType::new("cpu", units::NANOSECONDS),
            ],
            Meta {
                probe: Some(ProbeKind::Cpu),
                frequency: Some(99),
                ..Meta::default()
            },
        );
        let main = p.intern_named(FrameKind::User, "main");
        let l = |pid: u32, con: Option<&str>| Labels {
            pid: Some(pid),
            tid: Some(pid),
            process: Some(format!("app{pid}")),
            container: con.map(String::from),
            ..Labels::default()
        };
        p.add(l(1, Some("web")), vec![main], &[3, 30]);
        p.add(l(2, Some("web")), vec![main], &[2, 20]);
        p.add(l(3, None), vec![main], &[1, 10]);
        p
    }

    fn labels(split: Option<Split>, service: Service) -> SeriesLabels {
        SeriesLabels {
            service,
            hostname: "h1".into(),
            extra: vec![("env".into(), "prod".into())],
            split,
        }
    }

    #[test]
    fn one_series_carries_type_service_host_and_labels() {
        let s = series(&profile(), &labels(None, Service::Fixed("shop".into())));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].labels,
            [
                ("__name__".to_string(), "process_cpu".to_string()),
                ("service_name".into(), "shop".into()),
                ("env".into(), "prod".into()),
                ("hostname".into(), "h1".into()),
            ]
        );
        assert_eq!(s[0].profile.total(0), 6);
    }

    #[test]
    fn splits_by_container_and_by_process() {
        let per = Service::PerSeries("h1".into());
        let s = series(&profile(), &labels(Some(Split::Container), per.clone()));
        assert_eq!(s.len(), 2);
        // Host processes first (no container label), then web's.
        assert_eq!(s[0].label("container"), None);
        assert_eq!(s[0].label("service_name"), Some("app3"));
        assert_eq!(s[1].label("container"), Some("web"));
        assert_eq!(s[1].label("service_name"), Some("web"));
        assert_eq!((s[0].profile.total(0), s[1].profile.total(0)), (1, 5));
        let s = series(&profile(), &labels(Some(Split::Pid), per));
        assert_eq!(s.len(), 3);
        let pids: Vec<_> = s.iter().map(|s| s.label("pid").unwrap()).collect();
        assert_eq!(pids, ["1", "2", "3"]);
        assert_eq!(s[0].label("process_name"), Some("app1"));
        assert_eq!(s[0].label("container"), Some("web"));
        assert_eq!(s[0].label("service_name"), Some("web"));
        let fixed = series(
            &profile(),
            &labels(Some(Split::Pid), Service::Fixed("shop".into())),
        );
        assert!(fixed
            .iter()
            .all(|s| s.label("service_name") == Some("shop")));
    }

    #[test]
    fn service_names_follow_the_target() {
        assert_eq!(
            service_for_target(&["web".into(), "web".into()], "h"),
            Service::Fixed("web".into())
        );
        assert_eq!(
            service_for_target(&["a".into(), "b".into()], "h"),
            Service::Fixed("a,b".into())
        );
        assert_eq!(service_for_target(&[], "h"), Service::PerSeries("h".into()));
        assert_eq!(service_of(&profile()), None, "two containers' worth");
    }

    #[test]
    fn profile_types_and_ingest_units() {
        let p = profile();
        assert_eq!(profile_type(&p), "process_cpu");
        let t = ingest_type(&p);
        assert_eq!(
            (t.name, t.units, t.sample_rate),
            ("cpu", "samples", Some(99))
        );
        let mut mem = Profile::new(
            vec![
                ValueType::new("inuse_space", units::BYTES),
                ValueType::new("inuse_objects", units::COUNT),
            ],
            Meta::default(),
        );
        mem.meta.probe = Some(ProbeKind::Memleak);
        let t = ingest_type(&mem);
        assert_eq!(profile_type(&mem), "memory");
        assert_eq!(
            (t.name, t.units, t.aggregation),
            ("inuse_space", "bytes", "average")
        );
        let off = Profile::new(
            vec![ValueType::new("offcpu", units::NANOSECONDS)],
            Meta::default(),
        );
        let t = ingest_type(&off);
        assert_eq!(
            (t.name, t.units, t.sample_rate),
            ("offcpu", "samples", Some(1_000_000))
        );
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert_eq!(parse_label("a_1= x "), Ok(("a_1".into(), "x".into())));
        for bad in [
            "env",
            "=x",
            "1a=x",
            "a-b=x",
            "__x=y",
            "service_name=x",
            "hostname=x",
            "a=",
        ] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }
}
