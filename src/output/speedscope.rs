//! speedscope's JSON file format (<https://www.speedscope.app/file-format-schema.json>,
//! also `dist/release/file-format-schema.json` of the npm package
//! `speedscope`): one `sampled` profile per thread, named
//! `[Pod]ns/pod [Con]name [pid]comm/thread`, whose samples are the thread's
//! stacks (root first, as indices into `shared.frames`) with their weights
//! in the profile's unit (nanoseconds of CPU, wall-clock or off-CPU time,
//! bytes of memory).
//!
//! Samples come in time order where the profile has a timeline (cpu and
//! wall recordings), followed by whatever was not timed (wall's time off
//! the CPU, samples beyond the timeline's limit) merged by stack, heaviest
//! first; probes that aggregate in the kernel (memleak, offcpu) and
//! converted files have only the merged part. The file's `name` says which
//! ([`order_note`]). Each profile also carries, as an extension speedscope
//! ignores, `flameprobe.sample_times_ns`: the times of its time-ordered
//! samples, in nanoseconds since the first sample of the file.
//!
//! The writer reads only the profile model (names through
//! [`line_name`], the one naming rule); serde escapes the JSON.

use std::collections::HashMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::profile::{label_frames, line_name, units, FrameNameOptions, Labels, Profile};
use crate::timeline::{self, ThreadSamples};

pub const SCHEMA: &str = "https://www.speedscope.app/file-format-schema.json";

#[derive(Serialize)]
struct File {
    #[serde(rename = "$schema")]
    schema: &'static str,
    name: String,
    exporter: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    shared: Shared,
    profiles: Vec<SampledProfile>,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct Frame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
}

#[derive(Serialize)]
struct SampledProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
    flameprobe: Extension,
}

/// What speedscope's format has no field for.
#[derive(Serialize)]
struct Extension {
    /// Times of the first samples (those in time order), in nanoseconds
    /// since the first sample of the file; the samples after them are
    /// merged by stack.
    sample_times_ns: Vec<u64>,
}

/// speedscope's name for a profile's unit (`none` for counts).
fn unit(profile: &Profile, index: usize) -> &'static str {
    match profile.sample_types[index].unit.as_str() {
        units::NANOSECONDS => "nanoseconds",
        units::BYTES => "bytes",
        _ => "none",
    }
}

/// A thread's profile name: its container and pod frames, `[pid]comm`
/// and `/thread`, as the flame graphs' label frames read.
pub fn thread_name(labels: &Labels) -> String {
    let mut name = label_frames(labels, &FrameNameOptions::threads(false)).join(" ");
    if let Some(thread) = &labels.thread {
        name.push('/');
        name.push_str(thread);
    }
    name
}

/// How the samples are ordered, for the file's name and the summary.
pub fn order_note(profile: &Profile) -> String {
    let probe = profile.meta.probe.map(|p| p.name());
    let tl = &profile.timeline;
    if tl.is_empty() {
        match probe {
            Some(p) => format!(
                "stacks merged per thread, heaviest first ({p} profiles are aggregated in the \
                 kernel: no sample times)"
            ),
            None => "stacks merged per thread, heaviest first (the input has no sample times)"
                .to_string(),
        }
    } else {
        let mut note = "samples in time order per thread".to_string();
        if probe == Some("wall") {
            note.push_str(
                ", then each thread's time off the CPU merged by stack (the kernel sums it)",
            );
        }
        if tl.left_out > 0 {
            note.push_str(&format!(
                "; {} samples after the first {} are merged by stack at the end (the time order \
                 holds at most {})",
                tl.left_out,
                tl.len(),
                timeline::MAX_TIMED_SAMPLES
            ));
        }
        note
    }
}

/// Interns frames of `shared.frames` and the frame lists of stacks.
///
/// A frame is a function (its name and file), as flame graphs merge them:
/// samples at different lines of `main` are one `main`. Its `line` is the
/// first line of it that samples were taken at (or called from), which
/// points into the function; symbols give no start line.
struct Frames<'p> {
    profile: &'p Profile,
    frames: Vec<Frame>,
    index: HashMap<(String, Option<String>), usize>,
    stacks: HashMap<usize, Vec<usize>>,
}

impl<'p> Frames<'p> {
    fn new(profile: &'p Profile) -> Self {
        Frames {
            profile,
            frames: Vec::new(),
            index: HashMap::new(),
            stacks: HashMap::new(),
        }
    }

    fn intern(&mut self, frame: Frame) -> usize {
        let key = (frame.name.clone(), frame.file.clone());
        if let Some(&i) = self.index.get(&key) {
            let known = &mut self.frames[i].line;
            *known = match (*known, frame.line) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            return i;
        }
        self.frames.push(frame);
        self.index.insert(key, self.frames.len() - 1);
        self.frames.len() - 1
    }

    /// The frames of stack `i`, root first, inlined functions expanded
    /// (callers first); the thread's label frames are the profile's name.
    fn stack(&mut self, i: usize) -> Vec<usize> {
        if let Some(s) = self.stacks.get(&i) {
            return s.clone();
        }
        let profile = self.profile;
        let stack = &profile.stacks[i];
        let mut out = Vec::with_capacity(stack.locations.len());
        for &loc in &stack.locations {
            let location = &profile.locations[loc];
            let outermost = location.lines.len() - 1;
            for (j, line) in location.lines.iter().enumerate().rev() {
                out.push(self.intern(Frame {
                    name: line_name(location, j < outermost, line),
                    file: line.file.clone(),
                    line: line.line,
                }));
            }
        }
        if out.is_empty() {
            out.push(self.intern(Frame {
                name: "[no stack]".into(),
                file: None,
                line: None,
            }));
        }
        self.stacks.insert(i, out.clone());
        out
    }
}

/// Profile names, unique within the file: a thread's name, with its
/// thread id when another thread has the same name.
fn profile_names(profile: &Profile, threads: &[ThreadSamples]) -> Vec<String> {
    let fallback = if profile.meta.target.is_empty() {
        "all stacks".to_string()
    } else {
        profile.meta.target.clone()
    };
    let names: Vec<String> = threads
        .iter()
        .map(|t| Some(thread_name(&t.labels)).filter(|n| !n.is_empty()))
        .map(|n| n.unwrap_or_else(|| fallback.clone()))
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for n in &names {
        *seen.entry(n.as_str()).or_default() += 1;
    }
    names
        .iter()
        .zip(threads)
        .enumerate()
        .map(|(i, (n, t))| {
            if seen[n.as_str()] == 1 {
                n.clone()
            } else if let Some(tid) = t.labels.tid {
                format!("{n} (tid {tid})")
            } else {
                format!("{n} ({})", i + 1)
            }
        })
        .collect()
}

/// The file's name: the profile's title, target and sample order.
fn file_name(profile: &Profile, index: usize) -> String {
    let mut name = format!(
        "flameprobe {}",
        profile.meta.probe.map_or("profile", |p| p.name())
    );
    if !profile.meta.target.is_empty() {
        name.push_str(&format!(" of {}", profile.meta.target));
    }
    if profile.meta.duration_ns > 0 {
        name.push_str(&format!(", {:.1}s", profile.meta.duration_ns as f64 / 1e9));
    }
    name.push_str(&format!(
        " ({}): {}",
        profile.sample_types[index],
        order_note(profile)
    ));
    name
}

/// Writes `profile` as a speedscope file, weighed by the value reports
/// show (time or bytes; the width when there is neither).
pub fn write(profile: &Profile, w: &mut dyn Write) -> io::Result<()> {
    let index = profile.display_index();
    let threads = timeline::by_thread(profile, index);
    if threads.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the profile has no samples to write",
        ));
    }
    let names = profile_names(profile, &threads);
    let first_time = threads
        .iter()
        .filter_map(|t| t.times.first())
        .min()
        .copied()
        .unwrap_or(0);
    let mut frames = Frames::new(profile);
    let mut profiles = Vec::with_capacity(threads.len());
    for (thread, name) in threads.iter().zip(names) {
        let samples = thread
            .samples
            .iter()
            .map(|&(s, _)| frames.stack(s))
            .collect();
        profiles.push(SampledProfile {
            kind: "sampled",
            name,
            unit: unit(profile, index),
            start_value: 0,
            end_value: thread.total(),
            samples,
            weights: thread.samples.iter().map(|&(_, w)| w).collect(),
            flameprobe: Extension {
                sample_times_ns: thread.times.iter().map(|t| t - first_time).collect(),
            },
        });
    }
    // The busiest thread opens first.
    let active = threads
        .iter()
        .enumerate()
        .max_by(|(i, a), (j, b)| a.total().cmp(&b.total()).then(j.cmp(i)))
        .map_or(0, |(i, _)| i);
    let file = File {
        schema: SCHEMA,
        name: file_name(profile, index),
        exporter: format!("flameprobe {}", env!("CARGO_PKG_VERSION")),
        active_profile_index: active,
        shared: Shared {
            frames: frames.frames,
        },
        profiles,
    };
    serde_json::to_writer(&mut *w, &file).map_err(io::Error::from)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Line, Location, Meta, ProbeKind, ValueType};

    fn labels(tid: u32, thread: &str) -> Labels {
        Labels {
            pid: Some(7),
            tid: Some(tid),
            process: Some("app".into()),
            thread: Some(thread.into()),
            ..Labels::default()
        }
    }

    fn cpu_profile() -> Profile {
        let mut p = Profile::new(
            vec![
                ValueType::new("samples", units::COUNT),
                ValueType::new("cpu", units::NANOSECONDS),
            ],
            Meta {
                target: "pid 7".into(),
                probe: Some(ProbeKind::Cpu),
                ..Meta::default()
            },
        );
        let main = p.intern_location(Location {
            kind: FrameKind::User,
            module: None,
            address: 1,
            lines: vec![Line {
                function: "main".into(),
                file: Some("/src/app.c".into()),
                line: Some(12),
                system_name: None,
            }],
        });
        let inl = p.intern_location(Location {
            kind: FrameKind::User,
            module: None,
            address: 2,
            lines: vec![Line::named("leaf"), Line::named("outer")],
        });
        // Another line of main: the same function, the same frame.
        let main9 = p.intern_location(Location {
            kind: FrameKind::User,
            module: None,
            address: 3,
            lines: vec![Line {
                function: "main".into(),
                file: Some("/src/app.c".into()),
                line: Some(9),
                system_name: None,
            }],
        });
        let k = p.intern_named(FrameKind::Kernel, "do_syscall_64");
        let a = p.add(labels(7, "app"), vec![main, inl], &[2, 20]);
        let b = p.add(labels(7, "app"), vec![main, k], &[1, 10]);
        let c = p.add(labels(8, "worker"), vec![main9], &[5, 50]);
        p.timeline.push(1_000, a, &[1, 10]);
        p.timeline.push(2_000, b, &[1, 10]);
        p.timeline.push(3_000, a, &[1, 10]);
        p.timeline.push(1_500, c, &[5, 50]);
        p
    }

    fn json(p: &Profile) -> serde_json::Value {
        let mut out = Vec::new();
        write(p, &mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn one_sampled_profile_per_thread_in_time_order() {
        let v = json(&cpu_profile());
        assert_eq!(v["$schema"], SCHEMA);
        let names: Vec<&str> = v["shared"]["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["main", "outer", "leaf_[i]", "do_syscall_64_[k]"]);
        assert_eq!(v["shared"]["frames"][0]["file"], "/src/app.c");
        assert_eq!(
            v["shared"]["frames"][0]["line"], 9,
            "its first line sampled"
        );
        assert!(v["shared"]["frames"][1].get("file").is_none());
        let p0 = &v["profiles"][0];
        assert_eq!(p0["type"], "sampled");
        assert_eq!(p0["name"], "[7]app/app");
        assert_eq!(p0["unit"], "nanoseconds");
        assert_eq!(
            p0["samples"],
            serde_json::json!([[0, 1, 2], [0, 3], [0, 1, 2]])
        );
        assert_eq!(p0["weights"], serde_json::json!([10, 10, 10]));
        assert_eq!(
            (p0["startValue"].as_u64(), p0["endValue"].as_u64()),
            (Some(0), Some(30))
        );
        assert_eq!(
            p0["flameprobe"]["sample_times_ns"],
            serde_json::json!([0, 1000, 2000])
        );
        assert_eq!(v["profiles"][1]["name"], "[7]app/worker");
        assert_eq!(
            v["profiles"][1]["flameprobe"]["sample_times_ns"],
            serde_json::json!([500])
        );
        assert_eq!(v["activeProfileIndex"], 1, "the busiest thread");
        let name = v["name"].as_str().unwrap();
        assert!(
            name.contains("cpu") && name.contains("time order"),
            "{name}"
        );
    }

    #[test]
    fn kernel_aggregates_are_merged_and_said_so() {
        let mut p = Profile::new(
            vec![
                ValueType::new("inuse_space", units::BYTES),
                ValueType::new("inuse_objects", units::COUNT),
            ],
            Meta {
                probe: Some(ProbeKind::Memleak),
                ..Meta::default()
            },
        );
        let m = p.intern_named(FrameKind::User, "main");
        let small = p.intern_named(FrameKind::User, "small");
        let big = p.intern_named(FrameKind::User, "big");
        let con = Labels {
            container: Some("web".into()),
            pod: Some("shop-1".into()),
            namespace: Some("prod".into()),
            ..labels(7, "app")
        };
        p.add(con.clone(), vec![m, small], &[100, 1]);
        p.add(con, vec![m, big], &[4096, 2]);
        let v = json(&p);
        let p0 = &v["profiles"][0];
        assert_eq!(p0["name"], "[Pod]prod/shop-1 [Con]web [7]app/app");
        assert_eq!(p0["unit"], "bytes");
        assert_eq!(
            p0["weights"],
            serde_json::json!([4096, 100]),
            "heaviest first"
        );
        assert_eq!(p0["flameprobe"]["sample_times_ns"], serde_json::json!([]));
        let name = v["name"].as_str().unwrap();
        assert!(name.contains("merged") && name.contains("kernel"), "{name}");
    }

    #[test]
    fn same_named_threads_are_told_apart_and_untimed_rest_follows() {
        let mut p = cpu_profile();
        let main = p.stacks[2].locations[0];
        p.add(labels(9, "worker"), vec![main], &[1, 10]);
        // Wall: a stack's time off the CPU is not in the timeline.
        p.add(labels(8, "worker"), vec![main], &[0, 70]);
        let v = json(&p);
        assert_eq!(v["profiles"][1]["name"], "[7]app/worker (tid 8)");
        assert_eq!(v["profiles"][2]["name"], "[7]app/worker (tid 9)");
        assert_eq!(v["profiles"][1]["weights"], serde_json::json!([50, 70]));
        // Files without labels: one profile named after the target.
        let mut f = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let x = f.intern_named(FrameKind::User, "x");
        f.add(Labels::default(), vec![x], &[3]);
        let v = json(&f);
        assert_eq!(v["profiles"][0]["name"], "all stacks");
        assert_eq!(v["profiles"][0]["unit"], "none");
        let empty = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        assert!(write(&empty, &mut Vec::new()).is_err());
    }
}
