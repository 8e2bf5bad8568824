//! Waiting for the client: until a socket is readable or writable, up to a deadline, with
//! the GIL released, and woken by signals through Python's wakeup fd (so TERM, QUIT or a
//! timeout's ABRT are handled while a client is slow); and [`IoError`], why an operation
//! that may wait did not complete.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pyo3::{PyResult, Python};

/// Read end of the worker's signal wakeup pipe (-1 outside a worker).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The thread that set the wakeup pipe (the worker's main thread, where Python runs signal
/// handlers).
static WAKE_THREAD: AtomicI32 = AtomicI32::new(-1);

/// Records the wakeup pipe's read end for the waits of this thread (the worker's main one).
pub fn set_wake_fd(fd: RawFd) {
    WAKE_FD.store(fd, Ordering::Relaxed);
    WAKE_THREAD.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
}

/// The wakeup pipe's read end, in the worker's main thread. Threads the app started wait
/// without it: draining it there would hide a signal from the main thread, and Python runs
/// signal handlers on the main thread only.
pub fn wake_fd() -> Option<RawFd> {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    (fd >= 0 && WAKE_THREAD.load(Ordering::Relaxed) == nix::unistd::gettid().as_raw()).then_some(fd)
}

/// Empties the wakeup pipe (its bytes only say "a signal came").
pub fn drain_wake_fd() {
    if let Some(fd) = wake_fd() {
        let mut sink = [0u8; 64];
        // SAFETY: the wakeup pipe stays open for the worker's whole life.
        let pipe = unsafe { BorrowedFd::borrow_raw(fd) };
        while nix::unistd::read(pipe, &mut sink).is_ok_and(|n| n > 0) {}
    }
}

/// Why a blocking operation did not complete.
#[derive(Debug)]
pub enum IoError {
    /// The peer went away, the socket failed, or the connection is already closed.
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

pub fn closed(e: impl Into<std::io::Error>) -> IoError {
    IoError::Closed(e.into())
}

/// Runs pending Python signal handlers; an exception they raise ends the wait.
fn run_signal_handlers(py: Python<'_>) -> PyResult<()> {
    drain_wake_fd();
    py.check_signals()
}

/// Waits until `fd` is readable (or writable), up to `deadline`, GIL released.
///
/// It attaches to the interpreter itself (to run signal handlers): cheap for a thread
/// that holds the GIL; the threaded worker's loop, which does not, takes it only here,
/// when a client makes it wait.
pub fn wait_ready(fd: RawFd, writable: bool, deadline: Instant) -> Result<(), IoError> {
    Python::attach(|py| wait_ready_attached(py, fd, writable, deadline))
}

fn wait_ready_attached(
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
            // SAFETY: `fd` is the connection's socket, open for this whole call (only the
            // owning thread closes it, and it is here); the wakeup pipe is never closed.
            let mut fds = vec![PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, flags)];
            if let Some(w) = wake {
                // SAFETY: as above.
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(w) },
                    PollFlags::POLLIN,
                ));
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
