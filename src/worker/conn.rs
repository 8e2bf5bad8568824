//! One client connection as the event loop drives it: its state machine ([`State`]), the
//! bytes read ahead of the parser, and the two steps that need only the connection itself
//! (reading what arrived, and finding the next request in it).
//!
//! ```text
//!  accepted ──┬─> Idle ─bytes─> Head ─complete head─┬─> the app, in the loop ───┬─ all sent ─┐
//!  handed in ─┘  ^ │             ^                  └─> InApp (a pool thread) ──┤            │
//!  (adopted)     │ │             └─ undispatched (leaving) ─┘                   │            │
//!                │ │                               output waits ─> Flushing ────┴─ sent ─────┤
//!                └─┼─────────────────────────── keep-alive ──────────────────────────────────┤
//!                  │                                          close ─> Closing ─> closed <───┘
//!                  ├─ idle, nothing read: handed off ─> a sibling's (closed here)
//!                  ├─ the worker stops: last call (the deadline at most LAST_CALL away)
//!                  └─ deadline passed: expired ─> closed (bytes waiting after all: Head)
//! ```
//!
//! A leaving worker also passes on what is in Idle or Head, with the bytes read so far (not
//! TLS or PROXY-protocol connections). A deadline that passes in Head, Flushing or Closing (a
//! stalled head, a client not taking its response, the linger) closes the connection; InApp
//! has none: the app has its own watchdog.
//!
//! Deadlines are on the loop's clock, which stands still while a request is in the app, so
//! a connection's idle or head time counts only while the worker could have served it. A
//! deadline that passes closes the connection, except an idle one that turns out to have
//! bytes waiting: that request is served (see [`State::expiry`]).

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::http::error::error_page;
use crate::http::proxy::{parse_proxy, ProxyMode, ProxyParse};
use crate::http::request::{parse_head_resuming, HeadScan, Limits, RequestHead};
use crate::transport::Transport;
use crate::wsgi::environ::ConnEnv;

/// Read size per `read(2)` while waiting for a request head.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Spare capacity worth reading into directly (see `Conn::read_available`).
const DIRECT_READ_BYTES: usize = 4096;
/// A head larger than this is refused even when the configured limits are unlimited.
pub const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// How long a closing connection may take to send us its last bytes (Gunicorn: 2 s).
const LINGER: Duration = Duration::from_secs(2);
/// A deadline that never comes, for a connection whose request is in a pool thread.
const IN_APP_FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// When the worker stops, an idle keep-alive connection stays open this long (less if its
/// keep-alive ends sooner): a client in a request loop sends its next request right after
/// a response, and that request is answered (with `Connection: close`) instead of meeting
/// a reset. Short, so that stopping stays quick; Gunicorn 27.0.1's gthread worker does the
/// same for up to 2 s.
const LAST_CALL: Duration = Duration::from_secs(2);

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum Phase {
    /// Between requests: waiting up to `keepalive` for the next one.
    Idle,
    /// Some bytes of a head arrived (or a request is buffered): the rest must come before
    /// the head deadline.
    Head,
    /// A response is complete but the client has not taken all of it: the loop sends the
    /// rest as the socket drains (the worker serves others meanwhile), then goes on with
    /// [`After`]. Nothing is read from the connection until then.
    Flushing(After),
    /// Our side is shut down; discarding the client's last bytes before closing.
    Closing,
    /// The threaded worker: a pool thread is running the request. The loop neither reads,
    /// writes, expires nor moves the connection until the thread gives it back.
    InApp,
}

/// What a connection does once its response is out.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum After {
    KeepAlive,
    Close,
}

/// What the loop does next with a connection after a transition.
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum Next {
    /// Wait for (or serve) the next request.
    Read,
    /// Wait until the socket takes more of the response.
    Flush,
    /// Shut down and close.
    Close,
}

/// The timeouts transitions use (`--timeout` for heads and stalled writes, `--keep-alive`).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub head: Duration,
    pub keepalive: Duration,
}

/// What a passed deadline means for a connection (see [`State::expiry`]).
#[derive(PartialEq, Eq, Clone, Copy, Debug)]
pub enum Expiry {
    /// Its deadline has not come.
    NotYet,
    /// An idle connection's time is up, but a request may have arrived unseen: read it
    /// first, and close it only if nothing came.
    UnlessBytesWaiting,
    /// Close it.
    Close,
}

/// The state machine, kept apart from the I/O so its transitions can be tested alone. Its
/// fields change only through its methods (the transitions); the loop reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    phase: Phase,
    deadline: Instant,
    /// Responses completed on this connection (a fresh one is never "idle keep-alive").
    requests: u64,
}

impl State {
    /// Just accepted: the first request's head must come within the head timeout.
    pub fn fresh(now: Instant, t: Timeouts) -> State {
        State {
            phase: Phase::Idle,
            deadline: now + t.head,
            requests: 0,
        }
    }

    /// Handed in by a sibling (see `handoff`): a `fresh` one (no request yet) keeps the head
    /// timeout, one served before is between requests, on keep-alive time; with bytes the
    /// sibling had read (`buffered`), a head is under way.
    pub fn adopted(fresh: bool, buffered: bool, now: Instant, t: Timeouts) -> State {
        let mut state = State::fresh(now, t);
        if !fresh {
            state.requests = 1;
            state.deadline = now + t.keepalive;
        }
        if buffered {
            state.bytes_arrived(now, t);
        }
        state
    }

    #[inline]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    #[inline]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// No response has been completed on it yet.
    #[inline]
    pub fn before_first_request(&self) -> bool {
        self.requests == 0
    }

    /// Still reading a head (or waiting for one): the only phases that hold read-ahead.
    #[inline]
    pub fn reading(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Head)
    }

    /// Whether the watcher may hand it to a sibling during a long app call: idle between
    /// requests with nothing buffered (`buffered`) and the client still sending (`eof`
    /// not seen). Then, whether it is fresh (the receiver keeps the head timeout).
    pub fn may_hand_off(&self, buffered: bool, eof: bool) -> Option<bool> {
        (self.phase == Phase::Idle && !buffered && !eof).then_some(self.requests == 0)
    }

    /// Whether a leaving worker may pass it on with the `buffered` bytes it read (at most
    /// `max`): between requests or part-way through a head, the client still sending.
    pub fn may_pass_on(&self, buffered: usize, eof: bool, max: usize) -> bool {
        self.reading() && !eof && buffered <= max
    }

    /// What its deadline means at `now`; `eof`: the client's end of stream was read.
    pub fn expiry(&self, now: Instant, eof: bool) -> Expiry {
        if self.deadline > now {
            Expiry::NotYet
        } else if self.phase == Phase::Idle && !eof {
            Expiry::UnlessBytesWaiting
        } else {
            Expiry::Close
        }
    }

    /// Bytes arrived on an idle connection: a head is under way.
    pub fn bytes_arrived(&mut self, now: Instant, t: Timeouts) {
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.deadline = now + t.head;
        }
    }

    /// The app's response is complete; `output_pending`: the client has not taken all of
    /// it yet; `buffered`: bytes of a next request are already here.
    pub fn response_complete(
        &mut self,
        after: After,
        output_pending: bool,
        buffered: bool,
        now: Instant,
        t: Timeouts,
    ) -> Next {
        self.requests += 1;
        if output_pending {
            self.phase = Phase::Flushing(after);
            self.deadline = now + t.head;
            return Next::Flush;
        }
        self.response_sent(after, buffered, now, t)
    }

    /// A flushing response went out whole.
    pub fn output_drained(&mut self, buffered: bool, now: Instant, t: Timeouts) -> Next {
        match self.phase {
            Phase::Flushing(after) => self.response_sent(after, buffered, now, t),
            _ => Next::Read,
        }
    }

    fn response_sent(&mut self, after: After, buffered: bool, now: Instant, t: Timeouts) -> Next {
        match after {
            After::Close => Next::Close,
            After::KeepAlive if buffered => {
                self.phase = Phase::Head;
                self.deadline = now + t.head;
                Next::Read
            }
            After::KeepAlive => {
                self.phase = Phase::Idle;
                self.deadline = now + t.keepalive;
                Next::Read
            }
        }
    }

    /// The client took more of a flushing response: its write deadline starts again.
    pub fn output_progress(&mut self, now: Instant, t: Timeouts) {
        if matches!(self.phase, Phase::Flushing(_)) {
            self.deadline = now + t.head;
        }
    }

    /// A pool thread took the request: no deadline (the request has arrived; the app has
    /// its own `--timeout` watchdog), until [`State::response_complete`].
    pub fn dispatched(&mut self, now: Instant) {
        self.phase = Phase::InApp;
        self.deadline = now + IN_APP_FOREVER;
    }

    /// The request went back from the pool's queue unstarted (the worker is leaving): its
    /// head is in the buffer again, to be served or passed on.
    pub fn undispatched(&mut self, now: Instant, t: Timeouts) {
        if self.phase == Phase::InApp {
            self.phase = Phase::Head;
            self.deadline = now + t.head;
        }
    }

    /// Our side is shut down: discard what the client still sends, briefly.
    pub fn closing(&mut self, now: Instant) {
        self.phase = Phase::Closing;
        self.deadline = now + LINGER;
    }

    /// The worker is stopping: an idle connection gets a last call (never a longer wait).
    pub fn last_call(&mut self, buffered: bool, now: Instant) {
        if self.phase == Phase::Idle && !buffered {
            self.deadline = self.deadline.min(now + LAST_CALL);
        }
    }
}

/// The next request on a connection, or why there is none.
pub enum Parsed {
    Request(RequestHead),
    /// More bytes are needed.
    Incomplete,
    /// Refused: log `Invalid request from ip=…: <reason>`, answer `page`, close.
    Refused {
        reason: String,
        page: Vec<u8>,
    },
}

/// What the PROXY protocol settings allow.
#[derive(Clone, Copy)]
pub struct ProxyPolicy<'a> {
    pub mode: ProxyMode,
    pub allow: &'a crate::config::TrustedPeers,
}

pub struct Conn {
    pub state: State,
    pub buf: Vec<u8>,
    /// Where the head parser stopped in `buf` (it resumes there when more bytes come).
    scan: HeadScan,
    /// Shared with the thread serving a request, in the threaded worker.
    pub env: std::sync::Arc<ConnEnv>,
    /// The client shut down its sending side (its end of stream was read).
    pub eof: bool,
    /// Polling reported the client's FIN: read until the end of stream is seen.
    pub peer_closed: bool,
    /// Already in the loop's list for the next turn.
    pub queued: bool,
    /// The socket (it owns it), or the TLS session over it.
    pub io: Transport,
    pub accepted_at: Instant,
    /// The TCP peer (None on unix sockets), before any PROXY header.
    peer_ip: Option<std::net::IpAddr>,
    /// Index of the listener that accepted it.
    pub listener: usize,
    /// It may move to another worker (not TLS, not PROXY protocol).
    movable: bool,
    /// A PROXY header may still come (only before the first request).
    proxy_pending: bool,
}

impl Conn {
    pub fn new(
        io: Transport,
        env: ConnEnv,
        peer_ip: Option<std::net::IpAddr>,
        listener: usize,
        proxy: ProxyMode,
        state: State,
    ) -> Conn {
        Conn {
            state,
            buf: Vec::new(),
            scan: HeadScan::default(),
            movable: !io.is_tls() && proxy == ProxyMode::Off,
            env: std::sync::Arc::new(env),
            eof: false,
            peer_closed: false,
            queued: false,
            io,
            accepted_at: Instant::now(),
            peer_ip,
            listener,
            proxy_pending: proxy != ProxyMode::Off,
        }
    }

    /// Just accepted, and nothing received yet.
    pub fn is_silent_fresh(&self) -> bool {
        self.state.requests == 0 && self.state.phase == Phase::Idle && self.buf.is_empty()
    }

    /// The socket, listener and freshness (no request yet), if this connection is idle and
    /// may move to a sibling.
    pub fn handoff_candidate(&self) -> Option<(RawFd, usize, bool)> {
        if !self.movable {
            return None;
        }
        let fresh = self.state.may_hand_off(!self.buf.is_empty(), self.eof)?;
        Some((self.io.raw_fd(), self.listener, fresh))
    }

    /// Whether it may be passed on with what it has read (a worker leaving mid-way).
    pub fn may_move_with_buffer(&self, max_bytes: usize) -> bool {
        self.movable && self.state.may_pass_on(self.buf.len(), self.eof, max_bytes)
    }

    /// Reads what arrived, until the socket is empty, the peer closed, or a complete
    /// request head is buffered (no further read-ahead while that request waits to be
    /// served; buffers grow only with bytes received). Returns whether the socket was read
    /// empty.
    pub fn read_available(&mut self, timeout: Duration) -> bool {
        // One buffer per thread, zeroed once: a fresh 16 KiB array per call cost a memset
        // per request (a third of the instructions of a small request).
        thread_local! {
            static CHUNK: std::cell::RefCell<Box<[u8]>> =
                std::cell::RefCell::new(vec![0u8; READ_CHUNK_BYTES].into_boxed_slice());
        }
        CHUNK.with_borrow_mut(|chunk| self.read_into(timeout, chunk))
    }

    fn read_into(&mut self, timeout: Duration, chunk: &mut [u8]) -> bool {
        // A plain socket that returned less than asked for was empty at that moment, and
        // edge-triggered polling reports whatever arrives later: no read to see EAGAIN.
        // (A TLS session may hold decrypted bytes back, so it is read until EAGAIN.)
        let short_read_drains = !self.io.is_tls() && !self.peer_closed;
        loop {
            if self.eof {
                return true;
            }
            if self.buf.len() >= MAX_HEAD_BYTES + READ_CHUNK_BYTES
                || self.scan.head_complete_in(&self.buf)
            {
                return false;
            }
            // A buffer that already has room (it held a large request before) is read into
            // directly; otherwise through `chunk`, so buffers grow only with bytes received.
            let spare = self.buf.capacity() - self.buf.len();
            let (asked, read) = if spare >= DIRECT_READ_BYTES && !self.io.is_tls() {
                (spare, self.io.read_spare(&mut self.buf))
            } else {
                let read = self.io.read_nonblocking(chunk, timeout);
                if let Ok(n) = read {
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                (chunk.len(), read)
            };
            match read {
                Ok(0) => self.eof = true,
                Ok(n) if n < asked && short_read_drains => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => self.eof = true,
            }
        }
    }

    /// Finds the next request at the start of the buffer (after a PROXY header on a new
    /// connection). Its head's `head_len` bytes stay at the front of the buffer, for the
    /// request to drop (see `wsgi::Exchange`); what follows is the body, maybe a pipelined
    /// request.
    pub fn next_request(&mut self, limits: &Limits, proxy: ProxyPolicy<'_>) -> Parsed {
        if self.buf.is_empty() {
            return Parsed::Incomplete;
        }
        if self.proxy_pending {
            match parse_proxy(&self.buf, proxy.mode) {
                Ok(ProxyParse::NeedMore) => {
                    self.scan.searched_all(&self.buf);
                    return Parsed::Incomplete;
                }
                Ok(ProxyParse::Absent) => self.proxy_pending = false,
                Ok(ProxyParse::Header(header, len)) => {
                    if !proxy.allow.trusts(self.peer_ip) {
                        return Parsed::Refused {
                            reason: "Request forbidden".into(),
                            page: error_page(403, "Forbidden", "Request forbidden"),
                        };
                    }
                    self.buf.drain(..len);
                    self.scan = HeadScan::default();
                    self.proxy_pending = false;
                    self.take_proxy_addresses(&header);
                    if self.buf.is_empty() {
                        return Parsed::Incomplete;
                    }
                }
                Err(msg) => {
                    return Parsed::Refused {
                        page: error_page(400, "Bad Request", &msg),
                        reason: msg,
                    }
                }
            }
        }
        match parse_head_resuming(&self.buf, limits, &mut self.scan) {
            Ok(Some(head)) => {
                // The head's bytes stay in front of the body until the request is over
                // (`Exchange::head_len`): taking them out now would move the whole body.
                self.scan = HeadScan::default();
                Parsed::Request(head)
            }
            Ok(None) if self.buf.len() >= MAX_HEAD_BYTES => Parsed::Refused {
                reason: format!("request head larger than {MAX_HEAD_BYTES} bytes"),
                page: too_large_page(),
            },
            Ok(None) => {
                self.scan.searched_all(&self.buf);
                Parsed::Incomplete
            }
            Err(e) => Parsed::Refused {
                reason: e.to_string(),
                page: e.to_error_page(),
            },
        }
    }

    /// The client's address from a PROXY header; the address it connected to on the proxy
    /// becomes `PROXY_ADDR`/`PROXY_PORT` (Gunicorn's `proxy_addr`/`proxy_port`).
    fn take_proxy_addresses(&mut self, header: &crate::http::proxy::ProxyHeader) {
        // Before the first request: no request's thread shares the environment yet.
        let Some(env) = std::sync::Arc::get_mut(&mut self.env) else {
            return;
        };
        let (addr, port) = header
            .destination
            .map(|d| (d.ip().to_string(), d.port().to_string()))
            .unwrap_or_default();
        env.proxy = Some((header.protocol.to_string(), addr, port));
        if let Some(src) = header.source {
            env.remote_ip = src.ip().to_string();
            env.remote_port = Some(src.port());
        }
    }
}

/// The 431 page for a head too large to hold.
pub fn too_large_page() -> Vec<u8> {
    error_page(
        431,
        "Request Header Fields Too Large",
        "Request header section too large",
    )
}

#[cfg(test)]
mod tests;
