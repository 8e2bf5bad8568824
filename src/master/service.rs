//! A small request/reply service served from the master's loop: the control socket and the
//! metrics exporter. Every socket is non-blocking, so a client that connects and sends
//! nothing, or never reads its replies, costs a slot and its buffers until its idle
//! deadline, never the master's time. What a request is and how it is answered is the
//! caller's (see [`Step`]).

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{send, MsgFlags};
use tracing::debug;

/// Read size per `read(2)`.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Requests one client gets answered per turn of the master's loop, and connections
/// accepted per turn: a busy client waits for the next turn rather than keeping the master
/// from its workers and signals.
const REQUESTS_PER_TURN: usize = 16;
const ACCEPTS_PER_TURN: usize = 64;
/// After `accept` failed for lack of descriptors or memory, how long the listener is left
/// out of the poll (it would stay readable and spin the loop).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);
/// An emptied inbox larger than this gives its memory back.
const KEPT_INBOX_BYTES: usize = 64 * 1024;

/// What the bytes a client sent so far hold.
pub enum Step {
    /// A whole request, answered: send these bytes, then close if `close` is set.
    Reply { bytes: Vec<u8>, close: bool },
    /// Not a whole request yet.
    Incomplete,
    /// Not a request at all: close without a reply.
    Invalid(&'static str),
}

/// A listening socket the service accepts from.
pub trait Listen: AsFd {
    type Stream: Read + AsFd;
    /// Accepts one connection, made non-blocking: Ok(None) if that failed (it is closed).
    fn accept_nonblocking(&self) -> std::io::Result<Option<Self::Stream>>;
}

impl Listen for UnixListener {
    type Stream = UnixStream;
    fn accept_nonblocking(&self) -> std::io::Result<Option<UnixStream>> {
        let (stream, _) = self.accept()?;
        Ok(stream.set_nonblocking(true).is_ok().then_some(stream))
    }
}

impl Listen for TcpListener {
    type Stream = TcpStream;
    fn accept_nonblocking(&self) -> std::io::Result<Option<TcpStream>> {
        let (stream, _) = self.accept()?;
        Ok(stream.set_nonblocking(true).is_ok().then_some(stream))
    }
}

/// Limits of one service.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Clients served at once; more are closed at once.
    pub clients: usize,
    /// How long a client may take to send its next whole request.
    pub idle: Duration,
    /// Used in debug lines: "Control client error: …".
    pub name: &'static str,
}

/// The listening socket and its clients.
pub struct Service<L: Listen> {
    pub listener: L,
    limits: Limits,
    clients: Vec<Client<L::Stream>>,
    /// Set after `accept` failed for lack of resources: not polled until then.
    accept_paused_until: Option<Instant>,
}

struct Client<S> {
    stream: S,
    /// Bytes of the request being received.
    inbox: Vec<u8>,
    /// Reply bytes, `sent` of them taken by the client; nothing more is read until all are.
    outbox: Vec<u8>,
    sent: usize,
    /// Closed once the outbox is sent.
    closing: bool,
    deadline: Instant,
}

impl<L: Listen> Service<L> {
    pub fn new(listener: L, limits: Limits) -> Service<L> {
        Service {
            listener,
            limits,
            clients: Vec::new(),
            accept_paused_until: None,
        }
    }

    /// What the master's poll waits on: the listener, then each client (readable, or
    /// writable while a reply waits).
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        let listening = self
            .accept_paused_until
            .is_none_or(|until| Instant::now() >= until);
        listening
            .then(|| (self.listener.as_fd(), false))
            .into_iter()
            .chain(
                self.clients
                    .iter()
                    .map(|c| (c.stream.as_fd(), c.sent < c.outbox.len())),
            )
            .collect()
    }

    /// Whether a client has a whole request waiting that this turn did not answer (it is
    /// read already: the poll would not say so): the master then does not sleep.
    pub fn has_work(&self, whole: impl Fn(&[u8]) -> bool) -> bool {
        self.clients
            .iter()
            .any(|c| !c.closing && c.sent == c.outbox.len() && whole(&c.inbox))
    }

    /// Accepts, reads, answers (`answer` takes a request off the inbox) and writes
    /// whatever can be done now without waiting; drops clients that closed, sent something
    /// that is not a request, or outstayed their time.
    pub fn serve<C: ?Sized>(
        &mut self,
        context: &mut C,
        mut answer: impl FnMut(&mut Vec<u8>, &mut C) -> Step,
    ) {
        if self
            .accept_paused_until
            .is_none_or(|until| Instant::now() >= until)
        {
            self.accept_paused_until = None;
            self.accept_all();
        }
        let now = Instant::now();
        let limits = self.limits;
        self.clients
            .retain_mut(|client| client.serve(context, &mut answer, now, limits));
    }

    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept_nonblocking() {
                Ok(None) => {}
                Ok(Some(stream)) => {
                    if self.clients.len() >= self.limits.clients && !self.evict_idlest() {
                        debug!("{} client error: too many clients", self.limits.name);
                        continue; // dropped: closed
                    }
                    self.clients.push(Client {
                        stream,
                        inbox: Vec::new(),
                        outbox: Vec::new(),
                        sent: 0,
                        closing: false,
                        deadline: Instant::now() + self.limits.idle,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EMFILE, ENOBUFS…: the connection stays queued; tried again after a pause.
                Err(e) => {
                    debug!("{} client error: accept: {e}", self.limits.name);
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }
}

impl<L: Listen> Service<L> {
    /// Full: the client waiting longest for its next request (nothing of a reply pending)
    /// makes room, so clients that connect and stay silent cannot lock others out for
    /// their whole idle time. False if every client has a reply on its way.
    fn evict_idlest(&mut self) -> bool {
        let idlest = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.outbox.is_empty())
            .min_by_key(|(_, c)| c.deadline)
            .map(|(i, _)| i);
        match idlest {
            Some(i) => {
                debug!(
                    "{} client error: too many clients; closing the idlest",
                    self.limits.name
                );
                self.clients.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

impl<S: Read + AsFd> Client<S> {
    /// One step for this client; false when it is done with.
    fn serve<C: ?Sized>(
        &mut self,
        context: &mut C,
        answer: &mut impl FnMut(&mut Vec<u8>, &mut C) -> Step,
        now: Instant,
        limits: Limits,
    ) -> bool {
        if !self.flush() {
            return false;
        }
        let mut answered = 0;
        while !self.closing && self.sent == self.outbox.len() && answered < REQUESTS_PER_TURN {
            match answer(&mut self.inbox, context) {
                Step::Reply { bytes, close } => {
                    self.outbox = bytes;
                    self.sent = 0;
                    self.closing = close;
                    answered += 1;
                    self.deadline = now + limits.idle;
                    if !self.flush() {
                        return false;
                    }
                }
                Step::Invalid(why) => {
                    debug!("{} client error: {why}", limits.name);
                    return false;
                }
                Step::Incomplete => {
                    if self.inbox.is_empty() && self.inbox.capacity() > KEPT_INBOX_BYTES {
                        self.inbox = Vec::new();
                    }
                    match self.read() {
                        Some(true) => {}
                        Some(false) => break,
                        None => return false,
                    }
                }
            }
        }
        // A closing client is dropped once its reply is out.
        !(self.closing && self.outbox.is_empty()) && now < self.deadline
    }

    /// Reads what has arrived: Some(true) if bytes came, Some(false) if none wait now,
    /// None at end of stream or on an error.
    fn read(&mut self) -> Option<bool> {
        let start = self.inbox.len();
        self.inbox.resize(start + READ_CHUNK_BYTES, 0);
        let result = self.stream.read(&mut self.inbox[start..]);
        let got = match result {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => Some(0),
            Err(_) => None,
        };
        self.inbox.truncate(start + got.unwrap_or(0));
        got.map(|n| n > 0)
    }

    /// Writes what the socket takes of the waiting reply; false if the client is gone.
    fn flush(&mut self) -> bool {
        while self.sent < self.outbox.len() {
            // MSG_NOSIGNAL: a client gone before its reply must not raise SIGPIPE in the
            // master, whatever an app or configuration did to that signal's disposition.
            let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
            match send(
                self.stream.as_fd().as_raw_fd(),
                &self.outbox[self.sent..],
                flags,
            ) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
        if !self.outbox.is_empty() {
            self.outbox = Vec::new();
            self.sent = 0;
        }
        true
    }
}
