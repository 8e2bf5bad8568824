//! Streamed responses: an app's chunks are coalesced, yet none waits while the app does.
//!
//! A generator that yields many small chunks used to cost one `writev` and one TCP segment
//! per chunk (nearly all of its CPU time was the kernel's). Its chunks now collect in the
//! connection's outbox (`Transport::queue`, up to [`COALESCE_BYTES`]) and leave together.
//! What makes that safe for a slow stream (server-sent events, a progress report) is a
//! per-process flusher thread: while the app holds the control (inside its iterator's
//! `next()`) with bytes waiting, the flusher sends them once [`FLUSH_AFTER`] has passed,
//! without the GIL. A fast generator never gives it the time to.
//!
//! The flusher costs little: it wakes only when a stream's bytes become due, and sleeps
//! while none can (its app is fast, or its client is not reading), until a stream hands
//! the control to its app with bytes waiting (about one wake-up per chunk of a slow
//! stream, one per response of a fast one). The
//! first chunk of a response is written at once, as before, so a one-chunk iterable (a
//! Flask or Django response) never involves the flusher.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::transport::Transport;

/// The most a streamed response collects before writing.
pub const COALESCE_BYTES: usize = 64 * 1024;
/// How long bytes may wait while the app computes its next chunk.
pub const FLUSH_AFTER: Duration = Duration::from_micros(500);

/// One streamed response, as the flusher sees it.
struct Stream {
    io: Transport,
    /// When the app took the control with bytes waiting (nanoseconds after the epoch, plus
    /// one), or 0 while the server has it.
    app_since: AtomicU64,
    /// The `app_since` the flusher last flushed for: a socket it found full is not retried
    /// in a loop (the server's next write or the event loop sends the rest).
    flushed_for: AtomicU64,
}

/// The streams in flight, and the flusher's wake-up.
struct Flusher {
    streams: Mutex<Vec<Arc<Stream>>>,
    wake: Condvar,
    /// The flusher found no bytes waiting and sleeps until woken: the next stream to queue
    /// bytes must wake it.
    idle: AtomicBool,
    epoch: Instant,
}

fn lock(m: &Mutex<Vec<Arc<Stream>>>) -> MutexGuard<'_, Vec<Arc<Stream>>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Flusher {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// The flusher's life: sleep until a stream's bytes are due, send them, repeat.
    fn run(&self) {
        let mut streams = lock(&self.streams);
        loop {
            // Set before looking, so a stream queueing bytes after we looked at it sees
            // the flag and wakes us (it takes the lock first: we are waiting by then).
            self.idle.store(true, Ordering::SeqCst);
            let now = self.now();
            let mut next_due: Option<u64> = None;
            for stream in streams.iter() {
                // Only a stream whose app holds the control, with bytes waiting that were
                // not tried yet, can become due: one whose server side is writing (a slow
                // client) or whose socket was found full is not watched until it hands the
                // control to its app again (which wakes us).
                let since = stream.app_since.load(Ordering::SeqCst);
                if since == 0
                    || stream.flushed_for.load(Ordering::Relaxed) == since
                    || !stream.io.has_pending_output()
                {
                    continue;
                }
                let due = since.saturating_add(nanos(FLUSH_AFTER));
                if now >= due {
                    stream.flushed_for.store(since, Ordering::Relaxed);
                    // Errors are the request's to find on its next write.
                    let _ = stream.io.flush_nonblocking();
                } else {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                }
            }
            streams = if let Some(due) = next_due {
                self.idle.store(false, Ordering::SeqCst);
                let wait = Duration::from_nanos(due.saturating_sub(now));
                self.wake
                    .wait_timeout(streams, wait)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            } else {
                self.wake
                    .wait(streams)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The worker's flusher thread, started on first use (after fork: a thread does not survive
/// one). None if it could not be started; responses are then written chunk by chunk.
fn flusher() -> Option<&'static Flusher> {
    static FLUSHER: OnceLock<Option<&'static Flusher>> = OnceLock::new();
    *FLUSHER.get_or_init(|| {
        let flusher: &'static Flusher = Box::leak(Box::new(Flusher {
            streams: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            idle: AtomicBool::new(true),
            epoch: Instant::now(),
        }));
        std::thread::Builder::new()
            .name("rgunicorn-flush".into())
            .spawn(move || {
                // Signals belong to the main thread, where Python runs their handlers.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                flusher.run();
            })
            .ok()
            .map(|_| flusher)
    })
}

/// Whether streamed responses can be coalesced (the flusher thread runs).
pub fn available() -> bool {
    flusher().is_some()
}

/// A streamed response registered with the flusher; deregistered on drop, which waits for
/// a flush under way (the connection may be closed right after).
pub struct StreamGuard {
    flusher: &'static Flusher,
    stream: Arc<Stream>,
}

impl StreamGuard {
    /// Registers the response written to `io`; None if there is no flusher.
    pub fn register(io: Transport) -> Option<StreamGuard> {
        let flusher = flusher()?;
        let stream = Arc::new(Stream {
            io,
            app_since: AtomicU64::new(0),
            flushed_for: AtomicU64::new(0),
        });
        lock(&flusher.streams).push(Arc::clone(&stream));
        Some(StreamGuard { flusher, stream })
    }

    /// The app takes the control (its iterator's `next()`); `waiting` says bytes wait in
    /// the outbox: a sleeping flusher is woken to watch them.
    pub fn app_running(&self, waiting: bool) {
        // SeqCst with the flusher's `idle` flag: either it sees this time in its scan, or
        // we see it idle and wake it.
        self.stream
            .app_since
            .store(self.flusher.now(), Ordering::SeqCst);
        if waiting && self.flusher.idle.load(Ordering::SeqCst) {
            // Taking the lock orders this with the flusher's scan: it either sees our
            // bytes, or is already waiting and gets the notification.
            drop(lock(&self.flusher.streams));
            self.flusher.wake.notify_one();
        }
    }

    /// The server has the control back.
    pub fn app_returned(&self) {
        self.stream.app_since.store(0, Ordering::SeqCst);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        lock(&self.flusher.streams).retain(|s| !Arc::ptr_eq(s, &self.stream));
    }
}
