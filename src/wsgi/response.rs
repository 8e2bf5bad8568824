//! `start_response` and the response writer behind it (and behind `write()`).
//!
//! Headers are sent with the first body chunk in one `writev`, borrowing the bytes of the
//! app's `bytes` objects (no copy). The head is validated by `http::response` first, so an
//! invalid status or header from the app becomes a 500 and a CR/LF is never emitted.

use std::borrow::Cow;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::time::Duration;

use pyo3::exceptions::{PyAssertionError, PyIOError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use super::app_head::AppHead;
use crate::http::date;
use crate::http::error::ResponseError;
use crate::http::response::{
    chunk_size_line, encode_early_hints, encode_head, Framing, ResponsePlan, ResponseSpec,
};
use crate::transport::{IoError, Transport};

/// The facts about the request that shape the response.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts {
    pub version: (u8, u8),
    pub is_head: bool,
    /// `HEAD`, `GET`, ...: named in the dropped-body warning.
    pub method: &'static str,
    /// The client asked for keep-alive and the worker is willing.
    pub keep_alive: bool,
}

/// Why the response could not be (fully) sent.
#[derive(Debug)]
pub enum SendError {
    /// The app's status or headers are invalid (or missing): 500 if nothing was sent yet.
    App(String),
    /// Writing to the client failed.
    Io(IoError),
}

impl From<ResponseError> for SendError {
    fn from(e: ResponseError) -> SendError {
        SendError::App(e.to_string())
    }
}

/// The state of one response on the wire.
pub struct ResponseWriter {
    io: Transport,
    facts: RequestFacts,
    timeout: Duration,
    head: Vec<u8>,
    plan: Option<ResponsePlan>,
    /// Body bytes still allowed by the app's Content-Length.
    remaining: Option<u64>,
    pub body_bytes: u64,
    /// A body was given for HEAD/204/304/1xx and dropped (warned once).
    warned_no_body: bool,
    pub status_code: u16,
    /// Body chunks collect in the outbox (a streamed response, see `wsgi::stream`).
    coalesce: bool,
}

impl ResponseWriter {
    pub fn new(io: Transport, facts: RequestFacts, timeout: Duration) -> ResponseWriter {
        ResponseWriter {
            io,
            facts,
            timeout,
            head: Vec::with_capacity(256),
            plan: None,
            coalesce: false,
            remaining: None,
            body_bytes: 0,
            warned_no_body: false,
            status_code: 0,
        }
    }

    pub fn headers_sent(&self) -> bool {
        self.plan.is_some()
    }

    /// The `Content-Length` the head announced, if it went out with one (Gunicorn's
    /// `resp.response_length`).
    pub fn announced_length(&self) -> Option<u64> {
        self.plan.as_ref().and_then(|plan| plan.content_length)
    }

    /// Whether the connection may carry another request after this response.
    pub fn keep_alive(&self) -> bool {
        match &self.plan {
            Some(plan) => plan.keep_alive && self.remaining.is_none_or(|r| r == 0),
            None => false,
        }
    }

    fn prepare_head(&mut self, status: &str, app: &AppHead) -> Result<(), SendError> {
        if !self.io.begin_response() {
            return Err(answered_for_us());
        }
        self.head.clear();
        let facts = self.facts;
        let out = &mut self.head;
        let plan = app.with_pairs(|headers| {
            let spec = ResponseSpec {
                version: facts.version,
                is_head: facts.is_head,
                keep_alive: facts.keep_alive,
                status,
                headers,
            };
            encode_head(out, &spec, &date::now())
        })?;
        self.remaining = match plan.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        self.status_code = plan.code;
        self.plan = Some(plan);
        Ok(())
    }

    /// The connection the response goes to.
    pub fn transport(&self) -> &Transport {
        &self.io
    }

    /// From now on, body chunks (and the head) collect in the outbox, up to
    /// [`super::stream::COALESCE_BYTES`], instead of being written one by one.
    pub fn coalesce(&mut self) {
        self.coalesce = true;
    }

    /// Whether coalesced bytes wait in the outbox.
    pub fn has_queued(&self) -> bool {
        self.coalesce && self.io.has_pending_output()
    }

    /// Writes `slices`, or queues them when coalescing and there is room.
    fn put(&self, slices: &mut [IoSlice<'_>]) -> Result<(), SendError> {
        if self.coalesce && self.io.queue(slices, super::stream::COALESCE_BYTES) {
            return Ok(());
        }
        self.io
            .write_all(slices, self.timeout)
            .map_err(SendError::Io)
    }

    /// Sends what coalescing collected, as far as the socket takes it now (the event loop
    /// sends the rest, as for any slow reader).
    pub fn flush_queued(&mut self) -> Result<(), SendError> {
        if self.coalesce {
            self.io.flush_nonblocking().map_err(SendError::Io)?;
        }
        Ok(())
    }

    /// Sends `data` as body bytes, with the head first if it has not gone out yet.
    pub fn send(&mut self, app: &AppHead, data: &[u8]) -> Result<(), SendError> {
        let first = self.plan.is_none();
        if first {
            let status = app
                .status()
                .ok_or_else(|| SendError::App("write() before start_response()".to_string()))?;
            self.prepare_head(status, app)?;
        }
        let framing = match &self.plan {
            Some(plan) => plan.framing,
            None => return Err(SendError::App("response head missing".to_string())),
        };
        let mut body = data;
        match framing {
            Framing::NoBody => {
                if !body.is_empty() && !self.warned_no_body {
                    self.warned_no_body = true;
                    crate::log::error_log_raw(&format!(
                        "WSGI app sent body bytes on a no-body response (method={} status={}); dropping per RFC 9110.\n",
                        self.facts.method,
                        self.status_code
                    ));
                }
                body = &[];
            }
            Framing::Length(_) => {
                let left = self.remaining.unwrap_or(0);
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(body.len());
                body = &body[..take];
                self.remaining = Some(left - take as u64);
            }
            Framing::Chunked | Framing::CloseDelimited => {}
        }
        let chunked = matches!(framing, Framing::Chunked) && !body.is_empty();
        let mut size_buf = [0u8; 20];
        let size_line: &[u8] = if chunked {
            chunk_size_line(body.len(), &mut size_buf)
        } else {
            &[]
        };
        let head: &[u8] = if first { &self.head } else { &[] };
        let mut slices = [
            IoSlice::new(head),
            IoSlice::new(size_line),
            IoSlice::new(body),
            IoSlice::new(if chunked { b"\r\n" } else { b"" }),
        ];
        if slices.iter().all(|s| s.is_empty()) {
            return Ok(());
        }
        self.put(&mut slices)?;
        self.body_bytes += body.len() as u64;
        Ok(())
    }

    /// Ends the body: the head if nothing was sent, the last chunk when chunked.
    pub fn finish(&mut self, app: &AppHead) -> Result<(), SendError> {
        if self.plan.is_none() {
            self.send(app, b"")?;
        }
        if matches!(
            self.plan.as_ref().map(|p| &p.framing),
            Some(Framing::Chunked)
        ) {
            self.put(&mut [IoSlice::new(b"0\r\n\r\n")])?;
        }
        self.flush_queued()
    }

    /// Whether a file can go out with sendfile(2): not through a TLS session.
    pub fn can_sendfile(&self) -> bool {
        !self.io.is_tls()
    }

    /// How many of `available` file bytes the body may still carry.
    pub fn body_allowance(&self, available: u64) -> u64 {
        match self.plan.as_ref().map(|p| &p.framing) {
            Some(Framing::NoBody) | None => 0,
            Some(Framing::Length(_)) => self.remaining.unwrap_or(0).min(available),
            Some(_) => available,
        }
    }

    /// Sends `count` bytes of a file with sendfile(2), framed like any other body chunk.
    pub fn send_file(&mut self, file_fd: RawFd, offset: i64, count: u64) -> Result<(), SendError> {
        let chunked = matches!(
            self.plan.as_ref().map(|p| &p.framing),
            Some(Framing::Chunked)
        );
        if chunked {
            let mut size_buf = [0u8; 20];
            let line = chunk_size_line(usize::try_from(count).unwrap_or(usize::MAX), &mut size_buf);
            self.io
                .write_all(&mut [IoSlice::new(line)], self.timeout)
                .map_err(SendError::Io)?;
        }
        // SAFETY: the fd belongs to the app's file object, which the wrapper keeps open for
        // this call; what waits for the client later uses its own duplicate.
        let file = unsafe { std::os::fd::BorrowedFd::borrow_raw(file_fd) };
        self.io
            .send_file(file, offset, count)
            .map_err(SendError::Io)?;
        let sent = count;
        if chunked {
            self.io
                .write_all(&mut [IoSlice::new(b"\r\n")], self.timeout)
                .map_err(SendError::Io)?;
        }
        if let Some(left) = self.remaining.as_mut() {
            *left -= sent.min(*left);
        }
        self.body_bytes += sent;
        Ok(())
    }

    /// Sends a `103 Early Hints` interim response (HTTP/1.1+ clients, before the final head).
    pub fn send_early_hints(&mut self, hints: &AppHead) -> Result<(), SendError> {
        if self.headers_sent() || self.facts.version < (1, 1) {
            return Ok(());
        }
        let mut out = Vec::with_capacity(128);
        hints.with_pairs(|pairs| encode_early_hints(&mut out, pairs))?;
        self.io
            .write_all(&mut [IoSlice::new(&out)], self.timeout)
            .map_err(SendError::Io)
    }

    /// Sends a whole ready-made response (an error page) when nothing was sent yet.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        if !self.io.begin_response() {
            return Err(answered_for_us());
        }
        self.io
            .write_all(&mut [IoSlice::new(bytes)], self.timeout)
            .map_err(SendError::Io)
    }
}

/// The worker, leaving, already answered this request (see `Transport::take_over_response`).
fn answered_for_us() -> SendError {
    SendError::Io(IoError::Closed(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "the worker is stopping and answered this request",
    )))
}

/// The `start_response` callable handed to the app; its bound `write` is the write callable.
#[pyclass(module = "_rgunicorn", name = "StartResponse")]
pub struct StartResponse {
    /// What the app gave `start_response` (buffers lent by the runtime, see [`AppHead`]).
    pub app_head: AppHead,
    pub writer: ResponseWriter,
    /// A write() failed on the socket: the connection is finished.
    pub io_failed: Option<IoError>,
    /// The request is over: a `start_response` or `write` kept past it refuses to act
    /// (it would write into whatever the connection carries next).
    pub finished: bool,
    /// The bound `write` that `start_response` returns, made once (a cycle with this
    /// object, which the GC can see; the runtime breaks it when it lets the object go).
    write_method: Option<Py<PyAny>>,
}

/// The error a request's objects raise once their request is over.
pub fn request_over(what: &str) -> PyErr {
    pyo3::exceptions::PyValueError::new_err(format!("{what} used after its request ended"))
}

impl StartResponse {
    /// Sends body bytes with the status and headers given to `start_response`.
    pub fn send_body(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.writer.send(&self.app_head, data)
    }

    /// Ends the response (head if nothing was sent, last chunk when chunked).
    pub fn finish_body(&mut self) -> Result<(), SendError> {
        self.writer.finish(&self.app_head)
    }

    /// `app_head` is an empty [`AppHead`] to fill (a reused one keeps its capacity).
    pub fn new(writer: ResponseWriter, app_head: AppHead) -> StartResponse {
        StartResponse {
            write_method: None,
            app_head,
            writer,
            io_failed: None,
            finished: false,
        }
    }

    /// Readies a finished StartResponse that nothing else holds for the next request.
    pub fn reuse(&mut self, writer: ResponseWriter, app_head: AppHead) {
        self.writer = writer;
        self.app_head = app_head;
        self.io_failed = None;
        self.finished = false;
    }

    /// Drops the bound `write`, which refers back to this object.
    pub fn forget_write_method(&mut self) {
        self.write_method = None;
    }

    pub fn write_method(&self) -> Option<&Py<PyAny>> {
        self.write_method.as_ref()
    }

    /// What went out, once the request is over. `code` is the status the client got: the
    /// app's, or an error page's in its place (then nothing of the app's counts). The
    /// headers are copied only `with_headers` (the access log or post_request wants them),
    /// the announced length only `with_length` (post_request's `resp`).
    pub fn sent<'a>(
        &self,
        code: u16,
        with_headers: bool,
        with_length: bool,
        digits: &'a mut [u8; 3],
    ) -> Sent<'a> {
        let apps = code == self.writer.status_code;
        let body_bytes = if apps { self.writer.body_bytes } else { 0 };
        let status: Cow<'a, str> = match (self.app_head.status(), apps) {
            // A status that went out was validated: its first word is its code.
            (Some(_), true) if (100..=999).contains(&code) => {
                Cow::Borrowed(three_digits(code, digits))
            }
            (Some(s), true) => Cow::Owned(s.split(' ').next().unwrap_or("").to_string()),
            _ => Cow::Owned(code.to_string()),
        };
        let headers: Vec<(String, String)> = if with_headers && apps {
            self.app_head
                .headers()
                .filter(|(n, _)| !crate::http::response::is_hop_by_hop(n))
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        let announced_length = if with_length && apps {
            self.writer.announced_length()
        } else {
            None
        };
        Sent {
            status,
            code,
            body_bytes,
            headers,
            announced_length,
        }
    }
}

/// A response as it went out, for the access log and `post_request`'s `resp`.
pub struct Sent<'a> {
    /// The status as logged: its code's three digits.
    pub status: Cow<'a, str>,
    pub code: u16,
    /// Body bytes that went out (a body cut to its Content-Length counts what was sent).
    pub body_bytes: u64,
    /// The app's headers without hop-by-hop ones (empty unless asked for).
    pub headers: Vec<(String, String)>,
    /// The `Content-Length` the head announced (None unless asked for).
    pub announced_length: Option<u64>,
}

/// A status code of 100..=999 as its three digits.
pub(super) fn three_digits(code: u16, buf: &mut [u8; 3]) -> &str {
    buf[0] = b'0' + (code / 100 % 10) as u8;
    buf[1] = b'0' + (code / 10 % 10) as u8;
    buf[2] = b'0' + (code % 10) as u8;
    crate::http::text::ascii_str(buf).unwrap_or("000")
}

/// Checks the app's header list and copies it into `out` (emptied first).
fn extract_headers(headers: &Bound<'_, PyAny>, out: &mut AppHead) -> PyResult<()> {
    let list = headers.cast::<PyList>().map_err(|_| {
        PyTypeError::new_err(format!(
            "Invalid headers: {} (must be a list)",
            headers.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    out.clear_headers();
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "Invalid header: {} (must be a (name, value) tuple)",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
        let name = pair.get_item(0)?;
        let value = pair.get_item(1)?;
        let name = name.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{} is not a string",
                name.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let value = value.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "Header value {} is not a string",
                value.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        out.push_header(name.to_str()?, value.to_str()?);
    }
    Ok(())
}

#[pymethods]
impl StartResponse {
    /// `start_response(status, response_headers, exc_info=None)` (PEP 3333).
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            // Another thread in the middle of write() makes this a RuntimeError, not a panic.
            let mut this = slf.try_borrow_mut()?;
            if this.finished {
                return Err(request_over("start_response"));
            }
            match exc_info {
                Some(info) if this.writer.headers_sent() => {
                    // PEP 3333: too late to change the response; re-raise the app's error.
                    let exc = info.get_item(1)?;
                    let tb = info.get_item(2)?;
                    drop(this);
                    let exc = exc.call_method1("with_traceback", (tb,))?;
                    return Err(PyErr::from_value(exc));
                }
                Some(_) => {}
                None if this.app_head.status().is_some() => {
                    return Err(PyAssertionError::new_err("Response headers already set!"));
                }
                None => {}
            }
            let status = status.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{} is not a string",
                    status.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            // The status first, as Gunicorn: after a refused header list, a second call
            // without exc_info is refused too.
            this.app_head.set_status(status.to_str()?);
            if let Err(e) = extract_headers(headers, &mut this.app_head) {
                this.app_head.clear_headers();
                return Err(e);
            }
            if let Some(write) = &this.write_method {
                return Ok(write.bind(slf.py()).clone());
            }
        }
        let write = slf.getattr(pyo3::intern!(slf.py(), "write"))?;
        if let Ok(mut this) = slf.try_borrow_mut() {
            this.write_method = Some(write.clone().unbind());
        }
        Ok(write)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        visit.call(&self.write_method)
    }

    fn __clear__(&mut self) {
        self.write_method = None;
    }

    /// `environ['wsgi.early_hints'](headers)`: a `103 Early Hints` before the response.
    fn early_hints(&mut self, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.finished {
            return Err(request_over("wsgi.early_hints"));
        }
        let mut hints = AppHead::default();
        extract_headers(headers, &mut hints)?;
        match self.writer.send_early_hints(&hints) {
            Ok(()) => Ok(()),
            Err(SendError::App(msg)) => Err(pyo3::exceptions::PyValueError::new_err(msg)),
            Err(SendError::Io(IoError::Signal(e))) => Err(e),
            Err(SendError::Io(e)) => {
                let msg = e.to_string();
                self.io_failed = Some(e);
                Err(PyIOError::new_err(msg))
            }
        }
    }

    /// The legacy `write(data)` callable.
    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.finished {
            return Err(request_over("write()"));
        }
        let bytes = data.cast::<PyBytes>().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                data.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        match self.send_body(bytes.as_bytes()) {
            Ok(()) => Ok(()),
            Err(SendError::App(msg)) => Err(PyAssertionError::new_err(msg)),
            Err(SendError::Io(IoError::Signal(e))) => Err(e),
            Err(SendError::Io(e)) => {
                let msg = e.to_string();
                self.io_failed = Some(e);
                Err(PyIOError::new_err(msg))
            }
        }
    }
}
