//! `--tid` / `--thread REGEX`: the threads the probes record, filtered in
//! the kernel by thread id (bpf/targets.h `target_threads`). Thread ids
//! are known at the start; threads whose name matches are found then and
//! at every poll after (so threads started, or renamed, during the
//! recording join within a poll interval).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::probe::targets::TargetMaps;
use crate::proc;
use crate::target::{Filter, ThreadSelection};

/// How often every process on the machine is scanned for matching threads
/// (whole-machine recordings; targets by pid are scanned at every poll).
const SYSTEM_SCAN_EVERY: Duration = Duration::from_secs(1);

/// Finds the threads to record.
pub(crate) struct ThreadWatch {
    name: Option<Regex>,
    tids: Vec<u32>,
    /// Processes to scan; empty: every process (whole machine).
    pids: Vec<u32>,
    whole_machine: bool,
    known: HashSet<u32>,
    last_system_scan: Option<Instant>,
}

impl ThreadWatch {
    pub fn new(sel: &ThreadSelection, filter: &Filter) -> Self {
        ThreadWatch {
            name: sel.name.clone(),
            tids: sel.tids.clone(),
            pids: filter.pids().to_vec(),
            whole_machine: matches!(filter, Filter::All),
            known: HashSet::new(),
            last_system_scan: None,
        }
    }

    /// The threads to record from the start: the given ids and the
    /// threads of the targets whose name matches now.
    pub fn initial(&mut self) -> Vec<u32> {
        let mut out = self.tids.clone();
        let pids = self.pids_to_scan(&[]);
        out.extend(self.new_matches(&pids));
        self.known.extend(out.iter().copied());
        out
    }

    /// Adds threads that match since the last scan to every program's map.
    pub fn scan(&mut self, maps: &[TargetMaps<'_>]) {
        if self.name.is_none() {
            return;
        }
        if self.whole_machine {
            if self
                .last_system_scan
                .is_some_and(|t| t.elapsed() < SYSTEM_SCAN_EVERY)
            {
                return;
            }
            self.last_system_scan = Some(Instant::now());
        }
        // Children followed in the kernel are in its target map.
        let followed = maps.first().map(TargetMaps::pids).unwrap_or_default();
        let pids = self.pids_to_scan(&followed);
        for tid in self.new_matches(&pids) {
            self.known.insert(tid);
            for m in maps {
                if let Err(e) = m.add_thread(tid) {
                    log::warn!("thread {tid} not added: {e}");
                }
            }
            log::info!("recording thread {tid} (its name matches --thread)");
        }
    }

    fn pids_to_scan(&self, followed: &[u32]) -> Vec<u32> {
        if self.whole_machine {
            return proc::all_pids();
        }
        let mut pids = self.pids.clone();
        pids.extend(followed.iter().filter(|p| !self.pids.contains(p)));
        pids
    }

    /// Threads of `pids` with a matching name not seen before.
    fn new_matches(&self, pids: &[u32]) -> Vec<u32> {
        let Some(re) = &self.name else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &pid in pids {
            for tid in proc::thread_ids(pid) {
                if self.known.contains(&tid) {
                    continue;
                }
                if proc::read_comm(pid, tid).is_ok_and(|name| re.is_match(&name)) {
                    out.push(tid);
                }
            }
        }
        out
    }
}
