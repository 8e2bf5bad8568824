//! The outbox: response bytes (and the rest of a `sendfile` body) the client has not taken
//! yet, in order, bounded per connection ([`OUTBOX_BYTES`]) and per process.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use nix::errno::Errno;

use super::sys::{send_now, sendfile_now};
use super::wait::{closed, IoError};

/// Response bytes one connection may hold for a client that is not reading (at least a
/// whole ordinary response); beyond it the worker waits for the client.
pub const OUTBOX_BYTES: usize = 1024 * 1024;
/// Response bytes all connections of a process may hold together (files not counted: they
/// stay in the page cache, not in our memory).
const QUEUED_BYTES_LIMIT: usize = 32 * 1024 * 1024;

/// Bytes held in every outbox of this process.
static QUEUED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// What waits in an outbox, in order.
pub enum Segment {
    Bytes {
        data: Vec<u8>,
        sent: usize,
    },
    /// The rest of a `sendfile` body: a duplicate of the app's file descriptor (the app's
    /// file object is closed when the request ends).
    File {
        file: OwnedFd,
        offset: i64,
        left: u64,
    },
}

/// One connection's waiting output.
#[derive(Default)]
pub struct Outbox {
    pub segments: VecDeque<Segment>,
    /// Bytes held in `Bytes` segments.
    pub bytes: usize,
}

impl Outbox {
    pub fn push_bytes(&mut self, slices: &[IoSlice<'_>]) {
        let len: usize = slices.iter().map(|s| s.len()).sum();
        let mut data = Vec::with_capacity(len);
        for s in slices {
            data.extend_from_slice(s);
        }
        self.bytes += len;
        QUEUED_BYTES.fetch_add(len, Ordering::Relaxed);
        self.segments.push_back(Segment::Bytes { data, sent: 0 });
    }

    /// Appends to the last byte segment when nothing of it was sent yet (one `write` later
    /// sends the lot), else adds a segment.
    pub fn append_bytes(&mut self, slices: &[IoSlice<'_>]) {
        match self.segments.back_mut() {
            Some(Segment::Bytes { data, sent: 0 }) => {
                let len: usize = slices.iter().map(|s| s.len()).sum();
                data.reserve(len);
                for s in slices {
                    data.extend_from_slice(s);
                }
                self.bytes += len;
                QUEUED_BYTES.fetch_add(len, Ordering::Relaxed);
            }
            _ => self.push_bytes(slices),
        }
    }

    /// Whether `len` more bytes may wait here (and in the process as a whole).
    pub fn has_room(&self, len: usize) -> bool {
        self.bytes + len <= OUTBOX_BYTES
            && QUEUED_BYTES.load(Ordering::Relaxed) + len <= QUEUED_BYTES_LIMIT
    }

    /// Puts `slices` at the end, without a system call, while the outbox holds at most
    /// `limit` bytes with them (and has room): false (nothing queued) otherwise.
    pub fn queue(&mut self, slices: &[IoSlice<'_>], limit: usize) -> bool {
        let len: usize = slices.iter().map(|s| s.len()).sum();
        if self.bytes + len > limit || !self.has_room(len) {
            return false;
        }
        self.append_bytes(slices);
        true
    }

    /// Sends what waits, in order, as far as the socket takes it: true once all is out,
    /// false when the socket is full. `socket` is asked before each system call (it fails
    /// once the connection is closed); `flushed` counts the bytes sent.
    ///
    /// # Errors
    /// The connection failed or is closed; nothing more can be sent.
    pub fn flush<'fd>(
        &mut self,
        socket: impl Fn() -> Result<BorrowedFd<'fd>, IoError>,
        flushed: &AtomicU64,
    ) -> Result<bool, IoError> {
        while let Some(front) = self.segments.front_mut() {
            let fd = socket()?;
            let done = match front {
                Segment::Bytes { data, sent } => match send_now(fd, &data[*sent..]) {
                    Ok(n) => {
                        flushed.fetch_add(n as u64, Ordering::Relaxed);
                        *sent += n;
                        *sent == data.len()
                    }
                    Err(Errno::EAGAIN) => return Ok(false),
                    Err(Errno::EINTR) => false,
                    Err(e) => return Err(closed(e)),
                },
                Segment::File { file, offset, left } => {
                    let chunk = usize::try_from((*left).min(1 << 30)).unwrap_or(1 << 30);
                    match sendfile_now(fd, file.as_fd(), offset, chunk) {
                        Ok(0) => return Err(closed(std::io::ErrorKind::UnexpectedEof)),
                        Ok(n) => {
                            flushed.fetch_add(n as u64, Ordering::Relaxed);
                            *left -= n as u64;
                            *left == 0
                        }
                        Err(Errno::EAGAIN) => return Ok(false),
                        Err(Errno::EINTR) => false,
                        Err(e) => return Err(closed(e)),
                    }
                }
            };
            if done {
                if let Some(Segment::Bytes { data, .. }) = self.segments.pop_front() {
                    self.bytes -= data.len();
                    QUEUED_BYTES.fetch_sub(data.len(), Ordering::Relaxed);
                }
            }
        }
        Ok(true)
    }

    pub fn clear(&mut self) {
        QUEUED_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
        self.segments.clear();
    }
}
