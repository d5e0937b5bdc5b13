//! pprof protobuf (already decompressed) into a [`Profile`], inverting the
//! conventions of `output::pprof`: addresses back to file offsets, the
//! synthetic kernel/JIT mappings back to frame kinds, labels and comments
//! back to [`Labels`] and [`Meta`]. Profiles from other tools (Go's
//! runtime/pprof, for one) are read too.
//!
//! Before decoding, the top level of the protobuf is walked field by field
//! so that a malformed input is reported at the byte offset of the field
//! that is wrong, not just as "decode error".

use std::collections::HashMap;

use prost::Message;

use super::{InputError, Position};
use crate::output::pprof::{comment, label, proto, JIT_MAPPING, KERNEL_MAPPING};
use crate::profile::{
    units, FrameKind, Labels, Line, Location, LocationId, Meta, Module, ProbeKind, Profile,
    ValueType,
};

pub fn parse(name: &str, bytes: &[u8], decompressed: bool) -> Result<Profile, InputError> {
    let at = |offset: u64| {
        Some(if decompressed {
            Position::DecompressedOffset(offset)
        } else {
            Position::Offset(offset)
        })
    };
    if let Err((offset, msg)) = check_wire(bytes) {
        return Err(InputError::new(
            name,
            at(offset),
            format!("not a folded, perf script or pprof profile: {msg}"),
        ));
    }
    let message = proto::Profile::decode(bytes)
        .map_err(|e| InputError::new(name, at(0), format!("invalid pprof protobuf: {e}")))?;
    convert(&message)
        .map_err(|msg| InputError::new(name, None, format!("invalid pprof profile: {msg}")))
}

fn read_varint(data: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

/// Walks the top-level fields of a `Profile` message; returns the offset
/// and a description of the first problem.
fn check_wire(data: &[u8]) -> Result<(), (u64, String)> {
    let mut pos = 0usize;
    let mut counts: HashMap<u64, usize> = HashMap::new();
    while pos < data.len() {
        let start = pos;
        let fail = |msg: String| Err((start as u64, msg));
        let Some(tag) = read_varint(data, &mut pos) else {
            return fail("truncated or invalid field tag".into());
        };
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return fail("field number 0 is invalid".into());
        }
        let expected: &[u64] = match field {
            1..=6 | 11 => &[LEN],
            13 => &[LEN, VARINT],
            7..=10 | 12 | 14 | 15 => &[VARINT],
            _ => &[VARINT, I64, LEN, I32],
        };
        if !expected.contains(&wire) {
            return fail(format!(
                "field {field} has wire type {wire}, which pprof does not use there"
            ));
        }
        let index = *counts.entry(field).and_modify(|c| *c += 1).or_insert(0);
        match wire {
            VARINT => {
                if read_varint(data, &mut pos).is_none() {
                    return fail(format!("truncated varint in field {field}"));
                }
            }
            I64 | I32 => {
                pos += if wire == I64 { 8 } else { 4 };
                if pos > data.len() {
                    return fail(format!("truncated fixed-size value in field {field}"));
                }
            }
            _ => {
                let Some(len) = read_varint(data, &mut pos) else {
                    return fail(format!("truncated length of field {field}"));
                };
                let remaining = (data.len() - pos) as u64;
                if len > remaining {
                    return fail(format!(
                        "field {field} claims {len} bytes but only {remaining} remain (truncated?)"
                    ));
                }
                let body = &data[pos..pos + len as usize];
                pos += len as usize;
                let what = match field {
                    1 => check::<proto::ValueType>(body).map_err(|e| ("sample type", e)),
                    2 => check::<proto::Sample>(body).map_err(|e| ("sample", e)),
                    3 => check::<proto::Mapping>(body).map_err(|e| ("mapping", e)),
                    4 => check::<proto::Location>(body).map_err(|e| ("location", e)),
                    5 => check::<proto::Function>(body).map_err(|e| ("function", e)),
                    6 => std::str::from_utf8(body)
                        .map(drop)
                        .map_err(|_| ("string", "not UTF-8".to_string())),
                    11 => check::<proto::ValueType>(body).map_err(|e| ("period type", e)),
                    _ => Ok(()),
                };
                if let Err((what, e)) = what {
                    return fail(format!("invalid {what} #{}: {e}", index + 1));
                }
            }
        }
    }
    Ok(())
}

fn check<M: Message + Default>(body: &[u8]) -> Result<(), String> {
    M::decode(body).map(drop).map_err(|e| e.to_string())
}

/// How a pprof mapping maps back into the model.
#[derive(Clone, Copy)]
enum MappingKind {
    Kernel,
    Jit,
    Module(usize, bool),
}

fn convert(p: &proto::Profile) -> Result<Profile, String> {
    let s = |i: i64| -> Result<&str, String> {
        usize::try_from(i)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| format!("string index {i} is out of range"))
    };
    if p.sample_type.is_empty() {
        return Err("no sample types (is this a pprof file?)".into());
    }
    if p.string_table.first().is_some_and(|s| !s.is_empty()) {
        return Err("the string table does not start with an empty string".into());
    }
    let types: Vec<ValueType> = p
        .sample_type
        .iter()
        .map(|t| Ok(ValueType::new(s(t.r#type)?, s(t.unit)?)))
        .collect::<Result<_, String>>()?;

    let mut meta = Meta {
        start_unix_ns: p.time_nanos.max(0) as u64,
        duration_ns: p.duration_nanos.max(0) as u64,
        ..Meta::default()
    };
    let mut ours = false;
    for &c in &p.comment {
        let text = s(c)?;
        let Some((key, value)) = text.split_once(": ") else {
            continue;
        };
        match key {
            comment::TARGET => meta.target = value.to_string(),
            comment::PROBE => {
                ours = true;
                meta.probe = ProbeKind::from_name(value);
            }
            comment::FREQUENCY => meta.frequency = value.parse().ok(),
            comment::LOST => meta.lost = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    // The width comes first in the model. flameprobe's files have it first
    // already; another tool's profile is drawn with its default sample type,
    // else its sample count, else its last type (as pprof shows it).
    let width = if ours {
        0
    } else {
        let default = s(p.default_sample_type)?;
        types
            .iter()
            .position(|t| !default.is_empty() && t.name == default)
            .or_else(|| {
                types
                    .iter()
                    .position(|t| t.name == "samples" && t.unit == units::COUNT)
            })
            .unwrap_or(types.len() - 1)
    };
    let order: Vec<usize> = std::iter::once(width)
        .chain((0..types.len()).filter(|&i| i != width))
        .collect();
    let mut profile = Profile::new(order.iter().map(|&i| types[i].clone()).collect(), meta);
    if let Some(t) = &p.period_type {
        let period_type = ValueType::new(s(t.r#type)?, s(t.unit)?);
        if p.period > 0 && !period_type.name.is_empty() {
            if profile.meta.frequency.is_none() && period_type.unit == units::NANOSECONDS {
                profile.meta.frequency = 1_000_000_000u64.checked_div(p.period as u64);
            }
            profile.period = Some((period_type, p.period as u64));
        }
    }

    let mut mappings: HashMap<u64, (MappingKind, &proto::Mapping)> = HashMap::new();
    for m in &p.mapping {
        let path = s(m.filename)?;
        let kind = if path == KERNEL_MAPPING || path.starts_with("[kernel") {
            MappingKind::Kernel
        } else if path == JIT_MAPPING {
            MappingKind::Jit
        } else {
            let build_id = s(m.build_id)?;
            let id = profile.intern_module(Module {
                path: path.to_string(),
                build_id: (!build_id.is_empty()).then(|| build_id.to_string()),
                start: m.memory_start,
                end: m.memory_limit,
                file_offset: m.file_offset,
            });
            let jit = path.starts_with("/tmp/perf-") && path.ends_with(".map");
            MappingKind::Module(id, jit)
        };
        mappings.insert(m.id, (kind, m));
    }
    let functions: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();

    let mut locations: HashMap<u64, LocationId> = HashMap::new();
    for loc in &p.location {
        let mapping = match loc.mapping_id {
            0 => None,
            id => Some(*mappings.get(&id).ok_or_else(|| {
                format!(
                    "location {} refers to mapping {id}, which does not exist",
                    loc.id
                )
            })?),
        };
        let (kind, module, address) = match mapping {
            Some((MappingKind::Kernel, _)) => (FrameKind::Kernel, None, loc.address),
            Some((MappingKind::Jit, _)) => (FrameKind::Jit, None, loc.address),
            Some((MappingKind::Module(id, jit), m)) => (
                if jit { FrameKind::Jit } else { FrameKind::User },
                Some(id),
                loc.address
                    .wrapping_sub(m.memory_start)
                    .wrapping_add(m.file_offset),
            ),
            None => (FrameKind::User, None, loc.address),
        };
        let mut lines = Vec::with_capacity(loc.line.len());
        for line in &loc.line {
            let f = functions.get(&line.function_id).ok_or_else(|| {
                format!(
                    "location {} refers to function {}, which does not exist",
                    loc.id, line.function_id
                )
            })?;
            let file = s(f.filename)?;
            let (name, system) = (s(f.name)?, s(f.system_name)?);
            lines.push(Line {
                function: name.to_string(),
                file: (!file.is_empty()).then(|| file.to_string()),
                line: u32::try_from(line.line).ok().filter(|&l| l > 0),
                system_name: (!system.is_empty() && system != name).then(|| system.to_string()),
            });
        }
        if lines.is_empty() {
            // Not symbolized: name it like unsymbolized recorded frames.
            let name = match (module, mapping) {
                (Some(id), _) => {
                    let path = &profile.modules[id].path;
                    let base = path.rsplit('/').next().unwrap_or(path);
                    format!("{base}+{address:#x}")
                }
                _ => format!("{address:#x}"),
            };
            lines.push(Line::named(name));
        }
        let id = profile.intern_location(Location {
            kind,
            module,
            address,
            lines,
        });
        locations.insert(loc.id, id);
    }

    for (i, sample) in p.sample.iter().enumerate() {
        let n = i + 1;
        if sample.value.len() != types.len() {
            return Err(format!(
                "sample #{n} has {} values for {} sample types",
                sample.value.len(),
                types.len()
            ));
        }
        let values = order
            .iter()
            .map(|&i| {
                u64::try_from(sample.value[i])
                    .map_err(|_| format!("sample #{n} has a negative value {}", sample.value[i]))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        let mut stack = Vec::with_capacity(sample.location_id.len());
        for id in sample.location_id.iter().rev() {
            stack.push(*locations.get(id).ok_or_else(|| {
                format!("sample #{n} refers to location {id}, which does not exist")
            })?);
        }
        let mut labels = Labels::default();
        for l in &sample.label {
            let text = s(l.str)?;
            let num = || {
                u32::try_from(l.num)
                    .ok()
                    .filter(|_| text.is_empty())
                    .or_else(|| text.parse().ok())
            };
            let text = (!text.is_empty()).then(|| text.to_string());
            match s(l.key)? {
                label::PID => labels.pid = num(),
                label::TID => labels.tid = num(),
                label::PROCESS => labels.process = text,
                label::THREAD => labels.thread = text,
                label::CONTAINER => labels.container = text,
                label::CONTAINER_ID => labels.container_id = text,
                label::POD => labels.pod = text,
                label::NAMESPACE => labels.namespace = text,
                _ => {}
            }
        }
        profile.add(labels, stack, &values);
    }

    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{folded, pprof as writer};
    use crate::profile::FrameNameOptions;

    fn folded_text(p: &Profile) -> String {
        let mut out = Vec::new();
        folded::write(p, &FrameNameOptions::default(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn folded_round_trips_through_pprof() {
        let text = "[9]app;app;main;a;sys_read_[k];vfs_read_[k] 3\n[9]app;app;main;b 5\nx;jitted_[j];y 2\n";
        let p = crate::input::folded::parse("t", text).unwrap();
        let bytes = writer::encode(&p).encode_to_vec();
        let back = parse("t.pb", &bytes, false).unwrap();
        assert_eq!(back.sample_types, p.sample_types);
        assert_eq!(folded_text(&back), text);
        // perf script input: periods, named after the event, survive.
        let perf = "app 1 1.0: 250 cpu-clock:\n\t 12 f+0x1 (/x)\n\napp 1 1.1: 250 cpu-clock:\n\t 12 f+0x1 (/x)\n";
        let p = crate::input::perf::parse("t", perf).unwrap();
        let back = parse("t.pb", &writer::encode(&p).encode_to_vec(), false).unwrap();
        assert_eq!(back.total_width(), 500);
        assert_eq!(back.sample_types[0].name, "cpu-clock");
    }

    #[test]
    fn recorded_profile_round_trips_with_addresses_and_labels() {
        let cpu = ValueType::new("cpu", units::NANOSECONDS);
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT), cpu.clone()],
            Meta {
                target: "pid 7".into(),
                probe: Some(ProbeKind::Cpu),
                frequency: Some(99),
                duration_ns: 5,
                start_unix_ns: 6,
                lost: 2,
            },
        );
        let m = p.intern_module(Module {
            path: "/bin/app".into(),
            build_id: Some("beef".into()),
            start: 0x40_0000,
            end: 0x40_8000,
            file_offset: 0x1000,
        });
        let user = p.intern_location(Location {
            kind: FrameKind::User,
            module: Some(m),
            address: 0x1234,
            lines: vec![
                Line {
                    function: "inner".into(),
                    file: Some("a.c".into()),
                    line: Some(3),
                    system_name: None,
                },
                Line::named("outer"),
            ],
        });
        let k = p.intern_location(Location {
            kind: FrameKind::Kernel,
            module: None,
            address: 0xffff_ffff_8100_1000,
            lines: vec![Line::named("schedule")],
        });
        let labels = Labels {
            pid: Some(7),
            tid: Some(9),
            process: Some("app".into()),
            thread: Some("w".into()),
            container: Some("c1".into()),
            container_id: Some("8dfa34dcb107".repeat(5) + "ce84"),
            pod: Some("web-1".into()),
            namespace: Some("shop".into()),
        };
        let jit = p.intern_location(Location {
            kind: FrameKind::Jit,
            module: None,
            address: 0x7f00_0000_1000,
            lines: vec![Line {
                function: "JitHot.fib".into(),
                file: None,
                line: None,
                system_name: Some("long JitHot.fib(int)".into()),
            }],
        });
        p.period = Some((cpu, 10_101_010));
        p.add(labels.clone(), vec![user, k], &[4, 40_404_040]);
        p.add(labels.clone(), vec![user, jit], &[1, 10_101_010]);
        let bytes = writer::encode(&p).encode_to_vec();
        let back = parse("t.pb", &bytes, false).unwrap();
        assert_eq!(back.sample_types, p.sample_types);
        assert_eq!(back.period, p.period);
        assert_eq!(back.meta.probe, Some(ProbeKind::Cpu));
        assert_eq!(back.meta.target, "pid 7");
        assert_eq!(back.meta.frequency, Some(99));
        assert_eq!(back.meta.lost, 2);
        assert_eq!(back.stacks.len(), 2);
        // A JIT frame keeps its kind, address, display and system names.
        let j = &back.locations[*back.stacks[1].locations.last().unwrap()];
        assert_eq!(j, &p.locations[jit]);
        let s = &back.stacks[0];
        assert_eq!(s.values, [4, 40_404_040]);
        assert_eq!(s.labels, labels);
        let loc = &back.locations[s.locations[0]];
        assert_eq!(loc.address, 0x1234, "file offset restored");
        assert_eq!(loc.lines, p.locations[user].lines);
        assert_eq!(back.modules[0].build_id.as_deref(), Some("beef"));
        assert_eq!(back.locations[s.locations[1]], p.locations[k]);
        assert_eq!(folded_text(&back), folded_text(&p));
    }

    #[test]
    fn garbage_is_reported_with_an_offset() {
        // A valid first field, then a field with wire type 7.
        let err = parse("g.pb", &[0x50, 0x01, 0x0f, 0x00], false).unwrap_err();
        assert_eq!(err.position, Some(Position::Offset(2)));
        assert!(
            err.to_string().starts_with("g.pb: at byte offset 2: not a"),
            "{err}"
        );
        // A length running past the end.
        let err = parse("g.pb", &[0x12, 0x40, 0x08], false).unwrap_err();
        assert_eq!(err.position, Some(Position::Offset(0)));
        assert!(err.to_string().contains("truncated"), "{err}");
        // A sample whose body is not a Sample.
        let err = parse("g.pb", &[0x12, 0x02, 0x0f, 0x01], false).unwrap_err();
        assert!(err.to_string().contains("invalid sample #1"), "{err}");
        // Well-formed protobuf that is not a profile.
        let err = parse("g.pb", &[0x50, 0x01], false).unwrap_err();
        assert!(err.to_string().contains("no sample types"), "{err}");
    }

    #[test]
    fn dangling_references_are_errors() {
        let mut p = proto::Profile {
            string_table: vec!["".into(), "samples".into(), "count".into()],
            ..Default::default()
        };
        p.sample_type.push(proto::ValueType { r#type: 1, unit: 2 });
        p.sample.push(proto::Sample {
            location_id: vec![42],
            value: vec![1],
            label: vec![],
        });
        let err = parse("d.pb", &p.encode_to_vec(), false).unwrap_err();
        assert!(
            err.to_string().contains("sample #1 refers to location 42"),
            "{err}"
        );
        p.sample[0].value = vec![1, 2];
        let err = parse("d.pb", &p.encode_to_vec(), false).unwrap_err();
        assert!(
            err.to_string().contains("2 values for 1 sample types"),
            "{err}"
        );
    }
}
