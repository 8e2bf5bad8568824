//! Gunicorn 27's control socket (`gunicornc`), served by the master from its own loop: no
//! thread, no Python, nothing on a worker's path. It answers while every worker is busy,
//! booting or wedged.
//!
//! A unix stream socket at `--control-socket`, mode `--control-socket-mode`. Each message
//! is a 4-byte big-endian length and that many bytes of JSON; a connection may carry many.
//! What is not a message (a length over 16 MiB, bytes that are not JSON, a JSON request
//! that is not an object) closes the connection without a reply, as Gunicorn does. Every
//! socket is non-blocking: a client that connects and sends nothing, or never reads its
//! replies, costs a slot and its buffers until its idle deadline, never the master's time.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, send, socket, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr,
};
use tracing::debug;

use super::commands::{answer, Arbiter};
use super::json::Json;

/// Gunicorn's limit on one message.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long a client may take to send its next whole request (Gunicorn: 300 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Clients served at once; more are closed at once (the socket's mode already limits who
/// can connect at all).
const MAX_CLIENTS: usize = 128;
/// The listen backlog (Gunicorn's asyncio server: 100).
const BACKLOG: i32 = 100;
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

/// The listening socket and its clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file we bound (device, inode): on exit only that file is removed, not
    /// one a newer master (USR2) bound at the same path since.
    file: (u64, u64),
    clients: Vec<Client>,
    /// Set after `accept` failed for lack of resources: not polled until then.
    accept_paused_until: Option<Instant>,
}

struct Client {
    stream: UnixStream,
    /// Bytes of the request being received.
    inbox: Vec<u8>,
    /// Reply bytes, `sent` of them taken by the client; nothing more is read until all are.
    outbox: Vec<u8>,
    sent: usize,
    deadline: Instant,
}

/// What a client's bytes held.
enum Frame {
    /// A whole request: its JSON bytes.
    Request(Vec<u8>),
    Incomplete,
    /// Not a message: close.
    Invalid,
}

impl ControlServer {
    /// Binds the socket as Gunicorn does: the parent directory made (mode 0700) if missing,
    /// a file already at the path removed, then bound with its mode.
    ///
    /// # Errors
    /// The directory, the bind or the chmod failed.
    pub fn start(path: &Path, mode: u32) -> std::io::Result<ControlServer> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
        }
        if std::fs::symlink_metadata(path).is_ok() {
            std::fs::remove_file(path)?;
        }
        // Bound, given its mode, and only then listening: nobody connects before the mode
        // is in place (a connect to a socket that does not listen yet is refused).
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        listen(&fd, Backlog::new(BACKLOG)?)?;
        let listener = UnixListener::from(fd);
        let meta = std::fs::metadata(path)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            file: (meta.dev(), meta.ino()),
            clients: Vec::new(),
            accept_paused_until: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// Whether a client has whole requests waiting that this turn did not answer (they are
    /// read already: the poll would not say so): the master then does not sleep.
    pub fn has_work(&self) -> bool {
        self.clients
            .iter()
            .any(|c| c.sent == c.outbox.len() && matches!(peek_frame(&c.inbox), Some(true)))
    }

    /// Accepts, reads, answers and writes whatever can be done now without waiting; drops
    /// clients that closed, sent something that is not a message, or outstayed their time.
    pub fn serve(&mut self, arbiter: &mut dyn Arbiter) {
        if self
            .accept_paused_until
            .is_none_or(|until| Instant::now() >= until)
        {
            self.accept_paused_until = None;
            self.accept_all();
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.clients.len() {
            let keep = self.clients[i].serve(arbiter, now);
            if keep {
                i += 1;
            } else {
                self.clients.swap_remove(i);
            }
        }
    }

    fn accept_all(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        debug!("Control client error: too many clients");
                        continue; // dropped: closed
                    }
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.clients.push(Client {
                        stream,
                        inbox: Vec::new(),
                        outbox: Vec::new(),
                        sent: 0,
                        deadline: Instant::now() + IDLE_TIMEOUT,
                    });
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // EMFILE, ENOBUFS…: the connection stays queued; tried again after a pause.
                Err(e) => {
                    debug!("Control client error: accept: {e}");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Closes the socket and its clients, and removes the file if it is still ours.
    pub fn stop(self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// A forked worker's copy: closes the descriptors, leaves the file to the master.
    pub fn close_in_child(self) {
        drop(self);
    }
}

impl Client {
    /// One step for this client; false when it is done with.
    fn serve(&mut self, arbiter: &mut dyn Arbiter, now: Instant) -> bool {
        if !self.flush() {
            return false;
        }
        let mut answered = 0;
        while self.sent == self.outbox.len() && answered < REQUESTS_PER_TURN {
            match next_frame(&mut self.inbox) {
                Frame::Request(bytes) => {
                    let Some(reply) = Json::parse(&bytes)
                        .ok()
                        .and_then(|request| answer(&request, arbiter))
                    else {
                        debug!("Control client error: not a request");
                        return false;
                    };
                    self.outbox = frame(&reply);
                    self.sent = 0;
                    answered += 1;
                    self.deadline = now + IDLE_TIMEOUT;
                    if !self.flush() {
                        return false;
                    }
                }
                Frame::Invalid => {
                    debug!("Control client error: message too large");
                    return false;
                }
                Frame::Incomplete
                    if self.inbox.is_empty() && self.inbox.capacity() > KEPT_INBOX_BYTES =>
                {
                    self.inbox = Vec::new();
                    match self.read() {
                        Some(true) => {}
                        Some(false) => break,
                        None => return false,
                    }
                }
                Frame::Incomplete => match self.read() {
                    Some(true) => {}
                    Some(false) => break,
                    None => return false,
                },
            }
        }
        now < self.deadline
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
            match send(self.stream.as_raw_fd(), &self.outbox[self.sent..], flags) {
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

/// Whether `inbox` starts with a whole message (Some(true)), part of one (Some(false)),
/// or nothing (None).
fn peek_frame(inbox: &[u8]) -> Option<bool> {
    let prefix = inbox.first_chunk::<4>()?;
    let len = u32::from_be_bytes(*prefix) as usize;
    Some(len > MAX_MESSAGE_BYTES || inbox.len() >= 4 + len)
}

/// Takes the first whole message off `inbox`, if it holds one.
fn next_frame(inbox: &mut Vec<u8>) -> Frame {
    let Some(prefix) = inbox.first_chunk::<4>() else {
        return Frame::Incomplete;
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Frame::Invalid;
    }
    if inbox.len() < 4 + len {
        return Frame::Incomplete;
    }
    let message = inbox[4..4 + len].to_vec();
    inbox.drain(..4 + len);
    Frame::Request(message)
}

/// A reply as its frame: the length, then Python-style JSON.
fn frame(reply: &Json) -> Vec<u8> {
    let text = reply.to_python_json();
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_one_at_a_time() {
        let mut inbox = vec![0, 0, 0, 2, b'{', b'}', 0, 0, 0, 3, b'[', b']'];
        assert!(matches!(next_frame(&mut inbox), Frame::Request(m) if m == b"{}"));
        assert!(matches!(next_frame(&mut inbox), Frame::Incomplete));
        inbox.push(b' ');
        assert!(matches!(next_frame(&mut inbox), Frame::Request(m) if m == b"[] "));
        assert!(inbox.is_empty());
        let mut short = vec![0, 0];
        assert!(matches!(next_frame(&mut short), Frame::Incomplete));
    }

    #[test]
    fn a_length_over_16_mib_is_refused_before_its_bytes_come() {
        let mut exactly = (16u32 * 1024 * 1024).to_be_bytes().to_vec();
        assert!(matches!(next_frame(&mut exactly), Frame::Incomplete));
        let mut over = (16u32 * 1024 * 1024 + 1).to_be_bytes().to_vec();
        assert!(matches!(next_frame(&mut over), Frame::Invalid));
    }

    #[test]
    fn a_reply_frame_carries_its_length() {
        let out = frame(&Json::Object(vec![("a".to_string(), Json::Int(1))]));
        assert_eq!(&out[..4], &[0, 0, 0, 8]);
        assert_eq!(&out[4..], b"{\"a\": 1}");
    }
}
