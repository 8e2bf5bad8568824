//! Calling the app and writing what it returns: the iterable walked (lists and tuples
//! without an iterator, a generator's chunks coalesced, see `stream`), a wrapped real file
//! sent with sendfile(2), `close()` called once whatever happened.

use std::time::{Duration, Instant};

use pyo3::exceptions::{PySystemExit, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use super::file_wrapper::{self, FileWrapper};
use super::response::{SendError, StartResponse};
use super::stream;
use crate::transport::IoError;

/// How a request went wrong.
pub enum Failure {
    /// The app (or its iterable) raised.
    App(PyErr),
    /// SystemExit from a signal handler (or the app): exit the worker after answering.
    Exit(PyErr),
    /// The app's status, headers or body type are invalid.
    Invalid(String),
    /// The client went away or stalled.
    Io,
}

pub fn classify(py: Python<'_>, e: PyErr) -> Failure {
    if e.is_instance_of::<PySystemExit>(py) {
        Failure::Exit(e)
    } else {
        Failure::App(e)
    }
}

fn send_failure(py: Python<'_>, e: SendError) -> Failure {
    match e {
        SendError::App(msg) => Failure::Invalid(msg),
        SendError::Io(IoError::Signal(e)) => classify(py, e),
        SendError::Io(_) => Failure::Io,
    }
}

/// Calls `app(environ, start_response)` and writes the response it returns; None if all
/// went well. `timeout` bounds each wait for the client (or for a thread of the app using
/// `start_response`).
pub fn call_app(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    environ: &Bound<'_, PyDict>,
    start_response: &Bound<'_, StartResponse>,
    sendfile: bool,
    timeout: Duration,
) -> Option<Failure> {
    match app.call1((environ, start_response)) {
        Ok(iterable) => {
            let mut failure = write_body(py, &iterable, start_response, sendfile, timeout).err();
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
    }
}

/// Iterates the app's response and writes it; sendfile for a wrapped real file.
fn write_body(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
    sendfile: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    if sendfile {
        if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
            if let Ok(wrapper) = wrapper.try_borrow() {
                if let Some(done) = try_sendfile(py, &wrapper, sr, timeout) {
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
        borrow_when_free(py, sr, timeout)
            .ok_or(Failure::Io)?
            .send_body(bytes.as_bytes())
            .map_err(|e| send_failure(py, e))
    };
    // Lists and tuples (the common `return [body]`) are walked without an iterator
    // object; when they hold several chunks, these go out together (nothing runs between
    // them).
    let walked = if let Ok(list) = iterable.cast::<PyList>() {
        if list.len() > 1 {
            writer(py, sr, timeout)?.writer.coalesce();
        }
        list.iter().try_for_each(send)
    } else if let Ok(tuple) = iterable.cast::<PyTuple>() {
        if tuple.len() > 1 {
            writer(py, sr, timeout)?.writer.coalesce();
        }
        tuple.iter().try_for_each(send)
    } else {
        stream_body(py, iterable, sr, &send, timeout)
    };
    let finished = walked.and_then(|()| {
        writer(py, sr, timeout)?
            .finish_body()
            .map_err(|e| send_failure(py, e))
    });
    if finished.is_err() {
        // What was collected before the failure still reaches the client.
        if let Some(mut sr) = borrow_when_free(py, sr, timeout) {
            let _ = sr.writer.flush_queued();
        }
    }
    finished
}

/// The start_response object, once no other thread uses it.
fn writer<'py>(
    py: Python<'py>,
    sr: &'py Bound<'py, StartResponse>,
    timeout: Duration,
) -> Result<PyRefMut<'py, StartResponse>, Failure> {
    borrow_when_free(py, sr, timeout).ok_or(Failure::Io)
}

/// Walks an app's iterator (a generator, typically). The first chunk goes out at once;
/// later ones are coalesced while the app is fast, and the flusher sends them when it
/// stays inside `next()` (see `wsgi::stream`).
fn stream_body(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
    send: &dyn Fn(Bound<'_, PyAny>) -> Result<(), Failure>,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut guard: Option<stream::StreamGuard> = None;
    let mut first = true;
    for item in iterable.try_iter().map_err(|e| classify(py, e))? {
        if let Some(guard) = &guard {
            guard.app_returned();
        }
        send(item.map_err(|e| classify(py, e))?)?;
        let mut sr = writer(py, sr, timeout)?;
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
    py: Python<'_>,
    wrapper: &FileWrapper,
    sr: &Bound<'_, StartResponse>,
    timeout: Duration,
) -> Option<Result<(), Failure>> {
    let Some(mut sr) = borrow_when_free(py, sr, timeout) else {
        return Some(Err(Failure::Io));
    };
    if !sr.writer.can_sendfile() {
        return None;
    }
    let (file_fd, offset, available) = file_wrapper::sendfile_source(py, wrapper)?;
    let result = (|| {
        sr.send_body(b"")?;
        let count = sr.writer.body_allowance(available);
        if count > 0 {
            sr.writer.send_file(file_fd, offset, count)?;
        }
        sr.finish_body()
    })();
    Some(result.map_err(|e| send_failure(py, e)))
}

/// Borrows one of a request's objects (`wsgi.input`, `start_response`), which the app may
/// be using from a thread of its own: waits, with the GIL released so that thread can
/// finish its call, for up to `timeout`.
pub fn borrow_when_free<'py, T>(
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
