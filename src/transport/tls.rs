//! A TLS session over the connection's socket: its records sent as far as the socket takes
//! them, or with waits; the session taken by one thread at a time.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use pyo3::Python;

use super::sys::FdIo;
use super::wait::{wait_ready, IoError};

/// Takes the TLS session, or says another thread is using this connection.
pub fn lock_session(
    m: &Mutex<rustls::ServerConnection>,
) -> Result<MutexGuard<'_, rustls::ServerConnection>, std::io::Error> {
    match m.try_lock() {
        Ok(guard) => Ok(guard),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            "the connection is in use by another thread",
        )),
    }
}

/// Sends the session's queued records until the socket is full; returns the bytes sent.
pub fn send_tls(fd: BorrowedFd<'_>, tls: &mut rustls::ServerConnection) -> Result<usize, IoError> {
    let mut sent = 0;
    while tls.wants_write() {
        match tls.write_tls(&mut FdIo(fd)) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IoError::Closed(e)),
        }
    }
    Ok(sent)
}

/// Sends every queued record, waiting (GIL released) while the socket is full.
pub fn flush_tls(
    py: Python<'_>,
    fd: BorrowedFd<'_>,
    tls: &mut rustls::ServerConnection,
    timeout: Duration,
) -> Result<(), IoError> {
    loop {
        send_tls(fd, tls)?;
        if !tls.wants_write() {
            return Ok(());
        }
        wait_ready(py, fd.as_raw_fd(), true, Instant::now() + timeout)?;
    }
}
