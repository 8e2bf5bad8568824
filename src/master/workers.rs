//! The workers a master knows, and the decisions it makes from that table alone: which
//! heartbeat slot and age a new worker gets, its `--max-requests` with jitter, which worker
//! goes first when the pool shrinks, which ones timed out, and what a worker's exit status
//! means. No system calls here but the signals the caller asks for; the master's loop
//! (`mod.rs`) does the forking, reaping and hooks.

use std::collections::{BTreeMap, BTreeSet};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::error::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use crate::worker::conn_table::ConnTable;
use crate::worker::heartbeat::MAX_WORKER_SLOTS;

/// What the master knows of one worker.
#[derive(Debug)]
pub struct WorkerRecord {
    /// Spawn order; the oldest workers are the first to go when trimming.
    pub age: u64,
    pub slot: usize,
    /// SIGABRT was sent for a timeout; the next late check sends SIGKILL.
    pub aborted: bool,
    /// Leaving: sent SIGTERM to trim the pool (TTOU, HUP), or said it is leaving on its own
    /// (max-requests, reload): finishing its requests, no longer counted.
    pub retiring: bool,
    /// Its idle connections, rescued when it is reaped (see `worker::keeper`).
    pub conn_table: Option<ConnTable>,
}

/// What a late heartbeat calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Late {
    /// First time late: SIGABRT, so the worker reports where it hung.
    Abort,
    /// Still late after the abort: SIGKILL.
    Kill,
}

/// The table of live workers (by pid), with the spawn counter and the jitter's generator.
pub struct Workers {
    records: BTreeMap<Pid, WorkerRecord>,
    last_age: u64,
    rng: u64,
}

impl Workers {
    /// An empty table; `seed` starts the jitter's generator (any value but the same run to
    /// run is fine: jitter needs spread, not secrecy).
    pub fn new(seed: u64) -> Workers {
        Workers {
            records: BTreeMap::new(),
            last_age: 0,
            rng: seed | 1,
        }
    }

    /// The lowest heartbeat slot no worker holds.
    pub fn free_slot(&self) -> Option<usize> {
        let used: BTreeSet<usize> = self.records.values().map(|r| r.slot).collect();
        (0..MAX_WORKER_SLOTS).find(|s| !used.contains(s))
    }

    /// The age of the next worker (spawn order, from 1).
    pub fn next_age(&mut self) -> u64 {
        self.last_age += 1;
        self.last_age
    }

    /// `--max-requests` plus a random jitter in `0..=jitter`, as Gunicorn draws it per
    /// worker (0 stays 0: no limit).
    pub fn max_requests(&mut self, max_requests: u64, jitter: u64) -> u64 {
        if max_requests == 0 {
            return 0;
        }
        max_requests + self.random_below(jitter + 1)
    }

    fn random_below(&mut self, bound: u64) -> u64 {
        // xorshift64*: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if bound == 0 {
            0
        } else {
            r % bound
        }
    }

    pub fn insert(&mut self, pid: Pid, record: WorkerRecord) {
        self.records.insert(pid, record);
    }

    /// Forgets a reaped worker; None if it was not one of ours (a keeper, an orphan).
    pub fn remove(&mut self, pid: Pid) -> Option<WorkerRecord> {
        self.records.remove(&pid)
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Takes every record (the master stopping).
    pub fn take_all(&mut self) -> BTreeMap<Pid, WorkerRecord> {
        std::mem::take(&mut self.records)
    }

    /// Every worker's record, by pid.
    pub fn records(&self) -> impl Iterator<Item = (&Pid, &WorkerRecord)> {
        self.records.iter()
    }

    /// Each worker as `(pid, age, aborted)`: `server.WORKERS` for hooks.
    pub fn summaries(&self) -> Vec<(Pid, u64, bool)> {
        self.records
            .iter()
            .map(|(p, r)| (*p, r.age, r.aborted))
            .collect()
    }

    /// Workers still counted: not leaving.
    pub fn active(&self) -> usize {
        self.records.values().filter(|r| !r.retiring).count()
    }

    /// Marks as leaving the workers whose slot says they leave on their own, so their
    /// successors are forked now rather than once they are gone.
    pub fn note_leaving(&mut self, is_leaving: impl Fn(usize) -> bool) {
        for record in self.records.values_mut() {
            if !record.retiring && is_leaving(record.slot) {
                record.retiring = true;
            }
        }
    }

    /// Picks the oldest counted worker to leave when the pool shrinks, and marks it.
    pub fn retire_oldest(&mut self) -> Option<Pid> {
        let (&pid, record) = self
            .records
            .iter_mut()
            .filter(|(_, r)| !r.retiring)
            .min_by_key(|(_, r)| r.age)?;
        record.retiring = true;
        Some(pid)
    }

    /// The workers whose last beat (`last_beat(slot)`, in ms) is more than `limit_ms` before
    /// `now`, each with what it calls for; an aborted one is marked so.
    pub fn late(
        &mut self,
        now: u64,
        limit_ms: u64,
        last_beat: impl Fn(usize) -> u64,
    ) -> Vec<(Pid, Late)> {
        let mut late = Vec::new();
        for (pid, record) in &mut self.records {
            if now.saturating_sub(last_beat(record.slot)) <= limit_ms {
                continue;
            }
            if record.aborted {
                late.push((*pid, Late::Kill));
            } else {
                record.aborted = true;
                late.push((*pid, Late::Abort));
            }
        }
        late
    }

    /// Sends `sig` to every worker.
    pub fn signal_all(&self, sig: Signal) {
        for pid in self.records.keys() {
            let _ = kill(*pid, sig);
        }
    }
}

/// Logs a worker's end as Gunicorn does, and says whether the server must halt: a worker
/// that failed to boot or to load the app ends the master (reason, exit code).
pub fn report_exit(pid: Pid, status: WaitStatus) -> Option<(&'static str, i32)> {
    match status {
        WaitStatus::Exited(_, 0) => None,
        WaitStatus::Exited(_, code) => {
            error!("Worker (pid:{pid}) exited with code {code}.");
            match code {
                WORKER_BOOT_ERROR => Some(("Worker failed to boot.", code)),
                APP_LOAD_ERROR => Some(("App failed to load.", code)),
                _ => None,
            }
        }
        WaitStatus::Signaled(_, Signal::SIGKILL, _) => {
            error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
            None
        }
        WaitStatus::Signaled(_, Signal::SIGTERM, _) => {
            info!("Worker (pid:{pid}) was sent SIGTERM!");
            None
        }
        WaitStatus::Signaled(_, sig, _) => {
            warn!("Worker (pid:{pid}) was sent {}!", sig.as_str());
            None
        }
        _ => None,
    }
}

/// Whether Gunicorn calls `child_exit` for this end: not for a failed boot or app load
/// (the server halts instead).
pub fn runs_child_exit(status: WaitStatus) -> bool {
    !matches!(
        status,
        WaitStatus::Exited(_, WORKER_BOOT_ERROR | APP_LOAD_ERROR)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(age: u64, slot: usize) -> WorkerRecord {
        WorkerRecord {
            age,
            slot,
            aborted: false,
            retiring: false,
            conn_table: None,
        }
    }

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    #[test]
    fn slots_are_reused_lowest_first_and_ages_count_up() {
        let mut w = Workers::new(7);
        assert_eq!(w.free_slot(), Some(0));
        for (n, slot) in [(10, 0), (11, 1), (12, 2)] {
            let age = w.next_age();
            w.insert(pid(n), record(age, slot));
        }
        assert_eq!(w.free_slot(), Some(3));
        w.remove(pid(11));
        assert_eq!(w.free_slot(), Some(1));
        assert_eq!(w.next_age(), 4);
        assert!(w.remove(pid(99)).is_none(), "not ours");
    }

    #[test]
    fn max_requests_jitter_stays_within_bounds_and_spreads() {
        let mut w = Workers::new(12345);
        assert_eq!(w.max_requests(0, 50), 0, "0 is no limit, jitter or not");
        assert_eq!(w.max_requests(100, 0), 100);
        let draws: BTreeSet<u64> = (0..200).map(|_| w.max_requests(100, 10)).collect();
        assert!(draws.iter().all(|&d| (100..=110).contains(&d)), "{draws:?}");
        assert!(draws.len() > 5, "jitter spreads: {draws:?}");
    }

    #[test]
    fn the_oldest_counted_worker_is_retired_first() {
        let mut w = Workers::new(1);
        w.insert(pid(30), record(3, 0));
        w.insert(pid(10), record(1, 1));
        w.insert(pid(20), record(2, 2));
        assert_eq!(w.active(), 3);
        assert_eq!(w.retire_oldest(), Some(pid(10)));
        assert_eq!(
            w.retire_oldest(),
            Some(pid(20)),
            "a retiring one is not picked twice"
        );
        assert_eq!(w.active(), 1);
        assert_eq!(w.retire_oldest(), Some(pid(30)));
        assert_eq!(w.retire_oldest(), None);
    }

    #[test]
    fn a_worker_leaving_on_its_own_stops_counting() {
        let mut w = Workers::new(1);
        w.insert(pid(10), record(1, 0));
        w.insert(pid(11), record(2, 5));
        w.note_leaving(|slot| slot == 5);
        assert_eq!(w.active(), 1);
        assert_eq!(w.retire_oldest(), Some(pid(10)));
    }

    #[test]
    fn a_late_worker_is_aborted_then_killed() {
        let mut w = Workers::new(1);
        w.insert(pid(10), record(1, 0));
        w.insert(pid(11), record(2, 1));
        // Slot 0 beat at 1,000 ms, slot 1 at 9,500; now is 10,000 with a 5 s timeout.
        let beats = |slot: usize| if slot == 0 { 1_000 } else { 9_500 };
        assert_eq!(w.late(10_000, 5_000, beats), vec![(pid(10), Late::Abort)]);
        assert_eq!(w.late(10_000, 5_000, beats), vec![(pid(10), Late::Kill)]);
        assert_eq!(w.summaries(), vec![(pid(10), 1, true), (pid(11), 2, false)]);
        // Exactly at the limit is not late; a millisecond more is.
        assert!(w.late(14_500, 5_000, |_| 9_500).is_empty());
        assert_eq!(
            w.late(14_501, 5_000, |_| 9_500),
            vec![(pid(10), Late::Kill), (pid(11), Late::Abort)]
        );
    }

    #[test]
    fn boot_and_load_failures_halt_and_skip_child_exit() {
        let p = pid(42);
        let boot = WaitStatus::Exited(p, WORKER_BOOT_ERROR);
        let load = WaitStatus::Exited(p, APP_LOAD_ERROR);
        assert_eq!(
            report_exit(p, boot),
            Some(("Worker failed to boot.", WORKER_BOOT_ERROR))
        );
        assert_eq!(
            report_exit(p, load),
            Some(("App failed to load.", APP_LOAD_ERROR))
        );
        assert!(!runs_child_exit(boot) && !runs_child_exit(load));
        for other in [
            WaitStatus::Exited(p, 0),
            WaitStatus::Exited(p, 1),
            WaitStatus::Signaled(p, Signal::SIGKILL, false),
            WaitStatus::Signaled(p, Signal::SIGSEGV, true),
        ] {
            assert_eq!(report_exit(p, other), None, "{other:?}");
            assert!(runs_child_exit(other), "{other:?}");
        }
    }
}
