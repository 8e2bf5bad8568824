//! The worker's event loop: polls, and on each turn serves the connections that are ready
//! (`dispatch`), accepts (`accept`), and expires what is overdue (`conns`); and stopping.
//!
//! A request's way from accept to close: `accept::accept_one` (or `adopt`, handed over by
//! a sibling) registers the connection (`conns::add_conn`); each time it is ready
//! `dispatch::on_ready` takes it a step (read a head, run the app here or in a pool
//! thread, flush, keep alive or close); `conns::expire` closes it when its time is up, and
//! the hand-off watcher or `conns::pass_on_movable` may pass it to a sibling.
//!
//! Readiness is edge-triggered (mio), so every read runs until `EAGAIN`, and after a request
//! is served the socket is read again before the connection goes idle.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use pyo3::prelude::*;
use tracing::{debug, error, info};

use super::conn::{Conn, Phase, State, Timeouts};
use super::handoff::Watcher;
use super::pool::{Sleep, Wait};
use super::seed::WorkerSeed;
use crate::http::request::Limits;
use crate::sock::ListenAddr;
use crate::wsgi::Runtime;

const WAKE: Token = Token(usize::MAX);
/// The hand-off channel: connections passed on by sibling workers.
const HANDOFF: Token = Token(usize::MAX - 1);
/// The threaded worker's pool finished requests.
const DONE: Token = Token(usize::MAX - 2);
/// `--reload` with inotify: a watched directory changed.
const RELOAD: Token = Token(usize::MAX - 3);
/// Connection tokens start here; listener tokens are their index below it.
pub(super) const CONN_BASE: usize = 1 << 16;
/// How often the threaded worker's main thread takes a turn of the loop, if no thread
/// has it, while threads are inside requests (see `serve_threaded`): what the loop
/// answers itself (static files, refusals, accepts, hand-offs, deadlines) waits at most
/// this long behind a busy pool.
const BUSY_NAP: Duration = Duration::from_millis(5);
/// How long a threaded worker told to abort (a timeout's ABRT) lets its threads finish.
/// It keeps beating meanwhile, so the master does not kill it first.
const ABORT_GRACE: Duration = Duration::from_secs(1);

pub(super) struct ListenerState {
    pub(super) fd: RawFd,
    pub(super) addr: ListenAddr,
    /// The kernel may have a connection queued for us.
    pub(super) ready: bool,
    pub(super) registered: bool,
    /// Our copy of the socket is closed (stopping on TERM, once its backlog was taken).
    pub(super) closed: bool,
    /// SERVER_NAME and SERVER_PORT of its connections (TCP).
    pub(super) server: Option<std::sync::Arc<(String, String)>>,
}

pub struct EventLoop<'a> {
    pub(super) seed: &'a WorkerSeed<'a>,
    pub(super) runtime: Runtime,
    /// Static routes, answered by the loop itself (see `static_route`).
    pub(super) statics: Option<super::statics::Statics>,
    pub(super) poll: Poll,
    /// The worker's signal wake-up pipe (also polled as `WAKE`).
    pub(super) signal_fd: RawFd,
    pub(super) listeners: Vec<ListenerState>,
    pub(super) conns: Vec<Option<Conn>>,
    pub(super) free: Vec<usize>,
    /// Connections with buffered bytes to serve on the next turn (round-robin).
    pub(super) pending: Vec<usize>,
    /// The connection the last accept added (see `accept_next_in_line`).
    pub(super) last_accepted: Option<usize>,
    pub(super) open: usize,
    pub(super) limits: Limits,
    pub(super) served: u64,
    pub(super) timeouts: Timeouts,
    pub(super) last_parent_check: Instant,
    pub(super) reloader: Option<super::reload::Reloader>,
    /// Time spent serving requests. Connection deadlines run on [`EventLoop::clock`], which
    /// leaves this out: a connection's idle or head time counts only while the worker could
    /// have served it, so waiting behind another client's slow request never expires it.
    pub(super) busy: Duration,
    /// `accept` is failing for lack of resources: when to try again.
    pub(super) accept_retry: Option<Instant>,
    /// How many accepts failed in the current burst (logged once at its start and end).
    pub(super) accept_failures: u64,
    /// Hands idle connections to siblings during long app calls (with more than 1 worker).
    pub(super) watcher: Option<Watcher>,
    /// The hand-off channel may have a connection for us.
    pub(super) handoff_ready: bool,
    /// Slots handed off during the last app call (reused buffer).
    pub(super) handed: Vec<usize>,
    /// The gthread worker's threads; None in the sync worker (requests run in the loop).
    pub(super) pool: Option<super::pool::Pool>,
    /// Requests the threads finished, being gone through (kept for its capacity: it and
    /// the threads' list trade places each turn, see `Pool::take_done`).
    pub(super) finished: Vec<super::pool::Done>,
    /// When each request now in a thread was handed to it (the watchdog's view).
    pub(super) in_app: Vec<(usize, Instant)>,
    /// Since when the threads have all been busy with a connection possibly waiting to
    /// be accepted (see [`SATURATED_GRACE`]).
    pub(super) saturated_since: Option<Instant>,
    /// The threaded worker was told to quit (QUIT, INT) or abort (ABRT): it leaves with this
    /// status once its threads are done, or at this deadline (see [`EventLoop::leave_threaded`]).
    pub(super) leaving: Option<(Instant, i32)>,
    /// When this worker started stopping (its first `wind_down`).
    pub(super) stopping_since: Option<Instant>,
    /// A turn's events and ready connections (kept for their capacity).
    events: Events,
    ready: Vec<usize>,
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
        statics: Option<super::statics::Statics>,
    ) -> std::io::Result<EventLoop<'a>> {
        let poll = Poll::new()?;
        if pool.is_none() {
            // The threaded worker's main thread polls it (see `serve_threaded`).
            poll.registry()
                .register(&mut SourceFd(&wake), WAKE, Interest::READABLE)?;
        }
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
        let listeners = seed
            .listeners
            .iter()
            .map(|l| ListenerState {
                fd: l.raw_fd(),
                addr: l.addr.clone(),
                ready: true,
                registered: false,
                closed: false,
                server: ip_and_port(&l.addr).map(std::sync::Arc::new),
            })
            .collect();
        let timeout = if seed.config.timeout == 0 {
            30
        } else {
            seed.config.timeout
        };
        let mut lp = EventLoop {
            seed,
            runtime,
            statics,
            poll,
            signal_fd: wake,
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
            finished: Vec::new(),
            in_app: Vec::new(),
            saturated_since: None,
            leaving: None,
            stopping_since: None,
            events: Events::with_capacity(256),
            ready: Vec::with_capacity(64),
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
    pub(super) fn clock(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.busy).unwrap_or(now)
    }

    /// One turn of the loop: housekeeping, a poll (`wait`: for at most
    /// [`EventLoop::poll_timeout`], else not at all), then the connections that are ready,
    /// accepts and deadlines. Some(status) when the worker must leave.
    pub(super) fn turn(&mut self, wait: Wait) -> Option<i32> {
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        let mut ready = std::mem::take(&mut self.ready);
        let code = self.turn_with(wait, &mut events, &mut ready);
        self.events = events;
        self.ready = ready;
        code
    }

    fn turn_with(
        &mut self,
        wait: Wait,
        events: &mut Events,
        ready: &mut Vec<usize>,
    ) -> Option<i32> {
        // Quits and aborts the threaded worker's main thread received.
        let leaves = self.pool.as_ref().map(super::pool::Pool::take_leaves);
        for code in leaves.unwrap_or_default() {
            self.leave_threaded(code);
        }
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
        if super::signals::is_alive() && super::signals::asked_to_retire() {
            // The master recycles us (memory, age) now that our successor serves.
            debug!("Worker asked to retire by the master");
            super::signals::retire(super::heartbeat::Leaving::Other);
        }
        let changed = self
            .reloader
            .as_mut()
            .and_then(|r| Python::attach(|py| r.changed(py)));
        if let Some(path) = changed {
            info!("Worker reloading: {} modified", path.display());
            // Leave like a recycled worker: what was accepted is answered; the sockets
            // stay open in the master for the next worker.
            if let Some(fd) = self.reloader.as_ref().and_then(|r| r.fd()) {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            self.reloader = None;
            super::signals::retire(super::heartbeat::Leaving::Other);
            Python::attach(|py| crate::python::hooks::call_worker_hook(py, "worker_int", &[]));
        }
        if !super::signals::is_alive() {
            self.wind_down();
            // Stopping on TERM, connections passed on by siblings (or by this worker's
            // own watcher) are served before leaving: nobody else may be left to.
            if self.open == 0 && !self.may_still_get_handoffs() {
                return Some(self.leaving.map_or(0, |(_, code)| code));
            }
        }
        if let Some((deadline, code)) = self.leaving {
            if Instant::now() >= deadline {
                self.answer_for_threads();
                return Some(code);
            }
        }
        if let Err(e) = self.wait_for_events(events, wait) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                error!("poll failed: {e}");
                return Some(1);
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
                // Taken below, with the requests finished without a wake-up.
                DONE => {
                    if let Some(pool) = &self.pool {
                        pool.drain_wakeups();
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
        // Before the connections' events are served: a connection given back by its
        // thread is read again (its event may be among them).
        if let Some(code) = self.take_finished(ready) {
            return Some(code);
        }
        // Only the sync worker polls the signal pipe here (see `serve_threaded`).
        if woke {
            if let Some(code) = run_signal_handlers() {
                return Some(code);
            }
        }
        let mut next = 0;
        while let Some(&idx) = ready.get(next) {
            next += 1;
            let served = self.served;
            if let Some(code) = self.on_ready(idx) {
                return Some(code);
            }
            // A sync worker that ran a request takes a connection waiting in the listen
            // backlog and serves it next: under saturation a turn lasts one request per
            // connection, and one accept per turn kept new connections waiting for
            // seconds (p99 1 s against Gunicorn's 0.28 s for a 10 ms app with 32
            // clients on 2 workers). Workers sharing a listener still take turns: each
            // takes one per request it serves.
            if self.pool.is_none() && self.served != served {
                if let Some(fresh) = self.accept_next_in_line() {
                    if !ready.contains(&fresh) {
                        ready.insert(next, fresh);
                    }
                }
            }
        }
        self.accept();
        self.expire();
        None
    }

    /// The threaded worker was told to quit (QUIT/INT: status 0) or abort (ABRT, a
    /// timeout: status 1). As Gunicorn's gthread lets its executor finish, requests in
    /// threads may complete (until `--graceful-timeout` on a quit, [`ABORT_GRACE`] on an
    /// abort); connections that can move go to siblings at once; a second signal ends
    /// the wait. What is still in a thread then gets a 500 if nothing of its response went
    /// out (see [`EventLoop::answer_for_threads`]).
    pub(super) fn leave_threaded(&mut self, code: i32) {
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
        self.pass_on_movable();
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

    /// Once a second: leave if the master is gone, and publish the gauges `--metrics`
    /// reports (the scrape sees them at most a second old).
    fn check_parent(&mut self) {
        if self.last_parent_check.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_parent_check = Instant::now();
        self.publish_meters();
        if nix::unistd::getppid() != self.seed.master_pid && super::signals::is_alive() {
            info!(
                "Parent changed, shutting down: <Worker {}>",
                std::process::id()
            );
            super::signals::stop_gracefully();
        }
    }

    fn publish_meters(&self) {
        if !crate::log::meters::enabled() {
            return;
        }
        let conns = self.conns.iter().flatten();
        crate::log::meters::publish(crate::log::meters::Gauges {
            queued: self.pool.as_ref().map_or(0, |p| p.queued() as u64),
            open: self.open as u64,
            idle: conns.filter(|c| c.state.phase() == Phase::Idle).count() as u64,
            outbox_bytes: crate::transport::queued_bytes() as u64,
        });
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

    /// Polls, for at most [`EventLoop::poll_timeout`] or as `wait` says. The sync worker
    /// lets go of the GIL meanwhile; in the threaded worker the thread running the turn
    /// has already let go of it when it may wait long (see `pool::Shared::lead`).
    fn wait_for_events(&mut self, events: &mut Events, wait: Wait) -> std::io::Result<()> {
        let timeout = match wait {
            Wait::No => Duration::ZERO,
            Wait::Briefly => self.poll_timeout().min(super::pool::BRIEFLY),
            Wait::Long => self.poll_timeout(),
        };
        let poll = &mut self.poll;
        let Some(pool) = &self.pool else {
            return Python::attach(|py| py.detach(|| poll.poll(events, Some(timeout))));
        };
        if timeout.is_zero() {
            return poll.poll(events, Some(timeout));
        }
        let polled = match pool.going_to_sleep() {
            Sleep::No => poll.poll(events, Some(Duration::ZERO)),
            Sleep::Polling => poll.poll(events, Some(timeout)),
        };
        pool.woke_up();
        polled
    }

    fn poll_timeout(&self) -> Duration {
        // A thread may have given a connection back without waking the loop, after the
        // loop let that connection's event pass (see `pool`): look again at once.
        if !self.pending.is_empty() || self.pool.as_ref().is_some_and(|p| p.has_done()) {
            return Duration::ZERO;
        }
        // Wake at least every half timeout (heartbeat) and every second (parent check).
        let wait = Duration::from_millis((self.seed.config.timeout * 500).clamp(100, 1000));
        let mut wait = match self.accept_wait(wait) {
            Ok(wait) => wait,
            Err(now) => return now,
        };
        if let Some((deadline, _)) = self.leaving {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
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
    fn wind_down(&mut self) {
        self.stopping_since.get_or_insert_with(Instant::now);
        // A quitting or aborting threaded worker leaves the backlog to its siblings.
        if super::signals::drains_backlog() && self.leaving.is_none() {
            if self.listeners.iter().all(|l| !l.closed) {
                Python::attach(super::object::close_sockets);
            }
            if let Some(watcher) = &self.watcher {
                for (socket, listener) in watcher.take_stranded() {
                    let tls = self.seed.config.tls.is_some();
                    let state = State::fresh(self.clock(), self.timeouts);
                    if let Err(e) = self.add_conn(listener, socket, tls, state) {
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
                while self.accept_one(i) {}
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
            self.pass_on_movable();
        }
        let now = self.clock();
        for conn in self.conns.iter_mut().flatten() {
            conn.state.last_call(!conn.buf.is_empty(), now);
        }
    }
}

impl EventLoop<'static> {
    /// Serves until told to stop; returns the worker's exit status.
    ///
    /// The sync worker's loop holds the GIL but while it polls: it runs the app itself.
    /// The threaded worker's loop is run by its threads, in turns (see `pool`): reading,
    /// parsing and handing requests over need no Python, so whichever thread is free runs
    /// the next turn, and under load the thread that just ran a request reads the next
    /// one, as a sync worker does, instead of waking another. The main thread keeps the
    /// signals (Python runs their handlers there) and takes a turn itself when every
    /// thread is inside a request ([`EventLoop::serve_threaded`]).
    pub fn run(mut self, py: Python<'_>) -> i32 {
        debug!("Worker serving (pid: {})", std::process::id());
        super::signals::announce_serving();
        if let Some(lender) = self.pool.as_ref().map(super::pool::Pool::lender) {
            return self.serve_threaded(py, &lender);
        }
        loop {
            if let Some(code) = self.turn(Wait::Long) {
                return code;
            }
        }
    }

    /// The threaded worker's main thread: lends the loop to the threads, then waits for
    /// signals (running their Python handlers, which only the main thread can), and every
    /// [`BUSY_NAP`] while a thread is inside a request, takes a turn itself if no thread
    /// has the loop (every thread may be inside a request). Returns when a turn says the worker must leave.
    fn serve_threaded(self, py: Python<'_>, lender: &super::pool::Lent) -> i32 {
        let signals = self.signal_fd;
        lender.lend(Box::new(self));
        let mut poked = false;
        let (code, the_loop) = py.detach(|| loop {
            if let Some(code) = lender.exit() {
                break (code, lender.take_back());
            }
            // A thread that wakes it has just taken a request (it may not show as busy
            // yet), or a turn said the worker leaves.
            let nap = if lender.busy() || poked {
                BUSY_NAP
            } else {
                Duration::from_secs(1)
            };
            let woken = lender.wait(signals, nap);
            poked = woken.thread;
            if woken.signal {
                match run_signal_handlers() {
                    Some(code) => lender.leave(code),
                    // TERM, USR1 and the like only set flags: the next turn acts on them.
                    None => lender.wake_loop(),
                }
            }
            lender.try_turn();
        });
        // Its connections are closed here, with the GIL (see `Drop`).
        drop(the_loop);
        code
    }
}

impl super::pool::Turns for EventLoop<'static> {
    fn turn(&mut self, wait: Wait) -> Option<i32> {
        EventLoop::turn(self, wait)
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
        for idx in 0..self.conns.len() {
            let in_thread = self.conns[idx]
                .as_ref()
                .is_some_and(|c| c.state.phase() == Phase::InApp);
            if !in_thread {
                self.close(idx);
            }
        }
        if let Some(pool) = &self.pool {
            Python::attach(|py| pool.release_buried(py));
        }
    }
}

/// Runs Python's signal handlers (the worker's main thread); the exit status if one raised
/// (QUIT, INT, ABRT).
fn run_signal_handlers() -> Option<i32> {
    crate::transport::drain_wake_fd();
    Python::attach(|py| py.check_signals().err().map(|e| exit_status(py, &e)))
}

pub(super) fn exit_status(py: Python<'_>, e: &PyErr) -> i32 {
    if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) {
        crate::python::system_exit_code(py, e)
    } else {
        crate::python::log_exception(py, "Exception in worker process", e);
        1
    }
}
