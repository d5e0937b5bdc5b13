//! Stack quality: how many user stacks were unwound to their entry point
//! (by address where the recording knows it, `Profile::entries`: stripped
//! binaries name no `_start`; else by the entry functions' names),
//! how many were cut short, and which binaries left frames unsymbolized
//! (and which of them could not even be opened).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::profile::{FrameKind, Location, Profile};

/// Functions that start a process or thread: a user stack whose root frame
/// is one of these was unwound completely.
const ENTRY_POINTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__GI___clone3",
    "__GI___clone",
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.main",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
    "runtime.mstart",
    "thread_start",
];

/// Shares of samples, over samples that have a user stack.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StackQuality {
    /// Samples with a user stack (kernel threads excluded).
    pub user_samples: u64,
    /// ... whose root frame is a process or thread entry point.
    pub reached_entry: u64,
    /// ... marked `[truncated]` (stack copy or depth limit too small).
    pub truncated: u64,
    /// Samples with at least one unsymbolized frame, per binary.
    pub unsymbolized: BTreeMap<String, u64>,
    /// What would give longer stacks (shown with the truncated share).
    pub truncation_hint: Option<String>,
    /// Binaries among those that were not opened at all: no regular file
    /// with the mapped device and inode inside the process's root.
    pub unopened: BTreeSet<String>,
}

impl StackQuality {
    pub fn pct(&self, n: u64) -> f64 {
        if self.user_samples == 0 {
            0.0
        } else {
            100.0 * n as f64 / self.user_samples as f64
        }
    }
}

/// Assesses every stack of a profile (shares of its events: samples,
/// allocations).
pub fn assess(profile: &Profile) -> StackQuality {
    let mut q = StackQuality::default();
    let events = profile.events_index();
    for stack in &profile.stacks {
        let count = stack.values[events];
        let locs: Vec<&Location> = stack
            .locations
            .iter()
            .map(|&l| &profile.locations[l])
            .collect();
        let is_user = |l: &Location| matches!(l.kind, FrameKind::User | FrameKind::Jit);
        let user: Vec<&&Location> = locs.iter().filter(|l| is_user(l)).collect();
        let root = stack
            .locations
            .iter()
            .find(|&&l| is_user(&profile.locations[l]));
        let truncated = locs
            .first()
            .is_some_and(|l| l.kind == FrameKind::Special && l.lines[0].function == "[truncated]");
        if user.is_empty() && !truncated {
            continue;
        }
        q.user_samples += count;
        if truncated {
            q.truncated += count;
        } else if root.is_some_and(|&id| {
            let name = profile.locations[id]
                .lines
                .last()
                .map_or("", |l| l.function.as_str());
            profile.entries.contains(&id) || ENTRY_POINTS.contains(&name)
        }) {
            q.reached_entry += count;
        }
        let mut seen: Vec<String> = Vec::new();
        for l in &user {
            if let Some((module, opened)) = unsymbolized_module(profile, l) {
                if !opened {
                    q.unopened.insert(module.clone());
                }
                if !seen.contains(&module) {
                    seen.push(module);
                }
            }
        }
        for m in seen {
            *q.unsymbolized.entry(m).or_default() += count;
        }
    }
    q
}

/// Per process (pid label): samples with at least one unnamed frame in
/// anonymous memory (JIT code left `[anon]+0x...`), and all its samples
/// with a user stack.
pub fn unnamed_jit_by_pid(profile: &Profile) -> BTreeMap<u32, (u64, u64)> {
    let events = profile.events_index();
    let mut out: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for stack in &profile.stacks {
        let Some(pid) = stack.labels.pid else {
            continue;
        };
        let locs = || stack.locations.iter().map(|&l| &profile.locations[l]);
        if !locs().any(|l| matches!(l.kind, FrameKind::User | FrameKind::Jit)) {
            continue;
        }
        let count = stack.values[events];
        let e = out.entry(pid).or_default();
        e.1 += count;
        if locs()
            .any(|l| unsymbolized_module(profile, l).is_some_and(|(m, _)| m.starts_with("[anon")))
        {
            e.0 += count;
        }
    }
    out
}

/// The binary of a frame that was not symbolized (its name is the
/// `module+0xoffset` fallback), if it was not, and whether that binary was
/// opened. A frame of a file mapping whose binary was not opened has no
/// module and carries the mapped path (`/usr/bin/app+0x1a2b`).
fn unsymbolized_module(profile: &Profile, l: &Location) -> Option<(String, bool)> {
    let name = &l.lines.first()?.function;
    let (module, offset) = name.rsplit_once("+0x")?;
    if l.lines.len() != 1 || offset.is_empty() || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let base = || module.rsplit('/').next().unwrap_or(module).to_string();
    match l.module.and_then(|m| profile.modules.get(m)) {
        Some(m) if m.path.rsplit('/').next() == Some(module) => Some((module.to_string(), true)),
        None if module.starts_with('[') => Some((module.to_string(), true)),
        None if module.starts_with('/') => Some((base(), false)),
        _ => None,
    }
}

impl fmt::Display for StackQuality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.user_samples == 0 {
            return Ok(());
        }
        write!(
            f,
            "  stack quality: {:.1}% of user stacks reached the process/thread entry, \
             {:.1}% truncated",
            self.pct(self.reached_entry),
            self.pct(self.truncated)
        )?;
        if let Some(hint) = self.truncation_hint.as_ref().filter(|_| self.truncated > 0) {
            write!(f, " ({hint})")?;
        }
        writeln!(f)?;
        let mut worst: Vec<(&String, &u64)> = self.unsymbolized.iter().collect();
        worst.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        if !worst.is_empty() {
            let list: Vec<String> = worst
                .iter()
                .take(5)
                .map(|(m, n)| format!("{m} {:.1}%", self.pct(**n)))
                .collect();
            writeln!(f, "  samples with unsymbolized frames: {}", list.join(", "))?;
        }
        if !self.unopened.is_empty() {
            let names: Vec<&str> = self.unopened.iter().map(String::as_str).collect();
            writeln!(
                f,
                "  not opened (no readable regular file with the mapped device and inode \
                 inside the process's root; -v says why): {}",
                names.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{units, Labels, Line, Meta, Module, ValueType};

    #[test]
    fn counts_entry_truncated_and_unsymbolized() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let m = p.intern_module(Module {
            path: "/usr/lib/libfoo.so".into(),
            build_id: None,
            start: 0,
            end: 0,
            file_offset: 0,
        });
        let start = p.intern_named(FrameKind::User, "_start");
        let main = p.intern_named(FrameKind::User, "main");
        let trunc = p.intern_named(FrameKind::Special, "[truncated]");
        let unsym = p.intern_location(Location {
            kind: FrameKind::User,
            module: Some(m),
            address: 0x1a2b,
            lines: vec![Line::named("libfoo.so+0x1a2b")],
        });
        let k = p.intern_named(FrameKind::Kernel, "schedule");
        p.add(Labels::default(), vec![start, main], &[6]);
        p.add(Labels::default(), vec![trunc, main, unsym], &[3]);
        p.add(Labels::default(), vec![main], &[1]);
        p.add(Labels::default(), vec![k], &[5]); // kernel thread: not counted
        let q = assess(&p);
        assert_eq!(q.user_samples, 10);
        assert_eq!(q.reached_entry, 6);
        assert_eq!(q.truncated, 3);
        assert_eq!(q.unsymbolized.get("libfoo.so"), Some(&3));
        assert!(q.unopened.is_empty());
        let mut q = q;
        q.truncation_hint = Some("try this".into());
        let text = q.to_string();
        assert!(text.contains("truncated (try this)"), "{text}");
        assert!(text.contains("60.0% of user stacks reached"), "{text}");
        assert!(text.contains("30.0% truncated"), "{text}");
        assert!(text.contains("libfoo.so 30.0%"), "{text}");
        assert!(!text.contains("not opened"), "{text}");
    }

    #[test]
    fn a_stripped_entry_function_is_known_by_address() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let start = p.intern_location(Location {
            kind: FrameKind::User,
            module: None,
            address: 0x3ac0,
            lines: vec![Line::named("xz+0x3aa0")],
        });
        let other = p.intern_named(FrameKind::User, "xz+0x5000");
        let leaf = p.intern_named(FrameKind::User, "xz+0x7000");
        p.entries.insert(start);
        p.add(Labels::default(), vec![start, leaf], &[3]);
        p.add(Labels::default(), vec![other, leaf], &[1]);
        assert_eq!(assess(&p).reached_entry, 3);
    }

    #[test]
    fn names_binaries_that_were_not_opened() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        // A file mapping without a module: its binary was not opened.
        let app = p.intern_named(FrameKind::User, "/srv/app/server+0x1a2b");
        let anon = p.intern_named(FrameKind::User, "[anon]+0x10");
        let main = p.intern_named(FrameKind::User, "main");
        p.add(Labels::default(), vec![app, app], &[4]);
        p.add(Labels::default(), vec![main, anon], &[1]);
        let q = assess(&p);
        assert_eq!(q.unsymbolized.get("server"), Some(&4));
        assert_eq!(q.unsymbolized.get("[anon]"), Some(&1));
        assert_eq!(q.unopened.iter().collect::<Vec<_>>(), ["server"]);
        let text = q.to_string();
        assert!(text.contains("server 80.0%"), "{text}");
        assert!(
            text.contains("inside the process's root; -v says why): server\n"),
            "{text}"
        );
    }

    #[test]
    fn counts_unnamed_jit_frames_per_process() {
        let mut p = Profile::new(
            vec![ValueType::new("samples", units::COUNT)],
            Meta::default(),
        );
        let anon = p.intern_named(FrameKind::User, "[anon]+0x1f0");
        let named_anon = p.intern_named(FrameKind::User, "[anon:v8]+0x10");
        let vdso = p.intern_named(FrameKind::User, "[vdso]+0x10");
        let jit = p.intern_named(FrameKind::Jit, "JitHot.fib");
        let main = p.intern_named(FrameKind::User, "main");
        let k = p.intern_named(FrameKind::Kernel, "schedule");
        let pid = |n| Labels {
            pid: Some(n),
            ..Labels::default()
        };
        p.add(pid(1), vec![main, anon, anon], &[3]);
        p.add(pid(1), vec![main, jit], &[5]);
        p.add(pid(1), vec![k], &[7]); // no user stack
        p.add(pid(2), vec![main, named_anon], &[1]);
        p.add(pid(2), vec![main, vdso], &[1]);
        p.add(Labels::default(), vec![main, anon], &[9]); // no pid
        let by_pid = unnamed_jit_by_pid(&p);
        assert_eq!(by_pid.get(&1), Some(&(3, 8)));
        assert_eq!(by_pid.get(&2), Some(&(1, 2)));
        assert_eq!(by_pid.len(), 2);
    }
}
