//! The workers a master knows, and the decisions it makes from that table alone: which
//! heartbeat slot and age a new worker gets, its `--max-requests` and `--workers-lifetime`
//! with jitter, which worker goes first when the pool shrinks, which ones timed out, which
//! ones to recycle for memory or age and when to ask them to go, and what a worker's exit
//! status means. No system calls here but the signals the caller asks for; the master's loop
//! (`mod.rs`) does the forking, reaping and hooks.

use std::collections::{BTreeMap, BTreeSet};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tracing::{error, info, warn};

use super::recycle::{self, Recycling, LIFETIME_JITTER_DIVISOR};
use crate::error::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use crate::worker::conn_table::ConnTable;
use crate::worker::heartbeat::{Leaving, MAX_WORKER_SLOTS};

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
    /// When it was forked (`monotonic_ms`), and its `--workers-lifetime` with jitter (ms).
    pub born_ms: u64,
    pub lifetime_ms: Option<u64>,
    /// Memory samples in a row over `--workers-max-rss`.
    pub rss_over: u32,
    /// Being recycled by the master (memory, age).
    pub recycling: Option<Recycling>,
}

impl WorkerRecord {
    /// A worker just forked at `born_ms`.
    pub fn new(age: u64, slot: usize, born_ms: u64, lifetime_ms: Option<u64>) -> WorkerRecord {
        WorkerRecord {
            age,
            slot,
            aborted: false,
            retiring: false,
            conn_table: None,
            born_ms,
            lifetime_ms,
            rss_over: 0,
            recycling: None,
        }
    }

    /// Recycled by the master: no longer counted (its successor is forked), asked to go
    /// once the successor serves.
    fn start_recycling(&mut self) {
        self.retiring = true;
        self.recycling = Some(Recycling::Waiting);
    }
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

    /// `--workers-lifetime` plus a random jitter in `0..=lifetime / 10`, drawn per worker.
    pub fn lifetime(&mut self, lifetime_ms: Option<u64>) -> Option<u64> {
        let lifetime = lifetime_ms?;
        Some(lifetime + self.random_below(lifetime / LIFETIME_JITTER_DIVISOR + 1))
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

    /// Marks as leaving the workers whose slot says they leave on their own (`leaving`),
    /// so their successors are forked now rather than once they are gone. Returns how many
    /// of them left for `--max-requests`; one the master recycles is not counted again.
    pub fn note_leaving(&mut self, leaving: impl Fn(usize) -> Option<Leaving>) -> u64 {
        let mut max_requests = 0;
        for record in self.records.values_mut() {
            if record.retiring {
                continue;
            }
            if let Some(why) = leaving(record.slot) {
                record.retiring = true;
                if why == Leaving::MaxRequests {
                    max_requests += 1;
                }
            }
        }
        max_requests
    }

    /// One memory sample of every counted worker (`rss_of`, in bytes) against `limit`:
    /// those over it for `samples` samples in a row are marked for recycling and returned
    /// with their last sample.
    pub fn sample_rss(
        &mut self,
        limit: u64,
        samples: u32,
        mut rss_of: impl FnMut(Pid, usize) -> Option<u64>,
    ) -> Vec<(Pid, u64)> {
        let mut over = Vec::new();
        for (pid, record) in self.records.iter_mut().filter(|(_, r)| !r.retiring) {
            let rss = rss_of(*pid, record.slot);
            if recycle::sample(&mut record.rss_over, rss, limit, samples) {
                record.start_recycling();
                over.push((*pid, rss.unwrap_or(0)));
            }
        }
        over
    }

    /// The counted workers whose lifetime has run out at `now` (ms), marked for recycling,
    /// each with its age in ms.
    pub fn expired(&mut self, now: u64) -> Vec<(Pid, u64)> {
        let mut expired = Vec::new();
        for (pid, record) in self.records.iter_mut().filter(|(_, r)| !r.retiring) {
            let age = now.saturating_sub(record.born_ms);
            if record.lifetime_ms.is_some_and(|lifetime| age >= lifetime) {
                record.start_recycling();
                expired.push((*pid, age));
            }
        }
        expired
    }

    /// The workers being recycled that may now be asked to go (pid, slot), marked asked:
    /// only once the pool is whole again (`target` counted workers) and every counted
    /// worker serves (`is_serving(slot)`), so the successors accept before the old ones
    /// stop.
    pub fn ready_to_retire(
        &mut self,
        target: usize,
        is_serving: impl Fn(usize) -> bool,
    ) -> Vec<(Pid, usize)> {
        let counted = self.records.values().filter(|r| !r.retiring);
        if self.active() < target || !counted.clone().all(|r| is_serving(r.slot)) {
            return Vec::new();
        }
        let mut ready = Vec::new();
        for (pid, record) in &mut self.records {
            if record.recycling == Some(Recycling::Waiting) {
                record.recycling = Some(Recycling::Asked);
                ready.push((*pid, record.slot));
            }
        }
        ready
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

/// Whether a worker ended in a way neither it nor the master chose: a non-zero exit, or a
/// signal other than a TERM (a graceful stop sent from outside).
pub fn died_unasked(status: WaitStatus) -> bool {
    match status {
        WaitStatus::Exited(_, code) => code != 0,
        WaitStatus::Signaled(_, sig, _) => sig != Signal::SIGTERM,
        _ => false,
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
        WorkerRecord::new(age, slot, 0, None)
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
        w.insert(pid(12), record(3, 6));
        let why = |slot: usize| match slot {
            5 => Some(Leaving::MaxRequests),
            6 => Some(Leaving::Other),
            _ => None,
        };
        assert_eq!(w.note_leaving(why), 1, "one left for --max-requests");
        assert_eq!(w.note_leaving(why), 0, "counted once");
        assert_eq!(w.active(), 1);
        assert_eq!(w.retire_oldest(), Some(pid(10)));
    }

    #[test]
    fn a_worker_the_master_recycles_is_not_counted_again_when_it_leaves() {
        let mut w = Workers::new(1);
        w.insert(pid(10), record(1, 0));
        assert_eq!(w.sample_rss(100, 1, |_, _| Some(200)), vec![(pid(10), 200)]);
        assert_eq!(w.note_leaving(|_| Some(Leaving::MaxRequests)), 0);
    }

    #[test]
    fn workers_over_the_memory_limit_for_the_samples_in_a_row_are_recycled() {
        let mut w = Workers::new(1);
        w.insert(pid(10), record(1, 0));
        w.insert(pid(11), record(2, 1));
        w.insert(pid(12), record(3, 2));
        // 10 grows and stays over; 11 goes over once, then under; 12 cannot be read.
        let rss = |round: u64| {
            move |p: Pid, _slot: usize| match p.as_raw() {
                10 => Some(150 + round),
                11 => Some(if round == 0 { 150 } else { 90 }),
                _ => None,
            }
        };
        assert!(w.sample_rss(120, 2, rss(0)).is_empty());
        assert_eq!(w.sample_rss(120, 2, rss(1)), vec![(pid(10), 151)]);
        assert_eq!(
            w.active(),
            2,
            "the recycled one stops counting: a successor is forked"
        );
        assert!(
            w.sample_rss(120, 2, rss(2)).is_empty(),
            "a worker being recycled is not sampled again"
        );
        assert!(w.sample_rss(120, 2, rss(3)).is_empty());
    }

    #[test]
    fn lifetimes_have_up_to_ten_percent_of_jitter_and_expire_from_the_fork() {
        let mut w = Workers::new(99);
        assert_eq!(w.lifetime(None), None);
        let draws: BTreeSet<u64> = (0..300)
            .map(|_| w.lifetime(Some(3_600_000)).unwrap())
            .collect();
        assert!(
            draws.iter().all(|&d| (3_600_000..=3_960_000).contains(&d)),
            "{draws:?}"
        );
        assert!(draws.len() > 100, "jitter spreads: {}", draws.len());
        let mut w = Workers::new(1);
        w.insert(pid(10), WorkerRecord::new(1, 0, 1_000, Some(60_000)));
        w.insert(pid(11), WorkerRecord::new(2, 1, 5_000, Some(63_000)));
        w.insert(pid(12), WorkerRecord::new(3, 2, 0, None));
        assert!(w.expired(60_999).is_empty());
        assert_eq!(w.expired(61_000), vec![(pid(10), 60_000)]);
        assert!(w.expired(61_000).is_empty(), "marked once");
        assert_eq!(w.expired(70_000), vec![(pid(11), 65_000)]);
        assert!(w.expired(u64::MAX).is_empty(), "no lifetime: never");
    }

    #[test]
    fn an_old_worker_is_asked_to_go_once_its_successor_serves() {
        let mut w = Workers::new(1);
        w.insert(pid(10), record(1, 0));
        w.insert(pid(11), record(2, 1));
        w.sample_rss(100, 1, |p, _| (p.as_raw() == 10).then_some(200));
        // Not yet: the pool is short of its successor.
        assert!(w.ready_to_retire(2, |_| true).is_empty());
        w.insert(pid(12), record(3, 2));
        // The successor (slot 2) still boots.
        assert!(w.ready_to_retire(2, |slot| slot != 2).is_empty());
        assert_eq!(w.ready_to_retire(2, |_| true), vec![(pid(10), 0)]);
        assert!(w.ready_to_retire(2, |_| true).is_empty(), "asked once");
        // With the pool shrunk to nothing (WINCH), nothing is waited for.
        let mut w = Workers::new(1);
        w.insert(pid(10), record(1, 0));
        w.sample_rss(100, 1, |_, _| Some(200));
        assert_eq!(w.ready_to_retire(0, |_| false), vec![(pid(10), 0)]);
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
