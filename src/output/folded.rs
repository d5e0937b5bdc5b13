//! Folded stacks: one `frame;frame;...;leaf weight` line per distinct stack,
//! sorted, as inferno and FlameGraph read them.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::profile::{FrameNameOptions, Profile};

/// Folded lines with their weights, merged by text and sorted.
pub fn lines(profile: &Profile, opts: &FrameNameOptions) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for stack in &profile.stacks {
        if stack.weight == 0 {
            continue;
        }
        let names = profile.frame_names(stack, opts);
        *out.entry(names.join(";")).or_default() += stack.weight;
    }
    out
}

pub fn write(profile: &Profile, opts: &FrameNameOptions, w: &mut dyn Write) -> io::Result<()> {
    for (stack, weight) in lines(profile, opts) {
        writeln!(w, "{stack} {weight}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Labels, Meta, Unit};

    #[test]
    fn folds_sorted_and_merged() {
        let mut p = Profile::new(Unit::Count, Meta::default());
        let m = p.intern_named(FrameKind::User, "main");
        let b = p.intern_named(FrameKind::User, "b");
        let a = p.intern_named(FrameKind::User, "a");
        let k = p.intern_named(FrameKind::Kernel, "sys_read");
        let l = |tid| Labels {
            pid: Some(9),
            tid: Some(tid),
            process: Some("app".into()),
            thread: Some("app".into()),
            ..Labels::default()
        };
        p.add(l(9), vec![m, b], 3, 3);
        p.add(l(10), vec![m, b], 2, 2); // same names, other thread id
        p.add(l(9), vec![m, a, k], 1, 1);
        let mut out = Vec::new();
        write(&p, &FrameNameOptions::default(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[9]app;app;main;a;sys_read_[k] 1\n[9]app;app;main;b 5\n"
        );
    }
}
