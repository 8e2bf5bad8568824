//! A connection's life, request by request: [`EventLoop::on_ready`] takes it one step
//! each time the loop finds it ready (read a head, run the app here or in a pool thread,
//! flush, keep alive or close). See `conn` for the states it goes through.

use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::errno::Errno;
use pyo3::prelude::*;
use tracing::{info, warn};

use super::conn::{After, Next, Parsed, Phase, ProxyPolicy};
use super::conns::LARGE_BUFFER_BYTES;
use super::event_loop::{exit_status, EventLoop, CONN_BASE};
use crate::http::request::RequestHead;
use crate::wsgi::{Exchange, Outcome};

impl EventLoop<'_> {
    /// A connection's life, one step each time it may go on (its socket is ready, or a
    /// request waits in its buffer). Returns the worker's exit status when it must leave.
    ///
    /// Read a head; run the app on it, here or in a pool thread (which gives the
    /// connection back through [`EventLoop::take_finished`]); then [`EventLoop::request_done`]
    /// flushes, keeps alive or closes. Between requests an idle connection is offered for
    /// hand-off to a sibling (`refresh_idle`), and the table expires it when its time is up.
    pub(super) fn on_ready(&mut self, idx: usize) -> Option<i32> {
        let conn = self.conns.get(idx)?.as_ref()?;
        match conn.state.phase() {
            // A response the client has not taken all of: send more, then go on.
            Phase::Flushing(_) => {
                self.flush(idx);
                return None;
            }
            // Our side is shut: drop what the client still sends until it closes too.
            Phase::Closing => {
                self.discard_input(idx);
                return None;
            }
            // A pool thread has it; the loop looks again when the thread gives it back,
            // which this event makes it do at once.
            Phase::InApp => {
                conn.io.note_ready_while_away();
                return None;
            }
            Phase::Idle | Phase::Head => {}
        }
        let drained = self.read_head(idx)?;
        let served = match self.next_head(idx) {
            // Under a static route: answered here, in any worker, without Python.
            Parsed::Request(head)
                if self.statics.as_ref().is_some_and(|s| s.serves(&head.path)) =>
            {
                match self.serve_static(idx, &head) {
                    Served::Request => true,
                    Served::Exit(code) => return Some(code),
                    Served::Flushing | Served::Closed => return None,
                }
            }
            Parsed::Request(head) if self.pool.is_some() => {
                self.run_in_pool(idx, head);
                return None;
            }
            Parsed::Request(head) => {
                let outcome = self.run_app(idx, &head)?;
                match self.request_done(idx, outcome) {
                    Served::Request => true,
                    Served::Exit(code) => return Some(code),
                    Served::Flushing | Served::Closed => return None,
                }
            }
            Parsed::Incomplete => false,
            Parsed::Refused { page, .. } => match self.reject(idx, &page) {
                Served::Exit(code) => return Some(code),
                _ => return None,
            },
        };
        // Answered (or still incomplete): serve what follows next turn, wait, or close.
        let conn = self.conns.get(idx)?.as_ref()?;
        match after_turn(conn.eof, !conn.buf.is_empty(), served, drained) {
            AfterTurn::Close => self.close(idx),
            AfterTurn::ReadAgain => self.requeue(idx),
            AfterTurn::Wait => {}
        }
        None
    }

    /// Reads what arrived (edge-triggered: until EAGAIN, or again next turn), within the
    /// worker's read-ahead budget. Whether the socket was read empty, or None if the
    /// connection no longer reads a head (the budget refused it).
    fn read_head(&mut self, idx: usize) -> Option<bool> {
        let drained = self.read_available(idx);
        let now = self.clock();
        let conn = self.conns.get_mut(idx).and_then(Option::as_mut)?;
        if !conn.buf.is_empty() {
            conn.state.bytes_arrived(now, self.timeouts);
        }
        self.enforce_read_budget(idx);
        // The budget may have refused this very connection.
        let conn = self.conns.get(idx).and_then(Option::as_ref)?;
        conn.state.reading().then_some(drained)
    }

    /// The request at the start of the connection's buffer, if its head is complete (a
    /// refused one is logged here).
    fn next_head(&mut self, idx: usize) -> Parsed {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Parsed::Incomplete;
        };
        let proxy = ProxyPolicy {
            mode: self.seed.config.proxy_protocol,
            allow: &self.seed.config.proxy_allow_ips,
        };
        let parsed = conn.next_request(&self.limits, proxy);
        if let Parsed::Refused { reason, .. } = &parsed {
            warn!("Invalid request from ip={}: {reason}", conn.env.remote_ip);
        }
        parsed
    }

    /// Whether the request about to run may leave its connection open.
    pub(super) fn may_keep_alive(&self) -> bool {
        // Requests already in threads count toward --max-requests too.
        let counted = self.served + self.in_app.len() as u64;
        let slots_left = self
            .pool
            .as_ref()
            .is_none_or(|p| self.seed.config.worker_connections > p.threads());
        may_keep_alive(
            super::signals::is_alive(),
            !self.timeouts.keepalive.is_zero(),
            slots_left,
            self.seed.max_requests,
            counted,
        )
    }

    /// The threaded worker: a pool thread runs the app and writes the response; the
    /// connection is InApp (the loop does not touch it) until `take_finished`.
    fn run_in_pool(&mut self, idx: usize, head: RequestHead) {
        let may_keep_alive = self.may_keep_alive();
        let (Some(pool), Some(conn)) =
            (&self.pool, self.conns.get_mut(idx).and_then(Option::as_mut))
        else {
            return;
        };
        let now = Instant::now();
        conn.state.dispatched(now);
        conn.io.new_request();
        pool.submit(super::pool::Job {
            idx,
            io: conn.io.clone(),
            buf: std::mem::take(&mut conn.buf),
            env: std::sync::Arc::clone(&conn.env),
            head,
            may_keep_alive,
        });
        self.in_app.push((idx, now));
    }

    /// The sync worker: runs the app here. Meanwhile the watcher may hand idle connections
    /// to siblings; the loop closes its copies when the app returns.
    fn run_app(&mut self, idx: usize, head: &RequestHead) -> Option<Outcome> {
        let may_keep_alive = self.may_keep_alive();
        let conn = self.conns.get_mut(idx).and_then(Option::as_mut)?;
        let mut exchange = Exchange {
            io: conn.io.clone(),
            buf: &mut conn.buf,
            head_len: head.head_len,
            conn: &conn.env,
            may_keep_alive,
        };
        let began = Instant::now();
        if let Some(watcher) = &self.watcher {
            watcher.call_started();
        }
        crate::log::meters::busy(true);
        let outcome = Python::attach(|py| self.runtime.handle(py, &mut exchange, head, began));
        crate::log::meters::busy(false);
        drop(exchange);
        if let Some(watcher) = &self.watcher {
            watcher.call_ended(&mut self.handed);
        }
        self.busy += began.elapsed();
        // Connections a sibling took over while the app ran: only our copy is closed.
        for handed in std::mem::take(&mut self.handed) {
            self.close(handed);
        }
        Some(outcome)
    }

    /// Answers an unparsable request with its error page and closes the connection.
    pub(super) fn reject(&mut self, idx: usize, page: &[u8]) -> Served {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Served::Closed;
        };
        // Nothing more is read or served from it: its read-ahead is freed now.
        conn.buf = Vec::new();
        crate::log::meters::refused();
        let slices = &mut [std::io::IoSlice::new(page)];
        let began = Instant::now();
        let written = conn.io.write_all(slices, self.timeouts.head);
        self.busy += began.elapsed();
        if let Err(crate::transport::IoError::Signal(e)) = written {
            return self.stopped_while_writing(idx, &e);
        }
        self.finish_response(idx, After::Close)
    }

    /// A stop signal (QUIT, ABRT) came while a client was slow to take what the loop wrote
    /// itself: the connection closes and the worker leaves.
    pub(super) fn stopped_while_writing(&mut self, idx: usize, e: &PyErr) -> Served {
        let code = Python::attach(|py| exit_status(py, e));
        self.close(idx);
        if self.pool.is_none() {
            return Served::Exit(code);
        }
        self.leave_threaded(code);
        Served::Closed
    }
    /// A response is complete: go on with `after` now, or once the loop has sent what the
    /// client has not taken yet.
    fn finish_response(&mut self, idx: usize, after: After) -> Served {
        let now = self.clock();
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Served::Closed;
        };
        let pending = conn.io.has_pending_output();
        let next =
            conn.state
                .response_complete(after, pending, !conn.buf.is_empty(), now, self.timeouts);
        self.go_on(idx, next)
    }
    /// After a request's app call (in the loop or in a thread): count it, then go on with
    /// the connection.
    pub(super) fn request_done(&mut self, idx: usize, outcome: Outcome) -> Served {
        self.served += 1;
        self.seed.heartbeat.beat(self.seed.slot);
        if reached_max_requests(self.seed.max_requests, self.served) && super::signals::is_alive() {
            info!("Autorestarting worker after current request.");
            super::signals::retire(super::heartbeat::Leaving::MaxRequests);
        }
        match outcome {
            Outcome::KeepAlive => self.finish_response(idx, After::KeepAlive),
            Outcome::Close => self.finish_response(idx, After::Close),
            Outcome::Exit(_) if self.pool.is_some() => {
                // The app raised SystemExit in a thread (signals raise only in the loop):
                // the worker stops like a recycled one, after the other threads' requests
                // are answered, as Gunicorn's gthread lets its executor finish.
                super::signals::retire(super::heartbeat::Leaving::Other);
                self.finish_response(idx, After::Close)
            }
            Outcome::Exit(_) => {
                // Like Gunicorn's sync worker: an abort or quit that interrupted a request
                // was answered (500) and the worker leaves with status 0, so the master has
                // nothing more to report. What is waiting goes to a sibling. The answer
                // (a 500) gets a moment to reach the client first.
                if let Some(conn) = self.conns.get(idx).and_then(Option::as_ref) {
                    conn.io.flush_for(Duration::from_millis(500));
                }
                self.close(idx);
                self.pass_on_movable();
                Served::Exit(0)
            }
        }
    }
    /// The threaded worker: connections whose requests finished in a thread come back, go
    /// on like a sync worker's after its app call, and are read again (what arrived
    /// meanwhile found them in a thread).
    pub(super) fn take_finished(&mut self, ready: &mut Vec<usize>) -> Option<i32> {
        let pool = self.pool.as_ref()?;
        let mut finished = std::mem::take(&mut self.finished);
        pool.take_done(&mut finished);
        let mut exit = None;
        for done in finished.drain(..) {
            self.in_app.retain(|(idx, _)| *idx != done.idx);
            // Read again only if bytes may wait unseen: a pipelined request, or an event
            // the loop let pass while the thread had the connection (noted on either side
            // of the thread's finish). Otherwise its next bytes bring an event of their own.
            let mut read_again = done.read_again || !done.buf.is_empty();
            if let Some(conn) = self.conns.get_mut(done.idx).and_then(Option::as_mut) {
                conn.buf = done.buf;
                read_again |= conn.io.take_ready_while_away();
            }
            match self.request_done(done.idx, done.outcome) {
                Served::Exit(code) => {
                    exit = Some(code);
                    break;
                }
                Served::Request if read_again && !ready.contains(&done.idx) => {
                    ready.push(done.idx);
                }
                _ => {}
            }
        }
        self.finished = finished;
        exit
    }
    /// Sends more of a finished response to a client that was slow to take it; when all is
    /// out, the connection goes on (and is read again: requests may have arrived meanwhile).
    fn flush(&mut self, idx: usize) {
        let now = self.clock();
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let before = conn.io.flushed_bytes();
        match conn.io.flush_nonblocking() {
            Ok(true) => {
                let _ = self.poll.registry().reregister(
                    &mut SourceFd(&conn.io.raw_fd()),
                    Token(CONN_BASE + idx),
                    Interest::READABLE,
                );
                let next = conn
                    .state
                    .output_drained(!conn.buf.is_empty(), now, self.timeouts);
                if self.go_on(idx, next) == Served::Request {
                    self.requeue(idx);
                }
            }
            Ok(false) => {
                // The write deadline counts from the client's last progress.
                if conn.io.flushed_bytes() > before {
                    conn.state.output_progress(now, self.timeouts);
                }
            }
            Err(_) => self.close(idx),
        }
    }
    /// Carries out a transition's [`Next`] step.
    fn go_on(&mut self, idx: usize, next: Next) -> Served {
        match next {
            Next::Close => {
                self.close_gracefully(idx);
                Served::Closed
            }
            Next::Flush => {
                if let Some(conn) = self.conns.get(idx).and_then(Option::as_ref) {
                    let _ = self.poll.registry().reregister(
                        &mut SourceFd(&conn.io.raw_fd()),
                        Token(CONN_BASE + idx),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                }
                Served::Flushing
            }
            Next::Read => {
                if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
                    if conn.buf.is_empty() && conn.buf.capacity() > LARGE_BUFFER_BYTES {
                        conn.buf = Vec::new();
                    }
                }
                self.refresh_idle(idx);
                Served::Request
            }
        }
    }
    /// A closing connection: what the client still sends is read and dropped until it
    /// closes too (or the linger deadline passes).
    fn discard_input(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let mut sink = [0u8; 4096];
        loop {
            match conn.io.read_raw(&mut sink) {
                Ok(0) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(_) => break,
            }
        }
        self.close(idx);
    }
}

/// What serving from a connection's buffer did.
#[derive(PartialEq, Eq, Debug)]
pub(super) enum Served {
    /// A response waits for a slow client; the loop sends it (the connection is parked).
    Flushing,
    /// One request was answered; the connection stays open.
    Request,
    /// The connection was closed (or is closing).
    Closed,
    /// The worker must exit with this status.
    Exit(i32),
}

/// What becomes of a connection still reading heads after its turn.
#[derive(PartialEq, Eq, Debug)]
enum AfterTurn {
    /// The client finished sending (`eof`) and nothing complete is left to answer.
    Close,
    /// Come back next turn: a pipelined request is buffered behind the one just served,
    /// or the socket was not read empty. (Next turn, not now: one fast client must not
    /// keep the worker from the others.)
    ReadAgain,
    /// Wait for the socket to be readable again.
    Wait,
}

/// `served`: a request was answered this turn; `buffered`: bytes are left in the buffer;
/// `drained`: the socket was read empty.
fn after_turn(eof: bool, buffered: bool, served: bool, drained: bool) -> AfterTurn {
    if eof && (!buffered || !served) {
        AfterTurn::Close
    } else if (served && buffered) || !drained {
        AfterTurn::ReadAgain
    } else {
        AfterTurn::Wait
    }
}

/// Whether a request may leave its connection open: only while the worker is `alive`, with
/// keep-alive on, `slots_left` for other connections (a threaded worker whose every
/// connection slot is a thread keeps none), and not for the request that reaches
/// `max_requests` (counting the `counted` ones served or in threads).
fn may_keep_alive(
    alive: bool,
    keepalive_on: bool,
    slots_left: bool,
    max_requests: u64,
    counted: u64,
) -> bool {
    alive && keepalive_on && slots_left && (max_requests == 0 || counted + 1 < max_requests)
}

/// Whether `--max-requests` (0: none) is reached after `served` requests.
fn reached_max_requests(max_requests: u64, served: u64) -> bool {
    max_requests > 0 && served >= max_requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_turn_a_connection_is_read_again_waits_or_closes() {
        use AfterTurn::{Close, ReadAgain, Wait};
        // (eof, buffered, served, drained)
        assert_eq!(
            after_turn(false, false, true, true),
            Wait,
            "answered, all read"
        );
        assert_eq!(after_turn(false, true, false, true), Wait, "a head in part");
        assert_eq!(after_turn(false, true, true, true), ReadAgain, "pipelined");
        assert_eq!(
            after_turn(false, false, false, false),
            ReadAgain,
            "socket not empty"
        );
        assert_eq!(
            after_turn(true, false, true, true),
            Close,
            "answered, then FIN"
        );
        assert_eq!(
            after_turn(true, true, false, true),
            Close,
            "half a head, then FIN"
        );
        assert_eq!(
            after_turn(true, true, true, true),
            ReadAgain,
            "requests pipelined before the FIN are answered"
        );
    }

    #[test]
    fn the_request_that_reaches_max_requests_closes_its_connection() {
        assert!(may_keep_alive(true, true, true, 0, 1_000_000), "no limit");
        assert!(may_keep_alive(true, true, true, 10, 8));
        assert!(!may_keep_alive(true, true, true, 10, 9), "the tenth");
        assert!(!may_keep_alive(false, true, true, 0, 0), "stopping");
        assert!(!may_keep_alive(true, false, true, 0, 0), "--keep-alive 0");
        assert!(!may_keep_alive(true, true, false, 0, 0), "no slot left");
        assert!(!reached_max_requests(0, 5));
        assert!(!reached_max_requests(10, 9));
        assert!(reached_max_requests(10, 10));
    }
}
