//! `wsgi.input`: the request body, streamed from the connection as the app reads it.
//!
//! The object owns the connection's read buffer for the duration of the request (bytes past
//! the head that already arrived) and pulls more from the socket only when the app asks, so
//! memory stays bounded by what the app requests, and bytes past the body's end (a pipelined
//! next request) are never consumed. After the app returns, the worker takes the buffer back.

use std::time::Duration;

use pyo3::exceptions::PyIOError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::body::BodyDecoder;
use crate::http::error::ParseError;
use crate::transport::{IoError, Transport};

/// How much is read from the socket per system call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What the worker hands over to, and gets back from, [`WsgiInput`].
pub struct BodySource {
    pub io: Transport,
    /// Received bytes not consumed yet: body bytes first, then possibly a pipelined request.
    pub buf: Vec<u8>,
    /// Bytes at the front of `buf` already consumed (the request's head, at first): dropped
    /// together with the first body bytes consumed, so the body is not moved for them.
    pub start: usize,
    pub decoder: BodyDecoder,
    /// How long one wait for client bytes may last.
    pub timeout: Duration,
}

impl BodySource {
    /// The received bytes not consumed yet.
    fn unread(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    /// Drops `n` consumed bytes (and those before them).
    fn consume(&mut self, n: usize) {
        let end = (self.start + n).min(self.buf.len());
        self.buf.drain(..end);
        self.start = 0;
    }

    /// The buffer, without what was consumed: for the connection's next request.
    pub fn into_buf(mut self) -> Vec<u8> {
        self.consume(0);
        self.buf
    }
}

/// The body reader the app sees as `environ['wsgi.input']`.
#[pyclass(module = "_rgunicorn", name = "Body")]
pub struct WsgiInput {
    source: Option<BodySource>,
    /// Decoded body bytes not handed to the app yet.
    pending: Vec<u8>,
    /// A framing error found while reading (a malformed chunk, the connection ending inside
    /// the body): the request gets a 400.
    pub(crate) error: Option<ParseError>,
    /// The client went away or stalled mid-body.
    pub(crate) broken: bool,
    /// A signal handler raised while we waited (SystemExit from QUIT or a timeout's
    /// ABRT): raised to the app, and kept, so that the worker still stops if the app
    /// swallowed it.
    pub(crate) interrupted: Option<PyErr>,
    /// The request is over: reading refuses (see `response::request_over`).
    pub(crate) finished: bool,
}

impl WsgiInput {
    pub fn new(source: BodySource) -> WsgiInput {
        WsgiInput {
            source: Some(source),
            pending: Vec::new(),
            error: None,
            broken: false,
            interrupted: None,
            finished: false,
        }
    }

    /// Readies a finished reader that nothing else holds for the next request's body.
    pub fn reuse(&mut self, source: BodySource) {
        self.source = Some(source);
        if self.pending.capacity() > READ_CHUNK_BYTES {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        self.error = None;
        self.broken = false;
        self.interrupted = None;
        self.finished = false;
    }

    /// Takes the connection state back once the request is done (`None` if already taken).
    pub fn take_source(&mut self) -> Option<BodySource> {
        self.source.take()
    }

    /// Whether the whole body has been consumed from the connection.
    pub fn is_done(&self) -> bool {
        self.source.as_ref().is_none_or(|s| s.decoder.is_done())
    }

    /// Decodes until `pending` holds at least `want` bytes (or a newline, when `line`), or the
    /// body ends.
    fn fill(&mut self, py: Python<'_>, want: usize, line: bool) -> PyResult<()> {
        if self.finished {
            return Err(super::response::request_over("wsgi.input"));
        }
        loop {
            let have_line = line && self.pending.contains(&b'\n');
            if self.pending.len() >= want || have_line {
                return Ok(());
            }
            let Some(src) = self.source.as_mut() else {
                return Ok(());
            };
            if src.decoder.is_done() {
                return Ok(());
            }
            let room = want.saturating_sub(self.pending.len()).max(1);
            let before = self.pending.len();
            let unread = src.buf.get(src.start..).unwrap_or_default();
            match src.decoder.decode(unread, &mut self.pending, room) {
                Ok(consumed) => {
                    src.consume(consumed);
                    if consumed > 0 || self.pending.len() > before {
                        continue;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.error = Some(e);
                    return Err(PyIOError::new_err(msg));
                }
            }
            if src.decoder.is_done() {
                return Ok(());
            }
            // Need more bytes from the client. For a known length, ask only for what is left
            // so a pipelined request behind the body stays in the kernel.
            let max = match src.decoder.remaining_len() {
                Some(left) => usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .clamp(1, READ_CHUNK_BYTES),
                None => READ_CHUNK_BYTES,
            };
            self.read_more(py, max)?;
        }
    }

    /// Reads once more from the client into the source's buffer, at most `max` bytes.
    fn read_more(&mut self, py: Python<'_>, max: usize) -> PyResult<()> {
        let Some(src) = self.source.as_mut() else {
            return Ok(());
        };
        match src.io.read_some(&mut src.buf, max, src.timeout) {
            Ok(0) => {
                // An incomplete message (RFC 9112 §8). A client that only half-closed
                // can still read the 400 this earns.
                self.error = Some(ParseError::BodyTruncated);
                Err(PyIOError::new_err(
                    "client disconnected before the end of the request body",
                ))
            }
            Ok(_) => Ok(()),
            Err(IoError::Signal(e)) => {
                self.interrupted = Some(e.clone_ref(py));
                Err(e)
            }
            Err(e) => {
                self.broken = true;
                Err(PyIOError::new_err(format!(
                    "error reading the request body: {e}"
                )))
            }
        }
    }

    /// `read(n)` and `read()` of a `Content-Length` body with nothing decoded pending: the
    /// bytes object is made straight from the connection's buffer (reading into it what
    /// has not arrived), one copy instead of two. None when another path must serve.
    fn read_direct(
        &mut self,
        py: Python<'_>,
        want: Option<usize>,
    ) -> PyResult<Option<Py<PyBytes>>> {
        if self.finished || !self.pending.is_empty() {
            return Ok(None);
        }
        let Some(BodyDecoder::Length(left)) = self.source.as_ref().map(|s| &s.decoder) else {
            return Ok(None);
        };
        let target = usize::try_from(*left)
            .unwrap_or(usize::MAX)
            .min(want.unwrap_or(usize::MAX));
        loop {
            let Some(src) = self.source.as_mut() else {
                return Ok(None);
            };
            let have = src.unread().len();
            if have >= target {
                let bytes = PyBytes::new(py, &src.unread()[..target]).unbind();
                src.consume(target);
                if let BodyDecoder::Length(left) = &mut src.decoder {
                    *left -= target as u64;
                }
                return Ok(Some(bytes));
            }
            self.read_more(py, (target - have).min(READ_CHUNK_BYTES))?;
        }
    }

    fn take(&mut self, py: Python<'_>, n: usize) -> Py<PyBytes> {
        let n = n.min(self.pending.len());
        let bytes = PyBytes::new(py, &self.pending[..n]).unbind();
        self.pending.drain(..n);
        bytes
    }

    /// Reads up to `limit` bytes (`None`: everything) through the end of a line.
    fn read_line(&mut self, py: Python<'_>, limit: Option<usize>) -> PyResult<Py<PyBytes>> {
        let want = limit.unwrap_or(usize::MAX);
        self.fill(py, want, true)?;
        let end = match self.pending.iter().position(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => self.pending.len(),
        };
        Ok(self.take(py, end.min(want)))
    }

    /// Discards the rest of the body so the connection can carry the next request, as far
    /// as it is already buffered or readable without waiting, and at most `max_bytes`.
    /// Returns whether the body was fully consumed.
    ///
    /// It never waits for the client: a body the app did not read and the client has not
    /// sent yet (a trickle, or bytes that never come) would otherwise hold the worker (or
    /// the thread) for `--timeout` per stall. Such a connection is closed instead, and the
    /// event loop discards what still comes while it lingers (RFC 9112 §9.6).
    pub fn drain_available(&mut self, py: Python<'_>, max_bytes: usize) -> bool {
        if let Some(src) = self.source.as_mut() {
            src.timeout = Duration::ZERO;
        }
        let mut left = max_bytes;
        while !self.is_done() && left > 0 {
            self.pending.clear();
            let step = left.min(READ_CHUNK_BYTES);
            if self.fill(py, step, false).is_err() {
                // Nothing more readable now (or the body is malformed): the error is our
                // cleanup's, not the app's read.
                self.error = None;
                self.broken = false;
                break;
            }
            left = left.saturating_sub(self.pending.len().max(1));
        }
        self.pending.clear();
        self.is_done()
    }
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    match size {
        None => Ok(None),
        Some(obj) if obj.is_none() => Ok(None),
        Some(obj) => {
            let n: i64 = obj.extract()?;
            Ok(usize::try_from(n).ok())
        }
    }
}

#[pymethods]
impl WsgiInput {
    /// `read([size])`: up to `size` bytes, or the rest of the body.
    #[pyo3(signature = (size = None))]
    fn read(&mut self, py: Python<'_>, size: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyBytes>> {
        let want = size_arg(size)?;
        if let Some(bytes) = self.read_direct(py, want)? {
            return Ok(bytes);
        }
        match want {
            Some(n) => {
                self.fill(py, n, false)?;
                Ok(self.take(py, n))
            }
            None => {
                self.fill(py, usize::MAX, false)?;
                let n = self.pending.len();
                Ok(self.take(py, n))
            }
        }
    }

    /// `readline([size])`: one line, at most `size` bytes.
    #[pyo3(signature = (size = None))]
    fn readline(
        &mut self,
        py: Python<'_>,
        size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyBytes>> {
        let limit = size_arg(size)?;
        self.read_line(py, limit)
    }

    /// `readlines([hint])`: lines until the body ends or `hint` bytes were returned.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?.filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.read_line(py, None)?;
            let len = line.bind(py).as_bytes().len();
            if len == 0 {
                break;
            }
            lines.append(line)?;
            total += len;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyBytes>>> {
        let line = self.read_line(py, None)?;
        Ok((!line.bind(py).as_bytes().is_empty()).then_some(line))
    }
}
