//! A connection's byte transport, below both the worker's event loop and the WSGI layer:
//! the socket (or a TLS session over it), waits with a deadline and the GIL released (woken
//! by signals through Python's wakeup fd, so TERM, QUIT or a timeout's ABRT are handled
//! while a client is slow), and an outbox of response bytes the client has not taken yet.
//!
//! The outbox is what keeps a slow reader from pinning the worker: when the socket is full,
//! up to [`OUTBOX_BYTES`] of a response (and a `sendfile` body of any size) wait there, the
//! request completes, and the event loop drains the rest while it serves other connections.
//! Only output beyond that bound makes the worker wait for the client.
//!
//! A [`Transport`] is a cheap handle (an `Arc`) shared by the event loop and the request's
//! Python objects. The socket belongs to it: once the connection is closed, every handle
//! still around (a `write` callable kept by the app) fails instead of reaching whatever
//! descriptor later reuses the number.
//!
//! Its files: `outbox` (what waits for the client, and the bounds), `tls` (a session's
//! records), `wait` (waits with a deadline, signals, [`IoError`]), `sys` (the system calls,
//! none of which waits).

mod outbox;
mod sys;
mod tls;
mod wait;

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;

pub use outbox::{queued_bytes, OUTBOX_BYTES};
use outbox::{Outbox, Segment};
use sys::{recv_now, send_now, sendfile_now, sendv_now};
use tls::{flush_tls, lock_session, read_plaintext, send_tls, write_plaintext};
use wait::{closed, wait_ready};
pub use wait::{drain_wake_fd, set_wake_fd, wake_fd, IoError};

/// The connection's state, shared by the event loop and the request's Python objects,
/// which any Python thread may use. They take turns: in the sync worker the loop waits
/// while the app runs; in the threaded worker the loop leaves a connection alone while a
/// thread serves it (`worker::pool`). That ordering, not the GIL, is what serialises them
/// (so it holds on a free-threaded Python too); the locks are there for Rust,
/// and are never waited for while holding the GIL: the outbox and socket locks are never
/// held across a wait, and the TLS session's (held while waiting for the socket) is only
/// tried: a second thread finding it taken gets an error, not a deadlock.
struct Link {
    /// The socket's number while it is open, -1 after [`Transport::close`].
    fd: AtomicI32,
    socket: Mutex<Option<OwnedFd>>,
    tls: Option<Mutex<rustls::ServerConnection>>,
    /// Plain sockets only; a TLS session buffers its own records (up to [`OUTBOX_BYTES`]).
    out: Mutex<Outbox>,
    /// Bytes sent from the outbox (or the TLS session's buffer) so far: a flush that moved
    /// this made progress.
    flushed: AtomicU64,
    /// Who answers the request in hand (see [`Transport::begin_response`]).
    answer: AtomicU8,
    /// The socket became ready while a thread had the connection (see
    /// [`Transport::note_ready_while_away`]).
    ready_while_away: AtomicBool,
}

/// [`Link::answer`]: nobody has begun the final response yet.
const ANSWER_OPEN: u8 = 0;
/// The app's writer has begun it.
const ANSWER_BY_APP: u8 = 1;
/// The worker, leaving, answered for the app (a 500): the app's writer may not begin.
const ANSWER_TAKEN_OVER: u8 = 2;

impl Drop for Link {
    fn drop(&mut self) {
        lock(&self.out).clear();
    }
}

/// Takes a lock that is never held across a wait (a panic cannot poison it: none happens
/// with it held, but a poisoned one is taken all the same).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection's byte stream: the socket itself, or a TLS session over it. Cloning is
/// cheap; every clone is the same connection.
#[derive(Clone)]
pub struct Transport(Arc<Link>);

impl Transport {
    /// A plain connection over `socket` (non-blocking).
    pub fn plain(socket: OwnedFd) -> Transport {
        Transport::new(socket, None)
    }

    /// A TLS connection over `socket` (non-blocking).
    pub fn tls(socket: OwnedFd, mut session: rustls::ServerConnection) -> Transport {
        session.set_buffer_limit(Some(OUTBOX_BYTES));
        Transport::new(socket, Some(Mutex::new(session)))
    }

    fn new(socket: OwnedFd, tls: Option<Mutex<rustls::ServerConnection>>) -> Transport {
        Transport(Arc::new(Link {
            fd: AtomicI32::new(socket.as_raw_fd()),
            socket: Mutex::new(Some(socket)),
            tls,
            out: Mutex::new(Outbox::default()),
            flushed: AtomicU64::new(0),
            answer: AtomicU8::new(ANSWER_OPEN),
            ready_while_away: AtomicBool::new(false),
        }))
    }

    /// The event loop let a readiness event pass while a thread has the connection (the
    /// socket is edge-triggered: no other event may come). The thread, giving it back,
    /// wakes the loop to read again (see `worker::pool`).
    pub fn note_ready_while_away(&self) {
        self.0.ready_while_away.store(true, Ordering::SeqCst);
    }

    /// Whether a readiness event passed while a thread had the connection; clears it.
    pub fn take_ready_while_away(&self) -> bool {
        self.0.ready_while_away.swap(false, Ordering::SeqCst)
    }

    /// A new request is about to run on this connection: nobody has answered it yet.
    pub fn new_request(&self) {
        self.0.answer.store(ANSWER_OPEN, Ordering::Release);
    }

    /// The app's writer is about to send the final response head (or an error page):
    /// false if the worker already answered in its place (the threaded worker, leaving
    /// while a thread still had the request).
    pub fn begin_response(&self) -> bool {
        match self.0.answer.compare_exchange(
            ANSWER_OPEN,
            ANSWER_BY_APP,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(current) => current == ANSWER_BY_APP,
        }
    }

    /// The worker is leaving while a thread has the request: true if nothing of the final
    /// response went out, in which case the caller answers (a 500) and the app's writer
    /// can no longer begin.
    pub fn take_over_response(&self) -> bool {
        self.0
            .answer
            .compare_exchange(
                ANSWER_OPEN,
                ANSWER_TAKEN_OVER,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Sends `bytes` as far as the socket takes them now, without waiting or touching the
    /// outbox (a leaving worker's last word on a connection a thread may still hold).
    pub fn send_now(&self, bytes: &[u8]) {
        if self.0.tls.is_some() {
            return;
        }
        if let Ok(fd) = self.socket() {
            let _ = send_now(fd, bytes);
        }
    }

    /// The socket's number (-1 once closed), for registering it with the event loop.
    pub fn raw_fd(&self) -> RawFd {
        self.0.fd.load(Ordering::Acquire)
    }

    /// The socket for one system call; an error once the connection is closed.
    fn socket(&self) -> Result<BorrowedFd<'_>, IoError> {
        match self.0.fd.load(Ordering::Acquire) {
            -1 => Err(closed(Errno::EBADF)),
            // SAFETY: the descriptor is open: only `close` closes it (from the event loop, or
            // a pool thread for a connection the loop closed, see `Pool::bury`), once the
            // request's objects are done with it (a request's end waits for their borrows),
            // and it sets the number to -1 first.
            fd => Ok(unsafe { BorrowedFd::borrow_raw(fd) }),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.0.tls.is_some()
    }

    /// Closes the socket now. Handles still held elsewhere fail from here on.
    pub fn close(&self) {
        self.0.fd.store(-1, Ordering::Release);
        lock(&self.0.out).clear();
        drop(lock(&self.0.socket).take());
    }

    /// Reads raw bytes (no TLS), to discard what a closing client still sends.
    ///
    /// # Errors
    /// As `read(2)`; EBADF once closed.
    pub fn read_raw(&self, buf: &mut [u8]) -> nix::Result<usize> {
        match self.socket() {
            Ok(fd) => recv_now(fd, buf),
            Err(_) => Err(Errno::EBADF),
        }
    }

    /// Shuts our sending side down (after the last response); false if that failed.
    pub fn shutdown_write(&self) -> bool {
        self.socket().is_ok_and(|fd| {
            nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Write).is_ok()
        })
    }

    /// Reads what is available without waiting: `Ok(0)` at end of stream, `WouldBlock`
    /// when nothing has arrived. TLS handshake replies are sent on the way.
    pub fn read_nonblocking(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize> {
        let fd = self
            .socket()
            .map_err(|_| std::io::Error::from(Errno::EBADF))?;
        let Some(tls) = &self.0.tls else {
            return recv_now(fd, buf).map_err(std::io::Error::from);
        };
        let mut tls = lock_session(tls)?;
        read_plaintext(fd, &mut tls, buf, timeout)
    }

    /// Reads what is available into `buf`'s spare capacity without waiting (plain
    /// sockets; a TLS connection reads through [`Transport::read_nonblocking`]): no copy
    /// through a scratch buffer.
    pub fn read_spare(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.read_spare_at_most(buf, usize::MAX)
    }

    /// [`Transport::read_spare`], at most `max` bytes.
    fn read_spare_at_most(&self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        let fd = self
            .socket()
            .map_err(|_| std::io::Error::from(Errno::EBADF))?;
        let spare = buf.spare_capacity_mut();
        let len = spare.len().min(max);
        // SAFETY: the kernel writes at most `len` (no more than `spare.len()`) bytes into
        // the vector's allocation past its length; no reference to the uninitialised bytes
        // is made.
        let n = unsafe {
            nix::libc::recv(
                fd.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                len,
                nix::libc::MSG_DONTWAIT,
            )
        };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        // SAFETY: `recv` initialised exactly `n` bytes after the old length.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Reads once into `buf`'s spare capacity (at most `max` bytes), waiting up to
    /// `timeout` for data; 0 at end of stream.
    pub fn read_some(
        &self,
        buf: &mut Vec<u8>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError> {
        let deadline = Instant::now() + timeout;
        if self.has_pending_output() {
            // What we owe the client (a `100 Continue`) goes first, as far as it can.
            self.flush_nonblocking()?;
        }
        let start = buf.len();
        // A plain socket reads into spare capacity; TLS decrypts into initialised bytes.
        let plain = self.0.tls.is_none();
        if plain {
            buf.reserve(max);
        } else {
            buf.resize(start + max, 0);
        }
        let result = loop {
            let read = if plain {
                self.read_spare_at_most(buf, max)
            } else {
                self.read_nonblocking(&mut buf[start..], timeout)
            };
            match read {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = wait_ready(self.raw_fd(), false, deadline) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(IoError::Closed(e)),
            }
        };
        if !plain {
            buf.truncate(start + *result.as_ref().unwrap_or(&0));
        }
        result
    }

    /// Sends every byte of `slices` (encrypted under TLS), or leaves what the socket does
    /// not take in the outbox while it has room; otherwise waits (GIL released) for the
    /// client, each wait lasting at most `timeout` without progress.
    pub fn write_all(&self, slices: &mut [IoSlice<'_>], timeout: Duration) -> Result<(), IoError> {
        if let Some(tls) = &self.0.tls {
            let mut tls = lock_session(tls).map_err(IoError::Closed)?;
            return write_plaintext(self.socket()?, &mut tls, slices, timeout);
        }
        let mut slices = slices;
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            // Queued bytes go out first, so order is kept.
            if self.flush_nonblocking()? {
                match sendv_now(self.socket()?, slices) {
                    Ok(0) => return Err(closed(std::io::ErrorKind::WriteZero)),
                    Ok(n) => {
                        IoSlice::advance_slices(&mut slices, n);
                        continue;
                    }
                    Err(Errno::EAGAIN) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(closed(e)),
                }
            }
            let len = slices.iter().map(|s| s.len()).sum();
            let mut out = lock(&self.0.out);
            if out.has_room(len) {
                out.push_bytes(slices);
                return Ok(());
            }
            drop(out);
            wait_ready(self.raw_fd(), true, Instant::now() + timeout)?;
        }
        Ok(())
    }

    /// Puts `slices` in the outbox without a system call, while it holds at most `limit`
    /// bytes: a streamed response's chunks are sent together, by a later write, a
    /// [`Transport::flush_nonblocking`] or the event loop. False (nothing queued) for a
    /// TLS connection (its session has its own buffer) or past the bound: write instead.
    pub fn queue(&self, slices: &[IoSlice<'_>], limit: usize) -> bool {
        if self.0.tls.is_some() {
            return false;
        }
        lock(&self.0.out).queue(slices, limit)
    }

    /// Sends `count` bytes of `file` from `offset` with `sendfile(2)` (no copy through user
    /// space); what the socket does not take now waits in the outbox, whatever its size.
    pub fn send_file(
        &self,
        file: BorrowedFd<'_>,
        mut offset: i64,
        count: u64,
    ) -> Result<(), IoError> {
        let mut left = count;
        if self.flush_nonblocking()? {
            while left > 0 {
                let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
                match sendfile_now(self.socket()?, file, &mut offset, chunk) {
                    // The file is shorter than announced: the framing cannot be kept.
                    Ok(0) => return Err(closed(std::io::ErrorKind::UnexpectedEof)),
                    Ok(n) => left -= n as u64,
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(closed(e)),
                }
            }
        }
        if left > 0 {
            let file = file.try_clone_to_owned().map_err(IoError::Closed)?;
            lock(&self.0.out)
                .segments
                .push_back(Segment::File { file, offset, left });
        }
        Ok(())
    }

    /// Bytes sent from what was waiting, so far (see [`Transport::flush_nonblocking`]).
    pub fn flushed_bytes(&self) -> u64 {
        self.0.flushed.load(Ordering::Relaxed)
    }

    /// Whether response bytes are still waiting for the client.
    pub fn has_pending_output(&self) -> bool {
        match &self.0.tls {
            // A session busy in another thread has work under way: count it as pending.
            Some(tls) => lock_session(tls).map_or(true, |t| t.wants_write()),
            None => !lock(&self.0.out).segments.is_empty(),
        }
    }

    /// Sends what is waiting without blocking: true once everything is out, false when the
    /// socket is full.
    ///
    /// # Errors
    /// The connection failed or is closed; nothing more can be sent.
    pub fn flush_nonblocking(&self) -> Result<bool, IoError> {
        if let Some(tls) = &self.0.tls {
            let mut tls = lock_session(tls).map_err(IoError::Closed)?;
            let sent = send_tls(self.socket()?, &mut tls)?;
            self.0.flushed.fetch_add(sent as u64, Ordering::Relaxed);
            return Ok(!tls.wants_write());
        }
        lock(&self.0.out).flush(|| self.socket(), &self.0.flushed)
    }

    /// Sends what is waiting, for at most `limit` (a worker about to exit gives its last
    /// answer this moment to leave); what does not go out by then is dropped.
    pub fn flush_for(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while matches!(self.flush_nonblocking(), Ok(false)) {
            if wait_ready(self.raw_fd(), true, deadline).is_err() {
                return;
            }
        }
    }

    /// Ends a TLS session politely (close_notify); nothing to do for plain sockets.
    pub fn close_notify(&self) {
        if let (Some(tls), Ok(fd)) = (&self.0.tls, self.socket()) {
            let Ok(mut tls) = lock_session(tls) else {
                return;
            };
            tls.send_close_notify();
            let _ = flush_tls(fd, &mut tls, Duration::from_millis(200));
        }
    }
}

/// For unit tests here and above (see `sys::testing`).
#[cfg(test)]
pub(crate) use sys::testing;

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::time::{Duration, Instant};

    use super::testing::{fill, pair, past_fill, received, with_python};
    use super::{IoError, OUTBOX_BYTES};

    const SHORT: Duration = Duration::from_millis(50);

    #[test]
    fn the_final_answer_is_begun_by_the_app_or_the_leaving_worker_never_both() {
        let (io, _client) = pair();
        assert!(io.begin_response(), "an open request: the app begins");
        assert!(
            io.begin_response(),
            "and may go on (an error page after a head)"
        );
        assert!(!io.take_over_response(), "too late for the worker");

        io.new_request();
        assert!(
            io.take_over_response(),
            "nothing went out: the worker answers"
        );
        assert!(
            !io.begin_response(),
            "and the app's writer may no longer begin"
        );
    }

    #[test]
    fn a_write_the_socket_takes_goes_out_at_once() {
        let (io, client) = pair();
        with_python(|_| {
            let mut slices = [
                IoSlice::new(b"HTTP/1.1 200 OK\r\n\r\n"),
                IoSlice::new(b"hi"),
            ];
            io.write_all(&mut slices, SHORT).expect("written");
        });
        assert!(!io.has_pending_output());
        assert_eq!(received(&client), b"HTTP/1.1 200 OK\r\n\r\nhi");
    }

    #[test]
    fn a_write_a_full_socket_refuses_waits_in_the_outbox_and_keeps_its_order() {
        let (io, client) = pair();
        let filled = fill(&io);
        let started = Instant::now();
        with_python(|_| {
            let mut slices = [IoSlice::new(b"first ")];
            io.write_all(&mut slices, Duration::from_secs(5))
                .expect("queued");
            let mut slices = [IoSlice::new(b"second")];
            io.write_all(&mut slices, Duration::from_secs(5))
                .expect("queued");
        });
        assert!(started.elapsed() < Duration::from_secs(1), "no wait");
        assert!(io.has_pending_output());

        // The client reads; the outbox drains in order.
        let mut got = received(&client);
        let flushed_before = io.flushed_bytes();
        assert!(io.flush_nonblocking().expect("flushed"), "everything out");
        assert!(io.flushed_bytes() > flushed_before);
        assert!(!io.has_pending_output());
        got.extend(received(&client));
        assert_eq!(got.len(), filled + 12);
        assert_eq!(past_fill(&got), b"first second");
    }

    #[test]
    fn past_the_outbox_bound_the_worker_waits_for_the_client_up_to_the_timeout() {
        let (io, _client) = pair();
        fill(&io);
        let big = vec![b'x'; OUTBOX_BYTES + 1];
        let started = Instant::now();
        let result = with_python(|_| io.write_all(&mut [IoSlice::new(&big)], SHORT));
        assert!(matches!(result, Err(IoError::TimedOut)), "{result:?}");
        assert!(started.elapsed() >= SHORT);
        assert!(!io.has_pending_output(), "nothing of it was queued");
    }

    #[test]
    fn queueing_collects_without_a_system_call_up_to_its_limit() {
        let (io, client) = pair();
        assert!(io.queue(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")], 6));
        assert!(io.queue(&[IoSlice::new(b"ef")], 6), "6 bytes: at the limit");
        assert!(
            !io.queue(&[IoSlice::new(b"g")], 6),
            "past it: write instead"
        );
        assert!(received(&client).is_empty(), "nothing sent yet");
        assert!(io.flush_nonblocking().expect("flushed"));
        assert_eq!(received(&client), b"abcdef");
    }

    #[test]
    fn a_read_waits_for_the_client_until_its_deadline() {
        let (io, client) = pair();
        let mut buf = Vec::new();
        let started = Instant::now();
        let result = with_python(|_| io.read_some(&mut buf, 100, SHORT));
        assert!(matches!(result, Err(IoError::TimedOut)), "{result:?}");
        let waited = started.elapsed();
        assert!(
            waited >= SHORT && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        assert!(buf.is_empty());

        nix::unistd::write(&client, b"GET").expect("client writes");
        let n = with_python(|_| io.read_some(&mut buf, 100, SHORT)).expect("read");
        assert_eq!((n, buf.as_slice()), (3, &b"GET"[..]));

        drop(client);
        let n = with_python(|_| io.read_some(&mut buf, 100, SHORT)).expect("end");
        assert_eq!(
            (n, buf.len()),
            (0, 3),
            "end of stream; the buffer as it was"
        );
    }

    #[test]
    fn a_closed_transport_refuses_and_drops_what_waited() {
        let (io, _client) = pair();
        let kept = io.clone();
        fill(&io);
        assert!(io.queue(&[IoSlice::new(b"late")], 100));
        io.close();
        assert_eq!(kept.raw_fd(), -1);
        assert!(!kept.has_pending_output(), "the outbox is emptied");
        assert!(matches!(kept.flush_nonblocking(), Ok(true)));
        let result = with_python(|_| kept.write_all(&mut [IoSlice::new(b"x")], SHORT));
        assert!(matches!(result, Err(IoError::Closed(_))), "{result:?}");
    }
}
