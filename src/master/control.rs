//! Gunicorn 27's control socket (`gunicornc`), served by the master from its own loop: no
//! thread, no Python, nothing on a worker's path. It answers while every worker is busy,
//! booting or wedged.
//!
//! A unix stream socket at `--control-socket`, mode `--control-socket-mode`. Each message
//! is a 4-byte big-endian length and that many bytes of JSON; a connection may carry many.
//! What is not a message (a length over 16 MiB, bytes that are not JSON, a JSON request
//! that is not an object) closes the connection without a reply, as Gunicorn does. The
//! sockets are a [`Service`]'s: non-blocking, with an idle deadline per client.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};

use super::commands::{answer, Arbiter};
use super::json::Json;
use super::service::{Limits, Service, Step};

/// Gunicorn's limit on one message.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The listen backlog (Gunicorn's asyncio server: 100).
const BACKLOG: i32 = 100;
const LIMITS: Limits = Limits {
    // Clients served at once (the socket's mode already limits who can connect at all).
    clients: 128,
    // How long a client may take to send its next whole request (Gunicorn: 300 s).
    idle: Duration::from_secs(300),
    name: "Control",
};

/// The listening socket and its clients.
pub struct ControlServer {
    service: Service<UnixListener>,
    path: PathBuf,
    /// The socket file we bound (device, inode): on exit only that file is removed, not
    /// one a newer master (USR2) bound at the same path since.
    file: (u64, u64),
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
            service: Service::new(listener, LIMITS),
            path: path.to_path_buf(),
            file: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the master's poll waits on.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        self.service.poll_fds()
    }

    /// Whether a client has whole requests waiting that this turn did not answer.
    pub fn has_work(&self) -> bool {
        self.service
            .has_work(|inbox| matches!(peek_frame(inbox), Some(true)))
    }

    /// Accepts, reads, answers and writes whatever can be done now without waiting.
    pub fn serve(&mut self, arbiter: &mut dyn Arbiter) {
        self.service
            .serve(arbiter, |inbox, arbiter| match next_frame(inbox) {
                Frame::Request(bytes) => match Json::parse(&bytes)
                    .ok()
                    .and_then(|request| answer(&request, arbiter))
                {
                    Some(reply) => Step::Reply {
                        bytes: frame(&reply),
                        close: false,
                    },
                    None => Step::Invalid("not a request"),
                },
                Frame::Invalid => Step::Invalid("message too large"),
                Frame::Incomplete => Step::Incomplete,
            });
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

/// What a client's bytes held.
enum Frame {
    /// A whole request: its JSON bytes.
    Request(Vec<u8>),
    Incomplete,
    /// Not a message: close.
    Invalid,
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
