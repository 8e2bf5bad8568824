//! The connection table: the worker's open connections by slot (a slot's number is its
//! poll token, and its index in the hand-off watcher's and the keeper's tables, see
//! `conn_table`), with what happens to them from outside a request: registering, closing,
//! expiring, the read-ahead budget, and passing them on when the worker leaves.

use std::os::fd::{AsRawFd, OwnedFd};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::socket::{getpeername, setsockopt, sockopt, SockaddrStorage};
use pyo3::prelude::*;
use tracing::warn;

use super::conn::{too_large_page, Conn, Expiry, State};
use super::event_loop::{EventLoop, CONN_BASE};
use super::handoff::MAX_CARRIED_BYTES;
use crate::sock::{ListenAddr, Peer};
use crate::transport::Transport;
use crate::wsgi::environ::ConnEnv;

/// Read-ahead budget of one worker: the capacity of all connection buffers together. Past
/// it, the connection holding the most is refused (its head is unreasonably large).
const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;
/// A buffer this large is measured against the budget; an emptied one is freed.
pub(super) const LARGE_BUFFER_BYTES: usize = 64 * 1024;

impl EventLoop<'_> {
    /// Registers a connection accepted on listener `listener`, over TLS if `tls`, in `state`
    /// (fresh, or as a sibling handed it over).
    pub(super) fn add_conn(
        &mut self,
        listener: usize,
        fd: OwnedFd,
        tls: bool,
        state: State,
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
            Peer::Tcp(a) => (a.ip().to_string(), Some(a.port())),
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
            remote_port,
            remote_ip,
            server: l.server.clone(),
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
        let proxy = self.seed.config.proxy_protocol;
        self.conns[idx] = Some(Conn::new(io, env, peer.ip(), listener, proxy, state));
        self.open += 1;
        self.refresh_idle(idx);
        Ok(idx)
    }
    pub(super) fn close(&mut self, idx: usize) {
        if let Some(conn) = self.conns.get_mut(idx).and_then(Option::take) {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&conn.io.raw_fd()));
            match &self.pool {
                // Its `gunicorn.socket` (made by its first request) needs the GIL to let
                // go of the descriptor: a thread closes it.
                Some(pool) if conn.env.socket.get().is_some() => {
                    pool.bury(super::pool::Buried {
                        env: conn.env,
                        io: conn.io,
                    });
                }
                Some(_) => conn.io.close(),
                None => {
                    Python::attach(|py| conn.env.release(py));
                    conn.io.close();
                }
            }
            self.refresh_idle(idx);
            self.free.push(idx);
            self.open -= 1;
        }
    }
    /// Half-closes our side and lingers briefly, so unread client bytes do not make the
    /// kernel answer with a RST that would destroy the response in flight.
    pub(super) fn close_gracefully(&mut self, idx: usize) {
        let now = self.clock();
        if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            conn.io.close_notify();
            if !conn.io.shutdown_write() {
                self.close(idx);
                return;
            }
            conn.state.closing(now);
            conn.buf = Vec::new();
        }
    }
    pub(super) fn requeue(&mut self, idx: usize) {
        if let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) {
            if !conn.queued {
                conn.queued = true;
                self.pending.push(idx);
            }
        }
    }
    /// Tells the watcher, and the keeper's table (see `worker::keeper`), whether connection
    /// `idx` is idle and may move to a sibling.
    pub(super) fn refresh_idle(&self, idx: usize) {
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
    /// Reads what arrived on connection `idx` (see [`Conn::read_available`]); returns
    /// whether the socket was read empty.
    pub(super) fn read_available(&mut self, idx: usize) -> bool {
        let head = self.timeouts.head;
        let drained = self
            .conns
            .get_mut(idx)
            .and_then(Option::as_mut)
            .is_none_or(|conn| conn.read_available(head));
        self.refresh_idle(idx);
        drained
    }
    /// Keeps the worker's read-ahead within [`MAX_BUFFERED_BYTES`]: while over it, the
    /// connection holding the largest buffer (a huge or endless head) is refused.
    pub(super) fn enforce_read_budget(&mut self, idx: usize) {
        if self.conns[idx]
            .as_ref()
            .is_none_or(|c| c.buf.capacity() < LARGE_BUFFER_BYTES)
        {
            return;
        }
        loop {
            let total: usize = self.conns.iter().flatten().map(|c| c.buf.capacity()).sum();
            // Only connections still reading a head hold read-ahead; one being answered
            // or closed frees its buffer on its own.
            let reading = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                .filter(|(_, c)| c.state.reading())
                .map(|(i, c)| (i, c.buf.capacity()));
            let Some(worst) = over_budget(total, reading) else {
                return;
            };
            let ip = self.conns[worst]
                .as_ref()
                .map(|c| c.env.remote_ip.clone())
                .unwrap_or_default();
            warn!(
                "Invalid request from ip={ip}: request head too large for the worker's \
                 read-ahead budget ({} MiB buffered)",
                total >> 20
            );
            self.reject(worst, &too_large_page());
        }
    }
    /// Closes the connections whose time is up. An idle one is closed only when provably
    /// idle: bytes that arrived meanwhile (a request already on its way) are served instead.
    pub(super) fn expire(&mut self) {
        let now = self.clock();
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_ref() else {
                continue;
            };
            match conn.state.expiry(now, conn.eof) {
                Expiry::NotYet => continue,
                Expiry::Close => {}
                Expiry::UnlessBytesWaiting => {
                    self.read_available(idx);
                    if let Some(conn) = self.conns[idx].as_mut().filter(|c| !c.buf.is_empty()) {
                        conn.state.bytes_arrived(now, self.timeouts);
                        self.requeue(idx);
                        continue;
                    }
                }
            }
            self.close(idx);
        }
    }
    /// The worker is leaving (a timeout's abort, a recycle): every connection that can
    /// move (between requests or reading a head, not TLS or PROXY protocol) goes to a
    /// sibling or the successor, with what was already read, instead of being reset or
    /// holding this worker. A full channel leaves the rest here.
    pub(super) fn pass_on_movable(&mut self) {
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
                self.close(idx);
            } else {
                // Not passed on (the channel is full): the keeper's entry comes back.
                self.refresh_idle(idx);
            }
        }
    }
}

/// The connection to refuse while the buffers' `total` capacity is over the read-ahead
/// budget: of those still `reading` a head (slot, buffer capacity), the one holding most.
fn over_budget(total: usize, reading: impl Iterator<Item = (usize, usize)>) -> Option<usize> {
    if total <= MAX_BUFFERED_BYTES {
        return None;
    }
    reading
        .max_by_key(|&(_, capacity)| capacity)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_read_ahead_budget_the_largest_head_is_refused() {
        let reading = [(0, 4096), (3, MAX_BUFFERED_BYTES / 2), (5, 1 << 20)];
        assert_eq!(over_budget(MAX_BUFFERED_BYTES, reading.into_iter()), None);
        assert_eq!(
            over_budget(MAX_BUFFERED_BYTES + 1, reading.into_iter()),
            Some(3)
        );
        // Over budget by buffers of responses under way: nobody reading is to blame.
        assert_eq!(over_budget(MAX_BUFFERED_BYTES + 1, [].into_iter()), None);
    }
}
