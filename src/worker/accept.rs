//! Accepting: new connections from the listeners, and connections siblings hand over
//! through the hand-off channel. Each turn accepts at most one per listener, and holds
//! back (leaving the connection in the backlog for an idle sibling) while a just-accepted
//! connection has sent nothing yet, while a threaded worker's threads are all busy, and
//! while the process is out of descriptors. The gates are the plain functions at the end.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::errno::Errno;
use nix::sys::socket::{accept4, getsockname, SockFlag, SockaddrStorage};
use tracing::{error, warn};

use super::conn::State;
use super::event_loop::EventLoop;
use super::handoff::Received;
use crate::sock::ListenAddr;

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
/// How long a worker stopping on TERM stays for connections its busy siblings' watchers
/// sweep from the listen backlog (they engage 20 ms into an app call, then look every 10 ms).
const HANDOFF_GRACE: Duration = Duration::from_millis(100);

impl EventLoop<'_> {
    /// How long the loop may sleep for accepting's sake (at most `wait`), or `Err` with the
    /// (shorter) time after which accepting, or taking a hand-off, must be tried.
    pub(super) fn accept_wait(&self, mut wait: Duration) -> Result<Duration, Duration> {
        let can_accept = super::signals::is_alive()
            && self.open < self.seed.config.worker_connections
            && !self.threads_saturated();
        if self.handoff_ready && self.takes_handoffs() {
            return Err(Duration::ZERO);
        }
        if let Some(since) = self.saturated_since {
            wait = wait.min(SATURATED_GRACE.saturating_sub(since.elapsed()));
        }
        if can_accept && self.listeners.iter().any(|l| l.ready) {
            match self.accept_retry {
                None => return Err(self.fresh_hold().unwrap_or(Duration::ZERO)),
                Some(at) => wait = wait.min(at.saturating_duration_since(Instant::now())),
            }
        }
        if let Some(since) = self.stopping_since {
            let grace_left = HANDOFF_GRACE.saturating_sub(since.elapsed());
            if !grace_left.is_zero() {
                wait = wait.min(grace_left);
            }
        }
        Ok(wait)
    }

    /// How much longer a just-accepted, still silent connection holds back further accepts.
    /// (The threaded worker holds back only once its threads would all be taken.)
    fn fresh_hold(&self) -> Option<Duration> {
        let ages = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.is_silent_fresh())
            .map(|c| c.accepted_at.elapsed());
        let threads = self.pool.as_ref().map(|p| (p.threads(), self.in_app.len()));
        fresh_hold(ages, threads)
    }

    /// The threaded worker, with siblings, leaves new connections in the listen backlog
    /// while all its threads are busy: a sibling with a free thread takes them (keep-alive
    /// connections otherwise pile up on whichever worker accepted first). For at most
    /// [`SATURATED_GRACE`] at a time: then it accepts one all the same.
    fn threads_saturated(&self) -> bool {
        saturated(
            self.threads_busy(),
            self.saturated_since.map(|s| s.elapsed()),
        )
    }

    fn threads_busy(&self) -> bool {
        let threads = self.pool.as_ref().map(super::pool::Pool::threads);
        threads_busy(self.seed.config.workers, self.in_app.len(), threads)
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

    /// Whether this worker takes connections from the hand-off channel now: while alive,
    /// and while stopping on TERM (every worker is), so that one handed off is never
    /// dropped; but not when recycled, as the connections it passed on are for its
    /// successor; and not at its connection limit or while out of descriptors.
    fn takes_handoffs(&self) -> bool {
        takes_handoffs(
            super::signals::is_alive(),
            super::signals::drains_backlog() && self.leaving.is_none(),
            self.open < self.seed.config.worker_connections,
            self.accept_retry.is_none_or(|at| Instant::now() >= at),
        )
    }

    /// Whether a stopping worker with nothing left should stay a little: a connection
    /// waits in the hand-off channel, or, just after TERM, a busy sibling's watcher may
    /// still pass on what it sweeps from the listen backlog ([`HANDOFF_GRACE`]).
    pub(super) fn may_still_get_handoffs(&self) -> bool {
        if !self.takes_handoffs() {
            return false;
        }
        let stopped_for = self.stopping_since.map(|since| since.elapsed());
        in_handoff_grace(self.seed.config.workers, stopped_for) || self.seed.handoff.has_waiting()
    }

    pub(super) fn set_listening(&mut self, i: usize, on: bool) -> std::io::Result<()> {
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
    /// Closes this process's copy of listener `i` (the socket lives on in the other
    /// processes that hold it).
    pub(super) fn close_listener(&mut self, i: usize) {
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
    pub(super) fn out_of_descriptors(&mut self, e: Errno) {
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
    pub(super) fn accept(&mut self) {
        self.take_handoff();
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
            self.accept_one(i);
        }
    }
    /// Accepts (as [`EventLoop::accept`] does) between two requests of a turn; returns
    /// the connection it added, if any.
    pub(super) fn accept_next_in_line(&mut self) -> Option<usize> {
        if !self.listeners.iter().any(|l| l.ready) {
            return None;
        }
        self.last_accepted = None;
        self.accept();
        self.last_accepted.take()
    }
    /// Accepts one connection from listener `i`; false when none was waiting (or on error).
    pub(super) fn accept_one(&mut self, i: usize) -> bool {
        let fd = self.listeners[i].fd;
        match accept4(fd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => {
                // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                crate::log::meters::accepted();
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
                let tls = self.seed.config.tls.is_some();
                let state = State::fresh(self.clock(), self.timeouts);
                match self.add_conn(i, owned, tls, state) {
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
    /// Takes one connection a sibling passed on (one per turn, like accepting).
    ///
    /// A descriptor passed with `SCM_RIGHTS` into a full descriptor table is dropped by the
    /// kernel (`MSG_CTRUNC`): the client would be reset. So a free descriptor is checked for
    /// first; without one the connection waits in the channel, for this worker once it has
    /// room again or for a sibling, as a new connection waits in the listen backlog.
    pub(super) fn take_handoff(&mut self) {
        if !self.handoff_ready || !self.takes_handoffs() {
            return;
        }
        if let Err(e) = self.seed.handoff.check_room() {
            self.out_of_descriptors(e);
            return;
        }
        match self.seed.handoff.receive() {
            Ok(received) => self.adopt(received),
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
    pub(super) fn adopt(&mut self, received: Received) {
        let Some(listener) = self.listener_of(&received.socket, received.listener) else {
            warn!("Dropping a connection handed over for a listener this worker does not have");
            return;
        };
        let buffered = !received.buffered.is_empty();
        let state = State::adopted(received.fresh, buffered, self.clock(), self.timeouts);
        match self.add_conn(listener, received.socket, false, state) {
            Ok(idx) => {
                crate::log::meters::adopted();
                if let Some(conn) = self.conns[idx].as_mut() {
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
        let tcp = local
            .as_sockaddr_in()
            .map(|a| (IpAddr::V4(a.ip()), a.port()))
            .or_else(|| {
                local
                    .as_sockaddr_in6()
                    .map(|a| (IpAddr::V6(a.ip()), a.port()))
            });
        let path = local.as_unix_addr().and_then(|a| a.path());
        let accepted = |i: usize| accepted_on(&self.listeners[i].addr, tcp, path);
        which_listener(hint, self.listeners.len(), accepted)
    }
}

/// How long the just-accepted connections that are still silent (their `ages`) hold back
/// the next accept: the longest grace any has left. A threaded worker (`threads`: its
/// thread count and the requests in them) holds back only once its threads would all be
/// taken by those connections.
fn fresh_hold(
    ages: impl Iterator<Item = Duration>,
    threads: Option<(usize, usize)>,
) -> Option<Duration> {
    let (waiting, longest) = ages
        .map(|age| FRESH_CONNECTION_GRACE.saturating_sub(age))
        .filter(|left| !left.is_zero())
        .fold(
            (0, None),
            |(n, longest): (usize, Option<Duration>), left| (n + 1, longest.max(Some(left))),
        );
    match threads {
        None => longest,
        Some((threads, in_app)) => longest.filter(|_| waiting + in_app >= threads),
    }
}

/// Whether a threaded worker's threads are all busy while it has siblings to leave new
/// connections to (`threads`: None in the sync worker).
fn threads_busy(workers: usize, in_app: usize, threads: Option<usize>) -> bool {
    threads.is_some_and(|threads| workers > 1 && in_app >= threads)
}

/// Whether a busy worker (`busy`, since `busy_for` with a connection waiting) still leaves
/// new connections to its siblings: for [`SATURATED_GRACE`] at a time.
fn saturated(busy: bool, busy_for: Option<Duration>) -> bool {
    busy && busy_for.is_none_or(|d| d < SATURATED_GRACE)
}

/// Whether connections are taken from the hand-off channel: while `alive`, or stopping on
/// TERM (`draining`); with `room` under the connection limit and the `retry_due` after an
/// accept failure.
fn takes_handoffs(alive: bool, draining: bool, room: bool, retry_due: bool) -> bool {
    (alive || draining) && room && retry_due
}

/// Whether a stopping worker (for `stopped_for`) still waits for what its siblings' watchers
/// sweep from the listen backlog: only with siblings, for [`HANDOFF_GRACE`].
fn in_handoff_grace(workers: usize, stopped_for: Option<Duration>) -> bool {
    workers > 1 && stopped_for.is_some_and(|d| d < HANDOFF_GRACE)
}

/// Whether a connection with local address `tcp` (or unix `path`) came through a socket
/// listening on `listening` (a wildcard address takes any of the host's).
fn accepted_on(listening: &ListenAddr, tcp: Option<(IpAddr, u16)>, path: Option<&Path>) -> bool {
    match listening {
        ListenAddr::Tcp(l) => tcp.is_some_and(|(ip, port)| {
            port == l.port() && (l.ip().is_unspecified() || l.ip() == ip)
        }),
        ListenAddr::Unix(p) => path.is_some_and(|path| path == p.as_path()),
    }
}

/// The listener of `count` that `accepted` a connection: the one it came with (`hint`) if
/// that fits, else the first that does.
fn which_listener(hint: usize, count: usize, accepted: impl Fn(usize) -> bool) -> Option<usize> {
    if hint < count && accepted(hint) {
        return Some(hint);
    }
    (0..count).position(accepted)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_silent_fresh_connection_holds_accepting_back_for_its_grace_left() {
        assert_eq!(fresh_hold([].into_iter(), None), None);
        assert_eq!(fresh_hold([3 * MS, 8 * MS].into_iter(), None), Some(7 * MS));
        assert_eq!(
            fresh_hold([FRESH_CONNECTION_GRACE, 60 * MS].into_iter(), None),
            None,
            "graces used up"
        );
    }

    #[test]
    fn a_threaded_worker_holds_back_only_once_its_threads_would_all_be_taken() {
        let two_silent = [MS, 4 * MS];
        assert_eq!(fresh_hold(two_silent.into_iter(), Some((4, 1))), None);
        assert_eq!(
            fresh_hold(two_silent.into_iter(), Some((4, 2))),
            Some(9 * MS)
        );
        assert_eq!(
            fresh_hold(two_silent.into_iter(), Some((2, 0))),
            Some(9 * MS)
        );
        // Expired graces do not count toward the threads.
        let one_silent = [MS, FRESH_CONNECTION_GRACE];
        assert_eq!(fresh_hold(one_silent.into_iter(), Some((2, 0))), None);
    }

    #[test]
    fn busy_threads_leave_newcomers_to_siblings_for_a_grace_at_a_time() {
        assert!(!threads_busy(4, 8, None), "the sync worker");
        assert!(!threads_busy(1, 8, Some(8)), "no sibling to leave them to");
        assert!(!threads_busy(4, 7, Some(8)));
        assert!(threads_busy(4, 8, Some(8)));
        assert!(!saturated(false, None));
        assert!(saturated(true, None), "a connection waits: not noticed yet");
        assert!(saturated(true, Some(SATURATED_GRACE - MS)));
        assert!(
            !saturated(true, Some(SATURATED_GRACE)),
            "accept one all the same"
        );
    }

    #[test]
    fn handoffs_are_taken_alive_or_draining_with_room() {
        assert!(takes_handoffs(true, false, true, true));
        assert!(takes_handoffs(false, true, true, true), "stopping on TERM");
        assert!(
            !takes_handoffs(false, false, true, true),
            "recycled or quitting"
        );
        assert!(
            !takes_handoffs(true, false, false, true),
            "at the connection limit"
        );
        assert!(
            !takes_handoffs(true, false, true, false),
            "out of descriptors"
        );
        assert!(in_handoff_grace(2, Some(HANDOFF_GRACE - MS)));
        assert!(!in_handoff_grace(2, Some(HANDOFF_GRACE)));
        assert!(!in_handoff_grace(1, Some(MS)), "no sibling to sweep for it");
        assert!(!in_handoff_grace(2, None), "not stopping");
    }

    #[test]
    fn a_handed_in_connection_finds_its_listener_by_local_address() {
        let any: std::net::SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let lo: std::net::SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let listeners = [
            ListenAddr::Tcp(any),
            ListenAddr::Tcp(lo),
            ListenAddr::Unix("/run/app.sock".into()),
        ];
        let local = |addr: &str| {
            let a: std::net::SocketAddr = addr.parse().unwrap();
            Some((a.ip(), a.port()))
        };
        let find = |hint, tcp, path| {
            which_listener(hint, listeners.len(), |i| {
                accepted_on(&listeners[i], tcp, path)
            })
        };
        assert_eq!(find(0, local("10.0.0.5:8000"), None), Some(0), "wildcard");
        assert_eq!(
            find(0, local("127.0.0.1:8001"), None),
            Some(1),
            "hint wrong"
        );
        assert_eq!(
            find(1, local("127.0.0.2:8001"), None),
            None,
            "other address"
        );
        assert_eq!(
            find(7, local("10.0.0.5:8000"), None),
            Some(0),
            "hint unknown"
        );
        assert_eq!(find(2, None, Some(Path::new("/run/app.sock"))), Some(2));
        assert_eq!(find(0, None, Some(Path::new("/run/other.sock"))), None);
    }
}
