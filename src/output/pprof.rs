//! pprof output: the `profile.proto` messages of google/pprof as prost
//! derive structs (no protoc at build time), encoded from a [`Profile`] and
//! gzip-compressed as `go tool pprof`, Pyroscope and Grafana read them.
//!
//! Conventions shared with the reader in `input::pprof` (the one place they
//! are defined is here):
//! - the profile's sample types, in order; `default_sample_type` names the
//!   one reports show ([`Profile::display_index`]), and the `probe`
//!   comment marks a file as flameprobe's, whose first type is the width;
//! - user locations carry a run-time address inside their mapping's
//!   `[memory_start, memory_limit)`, derived from the model's file offset;
//! - kernel and JIT locations without a module get the synthetic mappings
//!   [`KERNEL_MAPPING`] and [`JIT_MAPPING`], so their kind survives a round
//!   trip;
//! - [`Labels`](crate::profile::Labels) become the sample labels named in
//!   [`label`]; recording facts become `key: value` comments ([`comment`]).

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::profile::{FrameKind, Profile};

/// The messages of pprof's `profile.proto` (package perftools.profiles).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        /// Index 0 is always "".
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Leaf first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Innermost (inlined) function first.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// Mapping name of kernel locations that have no module.
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
/// Mapping name of JIT locations that have no module.
pub const JIT_MAPPING: &str = "[jit]";

/// Sample label keys.
pub mod label {
    pub const PID: &str = "pid";
    pub const TID: &str = "tid";
    pub const PROCESS: &str = "process_name";
    pub const THREAD: &str = "thread_name";
    pub const CONTAINER: &str = "container";
    pub const CONTAINER_ID: &str = "container_id";
    pub const POD: &str = "pod";
    pub const NAMESPACE: &str = "namespace";
}

/// Keys of the `key: value` comments that carry [`Meta`](crate::profile::Meta)
/// fields pprof has no place for.
pub mod comment {
    pub const TARGET: &str = "target";
    pub const PROBE: &str = "probe";
    pub const FREQUENCY: &str = "frequency_hz";
    pub const LOST: &str = "lost";
}

/// Interns strings into pprof's string table (index 0 is "").
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn is_shared_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

/// Builds the pprof message for a profile.
pub fn encode(profile: &Profile) -> proto::Profile {
    let mut strings = Strings::new();
    let mut out = proto::Profile::default();

    for t in &profile.sample_types {
        out.sample_type.push(proto::ValueType {
            r#type: strings.get(&t.name),
            unit: strings.get(&t.unit),
        });
    }
    let display = &profile.sample_types[profile.display_index()];
    out.default_sample_type = strings.get(&display.name);
    // Only sampled profiles have a period (pprof's are optional): an
    // off-CPU or leak profile has none to claim.
    if let Some((period_type, period)) = &profile.period {
        out.period_type = Some(proto::ValueType {
            r#type: strings.get(&period_type.name),
            unit: strings.get(&period_type.unit),
        });
        out.period = to_i64(*period);
    }
    out.time_nanos = to_i64(profile.meta.start_unix_ns);
    out.duration_nanos = to_i64(profile.meta.duration_ns);

    // Mappings: one per module, then the synthetic ones. pprof takes the
    // first mapping for the main binary: executables before libraries.
    let mut order: Vec<usize> = (0..profile.modules.len()).collect();
    order.sort_by_key(|&m| is_shared_library(&profile.modules[m].path));
    let mut mapping_of_module = vec![0; profile.modules.len()];
    for (i, &m) in order.iter().enumerate() {
        let module = &profile.modules[m];
        mapping_of_module[m] = i;
        out.mapping.push(proto::Mapping {
            id: i as u64 + 1,
            memory_start: module.start,
            memory_limit: module.end,
            file_offset: module.file_offset,
            filename: strings.get(&module.path),
            build_id: strings.get(module.build_id.as_deref().unwrap_or("")),
            ..Default::default()
        });
    }
    let mut synthetic: HashMap<&str, usize> = HashMap::new();
    let mut functions: HashMap<(&str, Option<&str>, Option<&str>), u64> = HashMap::new();
    for (i, loc) in profile.locations.iter().enumerate() {
        let (mapping, address) = match (loc.module, loc.kind) {
            (Some(m), _) => {
                let module = &profile.modules[m];
                // The model keeps file offsets; pprof wants an address in
                // the mapping: start + (offset - file_offset).
                let address = module
                    .start
                    .wrapping_add(loc.address.wrapping_sub(module.file_offset));
                (Some(mapping_of_module[m]), address)
            }
            (None, FrameKind::Kernel | FrameKind::Jit) => {
                let name = if loc.kind == FrameKind::Kernel {
                    KERNEL_MAPPING
                } else {
                    JIT_MAPPING
                };
                let idx = *synthetic.entry(name).or_insert_with(|| {
                    out.mapping.push(proto::Mapping {
                        id: out.mapping.len() as u64 + 1,
                        memory_start: u64::MAX,
                        memory_limit: 0,
                        filename: strings.get(name),
                        ..Default::default()
                    });
                    out.mapping.len() - 1
                });
                (Some(idx), loc.address)
            }
            (None, _) => (None, loc.address),
        };
        if let Some(idx) = mapping {
            let m = &mut out.mapping[idx];
            if synthetic.values().any(|&s| s == idx) {
                m.memory_start = m.memory_start.min(address);
            }
            // Widen the range to hold every address (a module is known by
            // the first mapping seen; its code may span more).
            m.memory_limit = m.memory_limit.max(address.saturating_add(1));
            m.has_functions = true;
            if loc.lines.iter().any(|l| l.file.is_some()) {
                m.has_filenames = true;
            }
            if loc.lines.iter().any(|l| l.line.is_some()) {
                m.has_line_numbers = true;
            }
            if loc.lines.len() > 1 {
                m.has_inline_frames = true;
            }
        }
        let mut lines = Vec::with_capacity(loc.lines.len());
        for line in &loc.lines {
            let key = (
                line.function.as_str(),
                line.system_name.as_deref(),
                line.file.as_deref(),
            );
            let id = match functions.get(&key) {
                Some(&id) => id,
                None => {
                    let id = out.function.len() as u64 + 1;
                    let name = strings.get(&line.function);
                    out.function.push(proto::Function {
                        id,
                        name,
                        system_name: line.system_name.as_deref().map_or(name, |s| strings.get(s)),
                        filename: strings.get(line.file.as_deref().unwrap_or("")),
                        start_line: 0,
                    });
                    functions.insert(key, id);
                    id
                }
            };
            lines.push(proto::Line {
                function_id: id,
                line: i64::from(line.line.unwrap_or(0)),
                column: 0,
            });
        }
        out.location.push(proto::Location {
            id: i as u64 + 1,
            mapping_id: mapping.map_or(0, |m| m as u64 + 1),
            address,
            line: lines,
            is_folded: false,
        });
    }
    for m in &mut out.mapping {
        if m.memory_start > m.memory_limit {
            m.memory_start = 0;
        }
    }

    for stack in &profile.stacks {
        if stack.values.iter().all(|&v| v == 0) {
            continue;
        }
        let value = stack.values.iter().map(|&v| to_i64(v)).collect();
        let mut labels = Vec::new();
        let l = &stack.labels;
        for (key, num) in [(label::PID, l.pid), (label::TID, l.tid)] {
            if let Some(n) = num {
                labels.push(proto::Label {
                    key: strings.get(key),
                    num: i64::from(n),
                    ..Default::default()
                });
            }
        }
        for (key, text) in [
            (label::PROCESS, &l.process),
            (label::THREAD, &l.thread),
            (label::CONTAINER, &l.container),
            (label::CONTAINER_ID, &l.container_id),
            (label::POD, &l.pod),
            (label::NAMESPACE, &l.namespace),
        ] {
            if let Some(s) = text {
                labels.push(proto::Label {
                    key: strings.get(key),
                    str: strings.get(s),
                    ..Default::default()
                });
            }
        }
        out.sample.push(proto::Sample {
            location_id: stack
                .locations
                .iter()
                .rev()
                .map(|&l| l as u64 + 1)
                .collect(),
            value,
            label: labels,
        });
    }

    let m = &profile.meta;
    let mut comments = Vec::new();
    if !m.target.is_empty() {
        comments.push(format!("{}: {}", comment::TARGET, m.target));
    }
    if let Some(probe) = m.probe {
        comments.push(format!("{}: {}", comment::PROBE, probe.name()));
    }
    if let Some(hz) = m.frequency {
        comments.push(format!("{}: {hz}", comment::FREQUENCY));
    }
    if m.lost > 0 {
        comments.push(format!("{}: {}", comment::LOST, m.lost));
    }
    out.comment = comments.iter().map(|c| strings.get(c)).collect();

    out.string_table = strings.table;
    out
}

/// Writes the gzip-compressed pprof encoding of `profile`.
pub fn write(profile: &Profile, w: &mut dyn Write) -> io::Result<()> {
    let bytes = encode(profile).encode_to_vec();
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{units, Labels, Line, Location, Meta, Module, ProbeKind, ValueType};

    fn sample_profile() -> Profile {
        let meta = Meta {
            target: "pid 7".into(),
            start_unix_ns: 1_700_000_000_000_000_000,
            duration_ns: 2_000_000_000,
            frequency: Some(100),
            lost: 0,
            probe: Some(ProbeKind::Cpu),
        };
        let cpu = ValueType::new("cpu", units::NANOSECONDS);
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT), cpu.clone()],
            meta,
        );
        p.period = Some((cpu, 10_000_000));
        let m = p.intern_module(Module {
            path: "/usr/bin/app".into(),
            build_id: Some("abcd".into()),
            start: 0x5000,
            end: 0x9000,
            file_offset: 0x1000,
        });
        let main = p.intern_location(Location {
            kind: FrameKind::User,
            module: Some(m),
            address: 0x1100,
            lines: vec![Line {
                function: "main".into(),
                file: Some("app.c".into()),
                line: Some(10),
                system_name: None,
            }],
        });
        let inl = p.intern_location(Location {
            kind: FrameKind::User,
            module: Some(m),
            address: 0x1200,
            lines: vec![Line::named("inner"), Line::named("outer")],
        });
        let k = p.intern_location(Location {
            kind: FrameKind::Kernel,
            module: None,
            address: 0xffff_ffff_8100_0000,
            lines: vec![Line::named("do_syscall_64")],
        });
        let labels = Labels {
            pid: Some(7),
            tid: Some(8),
            process: Some("app".into()),
            thread: Some("worker".into()),
            ..Labels::default()
        };
        p.add(labels, vec![main, inl, k], &[3, 30_000_000]);
        p
    }

    /// A profile that is not sampled (off-CPU time, leaks) claims no
    /// period: a reader would otherwise show "period 1 ns".
    #[test]
    fn unsampled_profiles_have_no_period() {
        let mut p = sample_profile();
        p.period = None;
        let e = encode(&p);
        assert_eq!(e.period_type, None);
        assert_eq!(e.period, 0);
    }

    #[test]
    fn encodes_types_addresses_and_labels() {
        let p = sample_profile();
        let e = encode(&p);
        let s = |i: i64| e.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        let types: Vec<_> = e
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(s(e.default_sample_type), "cpu");
        assert_eq!(e.period, 10_000_000);
        assert_eq!(e.sample[0].value, [3, 30_000_000]);
        // Leaf first: kernel, inlined, main.
        assert_eq!(e.sample[0].location_id, [3, 2, 1]);
        let main = &e.location[0];
        assert_eq!(main.address, 0x5100, "file offset 0x1100 -> 0x5000 + 0x100");
        assert_eq!(main.mapping_id, 1);
        assert_eq!(s(e.mapping[0].build_id), "abcd");
        assert!(e.mapping[0].has_line_numbers && e.mapping[0].has_inline_frames);
        let inl = &e.location[1];
        let names: Vec<_> = inl
            .line
            .iter()
            .map(|l| s(e.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["inner", "outer"]);
        let kernel = &e.mapping[e.location[2].mapping_id as usize - 1];
        assert_eq!(s(kernel.filename), KERNEL_MAPPING);
        assert!(kernel.memory_start <= e.location[2].address);
        assert!(e.location[2].address < kernel.memory_limit);
        let labels: Vec<_> = e.sample[0]
            .label
            .iter()
            .map(|l| (s(l.key), l.num, s(l.str)))
            .collect();
        assert!(labels.contains(&("pid", 7, "")));
        assert!(labels.contains(&("thread_name", 0, "worker")));
    }

    #[test]
    fn writes_gzip() {
        let mut out = Vec::new();
        write(&sample_profile(), &mut out).unwrap();
        assert_eq!(&out[..2], &[0x1f, 0x8b]);
    }
}
