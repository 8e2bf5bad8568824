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
/// Emptied segment buffers of this size range are kept for the next response's growing
/// segment; smaller ones go back to the allocator (cheap for it), larger ones too.
const SPARE_BYTES: std::ops::RangeInclusive<usize> = 16 * 1024..=128 * 1024;

thread_local! {
    /// An emptied segment buffer for the next segment that outgrows its own: a streamed
    /// response is queued piece by piece, and growing a buffer from a piece's size costs
    /// a chain of reallocations (copies, more or fewer with the heap's layout). One per
    /// thread, not per connection, so idle connections hold nothing.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Makes room for `more` bytes in `data`: in the thread's spare buffer if it is large
/// enough (one copy of what `data` holds), else by growing it.
fn grow(data: &mut Vec<u8>, more: usize) {
    let needed = data.len() + more;
    let mut spare = SPARE.with(std::cell::Cell::take);
    if spare.capacity() >= needed {
        spare.extend_from_slice(data);
        *data = spare;
    } else {
        SPARE.with(|s| s.set(spare));
        data.reserve(more);
    }
}

/// Keeps a sent segment's buffer as the thread's spare, if it is one worth keeping.
fn keep_spare(mut data: Vec<u8>) {
    if !SPARE_BYTES.contains(&data.capacity()) {
        return;
    }
    data.clear();
    SPARE.with(|spare| {
        let current = spare.take();
        spare.set(if current.capacity() >= data.capacity() {
            current
        } else {
            data
        });
    });
}

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

/// Response bytes waiting for slow clients in this process's outboxes.
pub fn queued_bytes() -> usize {
    QUEUED_BYTES.load(Ordering::Relaxed)
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
                if data.capacity() - data.len() < len {
                    grow(data, len);
                }
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
                    keep_spare(data);
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

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Write};
    use std::os::fd::AsFd;
    use std::sync::atomic::AtomicU64;

    use super::super::testing::{fill, pair, past_fill, received};
    use super::{Outbox, Segment, OUTBOX_BYTES};

    fn segments(out: &Outbox) -> Vec<(Vec<u8>, usize)> {
        out.segments
            .iter()
            .map(|s| match s {
                Segment::Bytes { data, sent } => (data.clone(), *sent),
                Segment::File { left, .. } => (format!("file:{left}").into_bytes(), 0),
            })
            .collect()
    }

    #[test]
    fn bytes_join_a_segment_nothing_was_sent_of_else_start_one() {
        let mut out = Outbox::default();
        out.append_bytes(&[IoSlice::new(b"ab"), IoSlice::new(b"c")]);
        out.append_bytes(&[IoSlice::new(b"de")]);
        assert_eq!(segments(&out), [(b"abcde".to_vec(), 0)], "one write later");
        if let Some(Segment::Bytes { sent, .. }) = out.segments.back_mut() {
            *sent = 1;
        }
        out.append_bytes(&[IoSlice::new(b"f")]);
        out.push_bytes(&[IoSlice::new(b"g")]);
        assert_eq!(
            segments(&out),
            [
                (b"abcde".to_vec(), 1),
                (b"f".to_vec(), 0),
                (b"g".to_vec(), 0)
            ],
            "a segment under way is not moved; push always starts one"
        );
        assert_eq!(out.bytes, 7);
        out.clear();
        assert_eq!((out.bytes, out.segments.len()), (0, 0));
    }

    #[test]
    fn a_sent_segment_lends_its_buffer_to_the_next_growing_one() {
        let (io, client) = pair();
        let mut out = Outbox::default();
        out.push_bytes(&[IoSlice::new(&[7; 40_000])]);
        let flushed = AtomicU64::new(0);
        assert!(out.flush(|| io.socket(), &flushed).expect("sent"));
        assert_eq!(received(&client).len(), 40_000);
        // A small segment starts small; once it outgrows itself, it moves to the spare.
        out.push_bytes(&[IoSlice::new(b"ab")]);
        out.append_bytes(&[IoSlice::new(&[1; 100])]);
        match out.segments.front() {
            Some(Segment::Bytes { data, .. }) => {
                assert_eq!(&data[..3], b"ab\x01");
                assert_eq!(data.len(), 102);
                assert!(data.capacity() >= 40_000, "reused: {}", data.capacity());
            }
            _ => panic!("a byte segment"),
        }
        out.clear();
        // Buffers outside the range are let go.
        super::keep_spare(Vec::with_capacity(*super::SPARE_BYTES.end() + 1));
        super::keep_spare(Vec::with_capacity(100));
        let mut small = Vec::with_capacity(4);
        super::grow(&mut small, 10);
        assert!(
            small.capacity() < 40_000,
            "the spare went to the segment above"
        );
    }

    #[test]
    fn a_connection_holds_up_to_outbox_bytes() {
        let mut out = Outbox::default();
        assert!(out.has_room(OUTBOX_BYTES));
        assert!(!out.has_room(OUTBOX_BYTES + 1));
        out.push_bytes(&[IoSlice::new(&[0; 1000])]);
        assert!(out.has_room(OUTBOX_BYTES - 1000));
        assert!(!out.has_room(OUTBOX_BYTES - 999));
        out.clear();
    }

    #[test]
    fn queueing_stops_at_its_limit_or_the_outbox_bound() {
        let mut out = Outbox::default();
        assert!(out.queue(&[IoSlice::new(b"1234")], 8));
        assert!(out.queue(&[IoSlice::new(b"5678")], 8), "at the limit");
        assert!(!out.queue(&[IoSlice::new(b"9")], 8), "past it");
        assert_eq!(segments(&out), [(b"12345678".to_vec(), 0)]);
        let huge = vec![0; OUTBOX_BYTES];
        assert!(!out.queue(&[IoSlice::new(&huge)], usize::MAX), "the bound");
        out.clear();
    }

    #[test]
    fn a_flush_sends_in_order_and_keeps_what_a_full_socket_refuses() {
        let (io, client) = pair();
        let filled = fill(&io);
        let mut out = Outbox::default();
        out.push_bytes(&[IoSlice::new(b"one ")]);
        out.push_bytes(&[IoSlice::new(b"two")]);
        let flushed = AtomicU64::new(0);
        let socket = || io.socket();
        assert!(
            !out.flush(socket, &flushed).expect("no error"),
            "socket full"
        );
        assert_eq!(out.bytes, 7, "nothing lost");

        let mut got = received(&client);
        assert!(out.flush(socket, &flushed).expect("no error"), "all out");
        assert_eq!((out.bytes, out.segments.len()), (0, 0));
        assert_eq!(flushed.load(std::sync::atomic::Ordering::Relaxed), 7);
        got.extend(received(&client));
        assert_eq!(got.len(), filled + 7);
        assert_eq!(past_fill(&got), b"one two");
    }

    #[test]
    fn a_file_segment_goes_out_with_sendfile_after_the_bytes_before_it() {
        let (io, client) = pair();
        let path = std::env::temp_dir().join(format!("rgunicorn-outbox-{}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(b"0123456789"))
            .expect("a temporary file");
        let file = std::fs::File::open(&path).expect("opened");
        let _ = std::fs::remove_file(&path);
        let mut out = Outbox::default();
        out.push_bytes(&[IoSlice::new(b"head:")]);
        out.segments.push_back(Segment::File {
            file: file.as_fd().try_clone_to_owned().expect("a duplicate"),
            offset: 2,
            left: 5,
        });
        out.push_bytes(&[IoSlice::new(b":tail")]);
        let flushed = AtomicU64::new(0);
        assert!(out.flush(|| io.socket(), &flushed).expect("no error"));
        assert_eq!(received(&client), b"head:23456:tail");
        assert_eq!(out.bytes, 0, "file bytes are not counted as held");
    }

    #[test]
    fn a_flush_on_a_closed_connection_fails() {
        let (io, _client) = pair();
        let mut out = Outbox::default();
        out.push_bytes(&[IoSlice::new(b"x")]);
        io.close();
        let flushed = AtomicU64::new(0);
        assert!(out.flush(|| io.socket(), &flushed).is_err());
        out.clear();
    }
}
