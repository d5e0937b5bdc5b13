//! Keeping the in-kernel CFI unwinder's tables (bpf/unwind.h) in step with
//! the processes a probe records, for every probe that unwinds in the
//! kernel (memleak, offcpu).

use std::collections::HashMap;

use crate::probe::stacks::UnwindMaps;
use crate::process::{FileKey, ProcessTable};
use crate::unwind::table::{CfiTables, UNWIND_ROWS};

/// Keeps the in-kernel unwinder's tables in step with the target
/// processes: the CFI rows of every binary they map, reloaded when their
/// maps change (a library loaded, the launched command's exec). Processes
/// (or children) without tables get frame-pointer stacks.
pub(super) struct UnwindSync {
    tables: CfiTables,
    /// Processes checked at every poll.
    pub pids: Vec<u32>,
    /// The maps each pid had when its tables were last loaded.
    maps: HashMap<u32, String>,
    /// flameprobe's own executable: a launched command still running it
    /// has not exec'd yet.
    own_exe: Option<FileKey>,
}

impl UnwindSync {
    pub fn new() -> Self {
        UnwindSync {
            tables: CfiTables::new(UNWIND_ROWS),
            pids: Vec::new(),
            maps: HashMap::new(),
            own_exe: crate::proc::exe_key(std::process::id()).ok(),
        }
    }

    /// Syncs every process in `pids`.
    pub fn sync_all(&mut self, probe: &UnwindMaps<'_>, table: &mut ProcessTable) {
        for i in 0..self.pids.len() {
            let pid = self.pids[i];
            self.sync(probe, table, pid);
        }
    }

    fn still_our_image(&self, pid: u32) -> bool {
        let theirs = crate::proc::exe_key(pid);
        matches!((theirs, self.own_exe), (Ok(a), Some(b)) if a == b)
    }

    pub fn sync(&mut self, probe: &UnwindMaps<'_>, table: &mut ProcessTable, pid: u32) {
        let Ok(maps) = crate::proc::read_maps_text(pid) else {
            return; // exited: its stacks are complete already
        };
        if self.maps.get(&pid) == Some(&maps) || self.still_our_image(pid) {
            return;
        }
        let info = table.refresh(pid);
        if info.unavailable {
            return;
        }
        let loaded = self
            .tables
            .modules(info, |first, rows| probe.load_unwind_rows(first, rows))
            .and_then(|modules| probe.set_unwind_modules(pid, &modules));
        match loaded {
            Ok(()) => {
                self.maps.insert(pid, maps);
            }
            Err(e) => log::warn!("pid {pid}: unwind tables not loaded ({e}); frame-pointer stacks"),
        }
    }
}
