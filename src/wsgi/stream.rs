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
            let next_due = scan(&streams, now);
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

/// One look at the streams at `now`: sends the waiting bytes of each stream that became due,
/// and says when the next one will (None: none can until a stream hands the control to its
/// app again, which wakes the flusher).
fn scan(streams: &[Arc<Stream>], now: u64) -> Option<u64> {
    let mut next_due: Option<u64> = None;
    for stream in streams {
        // Only a stream whose app holds the control, with bytes waiting that were not
        // tried yet, can become due: one whose server side is writing (a slow client) or
        // whose socket was found full is not watched until it hands the control to its
        // app again (which wakes us).
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
    next_due
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

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::{available, nanos, scan, Stream, StreamGuard, COALESCE_BYTES, FLUSH_AFTER};
    use crate::transport::testing::{fill, pair, past_fill, received, with_python};
    use crate::transport::Transport;
    use crate::wsgi::app_head::AppHead;
    use crate::wsgi::response::{RequestFacts, ResponseWriter};

    fn stream(io: &Transport, app_since: u64) -> Arc<Stream> {
        Arc::new(Stream {
            io: io.clone(),
            app_since: AtomicU64::new(app_since),
            flushed_for: AtomicU64::new(0),
        })
    }

    #[test]
    fn waiting_bytes_go_out_once_the_app_kept_the_control_flush_after() {
        let (io, client) = pair();
        assert!(io.queue(&[IoSlice::new(b"chunk")], COALESCE_BYTES));
        let since = 1_000;
        let due = since + nanos(FLUSH_AFTER);
        let streams = [stream(&io, since)];

        assert_eq!(scan(&streams, due - 1), Some(due), "not yet: wake up then");
        assert!(received(&client).is_empty());
        assert_eq!(scan(&streams, due), None);
        assert_eq!(received(&client), b"chunk");
        assert_eq!(streams[0].flushed_for.load(Ordering::Relaxed), since);
    }

    #[test]
    fn a_stream_is_not_watched_while_the_server_has_the_control_or_nothing_waits() {
        let (io, client) = pair();
        let idle = [stream(&io, 0)];
        assert!(io.queue(&[IoSlice::new(b"chunk")], COALESCE_BYTES));
        assert_eq!(scan(&idle, u64::MAX), None, "the server is writing");
        assert!(received(&client).is_empty());

        let (empty_io, _c) = pair();
        let empty = [stream(&empty_io, 1)];
        assert_eq!(scan(&empty, u64::MAX), None, "nothing waits");
    }

    #[test]
    fn a_full_socket_is_tried_once_per_turn_of_the_app() {
        let (io, client) = pair();
        fill(&io);
        assert!(io.queue(&[IoSlice::new(b"chunk")], COALESCE_BYTES));
        let streams = [stream(&io, 1)];
        assert_eq!(scan(&streams, u64::MAX), None);
        assert!(io.has_pending_output(), "the client is not reading");
        let mut got = received(&client);
        assert_eq!(scan(&streams, u64::MAX), None);
        assert!(io.has_pending_output(), "not retried in a loop");

        // The app takes the control again: its bytes are watched again.
        streams[0].app_since.store(2, Ordering::SeqCst);
        assert_eq!(scan(&streams, u64::MAX), None);
        got.extend(received(&client));
        assert_eq!(past_fill(&got), b"chunk");
    }

    #[test]
    fn the_flusher_sends_what_waits_while_the_app_is_slow() {
        if !available() {
            return; // no thread could be started: responses are written chunk by chunk
        }
        let (io, client) = pair();
        let guard = StreamGuard::register(io.clone()).expect("a flusher");
        assert!(io.queue(&[IoSlice::new(b"event: tick\n\n")], COALESCE_BYTES));
        guard.app_running(true);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            got = received(&client);
        }
        assert_eq!(got, b"event: tick\n\n");
        guard.app_returned();
        drop(guard);
    }

    fn writer(io: &Transport) -> ResponseWriter {
        let facts = RequestFacts {
            version: (1, 0),
            is_head: false,
            method: "GET",
            keep_alive: false,
        };
        ResponseWriter::new(io.clone(), facts, Duration::from_secs(5))
    }

    fn ok() -> AppHead {
        let mut head = AppHead::default();
        head.set_status("200 OK");
        head
    }

    #[test]
    fn a_coalescing_response_collects_its_pieces_up_to_coalesce_bytes() {
        let (io, client) = pair();
        let mut w = writer(&io);
        let head = ok();
        w.coalesce();
        with_python(|_| {
            w.send(&head, b"one,").expect("sent");
            w.send(&head, b"two,").expect("sent");
            assert!(w.has_queued());
            assert!(received(&client).is_empty(), "the head and pieces wait");

            // A piece that would pass COALESCE_BYTES: what waits and it are written.
            let big = vec![b'x'; COALESCE_BYTES];
            w.send(&head, &big).expect("sent");
            let got = received(&client);
            assert!(got.starts_with(b"HTTP/1."), "the head first");
            let body = got.split(|&b| b == b'\n').next_back().unwrap_or_default();
            assert_eq!(body.len(), 8 + COALESCE_BYTES, "the body in full");
            assert!(body.starts_with(b"one,two,xx"));
            assert!(!w.has_queued());

            w.send(&head, b"three").expect("sent");
            assert!(received(&client).is_empty());
            w.finish(&head).expect("finished");
        });
        assert_eq!(received(&client), b"three", "finishing flushes");
        assert_eq!(w.body_bytes, 8 + COALESCE_BYTES as u64 + 5);
    }

    #[test]
    fn without_coalescing_each_piece_is_written_at_once() {
        let (io, client) = pair();
        let mut w = writer(&io);
        let head = ok();
        with_python(|_| {
            w.send(&head, b"one").expect("sent");
            assert!(received(&client).ends_with(b"\r\n\r\none"));
            w.send(&head, b"two").expect("sent");
            assert_eq!(received(&client), b"two");
        });
        assert!(!w.has_queued());
    }
}
