//! Worker heartbeats in shared memory: one atomic monotonic timestamp (milliseconds) per
//! worker slot, in an anonymous shared mapping created by the master before the first fork.
//!
//! Gunicorn touches a temp file per worker; on a disk-backed `/tmp` that `utime` can stall
//! and cause spurious timeouts (its issue #1863). A store to shared memory cannot.
//!
//! Beside each timestamp, a worker that decided to leave on its own (`--max-requests`,
//! `--reload`, `worker.alive = False`) says so, so the master forks its successor at once
//! instead of when the old one has finished its last connections.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

use crate::unix::clock::monotonic_ms;

/// How many workers can exist at once (TTIN beyond this is refused); 128 KiB of memory.
pub const MAX_WORKER_SLOTS: usize = 8192;

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
        // Heartbeats first, then the leaving flags.
        let len = NonZeroUsize::new(2 * MAX_WORKER_SLOTS * std::mem::size_of::<AtomicU64>())
            .ok_or(nix::Error::EINVAL)?;
        // SAFETY: an anonymous shared mapping of fresh zeroed memory; nothing else aliases it.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(Heartbeat { slots: ptr.cast() })
    }

    fn cell(&self, index: usize) -> &AtomicU64 {
        let index = index % (2 * MAX_WORKER_SLOTS);
        // SAFETY: `index` is within the mapping, which is never unmapped, and AtomicU64 has
        // the same layout as the zero-initialised u64 cells of the page.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    fn slot(&self, index: usize) -> &AtomicU64 {
        self.cell(index % MAX_WORKER_SLOTS)
    }

    fn leaving_flag(&self, index: usize) -> &AtomicU64 {
        self.cell(MAX_WORKER_SLOTS + index % MAX_WORKER_SLOTS)
    }

    /// A new worker takes slot `index`: alive now, not leaving.
    pub fn start(&self, index: usize) {
        self.leaving_flag(index).store(0, Ordering::Relaxed);
        self.beat(index);
    }

    /// The worker in `index` is leaving on its own: it takes no new connections.
    pub fn mark_leaving(&self, index: usize) {
        self.leaving_flag(index).store(1, Ordering::Release);
    }

    /// Whether the worker in `index` said it is leaving.
    pub fn is_leaving(&self, index: usize) -> bool {
        self.leaving_flag(index).load(Ordering::Acquire) != 0
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
    fn leaving_flags_are_per_slot_and_cleared_by_a_new_worker() {
        let hb = Heartbeat::new().unwrap();
        hb.mark_leaving(MAX_WORKER_SLOTS - 1);
        assert!(hb.is_leaving(MAX_WORKER_SLOTS - 1));
        assert!(!hb.is_leaving(0));
        // The flag does not touch the beats.
        assert_eq!(hb.last(MAX_WORKER_SLOTS - 1), 0);
        hb.start(MAX_WORKER_SLOTS - 1);
        assert!(!hb.is_leaving(MAX_WORKER_SLOTS - 1));
        assert!(hb.last(MAX_WORKER_SLOTS - 1) > 0);
    }
}
