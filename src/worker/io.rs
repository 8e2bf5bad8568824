//! Socket I/O for the one request in hand: non-blocking sockets, waited on with a deadline
//! and with the GIL released, and woken by signals (Python's wakeup fd) so a TERM, QUIT or
//! timeout ABRT is handled even while a client is slow.

use std::io::IoSlice;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pyo3::{PyResult, Python};

/// Read end of the worker's signal wakeup pipe (-1 outside a worker).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// Records the wakeup pipe's read end for every wait in this process.
pub fn set_wake_fd(fd: RawFd) {
    WAKE_FD.store(fd, Ordering::Relaxed);
}

/// The wakeup pipe's read end, if this process is a worker.
pub fn wake_fd() -> Option<RawFd> {
    Some(WAKE_FD.load(Ordering::Relaxed)).filter(|&fd| fd >= 0)
}

/// Empties the wakeup pipe (its bytes only say "a signal came").
pub fn drain_wake_fd() {
    if let Some(fd) = wake_fd() {
        let mut sink = [0u8; 64];
        while nix::unistd::read(borrow(fd), &mut sink).is_ok_and(|n| n > 0) {}
    }
}

/// Why a blocking operation did not complete.
#[derive(Debug)]
pub enum IoError {
    /// The peer went away or the socket failed.
    Closed(std::io::Error),
    /// No progress before the deadline.
    TimedOut,
    /// A signal handler raised (SystemExit from QUIT/INT/ABRT): the worker must leave.
    Signal(pyo3::PyErr),
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoError::Closed(e) => write!(f, "{e}"),
            IoError::TimedOut => write!(f, "timed out"),
            IoError::Signal(e) => write!(f, "{e}"),
        }
    }
}

pub fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: callers pass the fd of a connection that stays open for the whole call; the
    // 'static lifetime never escapes the syscall it is used for.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Runs pending Python signal handlers; an exception they raise ends the wait.
fn run_signal_handlers(py: Python<'_>) -> PyResult<()> {
    drain_wake_fd();
    py.check_signals()
}

/// Waits until `fd` is readable (or writable), up to `deadline`, GIL released.
pub fn wait_ready(
    py: Python<'_>,
    fd: RawFd,
    writable: bool,
    deadline: Instant,
) -> Result<(), IoError> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(IoError::TimedOut);
        }
        let wait_ms = (deadline - now).as_millis().min(1000) as u16;
        let wake = wake_fd();
        let (ready, woke) = py.detach(move || {
            let flags = if writable {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            let mut fds = vec![PollFd::new(borrow(fd), flags)];
            if let Some(w) = wake {
                fds.push(PollFd::new(borrow(w), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(wait_ms)) {
                Ok(_) => {
                    let ready = fds[0].revents().is_some_and(|r| !r.is_empty());
                    let woke = fds
                        .get(1)
                        .and_then(|f| f.revents())
                        .is_some_and(|r| !r.is_empty());
                    (ready, woke)
                }
                Err(_) => (false, true),
            }
        });
        if woke {
            run_signal_handlers(py).map_err(IoError::Signal)?;
        }
        if ready {
            return Ok(());
        }
    }
}

/// Reads once into `buf`'s spare capacity (at most `max` bytes), waiting up to `timeout`
/// for data. Returns 0 at end of stream.
pub fn read_some(
    py: Python<'_>,
    fd: RawFd,
    buf: &mut Vec<u8>,
    max: usize,
    timeout: Duration,
) -> Result<usize, IoError> {
    let deadline = Instant::now() + timeout;
    let start = buf.len();
    buf.resize(start + max, 0);
    let result = loop {
        match nix::unistd::read(borrow(fd), &mut buf[start..]) {
            Ok(n) => break Ok(n),
            Err(Errno::EAGAIN) => {
                if let Err(e) = wait_ready(py, fd, false, deadline) {
                    break Err(e);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => break Err(IoError::Closed(e.into())),
        }
    };
    buf.truncate(start + *result.as_ref().unwrap_or(&0));
    result
}

/// Writes every byte of `slices`, waiting (GIL released) whenever the socket is full; each
/// wait may last `timeout` without progress before the client is given up on.
pub fn write_all(
    py: Python<'_>,
    fd: RawFd,
    slices: &mut [IoSlice<'_>],
    timeout: Duration,
) -> Result<(), IoError> {
    let mut slices = slices;
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match nix::sys::uio::writev(borrow(fd), slices) {
            Ok(0) => return Err(IoError::Closed(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(Errno::EAGAIN) => wait_ready(py, fd, true, Instant::now() + timeout)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(IoError::Closed(e.into())),
        }
    }
    Ok(())
}

/// Sends `count` bytes of `file` from `offset` with `sendfile(2)` (no copy through user space).
pub fn send_file(
    py: Python<'_>,
    fd: RawFd,
    file: RawFd,
    mut offset: i64,
    mut count: u64,
    timeout: Duration,
) -> Result<u64, IoError> {
    let mut sent = 0;
    while count > 0 {
        let chunk = usize::try_from(count.min(1 << 30)).unwrap_or(1 << 30);
        match nix::sys::sendfile::sendfile(borrow(fd), borrow(file), Some(&mut offset), chunk) {
            Ok(0) => break, // the file is shorter than announced
            Ok(n) => {
                sent += n as u64;
                count -= n as u64;
            }
            Err(Errno::EAGAIN) => wait_ready(py, fd, true, Instant::now() + timeout)?,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(IoError::Closed(e.into())),
        }
    }
    Ok(sent)
}

/// A connection's byte stream: the socket itself, or a TLS session over it. Cloning is
/// cheap (an fd number, or a shared handle to the one session).
#[derive(Clone)]
pub enum Transport {
    Plain(RawFd),
    Tls(
        RawFd,
        std::rc::Rc<std::cell::RefCell<rustls::ServerConnection>>,
    ),
}

/// `Read`/`Write` over a raw non-blocking fd, for rustls' `read_tls`/`write_tls`.
struct FdIo(RawFd);

impl std::io::Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        nix::unistd::read(borrow(self.0), buf).map_err(std::io::Error::from)
    }
}

impl std::io::Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        nix::unistd::write(borrow(self.0), buf).map_err(std::io::Error::from)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends whatever ciphertext the session has queued, waiting (GIL released) while the
/// socket is full.
fn flush_tls(
    py: Python<'_>,
    fd: RawFd,
    tls: &mut rustls::ServerConnection,
    timeout: Duration,
) -> Result<(), IoError> {
    while tls.wants_write() {
        match tls.write_tls(&mut FdIo(fd)) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_ready(py, fd, true, Instant::now() + timeout)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IoError::Closed(e)),
        }
    }
    Ok(())
}

impl Transport {
    /// The socket underneath.
    pub fn fd(&self) -> RawFd {
        match self {
            Transport::Plain(fd) | Transport::Tls(fd, _) => *fd,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(..))
    }

    /// Reads what is available without waiting: `Ok(0)` at end of stream, `WouldBlock`
    /// when nothing has arrived. TLS handshake replies are sent on the way.
    pub fn read_nonblocking(
        &self,
        py: Python<'_>,
        buf: &mut [u8],
        timeout: Duration,
    ) -> std::io::Result<usize> {
        match self {
            Transport::Plain(fd) => {
                nix::unistd::read(borrow(*fd), buf).map_err(std::io::Error::from)
            }
            Transport::Tls(fd, tls) => {
                let mut tls = tls.borrow_mut();
                loop {
                    match std::io::Read::read(&mut tls.reader(), buf) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The peer closed without close_notify: treat as end of stream.
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                        Err(e) => return Err(e),
                    }
                    match tls.read_tls(&mut FdIo(*fd)) {
                        Ok(0) => return Ok(0),
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                    let processed = tls.process_new_packets();
                    // Handshake messages (or an alert) go out before we look for data.
                    flush_tls(py, *fd, &mut tls, timeout)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    if let Err(e) = processed {
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                    }
                }
            }
        }
    }

    /// Reads once into `buf`'s spare capacity (at most `max` bytes), waiting up to
    /// `timeout` for data; 0 at end of stream.
    pub fn read_some(
        &self,
        py: Python<'_>,
        buf: &mut Vec<u8>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError> {
        if let Transport::Plain(fd) = self {
            return read_some(py, *fd, buf, max, timeout);
        }
        let deadline = Instant::now() + timeout;
        let start = buf.len();
        buf.resize(start + max, 0);
        let result = loop {
            match self.read_nonblocking(py, &mut buf[start..], timeout) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = wait_ready(py, self.fd(), false, deadline) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(IoError::Closed(e)),
            }
        };
        buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Writes every byte of `slices` (encrypted under TLS), waiting while the socket is full.
    pub fn write_all(
        &self,
        py: Python<'_>,
        slices: &mut [IoSlice<'_>],
        timeout: Duration,
    ) -> Result<(), IoError> {
        match self {
            Transport::Plain(fd) => write_all(py, *fd, slices, timeout),
            Transport::Tls(fd, tls) => {
                let mut tls = tls.borrow_mut();
                for slice in slices.iter() {
                    let mut rest: &[u8] = slice;
                    while !rest.is_empty() {
                        let n = std::io::Write::write(&mut tls.writer(), rest)
                            .map_err(IoError::Closed)?;
                        rest = &rest[n..];
                        // rustls buffers a bounded amount: send it before taking more.
                        flush_tls(py, *fd, &mut tls, timeout)?;
                    }
                }
                flush_tls(py, *fd, &mut tls, timeout)
            }
        }
    }

    /// Ends a TLS session politely (close_notify); nothing to do for plain sockets.
    pub fn close_notify(&self, py: Python<'_>) {
        if let Transport::Tls(fd, tls) = self {
            let mut tls = tls.borrow_mut();
            tls.send_close_notify();
            let _ = flush_tls(py, *fd, &mut tls, Duration::from_millis(200));
        }
    }
}
