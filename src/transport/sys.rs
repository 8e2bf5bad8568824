//! The system calls a connection's bytes go through, none of which waits.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::MsgFlags;

// The server's own reads and writes never wait, whatever the socket's `O_NONBLOCK` flag
// says: an app may make `gunicorn.socket` blocking (`settimeout(None)`), which changes the
// flag on the open file the event loop shares. So every call says `MSG_DONTWAIT` itself
// (and `MSG_NOSIGNAL`: a gone client is an error, not a SIGPIPE).
const NOW: MsgFlags = MsgFlags::MSG_DONTWAIT.union(MsgFlags::MSG_NOSIGNAL);

/// `recv(2)` that never waits.
pub fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<usize> {
    nix::sys::socket::recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT)
}

/// `send(2)` that never waits.
pub fn send_now(fd: BorrowedFd<'_>, buf: &[u8]) -> nix::Result<usize> {
    nix::sys::socket::send(fd.as_raw_fd(), buf, NOW)
}

/// A gathered `send` (as `writev`) that never waits.
pub fn sendv_now(fd: BorrowedFd<'_>, slices: &[IoSlice<'_>]) -> nix::Result<usize> {
    nix::sys::socket::sendmsg::<()>(fd.as_raw_fd(), slices, &[], NOW, None)
}

/// `sendfile(2)` has no flags: the socket is made non-blocking again first if an app
/// changed it (one `fcntl` per file response, none for anything else).
pub fn sendfile_now(
    fd: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut i64,
    count: usize,
) -> nix::Result<usize> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    nix::sys::sendfile::sendfile(fd, file, Some(offset), count)
}

/// `Read`/`Write` over a raw non-blocking fd, for rustls' `read_tls`/`write_tls`.
pub struct FdIo<'a>(pub BorrowedFd<'a>);

impl std::io::Read for FdIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        recv_now(self.0, buf).map_err(std::io::Error::from)
    }
}

impl std::io::Write for FdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        send_now(self.0, buf).map_err(std::io::Error::from)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For unit tests here and above: a connection without a server, and the interpreter.
#[cfg(test)]
pub(crate) mod testing {
    use std::os::fd::OwnedFd;

    use nix::errno::Errno;
    use nix::sys::socket::{recv, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
    use pyo3::Python;

    use super::super::Transport;

    /// A plain transport over one end of a fresh socket pair (both ends non-blocking), and
    /// the other end: the client.
    pub fn pair() -> (Transport, OwnedFd) {
        let (server, client) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .expect("a socket pair");
        (Transport::plain(server), client)
    }

    /// Fills the socket until it takes nothing more (a client that stopped reading), with
    /// `-` bytes; how many it took.
    pub fn fill(io: &Transport) -> usize {
        let fd = io.socket().expect("an open transport");
        let mut total = 0;
        for size in [64 * 1024, 4096, 1] {
            let chunk = vec![b'-'; size];
            while let Ok(n) = super::send_now(fd, &chunk) {
                total += n;
            }
        }
        total
    }

    /// What has arrived at the client, without waiting.
    pub fn received(client: &OwnedFd) -> Vec<u8> {
        use std::os::fd::AsRawFd;
        let mut all = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match recv(client.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::EAGAIN) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    /// The bytes after the `-` of [`fill`].
    pub fn past_fill(bytes: &[u8]) -> &[u8] {
        let start = bytes.iter().position(|&b| b != b'-').unwrap_or(bytes.len());
        &bytes[start..]
    }

    /// Runs `f` with the interpreter (started once for the test binary, without signal
    /// handlers).
    pub fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
        Python::initialize();
        Python::attach(f)
    }
}
