//! Hand-off of waiting connections between workers.
//!
//! Keep-alive ties a connection to the worker that accepted it. Gunicorn's sync worker never
//! keeps one, so a client's next request always goes to whichever worker is free; ours would
//! wait behind the app call in hand, even with a sibling idle (head-of-line blocking), and
//! would be reset if the worker is killed. So:
//!
//! - While the worker is inside the app for longer than [`ENGAGE_AFTER`], a small Rust
//!   thread (the [`Watcher`]; it never touches Python) polls the worker's idle connections.
//!   One that receives a request is passed, descriptor and all (`SCM_RIGHTS`), into the
//!   [`Channel`], and the worker forgets it when the app returns.
//! - The channel is one datagram socket pair made by the master before the first fork and
//!   shared by every worker, like the listening sockets: a worker takes a connection from
//!   it only when it is in its event loop, so it goes to a worker that is free. With every
//!   worker busy it waits there, as a new connection waits in the listen backlog.
//! - A worker that leaves after a timeout (or any abort that ends the request in hand) passes
//!   its remaining connections on the same way, with the bytes it had already read.
//!
//! TLS connections (their session lives in this process) and PROXY-protocol connections
//! (their client address came from a header already consumed) are never handed off.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};

use super::conn_table::{decode_idle, encode_idle, ConnTable};

/// How long an app call runs before the watcher starts looking at the idle connections:
/// short calls (almost all) never wake it.
pub const ENGAGE_AFTER: Duration = Duration::from_millis(20);
/// How often an engaged watcher looks again (it is also woken by data on any of them).
const WATCH_TICK: Duration = Duration::from_millis(10);
/// After this long without requests the watcher sleeps until the next one starts.
const DOZE_AFTER: Duration = Duration::from_secs(1);
/// Bytes already read that may travel with a connection (more: it stays where it is).
pub const MAX_CARRIED_BYTES: usize = 64 * 1024;
/// Header of a hand-off datagram: the listener index (4 bytes, little-endian), then 1 if
/// the connection has not sent a request yet (it keeps the head timeout), else 0.
const HEADER: usize = 5;

/// The datagram socket pair connections travel through, shared by the master's workers.
pub struct Channel {
    send: OwnedFd,
    recv: OwnedFd,
}

/// A connection taken from the channel.
pub struct Received {
    pub socket: OwnedFd,
    /// Index of the listener that accepted it (the same in every worker).
    pub listener: usize,
    /// Request bytes the previous worker had read.
    pub buffered: Vec<u8>,
    /// No request has come on it yet.
    pub fresh: bool,
}

impl Channel {
    /// Makes the pair (non-blocking, close-on-exec: a USR2 re-exec makes its own).
    ///
    /// # Errors
    /// `socketpair` failed (out of descriptors).
    pub fn new() -> nix::Result<Channel> {
        let (send, recv) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )?;
        Ok(Channel { send, recv })
    }

    /// The receiving end, for the event loop to watch.
    pub fn recv_fd(&self) -> RawFd {
        self.recv.as_raw_fd()
    }

    /// Passes `socket` (accepted on listener `listener`, with `buffered` bytes already read)
    /// to whichever worker takes it. Never blocks: a full queue is an error.
    ///
    /// # Errors
    /// The queue is full (EAGAIN), or too many bytes to carry.
    pub fn send(
        &self,
        socket: RawFd,
        listener: usize,
        fresh: bool,
        buffered: &[u8],
    ) -> nix::Result<()> {
        send_connection(self.send.as_fd(), socket, listener, fresh, buffered)
    }

    /// Whether a connection is waiting.
    pub fn has_waiting(&self) -> bool {
        let mut byte = [0u8; 1];
        recv(
            self.recv.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        )
        .is_ok()
    }

    /// Whether this process has a free descriptor for a connection to arrive in (the
    /// kernel drops one passed into a full table).
    ///
    /// # Errors
    /// EMFILE (or ENFILE) when it has none.
    pub fn check_room(&self) -> nix::Result<()> {
        nix::fcntl::fcntl(&self.recv, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0)).map(|fd| {
            // SAFETY: fcntl just made this descriptor; nothing else owns it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        })
    }

    /// Takes one connection, if one is waiting.
    ///
    /// # Errors
    /// EAGAIN when none is waiting; other errors of `recvmsg`.
    pub fn receive(&self) -> nix::Result<Received> {
        let mut data = vec![0u8; HEADER + MAX_CARRIED_BYTES];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<UnixAddr>(
            self.recv.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let len = msg.bytes;
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            // Our descriptor table filled up after `check_room` (an app thread opened
            // files): the kernel dropped the connection.
            return Err(Errno::EMFILE);
        }
        let mut socket = None;
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS just installed this descriptor in our table; we
                    // are its only owner.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if socket.is_none() {
                        socket = Some(owned);
                    }
                }
            }
        }
        let socket = socket.ok_or(Errno::EBADMSG)?;
        if len < HEADER {
            return Err(Errno::EBADMSG);
        }
        let mut listener = [0u8; 4];
        listener.copy_from_slice(&data[..4]);
        let fresh = data[4] == 1;
        data.truncate(len);
        data.drain(..HEADER);
        Ok(Received {
            socket,
            listener: u32::from_le_bytes(listener) as usize,
            buffered: data,
            fresh,
        })
    }
}

/// What the event loop and the watcher thread share.
struct Shared {
    /// Monotonic milliseconds at which the app call in hand started; 0 between calls.
    busy_since: AtomicU64,
    /// Per connection slot: 0, or an idle connection that may be handed off
    /// (`IDLE | listener << 32 | fd`).
    idle: Vec<AtomicU64>,
    /// Held by the watcher while it hands a connection off, and by the loop when an app
    /// call ends: after that, no hand-off of this call can still be under way.
    handed: Mutex<Vec<usize>>,
    dozing: AtomicBool,
    wake: Condvar,
    stop: AtomicBool,
    /// This worker's copy of each listening socket (its descriptor), or -1 once the
    /// watcher let it go on TERM (see [`drop_listeners`]).
    listeners: Vec<AtomicI32>,
    /// Connections the watcher accepted on TERM but could not pass on (the channel was
    /// full): the loop serves them.
    stranded: Mutex<Vec<(OwnedFd, usize)>>,
}

/// The watcher thread of one worker, and the loop's side of it.
pub struct Watcher {
    shared: Arc<Shared>,
    started: Instant,
}

impl Watcher {
    /// Starts the thread for a worker with `slots` connection slots, listening on
    /// `listeners` (registered with `registry`).
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start(
        channel: &Channel,
        slots: usize,
        listeners: &[RawFd],
        registry: mio::Registry,
        keeper: Option<ConnTable>,
    ) -> std::io::Result<Watcher> {
        let shared = Arc::new(Shared {
            busy_since: AtomicU64::new(0),
            idle: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            handed: Mutex::new(Vec::new()),
            dozing: AtomicBool::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            listeners: listeners.iter().map(|&fd| AtomicI32::new(fd)).collect(),
            stranded: Mutex::new(Vec::new()),
        });
        let send = channel.send.try_clone()?;
        let started = Instant::now();
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("rgunicorn-handoff".into())
            .spawn(move || {
                // Signals are for the main thread, where Python handles them.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                watch(&theirs, &send, started, &registry, keeper);
            })?;
        Ok(Watcher { shared, started })
    }

    fn now_ms(&self) -> u64 {
        // +1: 0 means "not busy".
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records whether connection slot `idx` is idle and may be handed off.
    pub fn set_idle(&self, idx: usize, idle: Option<(RawFd, usize, bool)>) {
        if let Some(cell) = self.shared.idle.get(idx) {
            cell.store(encode_idle(idle), Ordering::Relaxed);
        }
    }

    /// An app call starts: the watcher may engage if it lasts.
    pub fn call_started(&self) {
        // SeqCst on both sides (here: store busy, load dozing; the watcher: store dozing,
        // load busy): with weaker orders both could read the old value, and the watcher
        // would sleep through the call.
        self.shared
            .busy_since
            .store(self.now_ms(), Ordering::SeqCst);
        if self.shared.dozing.load(Ordering::SeqCst) {
            let _guard = self.shared.handed.lock();
            self.shared.wake.notify_one();
        }
    }

    /// The app call ended: the slots handed off meanwhile go into `handed` (the loop closes
    /// its copies of them). No hand-off happens after this returns.
    pub fn call_ended(&self, handed: &mut Vec<usize>) {
        let mut list = self.shared.handed.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.busy_since.store(0, Ordering::Release);
        handed.append(&mut list);
    }

    /// Whether the watcher let go of listener `index` during the call (stopping on TERM):
    /// the loop must neither use its descriptor as a socket nor deregister it.
    pub fn dropped_listener(&self, index: usize) -> bool {
        self.shared
            .listeners
            .get(index)
            .is_some_and(|fd| fd.load(Ordering::Acquire) < 0)
    }

    /// Connections the watcher accepted but could not pass on, with their listener.
    pub fn take_stranded(&self) -> Vec<(OwnedFd, usize)> {
        std::mem::take(
            &mut *self
                .shared
                .stranded
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _guard = self.shared.handed.lock();
        self.shared.wake.notify_one();
    }
}

/// The watcher thread: waits for a long app call, then polls the idle connections and hands
/// off each that receives a request.
fn watch(
    shared: &Shared,
    send: &OwnedFd,
    started: Instant,
    registry: &mio::Registry,
    keeper: Option<ConnTable>,
) {
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
    let mut last_busy = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let since = shared.busy_since.load(Ordering::Acquire);
        if since == 0 {
            if last_busy.elapsed() < DOZE_AFTER {
                std::thread::sleep(WATCH_TICK);
                continue;
            }
            let guard = shared.handed.lock().unwrap_or_else(|p| p.into_inner());
            shared.dozing.store(true, Ordering::SeqCst);
            if shared.busy_since.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::Relaxed)
            {
                drop(shared.wake.wait(guard));
            }
            shared.dozing.store(false, Ordering::Relaxed);
            continue;
        }
        last_busy = Instant::now();
        let busy_for = Duration::from_millis(now_ms().saturating_sub(since));
        if busy_for < ENGAGE_AFTER {
            std::thread::sleep(ENGAGE_AFTER - busy_for);
            continue;
        }
        if super::signals::drains_backlog() {
            drop_listeners(shared, send, since, registry);
        }
        let candidates: Vec<(usize, u64)> = shared
            .idle
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.load(Ordering::Relaxed)))
            .filter(|(_, v)| decode_idle(*v).is_some())
            .collect();
        if candidates.is_empty() {
            std::thread::sleep(WATCH_TICK);
            continue;
        }
        let ready = wait_readable(&candidates);
        let mut moved = false;
        for idx in ready.iter().flatten().copied() {
            let Some((_, value)) = candidates.iter().find(|(i, _)| *i == idx) else {
                continue;
            };
            let mut handed = shared.handed.lock().unwrap_or_else(|p| p.into_inner());
            // Still the same app call, and the connection still idle: the loop is not
            // touching it, and cannot until it takes the lock.
            if shared.busy_since.load(Ordering::Acquire) != since
                || shared.idle[idx].load(Ordering::Relaxed) != *value
            {
                break;
            }
            let Some((fd, listener, fresh)) = decode_idle(*value) else {
                continue;
            };
            if !has_request_bytes(fd) {
                continue;
            }
            // No longer the keeper's to rescue once it may be with a sibling (see
            // `worker::keeper`): never two workers on one connection.
            if let Some(table) = &keeper {
                table.set_idle(idx, None);
            }
            if send_connection(send.as_fd(), fd, listener, fresh, &[]).is_ok() {
                shared.idle[idx].store(0, Ordering::Relaxed);
                handed.push(idx);
                moved = true;
            } else if let Some(table) = &keeper {
                // Still ours and idle: the keeper may rescue it again.
                table.set_idle(idx, Some((fd, listener, fresh)));
            }
        }
        // Readable but nothing moved (the client closed, or the queue is full), or poll
        // failed at once: wait a tick rather than spin.
        if !moved && ready.as_ref().is_none_or(|r| !r.is_empty()) {
            std::thread::sleep(WATCH_TICK);
        }
    }
}

/// Stopping on TERM while the app call in hand goes on: what the kernel queued on each
/// listener is accepted and passed on (siblings serve it, or this worker after its call),
/// then this worker's copy of the socket goes, so that once every process has let go the
/// kernel refuses new connections at once instead of queueing them for a worker that will
/// not accept again. The descriptor number stays taken (by `/dev/null`) until the loop,
/// which knows it by number, closes it.
fn drop_listeners(shared: &Shared, send: &OwnedFd, since: u64, registry: &mio::Registry) {
    if shared
        .listeners
        .iter()
        .all(|fd| fd.load(Ordering::Relaxed) < 0)
    {
        return;
    }
    let Ok(devnull) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    // As for hand-offs: only while the same app call runs, so the loop is not using them.
    let _handed = shared.handed.lock().unwrap_or_else(|p| p.into_inner());
    if shared.busy_since.load(Ordering::Acquire) != since {
        return;
    }
    for (index, cell) in shared.listeners.iter().enumerate() {
        let fd = cell.load(Ordering::Relaxed);
        if fd < 0 {
            continue;
        }
        let swept = loop {
            match nix::sys::socket::accept4(
                fd,
                nix::sys::socket::SockFlag::SOCK_NONBLOCK
                    | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            ) {
                Ok(raw) => {
                    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
                    let conn = unsafe { OwnedFd::from_raw_fd(raw) };
                    crate::log::meters::accepted();
                    if send_connection(send.as_fd(), raw, index, true, &[]).is_err() {
                        shared
                            .stranded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((conn, index));
                    }
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(Errno::EAGAIN) => break true,
                // Out of descriptors: the loop sweeps this one after the call.
                Err(_) => break false,
            }
        };
        if !swept {
            continue;
        }
        let _ = registry.deregister(&mut mio::unix::SourceFd(&fd));
        // SAFETY: `fd` is this worker's copy of the listener, which nothing uses during
        // the app call but this thread; dup2 replaces it atomically.
        if unsafe { nix::libc::dup2(devnull.as_raw_fd(), fd) } >= 0 {
            cell.store(-1, Ordering::Release);
        }
    }
}

/// One hand-off datagram: the listener index, the bytes already read, the descriptor.
fn send_connection(
    channel: BorrowedFd<'_>,
    socket: RawFd,
    listener: usize,
    fresh: bool,
    buffered: &[u8],
) -> nix::Result<()> {
    if buffered.len() > MAX_CARRIED_BYTES {
        return Err(Errno::EMSGSIZE);
    }
    let mut header = [0u8; HEADER];
    let index = u32::try_from(listener).map_err(|_| Errno::EINVAL)?;
    header[..4].copy_from_slice(&index.to_le_bytes());
    header[4] = u8::from(fresh);
    let iov = [IoSlice::new(&header), IoSlice::new(buffered)];
    let fds = [socket];
    sendmsg::<UnixAddr>(
        channel.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    crate::log::meters::handed_off();
    Ok(())
}

/// Slots among `candidates` whose connection became readable within one tick; None when
/// poll returned at once with nothing readable (an error, a closed descriptor).
fn wait_readable(candidates: &[(usize, u64)]) -> Option<Vec<usize>> {
    let mut fds: Vec<PollFd<'_>> = candidates
        .iter()
        .map(|(_, v)| {
            // SAFETY: a descriptor the loop closed after this snapshot (the call ended) can
            // at worst be polled by number for one tick: poll reads nothing through it, and
            // a hand-off re-checks the slot under the lock before sending anything.
            let fd = unsafe { BorrowedFd::borrow_raw((v & 0xffff_ffff) as RawFd) };
            PollFd::new(fd, PollFlags::POLLIN)
        })
        .collect();
    let tick = PollTimeout::from(u16::try_from(WATCH_TICK.as_millis()).unwrap_or(10));
    match poll(&mut fds, tick) {
        Ok(0) => Some(Vec::new()),
        Ok(_) => {
            let ready: Vec<usize> = fds
                .iter()
                .zip(candidates)
                .filter(|(f, _)| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .map(|(_, (i, _))| *i)
                .collect();
            (!ready.is_empty()).then_some(ready)
        }
        Err(_) => None,
    }
}

/// Whether a readable connection holds request bytes (not just the client's close).
fn has_request_bytes(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Ok(n) if n > 0
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A connected pair of stream sockets: (ours, the client's).
    fn connection() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_connection_travels_with_its_listener_freshness_and_bytes() {
        let channel = Channel::new().unwrap();
        assert!(!channel.has_waiting());
        assert_eq!(channel.receive().err(), Some(Errno::EAGAIN));
        let (ours, client) = connection();
        channel
            .send(ours.as_raw_fd(), 3, false, b"GET / HTTP/1.1\r\nHo")
            .unwrap();
        channel.send(ours.as_raw_fd(), 0, true, b"").unwrap();
        drop(ours);
        assert!(channel.has_waiting());
        channel.check_room().unwrap();
        let first = channel.receive().unwrap();
        assert_eq!(
            (first.listener, first.fresh, first.buffered.as_slice()),
            (3, false, b"GET / HTTP/1.1\r\nHo".as_slice())
        );
        let second = channel.receive().unwrap();
        assert_eq!((second.listener, second.fresh), (0, true));
        assert!(second.buffered.is_empty());
        assert!(!channel.has_waiting());
        // The descriptor that arrived is the same connection.
        nix::unistd::write(&first.socket, b"HTTP/1.1 200 OK").unwrap();
        let mut got = [0u8; 15];
        assert_eq!(
            recv(client.as_raw_fd(), &mut got, MsgFlags::empty()),
            Ok(15)
        );
        assert_eq!(&got, b"HTTP/1.1 200 OK");
    }

    #[test]
    fn more_bytes_than_a_datagram_carries_stay_where_they_are() {
        let channel = Channel::new().unwrap();
        let (ours, _client) = connection();
        let too_many = vec![b'x'; MAX_CARRIED_BYTES + 1];
        assert_eq!(
            channel.send(ours.as_raw_fd(), 0, false, &too_many),
            Err(Errno::EMSGSIZE)
        );
        assert!(!channel.has_waiting());
        let most = vec![b'x'; MAX_CARRIED_BYTES];
        channel.send(ours.as_raw_fd(), 0, false, &most).unwrap();
        assert_eq!(channel.receive().unwrap().buffered.len(), MAX_CARRIED_BYTES);
    }

    #[test]
    fn only_request_bytes_make_an_idle_connection_worth_handing_off() {
        let (ours, client) = connection();
        assert!(!has_request_bytes(ours.as_raw_fd()), "nothing yet");
        nix::unistd::write(&client, b"G").unwrap();
        assert!(has_request_bytes(ours.as_raw_fd()));
        assert!(has_request_bytes(ours.as_raw_fd()), "peeked, not taken");
        let (quiet, gone) = connection();
        drop(gone);
        assert!(!has_request_bytes(quiet.as_raw_fd()), "the client closed");
    }
}
