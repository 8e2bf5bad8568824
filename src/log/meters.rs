//! The workers' side of the Prometheus exporter (`--metrics`): counters and gauges in an
//! anonymous shared mapping the master makes before the first fork, one block per worker
//! slot, which the master reads when it is scraped.
//!
//! A request costs a few relaxed atomic adds and one clock read: no syscall, no lock, no
//! Python. Without `--metrics` there is no mapping, and each call below is one load and a
//! branch.
//!
//! Counters live in the slot, not in the process: a worker that takes over a slot goes on
//! from its predecessor's counts, so a worker's death neither loses requests nor resets a
//! Prometheus counter. Gauges are the current worker's; the master clears them when a
//! worker starts or is reaped.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the request-duration histogram's buckets, in microseconds (Prometheus
/// client libraries' defaults, with 1 ms and 2.5 ms for fast apps and 30 s for slow uploads).
pub const DURATION_BOUNDS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];
const BUCKETS: usize = DURATION_BOUNDS_US.len() + 1;

/// One worker slot's meters. Counters (`_total`) only grow while the master lives.
#[repr(C, align(64))]
#[derive(Default)]
pub struct SlotMeters {
    /// Connections accepted from the listeners.
    pub accepted: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    pub responses: [AtomicU64; 5],
    /// Requests refused before the app (malformed, too large): answered by the server.
    pub refused: AtomicU64,
    /// Requests by duration, one cell per bucket (not cumulative; the last is over every
    /// bound), and their sum in microseconds.
    pub duration: [AtomicU64; BUCKETS],
    pub duration_sum_us: AtomicU64,
    /// Time a thread of the worker waited to take the GIL back, in microseconds.
    pub gil_wait_us: AtomicU64,
    /// Idle keep-alive connections passed to a sibling, and taken from one.
    pub handed_off: AtomicU64,
    pub adopted: AtomicU64,
    /// Gauges: threads running the app, requests waiting for a thread, connections open,
    /// of which idle between requests, response bytes waiting for slow clients, threads.
    pub busy: AtomicU64,
    pub queued: AtomicU64,
    pub open: AtomicU64,
    pub idle: AtomicU64,
    pub outbox_bytes: AtomicU64,
    pub threads: AtomicU64,
}

/// A worker's view of its gauges, published by its loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub queued: u64,
    pub open: u64,
    pub idle: u64,
    pub outbox_bytes: u64,
}

/// The shared table of slot meters. Copyable: the mapping lives as long as the process.
#[derive(Clone, Copy, Debug)]
pub struct Meters {
    slots: NonNull<SlotMeters>,
    len: usize,
}

impl Meters {
    /// Maps `slots` zeroed blocks, shared with every process forked afterwards (untouched
    /// pages cost no memory).
    ///
    /// # Errors
    /// `mmap` failed.
    pub fn new(slots: usize) -> nix::Result<Meters> {
        let len = slots.max(1);
        Ok(Meters {
            slots: crate::unix::shared_zeroed::<SlotMeters>(len)?,
            len,
        })
    }

    /// The block of slot `index`.
    pub fn slot(&self, index: usize) -> &'static SlotMeters {
        let index = index % self.len;
        // SAFETY: `index` is within the mapping, which is never unmapped; SlotMeters is
        // atomics only, for which zeroed memory is a valid value.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// A worker is starting in slot `index` (or has left it): its predecessor's gauges go.
    pub fn clear_gauges(&self, index: usize) {
        let slot = self.slot(index);
        for gauge in [
            &slot.busy,
            &slot.queued,
            &slot.open,
            &slot.idle,
            &slot.outbox_bytes,
            &slot.threads,
        ] {
            gauge.store(0, Ordering::Relaxed);
        }
    }
}

// SAFETY: the table is only accessed through atomics.
unsafe impl Send for Meters {}
// SAFETY: as above.
unsafe impl Sync for Meters {}

/// This worker's block; null in the master and without `--metrics`.
static OWN: AtomicPtr<SlotMeters> = AtomicPtr::new(std::ptr::null_mut());

/// A worker process takes slot `index` of `meters` for everything it records; `threads` is
/// how many requests it runs at once.
pub fn adopt(meters: &Meters, index: usize, threads: usize) {
    let slot = meters.slot(index);
    slot.threads.store(threads as u64, Ordering::Relaxed);
    OWN.store(std::ptr::from_ref(slot).cast_mut(), Ordering::Release);
}

#[inline]
fn own() -> Option<&'static SlotMeters> {
    let ptr = OWN.load(Ordering::Acquire);
    // SAFETY: null, or a block of a mapping that is never unmapped (see `adopt`).
    unsafe { ptr.as_ref() }
}

/// Whether this process records meters.
pub fn enabled() -> bool {
    own().is_some()
}

/// The bucket a request of `micros` falls in.
fn bucket(micros: u64) -> usize {
    DURATION_BOUNDS_US
        .iter()
        .position(|&bound| micros <= bound)
        .unwrap_or(DURATION_BOUNDS_US.len())
}

/// A response went out with status `code`; the request began at `start`. (Code 0: none
/// went out, the client having gone; not a response.)
#[inline]
pub fn response(code: u16, start: Instant) {
    let Some(m) = own().filter(|_| code != 0) else {
        return;
    };
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let class = usize::from(code / 100).clamp(1, 5) - 1;
    m.responses[class].fetch_add(1, Ordering::Relaxed);
    m.duration[bucket(micros)].fetch_add(1, Ordering::Relaxed);
    m.duration_sum_us.fetch_add(micros, Ordering::Relaxed);
}

/// A request was refused before reaching the app.
pub fn refused() {
    if let Some(m) = own() {
        m.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection was accepted from a listener.
#[inline]
pub fn accepted() {
    if let Some(m) = own() {
        m.accepted.fetch_add(1, Ordering::Relaxed);
    }
}

/// An idle connection went to a sibling.
pub fn handed_off() {
    if let Some(m) = own() {
        m.handed_off.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection came from a sibling.
pub fn adopted() {
    if let Some(m) = own() {
        m.adopted.fetch_add(1, Ordering::Relaxed);
    }
}

/// A thread starts (true) or ends (false) running the app.
#[inline]
pub fn busy(running: bool) {
    if let Some(m) = own() {
        if running {
            m.busy.fetch_add(1, Ordering::Relaxed);
        } else {
            m.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A thread waited `waited` to take the GIL back.
#[inline]
pub fn gil_waited(waited: Duration) {
    if let Some(m) = own() {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        m.gil_wait_us.fetch_add(micros, Ordering::Relaxed);
    }
}

/// The loop's view of its connections and queue, now.
pub fn publish(gauges: Gauges) {
    if let Some(m) = own() {
        m.queued.store(gauges.queued, Ordering::Relaxed);
        m.open.store(gauges.open, Ordering::Relaxed);
        m.idle.store(gauges.idle, Ordering::Relaxed);
        m.outbox_bytes.store(gauges.outbox_bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_falls_in_the_first_bucket_whose_bound_holds_it() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000), 0);
        assert_eq!(bucket(1_001), 1);
        assert_eq!(bucket(30_000_000), DURATION_BOUNDS_US.len() - 1);
        assert_eq!(bucket(30_000_001), DURATION_BOUNDS_US.len());
    }

    #[test]
    fn slots_are_apart_and_whole_cache_lines() {
        assert_eq!(std::mem::size_of::<SlotMeters>() % 64, 0);
        let meters = Meters::new(4).unwrap();
        meters.slot(1).accepted.fetch_add(3, Ordering::Relaxed);
        meters.slot(1).busy.store(2, Ordering::Relaxed);
        assert_eq!(meters.slot(0).accepted.load(Ordering::Relaxed), 0);
        meters.clear_gauges(1);
        assert_eq!(meters.slot(1).busy.load(Ordering::Relaxed), 0);
        assert_eq!(
            meters.slot(1).accepted.load(Ordering::Relaxed),
            3,
            "counters stay"
        );
    }
}
