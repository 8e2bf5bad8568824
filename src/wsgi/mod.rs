//! PEP 3333: app loading (`app`), `environ` (`environ`), `wsgi.input` (`input`),
//! `start_response` and response writing (`response`), `wsgi.file_wrapper`, `wsgi.errors`,
//! and [`Runtime::handle`], which runs one request through the app.

pub mod app;
pub mod environ;
pub mod errors;
pub mod file_wrapper;
pub mod input;
pub mod response;
pub mod stream;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PySystemExit, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyModule, PyTuple};
use tracing::{debug, error, warn};

use crate::http::body::BodyDecoder;
use crate::http::error::error_page;
use crate::http::request::RequestHead;
use crate::log::access::{AccessLog, AccessRecord};
use crate::transport::IoError;
use environ::{ConnEnv, EnvironBuilder, EnvironError};
use file_wrapper::FileWrapper;
use input::{BodySource, WsgiInput};
use response::{AppHead, RequestFacts, ResponseWriter, SendError, StartResponse};

/// The environ of each request in hand (one per thread that runs requests) and when it
/// started, for the timeout report (a reference, so recording it costs an incref).
static IN_HAND: std::sync::Mutex<Vec<(std::thread::ThreadId, Py<PyDict>, Instant)>> =
    std::sync::Mutex::new(Vec::new());

fn in_hand() -> std::sync::MutexGuard<'static, Vec<(std::thread::ThreadId, Py<PyDict>, Instant)>> {
    IN_HAND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets (or with None, clears) this thread's request in hand.
fn set_in_hand(request: Option<(Py<PyDict>, Instant)>) {
    let me = std::thread::current().id();
    let previous = {
        let mut all = in_hand();
        let previous = all
            .iter()
            .position(|(thread, _, _)| *thread == me)
            .map(|i| all.swap_remove(i));
        if let Some((environ, start)) = request {
            all.push((me, environ, start));
        }
        previous
    };
    // Released outside the lock: freeing an environ can run Python code (finalizers), which
    // may let another thread in, and that thread may be on its way to this lock.
    drop(previous);
}

/// Describes the requests in hand (`GET /path from 127.0.0.1 after 31.2 s`, one per busy
/// thread, joined with "; "), if any.
pub fn describe_current_request(py: Python<'_>) -> Option<String> {
    let all = in_hand();
    let described: Vec<String> = all
        .iter()
        .map(|(_, environ, started)| describe_request(environ.bind(py), *started))
        .collect();
    (!described.is_empty()).then(|| described.join("; "))
}

fn describe_request(environ: &Bound<'_, PyDict>, started: Instant) -> String {
    let get = |key: &str| -> String {
        environ
            .get_item(key)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let peer = get("REMOTE_ADDR");
    format!(
        "{} {} from {} after {:.1} s",
        get("REQUEST_METHOD"),
        get("RAW_URI"),
        if peer.is_empty() {
            "a unix socket peer".to_string()
        } else {
            peer
        },
        started.elapsed().as_secs_f64()
    )
}

/// How much of an unread request body, already arrived, is discarded to keep a connection
/// alive.
const MAX_DRAIN_BYTES: usize = 1024 * 1024;

/// Adds our Python classes to the `_rgunicorn` module.
///
/// # Errors
/// A Python error while registering (a broken interpreter).
pub fn register_types(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<WsgiInput>()?;
    module.add_class::<StartResponse>()?;
    module.add_class::<FileWrapper>()?;
    module.add_class::<errors::ErrorStream>()?;
    Ok(())
}

/// What the connection should do after a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    KeepAlive,
    Close,
    /// A signal handler raised SystemExit (QUIT/INT/ABRT): the worker exits with this code.
    Exit(i32),
}

/// The connection a request arrived on, as the runtime needs it.
pub struct Exchange<'a> {
    pub io: crate::transport::Transport,
    /// Bytes received: the head, then the body, maybe a pipelined request. Given back
    /// without the request's bytes.
    pub buf: &'a mut Vec<u8>,
    /// How many bytes at the front of `buf` are the request's head. They are dropped when
    /// the body reader first consumes (or the exchange ends), with the body bytes read by
    /// then: dropping them first would move the whole body once more.
    pub head_len: usize,
    pub conn: &'a ConnEnv,
    /// The worker is willing to keep this connection open (not stopping, under limits).
    pub may_keep_alive: bool,
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        let head = self.head_len.min(self.buf.len());
        self.buf.drain(..head);
    }
}

/// Everything a worker needs to run requests through the app.
pub struct Runtime {
    app: Py<PyAny>,
    environ: EnvironBuilder,
    access_log: Option<AccessLog>,
    /// How long one wait for the client may last when reading or writing.
    io_timeout: Duration,
    sendfile: bool,
    /// The parser's leniency switches, which apply to chunked trailers too.
    lenient: crate::http::Leniency,
    /// The status and header buffers the next request's `start_response` fills.
    spare_app_head: AppHead,
    /// The last request's `start_response`, for the next request if nothing else kept it.
    kept: Option<KeptStartResponse>,
    /// The last request's `wsgi.input`, likewise.
    kept_input: Option<Py<WsgiInput>>,
    /// `pre_request` or `post_request` is set (hooks are fixed before workers start):
    /// requests then build the `req` object the hooks take.
    request_hooks: bool,
    /// A hook receives the worker object: requests then count toward `worker.nr`.
    worker_hooks: bool,
    /// `header_map = "dangerous"`: `req.trailers` keeps names with an underscore (else
    /// they are dropped, as Gunicorn drops them).
    underscored_trailers: bool,
}

/// A request's `start_response` and its bound `early_hints` (in the environ). Making them
/// and their bound methods, and freeing them, is a tenth of a small request's work, so
/// the runtime reuses them once nothing outside it refers to them any more.
struct KeptStartResponse {
    start_response: Py<StartResponse>,
    early_hints: Py<PyAny>,
}

fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: a Bound is a live object.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
}

impl KeptStartResponse {
    /// Whether only this runtime holds them: the app, its threads or a kept environ do not.
    fn unshared(&self, py: Python<'_>) -> bool {
        let sr = self.start_response.bind(py);
        // Ours, early_hints' and the bound write's (if made) references to it.
        let sr_refs = refcount(sr.as_any());
        let Ok(this) = sr.try_borrow() else {
            return false;
        };
        let write_refs = match this.write_method() {
            Some(write) if refcount(write.bind(py)) != 1 => return false,
            Some(_) => 1,
            None => 0,
        };
        refcount(self.early_hints.bind(py)) == 1 && sr_refs == 2 + write_refs
    }
}

/// How a request went wrong.
enum Failure {
    /// The app (or its iterable) raised.
    App(PyErr),
    /// SystemExit from a signal handler (or the app): exit the worker after answering.
    Exit(PyErr),
    /// The app's status, headers or body type are invalid.
    Invalid(String),
    /// The client went away or stalled.
    Io,
}

/// A status code of 100..=999 as its three digits.
fn three_digits(code: u16, buf: &mut [u8; 3]) -> &str {
    buf[0] = b'0' + (code / 100 % 10) as u8;
    buf[1] = b'0' + (code / 10 % 10) as u8;
    buf[2] = b'0' + (code % 10) as u8;
    crate::http::text::ascii_str(buf).unwrap_or("000")
}

fn classify(py: Python<'_>, e: PyErr) -> Failure {
    if e.is_instance_of::<PySystemExit>(py) {
        Failure::Exit(e)
    } else {
        Failure::App(e)
    }
}

impl Runtime {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        config: &crate::config::Config,
        access_log: Option<AccessLog>,
    ) -> PyResult<Runtime> {
        Ok(Runtime {
            app,
            environ: EnvironBuilder::new(py, config)?,
            access_log,
            io_timeout: Duration::from_secs(if config.timeout == 0 {
                30
            } else {
                config.timeout
            }),
            sendfile: config.sendfile,
            lenient: config.limits.lenient,
            spare_app_head: AppHead::default(),
            kept: None,
            kept_input: None,
            request_hooks: crate::python::hooks::is_set("pre_request")
                || crate::python::hooks::is_set("post_request"),
            worker_hooks: crate::python::hooks::worker_object_used(),
            underscored_trailers: config.header_map == crate::config::HeaderMap::Dangerous,
        })
    }

    /// Reopens the access log file (USR1).
    pub fn reopen_logs(&mut self) {
        if let Some(log) = self.access_log.as_mut() {
            log.report_lost_lines();
            log.sink.reopen();
        }
    }

    /// Runs one request through the app and writes its response; `start` is when the
    /// worker took it up (the access log's duration counts from there).
    pub fn handle(
        &mut self,
        py: Python<'_>,
        ex: &mut Exchange<'_>,
        head: &RequestHead,
        start: Instant,
    ) -> Outcome {
        // Gunicorn's default pre_request hook.
        debug!("{} {}", head.method, head.path);
        let outcome = self.run_request(py, ex, head, start);
        set_in_hand(None);
        outcome
    }

    /// A `wsgi.input` reading `source`: the last request's when nothing else holds it (the
    /// app, its threads, a kept environ or hook object), else a new one.
    fn input_for<'py>(
        &mut self,
        py: Python<'py>,
        source: BodySource,
    ) -> PyResult<Bound<'py, WsgiInput>> {
        if let Some(kept) = self.kept_input.take() {
            let input = kept.into_bound(py);
            if refcount(input.as_any()) == 1 {
                if let Ok(mut this) = input.try_borrow_mut() {
                    this.reuse(source);
                    drop(this);
                    return Ok(input);
                }
            }
        }
        Bound::new(py, WsgiInput::new(source))
    }

    /// A `start_response` (and its bound `early_hints`) for a request writing to `writer`:
    /// the last request's when nothing else holds it, else a new one.
    fn start_response_for<'py>(
        &mut self,
        py: Python<'py>,
        writer: ResponseWriter,
    ) -> PyResult<(Bound<'py, StartResponse>, Bound<'py, PyAny>)> {
        let app_head = std::mem::take(&mut self.spare_app_head);
        if let Some(kept) = self.kept.take() {
            if kept.unshared(py) {
                let sr = kept.start_response.bind(py);
                if let Ok(mut this) = sr.try_borrow_mut() {
                    this.reuse(writer, app_head);
                    drop(this);
                    return Ok((sr.clone(), kept.early_hints.into_bound(py)));
                }
            }
            // Someone kept it: it stays finished, and its cycle with its bound write is
            // broken now if it can be (else the GC breaks it).
            if let Ok(mut sr) = kept.start_response.bind(py).try_borrow_mut() {
                sr.forget_write_method();
            }
        }
        let sr = Bound::new(py, StartResponse::new(writer, app_head))?;
        let early_hints = sr.getattr(intern!(py, "early_hints"))?;
        Ok((sr, early_hints))
    }

    fn run_request(
        &mut self,
        py: Python<'_>,
        ex: &mut Exchange<'_>,
        head: &RequestHead,
        start: Instant,
    ) -> Outcome {
        let facts = RequestFacts {
            version: head.version,
            is_head: head.method == "HEAD",
            method: common_method(&head.method),
            keep_alive: ex.may_keep_alive && head.keep_alive && !head.must_close,
        };
        if head.expect_continue {
            let mut slices = [std::io::IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
            match ex.io.write_all(py, &mut slices, self.io_timeout) {
                Ok(()) => {}
                // A stop signal (QUIT, ABRT) while the client was slow to take it.
                Err(IoError::Signal(e)) if e.is_instance_of::<PySystemExit>(py) => {
                    return Outcome::Exit(crate::python::system_exit_code(py, &e));
                }
                Err(_) => return Outcome::Close,
            }
        }
        let environ = match self.environ.build(py, head, ex.conn) {
            Ok(env) => env,
            Err(EnvironError::BadRequest(msg)) => {
                warn!("Invalid request from ip={}: {msg}", ex.conn.remote_ip);
                self.send_error(py, ex, head, start, 400, "Bad Request", &msg);
                return Outcome::Close;
            }
            Err(EnvironError::Config(msg)) => {
                error!(
                    "Error handling request {} {}: Configuration problem: {msg}",
                    head.method, head.target
                );
                self.send_error(
                    py,
                    ex,
                    head,
                    start,
                    500,
                    "Internal Server Error",
                    &format!("Configuration problem: {msg}"),
                );
                return Outcome::Close;
            }
        };
        set_in_hand(Some((environ.clone().unbind(), start)));
        let source = BodySource {
            io: ex.io.clone(),
            buf: std::mem::take(ex.buf),
            start: std::mem::take(&mut ex.head_len),
            decoder: BodyDecoder::new(&head.body, self.lenient),
            timeout: self.io_timeout,
        };
        let made = self.input_for(py, source).and_then(|input| {
            environ.set_item(intern!(py, "wsgi.input"), &input)?;
            let writer = ResponseWriter::new(ex.io.clone(), facts, self.io_timeout);
            let (start_response, early_hints) = self.start_response_for(py, writer)?;
            environ.set_item(intern!(py, "wsgi.early_hints"), &early_hints)?;
            self.kept = Some(KeptStartResponse {
                start_response: start_response.clone().unbind(),
                early_hints: early_hints.unbind(),
            });
            Ok((input, start_response))
        });
        let (input, start_response) = match made {
            Ok(pair) => pair,
            Err(e) => {
                error!(
                    "Error handling request {} {}: {e}",
                    head.method, head.target
                );
                return Outcome::Close;
            }
        };

        // Only with hooks (one test of a flag otherwise): the `req` object, pre_request,
        // and `worker.nr`, which Gunicorn counts after pre_request.
        let req = if self.worker_hooks {
            let req = if self.request_hooks {
                let number = ex.conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
                request_object(py, head, ex.conn, &environ, input.as_any(), number).ok()
            } else {
                None
            };
            if let Some(req) = &req {
                crate::python::hooks::call_worker_hook(
                    py,
                    "pre_request",
                    std::slice::from_ref(req),
                );
            }
            crate::python::hooks::count_request();
            req
        } else {
            None
        };
        let mut failure = match self.app.bind(py).call1((&environ, &start_response)) {
            Ok(iterable) => {
                let mut failure = self.write_body(py, &iterable, &start_response).err();
                // close() exactly once, whatever happened while iterating.
                // Exact lists and tuples have no close(): asking would raise and clear an
                // AttributeError on every request.
                let plain = iterable.is_exact_instance_of::<PyList>()
                    || iterable.is_exact_instance_of::<PyTuple>();
                if !plain && matches!(iterable.hasattr(intern!(py, "close")), Ok(true)) {
                    if let Err(e) = iterable.call_method0(intern!(py, "close")) {
                        failure.get_or_insert(classify(py, e));
                    }
                }
                failure
            }
            Err(e) => Some(classify(py, e)),
        };

        // A thread the app started may still be inside read() or write(): wait for it.
        let Some(mut input_ref) = borrow_when_free(py, &input, self.io_timeout) else {
            return self.abandoned(head);
        };
        let body_error = input_ref.error.take();
        // A stop signal raised into a read the app made: the worker stops even if the app
        // caught the SystemExit.
        if let Some(e) = input_ref.interrupted.take() {
            if e.is_instance_of::<PySystemExit>(py) && !matches!(failure, Some(Failure::Exit(_))) {
                failure = Some(Failure::Exit(e));
            }
        }
        let Some(mut sr) = borrow_when_free(py, &start_response, self.io_timeout) else {
            return self.abandoned(head);
        };
        let headers_sent = sr.writer.headers_sent();
        let cut_short_late =
            headers_sent && body_error.as_ref() == Some(&crate::http::ParseError::BodyTruncated);
        if sr.io_failed.is_some() || input_ref.broken || cut_short_late {
            // The app saw the exception from write()/read(); the client is gone either way
            // (a body cut short once the response has begun cannot be answered with a 400).
            failure = Some(Failure::Io);
        }
        let mut outcome = Outcome::Close;
        let mut status_code = sr.writer.status_code;
        match failure {
            None => {
                // A connection that closes anyway needs no drain: the loop's lingering
                // close discards what is left.
                if sr.writer.keep_alive() && input_ref.drain_available(py, MAX_DRAIN_BYTES) {
                    outcome = Outcome::KeepAlive;
                }
            }
            Some(_) if body_error.is_some() && !headers_sent => {
                if let Some(e) = body_error {
                    if e == crate::http::ParseError::BodyTruncated {
                        // Most often an upload the user cancelled: not worth a warning.
                        debug!("Ignored premature client disconnection. {e}");
                    } else {
                        warn!("Invalid request from ip={}: {e}", ex.conn.remote_ip);
                    }
                    let _ = sr.writer.send_raw(py, &e.to_error_page());
                    status_code = e.status();
                }
            }
            Some(Failure::Exit(e)) => {
                if !headers_sent {
                    error!("Error handling request {} {}", head.method, head.target);
                    crate::log::error_log_raw(&crate::python::format_exception(py, &e));
                    let _ = sr
                        .writer
                        .send_raw(py, &error_page(500, "Internal Server Error", ""));
                    status_code = 500;
                }
                outcome = Outcome::Exit(crate::python::system_exit_code(py, &e));
            }
            Some(Failure::App(e)) => {
                let tb = crate::python::format_exception(py, &e);
                crate::log::error_log(
                    crate::log::LogLevel::Error,
                    &format!("Error handling request {} {}", head.method, head.target),
                    Some(&tb),
                );
                if !headers_sent {
                    let _ = sr
                        .writer
                        .send_raw(py, &error_page(500, "Internal Server Error", ""));
                    status_code = 500;
                }
            }
            Some(Failure::Invalid(msg)) => {
                error!(
                    "Error handling request {} {}: {msg}",
                    head.method, head.target
                );
                if !headers_sent {
                    let _ = sr
                        .writer
                        .send_raw(py, &error_page(500, "Internal Server Error", ""));
                    status_code = 500;
                }
            }
            Some(Failure::Io) => {
                debug!("Ignored premature client disconnection.");
            }
        }
        if let Some(req) = &req {
            self.give_back_with_trailers(py, &mut input_ref, ex, req);
        } else if let Some(source) = input_ref.take_source() {
            *ex.buf = source.into_buf();
        }
        // From here on, what the app kept of this request refuses to act.
        input_ref.finished = true;
        sr.finished = true;
        self.kept_input = Some(input.clone().unbind());
        let body_bytes = if status_code == sr.writer.status_code {
            sr.writer.body_bytes
        } else {
            0
        };
        let mut digits = [0u8; 3];
        let status_text: Cow<'_, str> =
            match (sr.app_head.status(), status_code == sr.writer.status_code) {
                // A status that went out was validated: its first word is its code.
                (Some(_), true) if (100..=999).contains(&status_code) => {
                    Cow::Borrowed(three_digits(status_code, &mut digits))
                }
                (Some(s), true) => Cow::Owned(s.split(' ').next().unwrap_or("").to_string()),
                _ => Cow::Owned(status_code.to_string()),
            };
        // Copied only for the access log and post_request, and only if they went out.
        let wants_headers = self.access_log.is_some()
            || (self.request_hooks && crate::python::hooks::is_set("post_request"));
        let sent_headers: Vec<(String, String)> =
            if wants_headers && status_code == sr.writer.status_code {
                sr.app_head
                    .headers()
                    .filter(|(n, _)| !crate::http::response::is_hop_by_hop(n))
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect()
            } else {
                Vec::new()
            };
        // For post_request's `resp.response_length`.
        let announced_length = match &req {
            Some(_) if status_code == sr.writer.status_code => sr.writer.announced_length(),
            _ => None,
        };
        // The buffers serve the next request (an app keeping start_response finds it
        // finished and empty).
        self.spare_app_head = std::mem::take(&mut sr.app_head);
        self.spare_app_head.clear();
        drop(sr);
        drop(input_ref);
        self.log_access(
            py,
            head,
            ex.conn,
            &environ,
            &status_text,
            body_bytes,
            &sent_headers,
            start,
        );
        if let Some(req) = &req {
            if crate::python::hooks::is_set("post_request") {
                let resp = response_object(
                    py,
                    &status_text,
                    status_code,
                    &sent_headers,
                    body_bytes,
                    announced_length,
                );
                match resp {
                    Ok(resp) => crate::python::hooks::call_worker_hook(
                        py,
                        "post_request",
                        &[req.clone(), environ.clone().into_any(), resp],
                    ),
                    Err(e) => {
                        crate::python::log_exception(py, "Exception in post_request hook", &e)
                    }
                }
            }
        }
        outcome
    }

    /// Gives the connection back its bytes (as the request path does without hooks), after
    /// setting `req.trailers` from a chunked body read to its end.
    #[cold]
    fn give_back_with_trailers(
        &self,
        py: Python<'_>,
        input: &mut WsgiInput,
        ex: &mut Exchange<'_>,
        req: &Bound<'_, PyAny>,
    ) {
        let Some(mut source) = input.take_source() else {
            return;
        };
        let trailers = source.decoder.take_trailers();
        if !trailers.is_empty() {
            if let Err(e) = set_trailers(py, req, &trailers, self.underscored_trailers) {
                debug!("req.trailers not set: {e}");
            }
        }
        *ex.buf = source.into_buf();
    }

    /// A thread of the app kept using the request's objects past `--timeout`: the response
    /// cannot be completed, so the connection is closed.
    fn abandoned(&self, head: &RequestHead) -> Outcome {
        error!(
            "Error handling request {} {}: a thread of the app kept using wsgi.input or \
             start_response",
            head.method, head.target
        );
        Outcome::Close
    }

    /// Iterates the app's response and writes it; sendfile for a wrapped real file.
    fn write_body(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        sr: &Bound<'_, StartResponse>,
    ) -> Result<(), Failure> {
        if self.sendfile {
            if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
                if let Ok(wrapper) = wrapper.try_borrow() {
                    if let Some(done) = self.try_sendfile(py, &wrapper, sr) {
                        return done;
                    }
                }
            }
        }
        let send = |item: Bound<'_, PyAny>| -> Result<(), Failure> {
            let bytes = item.cast::<PyBytes>().map_err(|_| {
                Failure::App(PyTypeError::new_err(format!(
                    "{} is not a byte",
                    item.repr().map(|r| r.to_string()).unwrap_or_default()
                )))
            })?;
            borrow_when_free(py, sr, self.io_timeout)
                .ok_or(Failure::Io)?
                .send_body(py, bytes.as_bytes())
                .map_err(|e| send_failure(py, e))
        };
        // Lists and tuples (the common `return [body]`) are walked without an iterator
        // object; when they hold several chunks, these go out together (nothing runs between
        // them).
        let walked = if let Ok(list) = iterable.cast::<PyList>() {
            if list.len() > 1 {
                self.writer(py, sr)?.writer.coalesce();
            }
            list.iter().try_for_each(send)
        } else if let Ok(tuple) = iterable.cast::<PyTuple>() {
            if tuple.len() > 1 {
                self.writer(py, sr)?.writer.coalesce();
            }
            tuple.iter().try_for_each(send)
        } else {
            self.stream_body(py, iterable, sr, &send)
        };
        let finished = walked.and_then(|()| {
            self.writer(py, sr)?
                .finish_body(py)
                .map_err(|e| send_failure(py, e))
        });
        if finished.is_err() {
            // What was collected before the failure still reaches the client.
            if let Some(mut sr) = borrow_when_free(py, sr, self.io_timeout) {
                let _ = sr.writer.flush_queued();
            }
        }
        finished
    }

    /// The start_response object, once no other thread uses it.
    fn writer<'py>(
        &self,
        py: Python<'py>,
        sr: &'py Bound<'py, StartResponse>,
    ) -> Result<PyRefMut<'py, StartResponse>, Failure> {
        borrow_when_free(py, sr, self.io_timeout).ok_or(Failure::Io)
    }

    /// Walks an app's iterator (a generator, typically). The first chunk goes out at once;
    /// later ones are coalesced while the app is fast, and the flusher sends them when it
    /// stays inside `next()` (see `wsgi::stream`).
    fn stream_body(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        sr: &Bound<'_, StartResponse>,
        send: &dyn Fn(Bound<'_, PyAny>) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut guard: Option<stream::StreamGuard> = None;
        let mut first = true;
        for item in iterable.try_iter().map_err(|e| classify(py, e))? {
            if let Some(guard) = &guard {
                guard.app_returned();
            }
            send(item.map_err(|e| classify(py, e))?)?;
            let mut sr = self.writer(py, sr)?;
            if std::mem::take(&mut first) && stream::available() {
                sr.writer.coalesce();
            }
            let waiting = sr.writer.has_queued();
            if waiting && guard.is_none() {
                guard = stream::StreamGuard::register(sr.writer.transport().clone());
            }
            drop(sr);
            if let Some(guard) = &guard {
                guard.app_running(waiting);
            }
            // The iterator's next() runs between here and the loop's next turn: the
            // control is the app's.
        }
        Ok(())
    }

    /// The zero-copy path; `None` when the wrapped object is not a real file.
    fn try_sendfile(
        &self,
        py: Python<'_>,
        wrapper: &FileWrapper,
        sr: &Bound<'_, StartResponse>,
    ) -> Option<Result<(), Failure>> {
        let Some(mut sr) = borrow_when_free(py, sr, self.io_timeout) else {
            return Some(Err(Failure::Io));
        };
        if !sr.writer.can_sendfile() {
            return None;
        }
        let (file_fd, offset, available) = file_wrapper::sendfile_source(py, wrapper)?;
        let result = (|| {
            sr.send_body(py, b"")?;
            let count = sr.writer.body_allowance(available);
            if count > 0 {
                sr.writer.send_file(py, file_fd, offset, count)?;
            }
            sr.finish_body(py)
        })();
        Some(result.map_err(|e| send_failure(py, e)))
    }

    #[allow(clippy::too_many_arguments)]
    fn send_error(
        &mut self,
        py: Python<'_>,
        ex: &mut Exchange<'_>,
        head: &RequestHead,
        start: Instant,
        code: u16,
        reason: &str,
        msg: &str,
    ) {
        let page = error_page(code, reason, msg);
        let _ = ex
            .io
            .write_all(py, &mut [std::io::IoSlice::new(&page)], self.io_timeout);
        let environ = PyDict::new(py);
        self.log_access(
            py,
            head,
            ex.conn,
            &environ,
            &code.to_string(),
            msg.len() as u64,
            &[],
            start,
        );
    }

    /// Records the request in StatsD and the access log.
    #[allow(clippy::too_many_arguments)]
    fn log_access(
        &mut self,
        py: Python<'_>,
        head: &RequestHead,
        conn: &ConnEnv,
        environ: &Bound<'_, PyDict>,
        status: &str,
        body_bytes: u64,
        response_headers: &[(String, String)],
        start: Instant,
    ) {
        crate::log::statsd::request(status, start);
        let Some(log) = self.access_log.as_mut() else {
            return;
        };
        let path_info: String = environ
            .get_item(intern!(py, "PATH_INFO"))
            .ok()
            .flatten()
            .and_then(|v| v.extract().ok())
            .unwrap_or_else(|| head.path.to_string());
        let lookup = |key: &str| -> Option<String> {
            let value = environ.get_item(key).ok().flatten()?;
            value.str().ok().map(|s| s.to_string())
        };
        let protocol = format!("HTTP/{}.{}", head.version.0, head.version.1);
        let record = AccessRecord {
            remote_addr: &conn.remote_ip,
            method: &head.method,
            raw_uri: &head.target,
            protocol: &protocol,
            path_info: &path_info,
            query: &head.query,
            status,
            body_bytes,
            request_headers: &head.headers,
            response_headers,
            duration: start.elapsed(),
            environ: &lookup,
        };
        log.write(py, &record);
    }
}

/// The `req` object hooks receive (Gunicorn's Request, duck-typed).
fn request_object<'py>(
    py: Python<'py>,
    head: &RequestHead,
    conn: &ConnEnv,
    environ: &Bound<'py, PyDict>,
    body: &Bound<'py, PyAny>,
    number: u64,
) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObject;
    let headers = PyList::empty(py);
    for h in &head.headers {
        let value = environ::latin1(py, &h.value)?;
        headers.append((h.name.to_ascii_uppercase(), value))?;
    }
    let scheme = environ
        .get_item(intern!(py, "wsgi.url_scheme"))?
        .unwrap_or_else(|| intern!(py, "http").clone().into_any());
    let port: Bound<'py, PyAny> = match &conn.remote_port {
        Some(p) => p.bind(py).clone().into_any(),
        None => py.None().into_bound(py),
    };
    let peer = PyTuple::new(py, [conn.remote_addr.bind(py).clone().into_any(), port])?;
    crate::python::hooks::namespace(
        py,
        &[
            ("method", head.method.clone().into_pyobject(py)?.into_any()),
            ("uri", head.target.clone().into_pyobject(py)?.into_any()),
            ("path", head.path.clone().into_pyobject(py)?.into_any()),
            ("query", head.query.clone().into_pyobject(py)?.into_any()),
            (
                "fragment",
                head.fragment.clone().into_pyobject(py)?.into_any(),
            ),
            (
                "version",
                PyTuple::new(py, [head.version.0, head.version.1])?.into_any(),
            ),
            ("headers", headers.into_any()),
            // Filled in once the body was read to its end (`set_trailers`).
            ("trailers", PyList::empty(py).into_any()),
            ("body", body.clone()),
            ("scheme", scheme),
            ("peer_addr", peer.clone().into_any()),
            ("remote_addr", peer.into_any()),
            ("req_number", number.into_pyobject(py)?.into_any()),
            ("proxy_protocol_info", proxy_protocol_info(py, conn)?),
        ],
    )
}

/// `req.proxy_protocol_info`: what the connection's PROXY header said, as Gunicorn's dict
/// (ports as numbers; no addresses for `UNKNOWN`, `LOCAL` and `UNSPEC`), or None without
/// one. Every request of the connection gets it.
fn proxy_protocol_info<'py>(py: Python<'py>, conn: &ConnEnv) -> PyResult<Bound<'py, PyAny>> {
    let Some((protocol, proxy_addr, proxy_port)) = &conn.proxy else {
        return Ok(py.None().into_bound(py));
    };
    let info = PyDict::new(py);
    info.set_item("proxy_protocol", protocol)?;
    let none = py.None().into_bound(py);
    if matches!(protocol.as_str(), "TCP4" | "TCP6") {
        // The header's source became the connection's remote address.
        let client_port = match &conn.remote_port {
            Some(p) => p.bind(py).to_str()?.parse::<u16>().ok(),
            None => None,
        };
        info.set_item("client_addr", &conn.remote_ip)?;
        info.set_item("client_port", client_port)?;
        info.set_item("proxy_addr", proxy_addr)?;
        info.set_item("proxy_port", proxy_port.parse::<u16>().ok())?;
    } else {
        for key in ["client_addr", "client_port", "proxy_addr", "proxy_port"] {
            info.set_item(key, &none)?;
        }
    }
    Ok(info.into_any())
}

/// Sets `req.trailers` (Gunicorn: `(NAME, value)` pairs once the chunked body was read to
/// its end); a name with an underscore is dropped unless `header_map` is "dangerous".
fn set_trailers(
    py: Python<'_>,
    req: &Bound<'_, PyAny>,
    trailers: &[crate::http::body::Trailer],
    keep_underscored: bool,
) -> PyResult<()> {
    let list = PyList::empty(py);
    for (name, value) in trailers {
        if !keep_underscored && name.contains(&b'_') {
            continue;
        }
        let name = String::from_utf8_lossy(name);
        list.append((name, environ::latin1(py, value)?))?;
    }
    req.setattr(intern!(py, "trailers"), list)
}

/// The `resp` object `post_request` receives (Gunicorn's Response, duck-typed): `sent` is
/// the body bytes that went out (a body cut to its Content-Length counts what was sent),
/// `response_length` the Content-Length the head announced (None without one).
fn response_object<'py>(
    py: Python<'py>,
    status: &str,
    code: u16,
    headers: &[(String, String)],
    body_bytes: u64,
    announced_length: Option<u64>,
) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObject;
    let list = PyList::empty(py);
    for (n, v) in headers {
        list.append((n, v))?;
    }
    crate::python::hooks::namespace(
        py,
        &[
            ("status", status.into_pyobject(py)?.into_any()),
            ("status_code", code.into_pyobject(py)?.into_any()),
            ("headers", list.into_any()),
            ("sent", body_bytes.into_pyobject(py)?.into_any()),
            (
                "response_length",
                announced_length.into_pyobject(py)?.into_any(),
            ),
            (
                "headers_sent",
                pyo3::types::PyBool::new(py, code != 0)
                    .to_owned()
                    .into_any(),
            ),
        ],
    )
}

/// The method as a static string for the few places that name it (others become `-`).
fn common_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("-")
}

/// Borrows one of a request's objects (`wsgi.input`, `start_response`), which the app may
/// be using from a thread of its own: waits, with the GIL released so that thread can
/// finish its call, for up to `timeout`.
fn borrow_when_free<'py, T>(
    py: Python<'py>,
    obj: &Bound<'py, T>,
    timeout: Duration,
) -> Option<PyRefMut<'py, T>>
where
    T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
{
    let mut deadline = None;
    loop {
        if let Ok(borrowed) = obj.try_borrow_mut() {
            return Some(borrowed);
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
        if Instant::now() >= deadline {
            return None;
        }
        py.detach(|| std::thread::sleep(Duration::from_millis(1)));
    }
}

fn send_failure(py: Python<'_>, e: SendError) -> Failure {
    match e {
        SendError::App(msg) => Failure::Invalid(msg),
        SendError::Io(IoError::Signal(e)) => classify(py, e),
        SendError::Io(_) => Failure::Io,
    }
}
