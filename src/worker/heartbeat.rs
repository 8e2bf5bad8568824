//! Worker heartbeats in shared memory: one atomic monotonic timestamp (milliseconds) per
//! worker slot, in an anonymous shared mapping created by the master before the first fork.
//!
//! Gunicorn touches a temp file per worker; on a disk-backed `/tmp` that `utime` can stall
//! and cause spurious timeouts (its issue #1863). A store to shared memory cannot.
//!
//! Beside each timestamp, a worker that decided to leave on its own (`--max-requests`,
//! `--reload`, `worker.alive = False`) says so and why, so the master forks its successor
//! at once instead of when the old one has finished its last connections. A worker also
//! says when it serves (its loop accepts), and the master may ask it to retire
//! (`--workers-max-rss`, `--workers-lifetime`): a flag the worker's loop reads each turn.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::unix::clock::monotonic_ms;

/// How many workers can exist at once (TTIN beyond this is refused); 256 KiB of memory.
pub const MAX_WORKER_SLOTS: usize = 8192;

/// The tables in the mapping, each of `MAX_WORKER_SLOTS` cells: the beats, then the flags.
const TABLES: usize = 4;
const LEAVING: usize = 1;
const SERVING: usize = 2;
const ASKED: usize = 3;

/// Why a worker leaves on its own (the master counts `--max-requests` recycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaving {
    /// It served `--max-requests` requests.
    MaxRequests,
    /// `--reload`, `worker.alive = False`, the app's `SystemExit` in a thread, or the
    /// master asked it to.
    Other,
}

/// The shared table of heartbeat slots. Copyable: the mapping lives as long as the process.
#[derive(Clone, Copy, Debug)]
pub struct Heartbeat {
    slots: NonNull<AtomicU64>,
}

impl Heartbeat {
    /// Maps the table, shared with every process forked afterwards.
    ///
    /// # Errors
    /// `mmap` failed.
    pub fn new() -> nix::Result<Heartbeat> {
        let slots = crate::unix::shared_zeroed::<AtomicU64>(TABLES * MAX_WORKER_SLOTS)?;
        Ok(Heartbeat { slots })
    }

    fn cell(&self, index: usize) -> &AtomicU64 {
        let index = index % (TABLES * MAX_WORKER_SLOTS);
        // SAFETY: `index` is within the mapping, which is never unmapped, and AtomicU64 has
        // the same layout as the zero-initialised u64 cells of the page.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    fn slot(&self, index: usize) -> &AtomicU64 {
        self.cell(index % MAX_WORKER_SLOTS)
    }

    fn flag(&self, table: usize, index: usize) -> &AtomicU64 {
        self.cell(table * MAX_WORKER_SLOTS + index % MAX_WORKER_SLOTS)
    }

    /// A new worker takes slot `index`: alive now, not serving yet, not leaving, not asked.
    pub fn start(&self, index: usize) {
        for table in [LEAVING, SERVING, ASKED] {
            self.flag(table, index).store(0, Ordering::Relaxed);
        }
        self.beat(index);
    }

    /// The worker in `index` is leaving on its own, for `why`: it takes no new connections.
    pub fn mark_leaving(&self, index: usize, why: Leaving) {
        let code = match why {
            Leaving::MaxRequests => 1,
            Leaving::Other => 2,
        };
        self.flag(LEAVING, index).store(code, Ordering::Release);
    }

    /// Whether (and why) the worker in `index` said it is leaving.
    pub fn leaving(&self, index: usize) -> Option<Leaving> {
        match self.flag(LEAVING, index).load(Ordering::Acquire) {
            0 => None,
            1 => Some(Leaving::MaxRequests),
            _ => Some(Leaving::Other),
        }
    }

    /// The worker in `index` has booted and accepts connections.
    pub fn mark_serving(&self, index: usize) {
        self.flag(SERVING, index).store(1, Ordering::Release);
    }

    /// Whether the worker in `index` has booted and accepts connections.
    pub fn is_serving(&self, index: usize) -> bool {
        self.flag(SERVING, index).load(Ordering::Acquire) != 0
    }

    /// The master asks the worker in `index` to retire (finish, hand over, leave) as
    /// `--max-requests` does.
    pub fn ask_to_retire(&self, index: usize) {
        self.flag(ASKED, index).store(1, Ordering::Release);
    }

    /// Whether the master asked the worker in `index` to retire.
    pub fn asked_to_retire(&self, index: usize) -> bool {
        self.flag(ASKED, index).load(Ordering::Acquire) != 0
    }

    /// Records that the worker in `index` is alive now.
    pub fn beat(&self, index: usize) {
        self.slot(index).store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Records that the worker in `index` last showed progress `age` ago (a threaded worker
    /// whose threads are all busy: the last request one of them started).
    pub fn beat_aged(&self, index: usize, age: std::time::Duration) {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self.slot(index)
            .store(monotonic_ms().saturating_sub(age_ms), Ordering::Relaxed);
    }

    /// The last beat of `index`, in `monotonic_ms` units.
    pub fn last(&self, index: usize) -> u64 {
        self.slot(index).load(Ordering::Relaxed)
    }
}

// SAFETY: the table is only accessed through atomics.
unsafe impl Send for Heartbeat {}
// SAFETY: as above.
unsafe impl Sync for Heartbeat {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn beats_are_visible_through_a_copy() {
        let hb = Heartbeat::new().unwrap();
        let copy = hb;
        hb.beat(3);
        assert!(copy.last(3) > 0);
        assert_eq!(copy.last(4), 0);
    }

    #[test]
    fn flags_are_per_slot_and_cleared_by_a_new_worker() {
        let hb = Heartbeat::new().unwrap();
        let last = MAX_WORKER_SLOTS - 1;
        hb.mark_leaving(last, Leaving::MaxRequests);
        hb.mark_serving(last);
        hb.ask_to_retire(last);
        assert_eq!(hb.leaving(last), Some(Leaving::MaxRequests));
        assert!(hb.is_serving(last) && hb.asked_to_retire(last));
        assert_eq!(hb.leaving(0), None);
        assert!(!hb.is_serving(0) && !hb.asked_to_retire(0));
        hb.mark_leaving(0, Leaving::Other);
        assert_eq!(hb.leaving(0), Some(Leaving::Other));
        // The flags do not touch the beats.
        assert_eq!(hb.last(last), 0);
        hb.start(last);
        assert_eq!(hb.leaving(last), None);
        assert!(!hb.is_serving(last) && !hb.asked_to_retire(last));
        assert!(hb.last(last) > 0);
    }
}
