//! The worker's event loop: polls, accepts (from the listeners and the hand-off channel),
//! and dispatches each ready connection to its next step (see `conn` for the state
//! machine), handing every complete request head to the WSGI runtime, one at a time.
//!
//! Readiness is edge-triggered (mio), so every read runs until `EAGAIN`, and after a request
//! is served the socket is read again before the connection goes idle.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::socket::{
    accept4, getpeername, getsockname, setsockopt, sockopt, SockFlag, SockaddrStorage,
};
use pyo3::prelude::*;
use pyo3::types::PyString;
use tracing::{error, info, warn};

use super::seed::WorkerSeed;
use crate::http::request::Limits;
use crate::sock::{ListenAddr, Peer};
use crate::transport::Transport;
use crate::wsgi::environ::ConnEnv;
use crate::wsgi::{Exchange, Outcome, Runtime};

use super::conn::{
    too_large_page, After, Conn, Expiry, Next, Parsed, Phase, ProxyPolicy, State, Timeouts,
};
use super::handoff::{Received, Watcher, MAX_CARRIED_BYTES};

const WAKE: Token = Token(usize::MAX);
/// The hand-off channel: connections passed on by sibling workers.
const HANDOFF: Token = Token(usize::MAX - 1);
/// The threaded worker's pool finished requests.
const DONE: Token = Token(usize::MAX - 2);
/// `--reload` with inotify: a watched directory changed.
const RELOAD: Token = Token(usize::MAX - 3);
/// Connection tokens start here; listener tokens are their index below it.
const CONN_BASE: usize = 1 << 16;
/// While a connection we just accepted has not sent its first bytes, other workers get the
/// next ones: a sync worker that takes two fresh connections and then runs one slow request
/// leaves the other waiting behind it while a sibling is idle. Bounded, so a client that
/// connects and never sends (a browser preconnect) delays accepting by this much only.
const FRESH_CONNECTION_GRACE: Duration = Duration::from_millis(10);
/// How long a threaded worker whose threads are all busy leaves a waiting connection to
/// its siblings before it accepts it all the same (its own keep-alive clients would
/// otherwise keep it busy, and the newcomer waiting, indefinitely).
const SATURATED_GRACE: Duration = Duration::from_millis(20);
/// After `accept` failed for lack of descriptors or memory, it is tried again this often
/// (the listener is edge-triggered: no new event comes for connections already queued).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// Read-ahead budget of one worker: the capacity of all connection buffers together. Past
/// it, the connection holding the most is refused (its head is unreasonably large).
const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// A buffer this large is measured against the budget; an emptied one is freed.
const LARGE_BUFFER_BYTES: usize = 64 * 1024;
/// How long a worker stopping on TERM stays for connections its busy siblings' watchers
/// sweep from the listen backlog (they engage 20 ms into an app call, then look every 10 ms).
const HANDOFF_GRACE: Duration = Duration::from_millis(100);
/// How long a threaded worker told to abort (a timeout's ABRT) lets its threads finish.
/// It keeps beating meanwhile, so the master does not kill it first.
const ABORT_GRACE: Duration = Duration::from_secs(1);

struct ListenerState {
    fd: RawFd,
    addr: ListenAddr,
    /// The kernel may have a connection queued for us.
    ready: bool,
    registered: bool,
    /// Our copy of the socket is closed (stopping on TERM, once its backlog was taken).
    closed: bool,
    server: Option<(Py<PyString>, Py<PyString>)>,
}

pub struct EventLoop<'a> {
    seed: &'a WorkerSeed<'a>,
    runtime: Runtime,
    poll: Poll,
    listeners: Vec<ListenerState>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections with buffered bytes to serve on the next turn (round-robin).
    pending: Vec<usize>,
    /// The connection the last accept added (see `accept_next_in_line`).
    last_accepted: Option<usize>,
    open: usize,
    limits: Limits,
    served: u64,
    timeouts: Timeouts,
    last_parent_check: Instant,
    reloader: Option<super::reload::Reloader>,
    /// Time spent serving requests. Connection deadlines run on [`EventLoop::clock`], which
    /// leaves this out: a connection's idle or head time counts only while the worker could
    /// have served it, so waiting behind another client's slow request never expires it.
    busy: Duration,
    /// `accept` is failing for lack of resources: when to try again.
    accept_retry: Option<Instant>,
    /// How many accepts failed in the current burst (logged once at its start and end).
    accept_failures: u64,
    /// Hands idle connections to siblings during long app calls (with more than 1 worker).
    watcher: Option<Watcher>,
    /// The hand-off channel may have a connection for us.
    handoff_ready: bool,
    /// Slots handed off during the last app call (reused buffer).
    handed: Vec<usize>,
    /// The gthread worker's threads; None in the sync worker (requests run in the loop).
    pool: Option<super::pool::Pool>,
    /// When each request now in a thread was handed to it (the watchdog's view).
    in_app: Vec<(usize, Instant)>,
    /// Since when the threads have all been busy with a connection possibly waiting to
    /// be accepted (see [`SATURATED_GRACE`]).
    saturated_since: Option<Instant>,
    /// The threaded worker was told to quit (QUIT, INT) or abort (ABRT): it leaves with this
    /// status once its threads are done, or at this deadline (see [`EventLoop::leave_threaded`]).
    leaving: Option<(Instant, i32)>,
    /// When this worker started stopping (its first `wind_down`).
    stopping_since: Option<Instant>,
}

fn ip_and_port(addr: &ListenAddr) -> Option<(String, String)> {
    match addr {
        ListenAddr::Tcp(sa) => Some((sa.ip().to_string(), sa.port().to_string())),
        ListenAddr::Unix(_) => None,
    }
}

impl<'a> EventLoop<'a> {
    pub fn new(
        seed: &'a WorkerSeed<'a>,
        runtime: Runtime,
        wake: RawFd,
        pool: Option<super::pool::Pool>,
    ) -> std::io::Result<EventLoop<'a>> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&wake), WAKE, Interest::READABLE)?;
        poll.registry().register(
            &mut SourceFd(&seed.handoff.recv_fd()),
            HANDOFF,
            Interest::READABLE,
        )?;
        if let Some(pool) = &pool {
            poll.registry()
                .register(&mut SourceFd(&pool.done_fd()), DONE, Interest::READABLE)?;
        }
        // With one worker there is nobody to hand a connection to; with threads the loop
        // itself stays free while requests run.
        let watcher = if seed.config.workers > 1 && pool.is_none() {
            let fds: Vec<RawFd> = seed.listeners.iter().map(|l| l.raw_fd()).collect();
            Some(Watcher::start(
                seed.handoff,
                seed.config.worker_connections,
                &fds,
                poll.registry().try_clone()?,
                seed.conn_table,
            )?)
        } else {
            None
        };
        let listeners = Python::attach(|py| {
            seed.listeners
                .iter()
                .map(|l| ListenerState {
                    fd: l.raw_fd(),
                    addr: l.addr.clone(),
                    ready: true,
                    registered: false,
                    closed: false,
                    server: ip_and_port(&l.addr).map(|(ip, port)| {
                        (
                            PyString::new(py, &ip).unbind(),
                            PyString::new(py, &port).unbind(),
                        )
                    }),
                })
                .collect()
        });
        let timeout = if seed.config.timeout == 0 {
            30
        } else {
            seed.config.timeout
        };
        let mut lp = EventLoop {
            seed,
            runtime,
            poll,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            last_accepted: None,
            open: 0,
            limits: seed.config.limits,
            served: 0,
            timeouts: Timeouts {
                head: Duration::from_secs(timeout),
                keepalive: Duration::from_secs(seed.config.keepalive),
            },
            last_parent_check: Instant::now(),
            reloader: seed.config.reload.then(|| {
                let mut watched = seed.config.reload_extra_files.clone();
                watched.extend(super::reload::broken_files());
                Python::attach(|py| {
                    super::reload::Reloader::new(py, &watched, seed.config.reload_engine)
                })
            }),
            busy: Duration::ZERO,
            accept_retry: None,
            accept_failures: 0,
            watcher,
            handoff_ready: true,
            handed: Vec::new(),
            pool,
            in_app: Vec::new(),
            saturated_since: None,
            leaving: None,
            stopping_since: None,
        };
        for i in 0..lp.listeners.len() {
            lp.set_listening(i, true)?;
        }
        if let Some(fd) = lp.reloader.as_ref().and_then(|r| r.fd()) {
            // inotify: a change wakes the loop at once.
            lp.poll
                .registry()
                .register(&mut SourceFd(&fd), RELOAD, Interest::READABLE)?;
        }
        Ok(lp)
    }

    /// The connections' clock: monotonic time less the time spent serving requests.
    fn clock(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.busy).unwrap_or(now)
    }

    fn set_listening(&mut self, i: usize, on: bool) -> std::io::Result<()> {
        let l = &mut self.listeners[i];
        if l.registered == on || l.closed {
            return Ok(());
        }
        let registry = self.poll.registry();
        if on {
            registry.register(&mut SourceFd(&l.fd), Token(i), Interest::READABLE)?;
            // A connection may have been queued while we were not listening.
            l.ready = true;
        } else {
            registry.deregister(&mut SourceFd(&l.fd))?;
        }
        l.registered = on;
        Ok(())
    }

    /// Serves until told to stop; returns the worker's exit status.
    pub fn run(&mut self, py: Python<'_>) -> i32 {
        let mut events = Events::with_capacity(256);
        let mut ready: Vec<usize> = Vec::with_capacity(64);
        loop {
            self.beat();
            if super::signals::take_reopen_request() {
                crate::log::reopen();
                self.runtime.reopen_logs();
                if let Some(pool) = &self.pool {
                    // Each thread reopens its own before its next request; the file is
                    // recreated now, as log rotation (and shippers waiting for the new
                    // file) expect.
                    pool.reopen_logs();
                    if let Some(path) = self.seed.config.accesslog.as_deref() {
                        let _ = crate::log::Sink::open(path, crate::log::Sink::Stdout);
                    }
                }
            }
            self.check_parent();
            if let Some(path) = self.reloader.as_mut().and_then(|r| r.changed(py)) {
                info!("Worker reloading: {} modified", path.display());
                // Leave like a recycled worker: what was accepted is answered; the sockets
                // stay open in the master for the next worker.
                if let Some(fd) = self.reloader.as_ref().and_then(|r| r.fd()) {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                }
                self.reloader = None;
                super::signals::retire();
                crate::python::hooks::call_worker_hook(py, "worker_int", &[]);
            }
            if !super::signals::is_alive() {
                self.wind_down(py);
                // Stopping on TERM, connections passed on by siblings (or by this worker's
                // own watcher) are served before leaving: nobody else may be left to.
                if self.open == 0 && !self.may_still_get_handoffs() {
                    return self.leaving.map_or(0, |(_, code)| code);
                }
            }
            if let Some((deadline, code)) = self.leaving {
                if Instant::now() >= deadline {
                    self.answer_for_threads();
                    return code;
                }
            }
            let timeout = self.poll_timeout();
            let poll = &mut self.poll;
            if let Err(e) = py.detach(|| poll.poll(&mut events, Some(timeout))) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    error!("poll failed: {e}");
                    return 1;
                }
            }
            let mut woke = false;
            ready.clear();
            // Last turn's leftovers go first, then the connections that became readable.
            for idx in std::mem::take(&mut self.pending) {
                if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
                    conn.queued = false;
                    ready.push(idx);
                }
            }
            let leftovers = ready.len();
            for event in events.iter() {
                match event.token() {
                    WAKE => woke = true,
                    // Read by the reloader at the top of the loop.
                    RELOAD => {}
                    HANDOFF => self.handoff_ready = true,
                    DONE => {
                        if let Some(code) = self.take_finished(py, &mut ready) {
                            return code;
                        }
                    }
                    Token(i) if i < CONN_BASE => {
                        if let Some(l) = self.listeners.get_mut(i) {
                            l.ready = true;
                        }
                    }
                    Token(t) => {
                        let idx = t - CONN_BASE;
                        if event.is_read_closed() {
                            // The client's FIN came (maybe with its last bytes): read to
                            // the end rather than stop at a short read.
                            if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
                                conn.peer_closed = true;
                            }
                        }
                        if !ready[..leftovers].contains(&idx) {
                            ready.push(idx);
                        }
                    }
                }
            }
            if woke {
                crate::transport::drain_wake_fd();
                if let Err(e) = py.check_signals() {
                    let code = exit_status(py, &e);
                    if self.pool.is_none() {
                        return code;
                    }
                    self.leave_threaded(py, code);
                }
            }
            let mut next = 0;
            while let Some(&idx) = ready.get(next) {
                next += 1;
                let served = self.served;
                if let Some(code) = self.on_ready(py, idx) {
                    return code;
                }
                // A sync worker that ran a request takes a connection waiting in the listen
                // backlog and serves it next: under saturation a turn lasts one request per
                // connection, and one accept per turn kept new connections waiting for
                // seconds (p99 1 s against Gunicorn's 0.28 s for a 10 ms app with 32
                // clients on 2 workers). Workers sharing a listener still take turns: each
                // takes one per request it serves.
                if self.pool.is_none() && self.served != served {
                    if let Some(fresh) = self.accept_next_in_line(py) {
                        if !ready.contains(&fresh) {
                            ready.insert(next, fresh);
                        }
                    }
                }
            }
            self.accept(py);
            self.expire(py);
        }
    }

    /// The threaded worker was told to quit (QUIT/INT: status 0) or abort (ABRT, a
    /// timeout: status 1). As Gunicorn's gthread lets its executor finish, requests in
    /// threads may complete (until `--graceful-timeout` on a quit, [`ABORT_GRACE`] on an
    /// abort); connections that can move go to siblings at once; a second signal ends
    /// the wait. What is still in a thread then gets a 500 if nothing of its response went
    /// out (see [`EventLoop::answer_for_threads`]).
    fn leave_threaded(&mut self, py: Python<'_>, code: i32) {
        let now = Instant::now();
        let grace = if code == 0 {
            Duration::from_secs(self.seed.config.graceful_timeout)
        } else {
            ABORT_GRACE
        };
        self.leaving = Some(match self.leaving {
            Some((_, first)) => (now, first),
            None => (now + grace, code),
        });
        // Requests queued for a thread that none has started go back to their connections
        // (head and all), to be passed on with them rather than answered with a 500.
        if let Some(pool) = &self.pool {
            let clock = self.clock();
            for job in pool.take_queued() {
                self.in_app.retain(|(idx, _)| *idx != job.idx);
                if let Some(conn) = self.conns.get_mut(job.idx).and_then(Option::as_mut) {
                    conn.buf = job.buf;
                    conn.state.undispatched(clock, self.timeouts);
                }
            }
        }
        self.pass_on_movable(py);
    }

    /// Leaving with requests still in threads: each whose response has not begun is
    /// answered with a 500 (as the sync worker answers the request a signal interrupted);
    /// the thread's writer can no longer begin one. Their sockets are left open for the
    /// threads (process exit closes them).
    fn answer_for_threads(&self) {
        let page = crate::http::error::error_page(500, "Internal Server Error", "");
        for conn in self.conns.iter().flatten() {
            if conn.state.phase() == Phase::InApp && conn.io.take_over_response() {
                error!(
                    "Worker stopping with a request still in a thread (ip={}): answered 500",
                    conn.env.remote_ip
                );
                conn.io.send_now(&page);
            }
        }
    }

    fn check_parent(&mut self) {
        if self.last_parent_check.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_parent_check = Instant::now();
        if nix::unistd::getppid() != self.seed.master_pid && super::signals::is_alive() {
            info!(
                "Parent changed, shutting down: <Worker {}>",
                std::process::id()
            );
            super::signals::stop_gracefully();
        }
    }

    /// How much longer a just-accepted, still silent connection holds back further accepts.
    /// (The threaded worker holds back only once its threads would all be taken.)
    fn fresh_hold(&self) -> Option<Duration> {
        let waits = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.is_silent_fresh())
            .map(|c| FRESH_CONNECTION_GRACE.saturating_sub(c.accepted_at.elapsed()))
            .filter(|left| !left.is_zero());
        match &self.pool {
            None => waits.max(),
            Some(pool) => {
                let waits: Vec<Duration> = waits.collect();
                (waits.len() + self.in_app.len() >= pool.threads())
                    .then(|| waits.into_iter().max())
                    .flatten()
            }
        }
    }

    /// The threaded worker, with siblings, leaves new connections in the listen backlog
    /// while all its threads are busy: a sibling with a free thread takes them (keep-alive
    /// connections otherwise pile up on whichever worker accepted first). For at most
    /// [`SATURATED_GRACE`] at a time: then it accepts one all the same.
    fn threads_saturated(&self) -> bool {
        self.threads_busy()
            && self
                .saturated_since
                .is_none_or(|since| since.elapsed() < SATURATED_GRACE)
    }

    fn threads_busy(&self) -> bool {
        self.pool
            .as_ref()
            .is_some_and(|pool| self.seed.config.workers > 1 && self.in_app.len() >= pool.threads())
    }

    /// Notes since when the threads have been saturated while a listener has a connection
    /// (or forgets it once they are not).
    fn track_saturation(&mut self) {
        // Only while an accept could follow: never for a stopping worker, one at its
        // connection limit or waiting out EMFILE (the loop would spin on the grace).
        let could_accept = super::signals::is_alive()
            && self.open < self.seed.config.worker_connections
            && self.accept_retry.is_none();
        if could_accept && self.threads_busy() && self.listeners.iter().any(|l| l.ready) {
            self.saturated_since.get_or_insert_with(Instant::now);
        } else {
            self.saturated_since = None;
        }
    }

    fn poll_timeout(&self) -> Duration {
        let can_accept = super::signals::is_alive()
            && self.open < self.seed.config.worker_connections
            && !self.threads_saturated();
        if !self.pending.is_empty() || (self.handoff_ready && self.takes_handoffs()) {
            return Duration::ZERO;
        }
        // Wake at least every half timeout (heartbeat) and every second (parent check).
        let mut wait = Duration::from_millis((self.seed.config.timeout * 500).clamp(100, 1000));
        if let Some(since) = self.saturated_since {
            wait = wait.min(SATURATED_GRACE.saturating_sub(since.elapsed()));
        }
        if can_accept && self.listeners.iter().any(|l| l.ready) {
            match self.accept_retry {
                None => return self.fresh_hold().unwrap_or(Duration::ZERO),
                Some(at) => wait = wait.min(at.saturating_duration_since(Instant::now())),
            }
        }
        if let Some((deadline, _)) = self.leaving {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
        }
        if let Some(since) = self.stopping_since {
            let grace_left = HANDOFF_GRACE.saturating_sub(since.elapsed());
            if !grace_left.is_zero() {
                wait = wait.min(grace_left);
            }
        }
        let now = self.clock();
        match self
            .conns
            .iter()
            .flatten()
            .map(|c| c.state.deadline())
            .min()
        {
            Some(d) => d.saturating_duration_since(now).min(wait),
            None => wait,
        }
    }

    /// Stopping: no new connections; what was sent is answered, with `Connection: close`.
    ///
    /// Beyond Gunicorn (its issue #3397), on TERM: connections already queued in the listen
    /// backlog are accepted and served, and then our copy of each listening socket is
    /// closed at once, so that when every process has closed its copy the kernel refuses
    /// new connections (a load balancer retries those elsewhere) instead of queueing them
    /// until the last worker exits and then resetting them. A connection idle between
    /// requests gets a last call (see [`State::last_call`]) and is closed by
    /// [`EventLoop::expire`] only when provably idle.
    fn wind_down(&mut self, py: Python<'_>) {
        self.stopping_since.get_or_insert_with(Instant::now);
        // A quitting or aborting threaded worker leaves the backlog to its siblings.
        if super::signals::drains_backlog() && self.leaving.is_none() {
            if self.listeners.iter().all(|l| !l.closed) {
                super::object::close_sockets(py);
            }
            if let Some(watcher) = &self.watcher {
                for (socket, listener) in watcher.take_stranded() {
                    if let Err(e) =
                        self.add_conn(py, listener, socket, self.seed.config.tls.is_some())
                    {
                        error!("Dropping a new connection: {e}");
                    }
                }
            }
            for i in 0..self.listeners.len() {
                if self.listeners[i].closed {
                    continue;
                }
                if self.watcher.as_ref().is_some_and(|w| w.dropped_listener(i)) {
                    // Swept and let go during the app call; its number now holds /dev/null.
                    self.listeners[i].registered = false;
                    self.close_listener(i);
                    continue;
                }
                // Every connection the kernel accepted is ours to serve, past
                // worker_connections too.
                while self.accept_one(py, i) {}
                // Out of descriptors, connections may still be queued: the next turn takes
                // them (see ACCEPT_RETRY) before the socket is let go.
                if !self.listeners[i].ready {
                    self.close_listener(i);
                }
            }
        }
        for i in 0..self.listeners.len() {
            let _ = self.set_listening(i, false);
        }
        if !super::signals::drains_backlog() {
            // Recycled (max-requests, reload, `worker.alive = False`): the successor is
            // already on its way (see `worker::retire`), so connections between requests,
            // and those part-way through a head (with the bytes read so far), go to it or a
            // sibling instead of holding this worker until their deadlines.
            self.pass_on_movable(py);
        }
        let now = self.clock();
        for conn in self.conns.iter_mut().flatten() {
            conn.state.last_call(!conn.buf.is_empty(), now);
        }
    }

    /// Closes this process's copy of listener `i` (the socket lives on in the other
    /// processes that hold it).
    fn close_listener(&mut self, i: usize) {
        let _ = self.set_listening(i, false);
        let l = &mut self.listeners[i];
        l.closed = true;
        l.ready = false;
        // SAFETY: the descriptor was inherited from the master for this worker's use only;
        // `closed` keeps it from being used (or closed) again.
        drop(unsafe { OwnedFd::from_raw_fd(l.fd) });
    }

    /// Out of descriptors or memory: accepting (and taking hand-offs) is retried on a
    /// timer (no new readiness event comes for what is already queued), and said once per
    /// burst rather than once per attempt.
    fn out_of_descriptors(&mut self, e: Errno) {
        if self.accept_failures == 0 {
            error!(
                "Can't accept new connections: {e}; retrying every {} ms",
                ACCEPT_RETRY.as_millis()
            );
        }
        self.accept_failures += 1;
        self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
    }

    /// Accepts at most one connection per listener per turn, so workers sharing a listener
    /// take turns instead of one of them grabbing a whole burst.
    fn accept(&mut self, py: Python<'_>) {
        self.take_handoff(py);
        self.track_saturation();
        if !super::signals::is_alive() || self.fresh_hold().is_some() || self.threads_saturated() {
            return;
        }
        if self.accept_retry.is_some_and(|at| Instant::now() < at) {
            return;
        }
        for i in 0..self.listeners.len() {
            if self.open >= self.seed.config.worker_connections {
                let _ = self.set_listening(i, false);
                continue;
            }
            let _ = self.set_listening(i, true);
            if !self.listeners[i].ready {
                continue;
            }
            self.accept_one(py, i);
        }
    }

    /// Accepts (as [`EventLoop::accept`] does) between two requests of a turn; returns
    /// the connection it added, if any.
    fn accept_next_in_line(&mut self, py: Python<'_>) -> Option<usize> {
        if !self.listeners.iter().any(|l| l.ready) {
            return None;
        }
        self.last_accepted = None;
        self.accept(py);
        self.last_accepted.take()
    }

    /// Accepts one connection from listener `i`; false when none was waiting (or on error).
    fn accept_one(&mut self, py: Python<'_>, i: usize) -> bool {
        let fd = self.listeners[i].fd;
        match accept4(fd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if self.accept_failures > 0 {
                    warn!(
                        "Accepting connections again after {} failed attempts",
                        self.accept_failures
                    );
                    self.accept_failures = 0;
                }
                self.accept_retry = None;
                // The next connection gets its own grace (see SATURATED_GRACE).
                self.saturated_since = None;
                match self.add_conn(py, i, owned, self.seed.config.tls.is_some()) {
                    Ok(idx) => self.last_accepted = Some(idx),
                    Err(e) => error!("Dropping a new connection: {e}"),
                }
                true
            }
            Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => true,
            Err(Errno::EAGAIN) => {
                self.listeners[i].ready = false;
                false
            }
            Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                // The connection stays queued in the kernel.
                self.out_of_descriptors(e);
                false
            }
            Err(e) => {
                error!("accept error: {e}");
                self.listeners[i].ready = false;
                false
            }
        }
    }

    /// Whether this worker takes connections from the hand-off channel now: while alive,
    /// and while stopping on TERM (every worker is), so that one handed off is never
    /// dropped; but not when recycled, as the connections it passed on are for its
    /// successor; and not at its connection limit or while out of descriptors.
    fn takes_handoffs(&self) -> bool {
        (super::signals::is_alive() || (super::signals::drains_backlog() && self.leaving.is_none()))
            && self.open < self.seed.config.worker_connections
            && self.accept_retry.is_none_or(|at| Instant::now() >= at)
    }

    /// Whether a stopping worker with nothing left should stay a little: a connection
    /// waits in the hand-off channel, or, just after TERM, a busy sibling's watcher may
    /// still pass on what it sweeps from the listen backlog ([`HANDOFF_GRACE`]).
    fn may_still_get_handoffs(&self) -> bool {
        if !self.takes_handoffs() {
            return false;
        }
        let just_stopped = self.seed.config.workers > 1
            && self
                .stopping_since
                .is_some_and(|since| since.elapsed() < HANDOFF_GRACE);
        just_stopped || self.seed.handoff.has_waiting()
    }

    /// Takes one connection a sibling passed on (one per turn, like accepting).
    ///
    /// A descriptor passed with `SCM_RIGHTS` into a full descriptor table is dropped by the
    /// kernel (`MSG_CTRUNC`): the client would be reset. So a free descriptor is checked for
    /// first; without one the connection waits in the channel, for this worker once it has
    /// room again or for a sibling, as a new connection waits in the listen backlog.
    fn take_handoff(&mut self, py: Python<'_>) {
        if !self.handoff_ready || !self.takes_handoffs() {
            return;
        }
        if let Err(e) = self.seed.handoff.check_room() {
            self.out_of_descriptors(e);
            return;
        }
        match self.seed.handoff.receive() {
            Ok(received) => self.adopt(py, received),
            Err(Errno::EAGAIN) => self.handoff_ready = false,
            Err(e) => warn!("Dropping a connection handed over by a sibling: {e}"),
        }
    }

    /// Serves a connection a sibling passed on, with the bytes it had read.
    ///
    /// Its listener is the one whose address the socket itself reports, not the index it
    /// came with: after a HUP that rebinds, a draining old worker's connection may reach a
    /// new worker with other listeners. Only plain connections are ever passed on, so it
    /// stays plain, whatever TLS settings this worker has.
    fn adopt(&mut self, py: Python<'_>, received: Received) {
        let Some(listener) = self.listener_of(&received.socket, received.listener) else {
            warn!("Dropping a connection handed over for a listener this worker does not have");
            return;
        };
        match self.add_conn(py, listener, received.socket, false) {
            Ok(idx) => {
                let buffered = !received.buffered.is_empty();
                let state = State::adopted(received.fresh, buffered, self.clock(), self.timeouts);
                if let Some(conn) = self.conns[idx].as_mut() {
                    conn.state = state;
                    conn.buf = received.buffered;
                }
                self.refresh_idle(idx);
                // Its request is already in the socket (or the buffer): read it now.
                self.requeue(idx);
            }
            Err(e) => error!("Dropping a connection handed over by a sibling: {e}"),
        }
    }

    /// Which of our listeners accepted `socket`, by its local address (`hint` first).
    fn listener_of(&self, socket: &OwnedFd, hint: usize) -> Option<usize> {
        let local: SockaddrStorage = getsockname(socket.as_raw_fd()).ok()?;
        let matches = |addr: &ListenAddr| match addr {
            ListenAddr::Tcp(listening) => {
                let port = local
                    .as_sockaddr_in()
                    .map(|a| (std::net::IpAddr::V4(a.ip()), a.port()))
                    .or_else(|| {
                        local
                            .as_sockaddr_in6()
                            .map(|a| (std::net::IpAddr::V6(a.ip()), a.port()))
                    });
                port.is_some_and(|(ip, port)| {
                    port == listening.port()
                        && (listening.ip().is_unspecified() || listening.ip() == ip)
                })
            }
            ListenAddr::Unix(path) => local
                .as_unix_addr()
                .and_then(|a| a.path())
                .is_some_and(|p| p == path.as_path()),
        };
        if self.listeners.get(hint).is_some_and(|l| matches(&l.addr)) {
            return Some(hint);
        }
        self.listeners.iter().position(|l| matches(&l.addr))
    }

    /// Tells the watcher, and the keeper's table (see `worker::keeper`), whether connection
    /// `idx` is idle and may move to a sibling.
    fn refresh_idle(&self, idx: usize) {
        if self.watcher.is_none() && self.seed.conn_table.is_none() {
            return;
        }
        let idle = self
            .conns
            .get(idx)
            .and_then(Option::as_ref)
            .and_then(Conn::handoff_candidate);
        if let Some(watcher) = &self.watcher {
            watcher.set_idle(idx, idle);
        }
        if let Some(table) = &self.seed.conn_table {
            table.set_idle(idx, idle);
        }
    }

    /// The worker is leaving (a timeout's abort, a recycle): every connection that can
    /// move (between requests or reading a head, not TLS or PROXY protocol) goes to a
    /// sibling or the successor, with what was already read, instead of being reset or
    /// holding this worker. A full channel leaves the rest here.
    fn pass_on_movable(&mut self, py: Python<'_>) {
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_ref() else {
                continue;
            };
            if !conn.may_move_with_buffer(MAX_CARRIED_BYTES) {
                continue;
            }
            // Not the keeper's to rescue any more (see `worker::keeper`).
            if let Some(table) = &self.seed.conn_table {
                table.set_idle(idx, None);
            }
            if self
                .seed
                .handoff
                .send(
                    conn.io.raw_fd(),
                    conn.listener,
                    conn.state.before_first_request(),
                    &conn.buf,
                )
                .is_ok()
            {
                self.close(py, idx);
            } else {
                // Not passed on (the channel is full): the keeper's entry comes back.
                self.refresh_idle(idx);
            }
        }
    }

    /// Registers a connection accepted on listener `listener`, over TLS if `tls`.
    fn add_conn(
        &mut self,
        py: Python<'_>,
        listener: usize,
        fd: OwnedFd,
        tls: bool,
    ) -> PyResult<usize> {
        let l = &self.listeners[listener];
        let peer = match &l.addr {
            ListenAddr::Tcp(_) => {
                let _ = setsockopt(&fd, sockopt::TcpNoDelay, &true);
                let sa: SockaddrStorage = getpeername(fd.as_raw_fd())
                    .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
                let addr = sa
                    .as_sockaddr_in()
                    .map(|a| std::net::SocketAddr::V4((*a).into()))
                    .or_else(|| {
                        sa.as_sockaddr_in6()
                            .map(|a| std::net::SocketAddr::V6((*a).into()))
                    })
                    .ok_or_else(|| {
                        pyo3::exceptions::PyOSError::new_err("unknown peer address family")
                    })?;
                Peer::Tcp(addr)
            }
            ListenAddr::Unix(_) => Peer::Unix,
        };
        let (remote_ip, remote_port) = match &peer {
            Peer::Tcp(a) => (a.ip().to_string(), Some(a.port().to_string())),
            Peer::Unix => (String::new(), None),
        };
        let raw_fd = fd.as_raw_fd();
        let io = match self.seed.config.tls.as_ref().filter(|_| tls) {
            Some(tls) => {
                let session = rustls::ServerConnection::new(std::sync::Arc::clone(tls))
                    .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
                Transport::tls(fd, session)
            }
            None => Transport::plain(fd),
        };
        let env = ConnEnv {
            https: io.is_tls(),
            remote_addr: PyString::new(py, &remote_ip).unbind(),
            remote_port: remote_port.map(|p| PyString::new(py, &p).unbind()),
            remote_ip,
            server: l
                .server
                .as_ref()
                .map(|(a, b)| (a.clone_ref(py), b.clone_ref(py))),
            unix_path: match &l.addr {
                ListenAddr::Unix(p) => p.display().to_string(),
                ListenAddr::Tcp(_) => String::new(),
            },
            fd: raw_fd,
            socket: std::sync::OnceLock::new(),
            template: std::sync::OnceLock::new(),
            trusted: self.seed.config.forwarded_allow_ips.trusts(peer.ip()),
            proxy: None,
            requests: std::sync::atomic::AtomicU64::new(0),
        };
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&raw_fd),
            Token(CONN_BASE + idx),
            Interest::READABLE,
        ) {
            self.free.push(idx);
            return Err(pyo3::exceptions::PyOSError::new_err(e.to_string()));
        }
        let state = State::fresh(self.clock(), self.timeouts);
        let proxy = self.seed.config.proxy_protocol;
        self.conns[idx] = Some(Conn::new(io, env, peer.ip(), listener, proxy, state));
        self.open += 1;
        self.refresh_idle(idx);
        Ok(idx)
    }

    fn close(&mut self, py: Python<'_>, idx: usize) {
        if let Some(conn) = self.conns.get_mut(idx).and_then(Option::take) {
            conn.env.release(py);
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&conn.io.raw_fd()));
            conn.io.close();
            self.refresh_idle(idx);
            self.free.push(idx);
            self.open -= 1;
        }
    }

    /// Half-closes our side and lingers briefly, so unread client bytes do not make the
    /// kernel answer with a RST that would destroy the response in flight.
    fn close_gracefully(&mut self, py: Python<'_>, idx: usize) {
        let now = self.clock();
        if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            conn.io.close_notify(py);
            if !conn.io.shutdown_write() {
                self.close(py, idx);
                return;
            }
            conn.state.closing(now);
            conn.buf = Vec::new();
        }
    }

    /// Closes the connections whose time is up. An idle one is closed only when provably
    /// idle: bytes that arrived meanwhile (a request already on its way) are served instead.
    fn expire(&mut self, py: Python<'_>) {
        let now = self.clock();
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_ref() else {
                continue;
            };
            match conn.state.expiry(now, conn.eof) {
                Expiry::NotYet => continue,
                Expiry::Close => {}
                Expiry::UnlessBytesWaiting => {
                    self.read_available(py, idx);
                    if let Some(conn) = self.conns[idx].as_mut().filter(|c| !c.buf.is_empty()) {
                        conn.state.bytes_arrived(now, self.timeouts);
                        self.requeue(idx);
                        continue;
                    }
                }
            }
            self.close(py, idx);
        }
    }

    /// Reads what arrived on connection `idx` (see [`Conn::read_available`]); returns
    /// whether the socket was read empty.
    fn read_available(&mut self, py: Python<'_>, idx: usize) -> bool {
        let head = self.timeouts.head;
        let drained = self
            .conns
            .get_mut(idx)
            .and_then(Option::as_mut)
            .is_none_or(|conn| conn.read_available(py, head));
        self.refresh_idle(idx);
        drained
    }

    /// Keeps the worker's read-ahead within [`MAX_BUFFERED_BYTES`]: while over it, the
    /// connection holding the largest buffer (a huge or endless head) is refused.
    fn enforce_read_budget(&mut self, py: Python<'_>, idx: usize) {
        if self.conns[idx]
            .as_ref()
            .is_none_or(|c| c.buf.capacity() < LARGE_BUFFER_BYTES)
        {
            return;
        }
        loop {
            let total: usize = self.conns.iter().flatten().map(|c| c.buf.capacity()).sum();
            if total <= MAX_BUFFERED_BYTES {
                return;
            }
            // Only connections still reading a head hold read-ahead; one being answered
            // or closed frees its buffer on its own.
            let Some((worst, ip)) = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                .filter(|(_, c)| c.state.reading())
                .max_by_key(|(_, c)| c.buf.capacity())
                .map(|(i, c)| (i, c.env.remote_ip.clone()))
            else {
                return;
            };
            warn!(
                "Invalid request from ip={ip}: request head too large for the worker's \
                 read-ahead budget ({} MiB buffered)",
                total >> 20
            );
            self.reject(py, worst, &too_large_page());
        }
    }

    /// A connection is ready: the next step of its state machine.
    fn on_ready(&mut self, py: Python<'_>, idx: usize) -> Option<i32> {
        let conn = self.conns.get_mut(idx)?.as_mut()?;
        match conn.state.phase() {
            Phase::Flushing(_) => {
                self.flush(py, idx);
                None
            }
            Phase::Closing => {
                self.discard_input(py, idx);
                None
            }
            // A thread has it; the loop looks again when the thread gives it back.
            Phase::InApp => None,
            Phase::Idle | Phase::Head => self.on_readable(py, idx),
        }
    }

    /// A closing connection: what the client still sends is read and dropped until it
    /// closes too (or the linger deadline passes).
    fn discard_input(&mut self, py: Python<'_>, idx: usize) {
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
        self.close(py, idx);
    }

    /// Reads what arrived and serves at most one request from it. A connection with more
    /// buffered (pipelined) requests is requeued for the next turn, so one fast client
    /// cannot monopolise the worker while other connections wait.
    fn on_readable(&mut self, py: Python<'_>, idx: usize) -> Option<i32> {
        // Edge-triggered: read until EAGAIN, or come back next turn (see read_available).
        let drained = self.read_available(py, idx);
        let now = self.clock();
        let conn = self.conns.get_mut(idx).and_then(Option::as_mut)?;
        if !conn.buf.is_empty() {
            conn.state.bytes_arrived(now, self.timeouts);
        }
        self.enforce_read_budget(py, idx);
        // The budget may have refused this very connection.
        let conn = self.conns.get(idx).and_then(Option::as_ref)?;
        if !conn.state.reading() {
            return None;
        }
        let served = match self.serve_one(py, idx) {
            Served::Exit(code) => return Some(code),
            Served::Closed | Served::Flushing | Served::Dispatched => return None,
            Served::Request => true,
            Served::Incomplete => false,
        };
        let conn = self.conns.get_mut(idx)?.as_mut()?;
        if conn.eof && (conn.buf.is_empty() || !served) {
            // The client finished sending; nothing complete is left to answer.
            self.close(py, idx);
        } else if (served && !conn.buf.is_empty()) || !drained {
            self.requeue(idx);
        }
        None
    }

    fn requeue(&mut self, idx: usize) {
        if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            if !conn.queued {
                conn.queued = true;
                self.pending.push(idx);
            }
        }
    }

    /// Answers an unparsable request with its error page and closes the connection.
    fn reject(&mut self, py: Python<'_>, idx: usize, page: &[u8]) -> Served {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Served::Closed;
        };
        // Nothing more is read or served from it: its read-ahead is freed now.
        conn.buf = Vec::new();
        let slices = &mut [std::io::IoSlice::new(page)];
        let began = Instant::now();
        let written = conn.io.write_all(py, slices, self.timeouts.head);
        self.busy += began.elapsed();
        if let Err(crate::transport::IoError::Signal(e)) = written {
            // A stop signal (QUIT, ABRT) came while the client was slow to take the page.
            let code = exit_status(py, &e);
            self.close(py, idx);
            if self.pool.is_none() {
                return Served::Exit(code);
            }
            self.leave_threaded(py, code);
            return Served::Closed;
        }
        self.finish_response(py, idx, After::Close)
    }

    /// A response is complete: go on with `after` now, or once the loop has sent what the
    /// client has not taken yet.
    fn finish_response(&mut self, py: Python<'_>, idx: usize, after: After) -> Served {
        let now = self.clock();
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Served::Closed;
        };
        let pending = conn.io.has_pending_output();
        let next =
            conn.state
                .response_complete(after, pending, !conn.buf.is_empty(), now, self.timeouts);
        self.go_on(py, idx, next)
    }

    /// Sends more of a finished response to a client that was slow to take it; when all is
    /// out, the connection goes on (and is read again: requests may have arrived meanwhile).
    fn flush(&mut self, py: Python<'_>, idx: usize) {
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
                if self.go_on(py, idx, next) == Served::Request {
                    self.requeue(idx);
                }
            }
            Ok(false) => {
                // The write deadline counts from the client's last progress.
                if conn.io.flushed_bytes() > before {
                    conn.state.output_progress(now, self.timeouts);
                }
            }
            Err(_) => self.close(py, idx),
        }
    }

    /// Carries out a transition's [`Next`] step.
    fn go_on(&mut self, py: Python<'_>, idx: usize, next: Next) -> Served {
        match next {
            Next::Close => {
                self.close_gracefully(py, idx);
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

    /// The threaded worker: connections whose requests finished in a thread come back, go
    /// on like a sync worker's after its app call, and are read again (what arrived
    /// meanwhile found them in a thread).
    fn take_finished(&mut self, py: Python<'_>, ready: &mut Vec<usize>) -> Option<i32> {
        let finished = self
            .pool
            .as_ref()
            .map(|p| p.take_done())
            .unwrap_or_default();
        for done in finished {
            self.in_app.retain(|(idx, _)| *idx != done.idx);
            if let Some(conn) = self.conns.get_mut(done.idx).and_then(Option::as_mut) {
                conn.buf = done.buf;
            }
            match self.request_done(py, done.idx, done.outcome) {
                Served::Exit(code) => return Some(code),
                Served::Request if !ready.contains(&done.idx) => ready.push(done.idx),
                _ => {}
            }
        }
        None
    }

    /// Tells the master the worker is alive (its `--timeout`). The sync worker's loop is
    /// alive whenever it turns. The threaded worker's shows progress as of the last request
    /// a thread started while all of them are busy, so a wedged pool is killed `--timeout`
    /// after its last request began, and one slow request among others is left alone.
    fn beat(&self) {
        let heartbeat = &self.seed.heartbeat;
        if self.leaving.is_some() {
            // Leaving on its own deadline (see `leave_threaded`).
            heartbeat.beat(self.seed.slot);
            return;
        }
        match self.pool.as_ref().and_then(super::pool::Pool::busy_for) {
            None => heartbeat.beat(self.seed.slot),
            Some(age) => heartbeat.beat_aged(self.seed.slot, age),
        }
    }

    /// Finds the request at the start of the connection's buffer and serves it.
    fn serve_one(&mut self, py: Python<'_>, idx: usize) -> Served {
        let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
            return Served::Closed;
        };
        let proxy = ProxyPolicy {
            mode: self.seed.config.proxy_protocol,
            allow: &self.seed.config.proxy_allow_ips,
        };
        let head = match conn.next_request(py, &self.limits, proxy) {
            Parsed::Request(head) => head,
            Parsed::Incomplete => return Served::Incomplete,
            Parsed::Refused { reason, page } => {
                warn!("Invalid request from ip={}: {reason}", conn.env.remote_ip);
                return self.reject(py, idx, &page);
            }
        };
        let max_requests = self.seed.max_requests;
        // Requests already in threads count toward --max-requests too.
        let in_flight = self.in_app.len() as u64;
        let no_keepalive_slots = self
            .pool
            .as_ref()
            .is_some_and(|p| self.seed.config.worker_connections <= p.threads());
        let may_keep_alive = super::signals::is_alive()
            && !self.timeouts.keepalive.is_zero()
            && !no_keepalive_slots
            && (max_requests == 0 || self.served + in_flight + 1 < max_requests);
        if let Some(pool) = &self.pool {
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
            return Served::Dispatched;
        }
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
        let outcome = self.runtime.handle(py, &mut exchange, &head, began);
        drop(exchange);
        if let Some(watcher) = &self.watcher {
            watcher.call_ended(&mut self.handed);
        }
        self.busy += began.elapsed();
        // Connections a sibling took over while the app ran: only our copy is closed.
        for handed in std::mem::take(&mut self.handed) {
            self.close(py, handed);
        }
        self.request_done(py, idx, outcome)
    }

    /// After a request's app call (in the loop or in a thread): count it, then go on with
    /// the connection.
    fn request_done(&mut self, py: Python<'_>, idx: usize, outcome: Outcome) -> Served {
        let max_requests = self.seed.max_requests;
        self.served += 1;
        self.seed.heartbeat.beat(self.seed.slot);
        if max_requests > 0 && self.served >= max_requests && super::signals::is_alive() {
            info!("Autorestarting worker after current request.");
            super::signals::retire();
        }
        match outcome {
            Outcome::KeepAlive => self.finish_response(py, idx, After::KeepAlive),
            Outcome::Close => self.finish_response(py, idx, After::Close),
            Outcome::Exit(_) if self.pool.is_some() => {
                // The app raised SystemExit in a thread (signals raise only in the loop):
                // the worker stops like a recycled one, after the other threads' requests
                // are answered, as Gunicorn's gthread lets its executor finish.
                super::signals::retire();
                self.finish_response(py, idx, After::Close)
            }
            Outcome::Exit(_) => {
                // Like Gunicorn's sync worker: an abort or quit that interrupted a request
                // was answered (500) and the worker leaves with status 0, so the master has
                // nothing more to report. What is waiting goes to a sibling. The answer
                // (a 500) gets a moment to reach the client first.
                if let Some(conn) = self.conns.get(idx).and_then(Option::as_ref) {
                    conn.io.flush_for(py, Duration::from_millis(500));
                }
                self.close(py, idx);
                self.pass_on_movable(py);
                Served::Exit(0)
            }
        }
    }
}

impl Drop for EventLoop<'_> {
    /// Connections still open when the worker leaves are closed properly: their
    /// `gunicorn.socket` lets go of the descriptor before the descriptor is closed (else
    /// Python's socket finalizer would close it first, and then we would, a second time).
    ///
    /// A connection whose request is still in a pool thread is left alone: the thread may
    /// still use its descriptor, and closing it could hand the number to something else the
    /// thread would then write to. Process exit closes it.
    fn drop(&mut self) {
        Python::attach(|py| {
            for idx in 0..self.conns.len() {
                let in_thread = self.conns[idx]
                    .as_ref()
                    .is_some_and(|c| c.state.phase() == Phase::InApp);
                if !in_thread {
                    self.close(py, idx);
                }
            }
        });
    }
}

/// What serving from a connection's buffer did.
#[derive(PartialEq, Eq, Debug)]
enum Served {
    /// A response waits for a slow client; the loop sends it (the connection is parked).
    Flushing,
    /// One request was answered; the connection stays open.
    Request,
    /// No complete head yet.
    Incomplete,
    /// The connection was closed (or is closing).
    Closed,
    /// The request went to a pool thread (threaded worker).
    Dispatched,
    /// The worker must exit with this status.
    Exit(i32),
}

fn exit_status(py: Python<'_>, e: &PyErr) -> i32 {
    if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) {
        crate::python::system_exit_code(py, e)
    } else {
        crate::python::log_exception(py, "Exception in worker process", e);
        1
    }
}
