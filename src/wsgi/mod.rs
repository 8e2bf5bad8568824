//! PEP 3333: app loading (`app`), `environ` (`environ`), `wsgi.input` (`input`),
//! `start_response` and response writing (`response`), `wsgi.file_wrapper`, `wsgi.errors`,
//! and [`Runtime::handle`], which runs one request through the app, phase by phase (see
//! `Runtime::run_request`): the app's call and its body's writing are `call`'s, the objects
//! reused from one request to the next `reuse`'s, what the request hooks receive `hooks`'.

pub mod app;
mod app_head;
mod call;
pub mod environ;
pub mod errors;
pub mod file_wrapper;
mod hooks;
mod in_hand;
pub mod input;
pub mod response;
mod reuse;
pub mod stream;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use pyo3::exceptions::PySystemExit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use tracing::{debug, error, warn};

use crate::http::body::BodyDecoder;
use crate::http::error::{error_page, ParseError};
use crate::http::request::RequestHead;
use crate::log::access::{AccessLog, AccessRecord};
use crate::transport::IoError;
use call::{borrow_when_free, Failure};
use environ::{ConnEnv, EnvironBuilder, EnvironError};
use file_wrapper::FileWrapper;
pub use in_hand::describe_current_request;
use in_hand::set_in_hand;
use input::{BodySource, WsgiInput};
use response::{RequestFacts, ResponseWriter, Sent, StartResponse};
use reuse::Spares;

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
    /// What the last request leaves for the next (see `reuse`).
    spares: Spares,
    /// `pre_request` or `post_request` is set (hooks are fixed before workers start):
    /// requests then build the `req` object the hooks take.
    request_hooks: bool,
    /// A hook receives the worker object: requests then count toward `worker.nr`.
    worker_hooks: bool,
    /// `header_map = "dangerous"`: `req.trailers` keeps names with an underscore (else
    /// they are dropped, as Gunicorn drops them).
    underscored_trailers: bool,
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
            spares: Spares::default(),
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

    /// One request, phase by phase. A phase that ends it early says what becomes of the
    /// connection.
    fn run_request(
        &mut self,
        py: Python<'_>,
        ex: &mut Exchange<'_>,
        head: &RequestHead,
        start: Instant,
    ) -> Outcome {
        if head.expect_continue {
            if let Err(outcome) = self.send_continue(py, ex) {
                return outcome;
            }
        }
        let Some(environ) = self.build_environ(py, ex, head, start) else {
            return Outcome::Close;
        };
        set_in_hand(Some((environ.clone().unbind(), start)));
        let Some((input, start_response)) = self.request_objects(py, ex, head, &environ) else {
            return Outcome::Close;
        };
        // Only with hooks (one test of a flag otherwise).
        let req = if self.worker_hooks {
            let body = input.as_any();
            hooks::pre_request(py, head, ex.conn, &environ, body, self.request_hooks)
        } else {
            None
        };
        let failure = call::call_app(
            py,
            self.app.bind(py),
            &environ,
            &start_response,
            self.sendfile,
            self.io_timeout,
        );

        // A thread the app started may still be inside read() or write(): wait for it.
        let Some((mut input_ref, mut sr, failure, body_error)) =
            self.settle(py, &input, &start_response, failure)
        else {
            return self.abandoned(head);
        };
        let (outcome, code) = answer(
            py,
            ex.conn,
            head,
            failure,
            body_error,
            &mut input_ref,
            &mut sr,
        );
        self.give_back(py, ex, &mut input_ref, req.as_ref());

        // From here on, what the app kept of this request refuses to act.
        input_ref.finished = true;
        sr.finished = true;
        self.spares.keep_input(&input);
        // The headers are copied only for the access log and post_request.
        let wants_headers = self.access_log.is_some()
            || (self.request_hooks && crate::python::hooks::is_set("post_request"));
        let mut digits = [0u8; 3];
        let sent = sr.sent(code, wants_headers, req.is_some(), &mut digits);
        self.spares.keep_app_head(&mut sr.app_head);
        drop(sr);
        drop(input_ref);
        self.log_access(py, head, ex.conn, &environ, &sent, start);
        if let Some(req) = &req {
            hooks::post_request(py, req, &environ, &sent);
        }
        outcome
    }

    /// The request's objects once no thread of the app uses them any more (None past
    /// `--timeout`), with what went wrong all told and the body's framing error, if any.
    #[allow(clippy::type_complexity)]
    fn settle<'py>(
        &self,
        py: Python<'py>,
        input: &Bound<'py, WsgiInput>,
        start_response: &Bound<'py, StartResponse>,
        failure: Option<Failure>,
    ) -> Option<(
        PyRefMut<'py, WsgiInput>,
        PyRefMut<'py, StartResponse>,
        Option<Failure>,
        Option<ParseError>,
    )> {
        let mut input_ref = borrow_when_free(py, input, self.io_timeout)?;
        let body_error = input_ref.error.take();
        let interrupted = input_ref.interrupted.take();
        let sr = borrow_when_free(py, start_response, self.io_timeout)?;
        let failure = what_failed(
            py,
            failure,
            interrupted,
            body_error.as_ref(),
            &input_ref,
            &sr,
        );
        Some((input_ref, sr, failure, body_error))
    }

    /// `100 Continue`, which the client waits for before it sends the body.
    fn send_continue(&self, py: Python<'_>, ex: &Exchange<'_>) -> Result<(), Outcome> {
        let mut slices = [std::io::IoSlice::new(b"HTTP/1.1 100 Continue\r\n\r\n")];
        match ex.io.write_all(&mut slices, self.io_timeout) {
            Ok(()) => Ok(()),
            // A stop signal (QUIT, ABRT) while the client was slow to take it.
            Err(IoError::Signal(e)) if e.is_instance_of::<PySystemExit>(py) => {
                Err(Outcome::Exit(crate::python::system_exit_code(py, &e)))
            }
            Err(_) => Err(Outcome::Close),
        }
    }

    /// The request's environ; None once a request it cannot be made for was answered (a
    /// 400, or a 500 for a configuration problem).
    fn build_environ<'py>(
        &mut self,
        py: Python<'py>,
        ex: &mut Exchange<'_>,
        head: &RequestHead,
        start: Instant,
    ) -> Option<Bound<'py, PyDict>> {
        match self.environ.build(py, head, ex.conn) {
            Ok(env) => Some(env),
            Err(EnvironError::BadRequest(msg)) => {
                warn!("Invalid request from ip={}: {msg}", ex.conn.remote_ip);
                self.send_error(py, ex, head, start, 400, "Bad Request", &msg);
                None
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
                None
            }
        }
    }

    /// The request's `wsgi.input` (reading the body from the connection's bytes) and
    /// `start_response`, in the environ: the last request's when nothing kept them (see
    /// `reuse`). None (the connection closes) on a Python error.
    fn request_objects<'py>(
        &mut self,
        py: Python<'py>,
        ex: &mut Exchange<'_>,
        head: &RequestHead,
        environ: &Bound<'py, PyDict>,
    ) -> Option<(Bound<'py, WsgiInput>, Bound<'py, StartResponse>)> {
        let facts = RequestFacts {
            version: head.version,
            is_head: head.method == "HEAD",
            method: common_method(&head.method),
            keep_alive: ex.may_keep_alive && head.keep_alive && !head.must_close,
        };
        let source = BodySource {
            io: ex.io.clone(),
            buf: std::mem::take(ex.buf),
            start: std::mem::take(&mut ex.head_len),
            decoder: BodyDecoder::new(&head.body, self.lenient),
            timeout: self.io_timeout,
        };
        let made = self.spares.input_for(py, source).and_then(|input| {
            environ.set_item(intern!(py, "wsgi.input"), &input)?;
            let writer = ResponseWriter::new(ex.io.clone(), facts, self.io_timeout);
            let (start_response, early_hints) = self.spares.start_response_for(py, writer)?;
            environ.set_item(intern!(py, "wsgi.early_hints"), &early_hints)?;
            self.spares
                .keep_start_response(&start_response, early_hints);
            Ok((input, start_response))
        });
        match made {
            Ok(pair) => Some(pair),
            Err(e) => {
                error!(
                    "Error handling request {} {}: {e}",
                    head.method, head.target
                );
                None
            }
        }
    }

    /// Gives the connection back its bytes (what follows the body: a pipelined request),
    /// and with hooks, `req.trailers` their value.
    fn give_back(
        &self,
        py: Python<'_>,
        ex: &mut Exchange<'_>,
        input: &mut WsgiInput,
        req: Option<&Bound<'_, PyAny>>,
    ) {
        if let Some(req) = req {
            self.give_back_with_trailers(py, input, ex, req);
        } else if let Some(source) = input.take_source() {
            *ex.buf = source.into_buf();
        }
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
            if let Err(e) = hooks::set_trailers(py, req, &trailers, self.underscored_trailers) {
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
            .write_all(&mut [std::io::IoSlice::new(&page)], self.io_timeout);
        let environ = PyDict::new(py);
        let sent = Sent {
            status: Cow::Owned(code.to_string()),
            code,
            body_bytes: msg.len() as u64,
            headers: Vec::new(),
            announced_length: None,
        };
        self.log_access(py, head, ex.conn, &environ, &sent, start);
    }

    /// A response the server made itself (a static file): counted and logged as the app's
    /// are (StatsD, metrics, the access log; no environ). `headers` are made only for an
    /// access log.
    #[allow(clippy::too_many_arguments)]
    pub fn log_response(
        &mut self,
        head: &RequestHead,
        conn: &ConnEnv,
        code: u16,
        body_bytes: u64,
        headers: impl FnOnce() -> Vec<(String, String)>,
        start: Instant,
    ) {
        let mut digits = [0u8; 3];
        let status = response::three_digits(code, &mut digits);
        crate::log::statsd::request(status, start);
        crate::log::meters::response(code, start);
        if self.access_log.is_none() {
            return;
        }
        let sent = Sent {
            status: Cow::Owned(status.to_owned()),
            code,
            body_bytes,
            headers: headers(),
            announced_length: None,
        };
        // The threaded worker's loop takes the GIL here only for an access log.
        Python::attach(|py| self.write_access(py, head, conn, &PyDict::new(py), &sent, start));
    }

    /// Records the request in StatsD and the access log.
    fn log_access(
        &mut self,
        py: Python<'_>,
        head: &RequestHead,
        conn: &ConnEnv,
        environ: &Bound<'_, PyDict>,
        sent: &Sent<'_>,
        start: Instant,
    ) {
        crate::log::statsd::request(&sent.status, start);
        crate::log::meters::response(sent.code, start);
        self.write_access(py, head, conn, environ, sent, start);
    }

    /// Writes the request's access-log line, if there is an access log.
    fn write_access(
        &mut self,
        py: Python<'_>,
        head: &RequestHead,
        conn: &ConnEnv,
        environ: &Bound<'_, PyDict>,
        sent: &Sent<'_>,
        start: Instant,
    ) {
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
            status: &sent.status,
            body_bytes: sent.body_bytes,
            request_headers: &head.headers,
            response_headers: &sent.headers,
            duration: start.elapsed(),
            environ: &lookup,
        };
        log.write(py, &record);
    }
}

/// What went wrong, all told: the app's failure; or a stop signal raised into a read the
/// app made (the worker stops even if the app caught the SystemExit); or the client gone
/// (the app saw the exception from write() or read(), and a body cut short once the
/// response has begun cannot be answered with a 400).
fn what_failed(
    py: Python<'_>,
    mut failure: Option<Failure>,
    interrupted: Option<PyErr>,
    body_error: Option<&ParseError>,
    input: &WsgiInput,
    sr: &StartResponse,
) -> Option<Failure> {
    if let Some(e) = interrupted {
        if e.is_instance_of::<PySystemExit>(py) && !matches!(failure, Some(Failure::Exit(_))) {
            failure = Some(Failure::Exit(e));
        }
    }
    let cut_short_late = sr.writer.headers_sent() && body_error == Some(&ParseError::BodyTruncated);
    if sr.io_failed.is_some() || input.broken || cut_short_late {
        failure = Some(Failure::Io);
    }
    failure
}

/// Ends the exchange: after a good response, drains the body's unread rest to keep the
/// connection; after a failure, logs it and sends an error page if nothing went out yet.
/// What becomes of the connection, and the status the client got.
fn answer(
    py: Python<'_>,
    conn: &ConnEnv,
    head: &RequestHead,
    failure: Option<Failure>,
    body_error: Option<ParseError>,
    input: &mut WsgiInput,
    sr: &mut StartResponse,
) -> (Outcome, u16) {
    let headers_sent = sr.writer.headers_sent();
    let mut outcome = Outcome::Close;
    let mut status_code = sr.writer.status_code;
    match failure {
        None => {
            // A connection that closes anyway needs no drain: the loop's lingering
            // close discards what is left.
            if sr.writer.keep_alive() && input.drain_available(py, MAX_DRAIN_BYTES) {
                outcome = Outcome::KeepAlive;
            }
        }
        Some(_) if body_error.is_some() && !headers_sent => {
            if let Some(e) = body_error {
                if e == ParseError::BodyTruncated {
                    // Most often an upload the user cancelled: not worth a warning.
                    debug!("Ignored premature client disconnection. {e}");
                } else {
                    warn!("Invalid request from ip={}: {e}", conn.remote_ip);
                }
                let _ = sr.writer.send_raw(&e.to_error_page());
                status_code = e.status();
            }
        }
        Some(Failure::Exit(e)) => {
            if !headers_sent {
                error!("Error handling request {} {}", head.method, head.target);
                crate::log::error_log_raw(&crate::python::format_exception(py, &e));
                let _ = sr
                    .writer
                    .send_raw(&error_page(500, "Internal Server Error", ""));
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
                    .send_raw(&error_page(500, "Internal Server Error", ""));
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
                    .send_raw(&error_page(500, "Internal Server Error", ""));
                status_code = 500;
            }
        }
        Some(Failure::Io) => {
            debug!("Ignored premature client disconnection.");
        }
    }
    (outcome, status_code)
}

/// The method as a static string for the few places that name it (others become `-`).
fn common_method(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("-")
}
