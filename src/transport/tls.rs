//! A TLS session over the connection's socket: its records sent as far as the socket takes
//! them, or with waits; the session taken by one thread at a time.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

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
    fd: BorrowedFd<'_>,
    tls: &mut rustls::ServerConnection,
    timeout: Duration,
) -> Result<(), IoError> {
    loop {
        send_tls(fd, tls)?;
        if !tls.wants_write() {
            return Ok(());
        }
        wait_ready(fd.as_raw_fd(), true, Instant::now() + timeout)?;
    }
}

/// Reads decrypted bytes into `buf` without waiting for the client (`WouldBlock` when none
/// came; `Ok(0)` at the end of the stream); handshake replies are sent on the way.
pub fn read_plaintext(
    fd: BorrowedFd<'_>,
    tls: &mut rustls::ServerConnection,
    buf: &mut [u8],
    timeout: Duration,
) -> std::io::Result<usize> {
    loop {
        match std::io::Read::read(&mut tls.reader(), buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            // The peer closed without close_notify: treat as end of stream.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if tls.read_tls(&mut FdIo(fd))? == 0 {
            return Ok(0);
        }
        let processed = tls.process_new_packets();
        // Handshake messages (or an alert) go out before we look for data.
        flush_tls(fd, tls, timeout).map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Err(e) = processed {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
    }
}

/// Encrypts every byte of `slices` and sends the records, waiting (GIL released) while the
/// session's buffer is full.
pub fn write_plaintext(
    fd: BorrowedFd<'_>,
    tls: &mut rustls::ServerConnection,
    slices: &[IoSlice<'_>],
    timeout: Duration,
) -> Result<(), IoError> {
    for slice in slices {
        let mut rest: &[u8] = slice;
        while !rest.is_empty() {
            let n = std::io::Write::write(&mut tls.writer(), rest).map_err(IoError::Closed)?;
            rest = &rest[n..];
            if n == 0 {
                // The session's buffer is full: the client must take some first.
                flush_tls(fd, tls, timeout)?;
            } else {
                send_tls(fd, tls)?;
            }
        }
    }
    Ok(())
}
