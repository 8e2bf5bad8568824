//! Reusing a request's Python objects for the next request on the same worker thread.
//!
//! Making a `start_response` (with its bound `early_hints` and `write`) and a `wsgi.input`,
//! and freeing them, is a tenth of a small request's work. So the runtime keeps the last
//! request's, and the next request reuses them when nothing but the runtime refers to them
//! any more; else it makes new ones, and what the app kept stays finished (refusing to act,
//! see `response::request_over`).
//!
//! # The invariant: whom each reference count stands for
//!
//! The check runs when the next request asks for its objects. By then the last request's
//! environ is gone (its last references, the runtime's and the in-hand record's, are
//! dropped at its end), and so is the hooks' `req` object, unless someone kept them. So,
//! when nothing outside the runtime holds them:
//!
//! - `wsgi.input` has **1** reference: [`Spares::input`]. The environ's `wsgi.input` entry
//!   and `req.body` went with them.
//! - `start_response` has **2 + 1 if `write` was made**:
//!   1. [`Spares::start_response`]'s own;
//!   2. the bound method `early_hints`, kept with it (its `__self__`);
//!   3. the bound method `write` that `start_response(...)` returns, made once and cached
//!      in the object itself (its `__self__`: a cycle the runtime owns; see
//!      `StartResponse::write_method`).
//! - `early_hints` has **1**: ours (the environ's `wsgi.early_hints` entry is gone).
//! - `write`, if made, has **1**: the cache in the object (the app's own variable is gone
//!   once the app returned).
//!
//! Anything the app (or a hook, a thread, a closure) kept adds to one of them: an environ
//! holds `wsgi.input` and `early_hints`, a kept `write` or `start_response` holds itself.
//! An object borrowed right now (a thread of the app inside one of its calls) is not
//! reused either. A `start_response` that someone kept drops its cached `write` when it
//! can (else the GC breaks that cycle).

use pyo3::intern;
use pyo3::prelude::*;

use super::app_head::AppHead;
use super::input::{BodySource, WsgiInput};
use super::response::{ResponseWriter, StartResponse};

/// What the last request leaves for the next one.
#[derive(Default)]
pub struct Spares {
    /// The status and header buffers the next request's `start_response` fills.
    app_head: AppHead,
    /// The last request's `start_response`, for the next request if nothing else kept it.
    start_response: Option<KeptStartResponse>,
    /// The last request's `wsgi.input`, likewise.
    input: Option<Py<WsgiInput>>,
}

/// A request's `start_response` and its bound `early_hints` (in the environ).
struct KeptStartResponse {
    start_response: Py<StartResponse>,
    early_hints: Py<PyAny>,
}

fn refcount(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: a Bound is a live object.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
}

impl KeptStartResponse {
    /// Whether only the runtime holds them (see the invariant above).
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

impl Spares {
    /// A `wsgi.input` reading `source`: the last request's when nothing else holds it (the
    /// app, its threads, a kept environ or hook object), else a new one.
    pub fn input_for<'py>(
        &mut self,
        py: Python<'py>,
        source: BodySource,
    ) -> PyResult<Bound<'py, WsgiInput>> {
        if let Some(kept) = self.input.take() {
            let input = kept.into_bound(py);
            // Ours only (see the invariant above).
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
    /// the last request's when nothing else holds it, else a new one. The caller gives
    /// them back with [`Spares::keep_start_response`] once `early_hints` is in the environ.
    pub fn start_response_for<'py>(
        &mut self,
        py: Python<'py>,
        writer: ResponseWriter,
    ) -> PyResult<(Bound<'py, StartResponse>, Bound<'py, PyAny>)> {
        let app_head = std::mem::take(&mut self.app_head);
        if let Some(kept) = self.start_response.take() {
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

    /// Keeps the request's `start_response` and `early_hints` for the next request.
    pub fn keep_start_response(
        &mut self,
        start_response: &Bound<'_, StartResponse>,
        early_hints: Bound<'_, PyAny>,
    ) {
        self.start_response = Some(KeptStartResponse {
            start_response: start_response.clone().unbind(),
            early_hints: early_hints.unbind(),
        });
    }

    /// Keeps the request's `wsgi.input` (finished) for the next request.
    pub fn keep_input(&mut self, input: &Bound<'_, WsgiInput>) {
        self.input = Some(input.clone().unbind());
    }

    /// Takes back the finished request's status and header buffers, emptied, for the next
    /// request (an app keeping its `start_response` finds it finished and empty).
    pub fn keep_app_head(&mut self, app_head: &mut AppHead) {
        self.app_head = std::mem::take(app_head);
        self.app_head.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyList};

    use super::super::input::{BodySource, WsgiInput};
    use super::super::response::{RequestFacts, ResponseWriter, StartResponse};
    use super::Spares;
    use crate::http::body::BodyDecoder;
    use crate::http::request::BodyKind;
    use crate::transport::testing::{pair, with_python};
    use crate::transport::Transport;

    fn writer(io: &Transport) -> ResponseWriter {
        let facts = RequestFacts {
            version: (1, 1),
            is_head: false,
            method: "GET",
            keep_alive: true,
        };
        ResponseWriter::new(io.clone(), facts, Duration::from_secs(1))
    }

    fn source(io: &Transport) -> BodySource {
        BodySource {
            io: io.clone(),
            buf: Vec::new(),
            start: 0,
            decoder: BodyDecoder::new(&BodyKind::Empty, Default::default()),
            timeout: Duration::from_secs(1),
        }
    }

    /// One request's objects, as the runtime makes, keeps and finishes them; `app` runs
    /// with them as the app would (the environ holds `wsgi.input` and `early_hints`).
    fn request<'py>(
        py: Python<'py>,
        spares: &mut Spares,
        io: &Transport,
        app: impl FnOnce(&Bound<'py, PyDict>, &Bound<'py, StartResponse>),
    ) -> (Bound<'py, WsgiInput>, Bound<'py, StartResponse>) {
        let environ = PyDict::new(py);
        let input = spares.input_for(py, source(io)).expect("an input");
        environ.set_item("wsgi.input", &input).expect("set");
        let (sr, early_hints) = spares.start_response_for(py, writer(io)).expect("made");
        environ
            .set_item("wsgi.early_hints", &early_hints)
            .expect("set");
        spares.keep_start_response(&sr, early_hints);
        app(&environ, &sr);
        let mut this = sr.borrow_mut();
        this.finished = true;
        spares.keep_app_head(&mut this.app_head);
        drop(this);
        input.borrow_mut().finished = true;
        spares.keep_input(&input);
        (input, sr)
    }

    /// Whether the next request gets `input` and `sr` again (the caller dropped its own
    /// references first).
    fn next_reuses(
        py: Python<'_>,
        spares: &mut Spares,
        io: &Transport,
        input: *mut pyo3::ffi::PyObject,
        sr: *mut pyo3::ffi::PyObject,
    ) -> (bool, bool) {
        let (next_input, next_sr) = request(py, spares, io, |_, _| {});
        (next_input.as_ptr() == input, next_sr.as_ptr() == sr)
    }

    fn call_start_response<'py>(sr: &Bound<'py, StartResponse>) -> Bound<'py, PyAny> {
        let headers = PyList::new(sr.py(), [("Content-Type", "text/plain")]).expect("a list");
        sr.call1(("200 OK", headers)).expect("start_response")
    }

    #[test]
    fn objects_nobody_kept_serve_the_next_request_ready_and_empty() {
        let (io, _client) = pair();
        with_python(|py| {
            let mut spares = Spares::default();
            let (input, sr) = request(py, &mut spares, &io, |_, sr| {
                // The bound write is made: a third reference to start_response, its own.
                drop(call_start_response(sr));
            });
            let ptrs = (input.as_ptr(), sr.as_ptr());
            drop((input, sr));
            let (next_input, next_sr) = request(py, &mut spares, &io, |_, sr| {
                let this = sr.borrow();
                assert!(!this.finished && this.io_failed.is_none(), "ready");
                assert_eq!(
                    this.app_head.status(),
                    None,
                    "no status of the last request"
                );
                assert_eq!(this.app_head.headers().count(), 0);
            });
            assert_eq!((next_input.as_ptr(), next_sr.as_ptr()), ptrs, "reused");
        });
    }

    #[test]
    fn a_kept_start_response_is_left_finished_and_lets_go_of_its_write() {
        let (io, _client) = pair();
        with_python(|py| {
            let mut spares = Spares::default();
            let (input, sr) = request(py, &mut spares, &io, |_, sr| {
                drop(call_start_response(sr));
            });
            let ptrs = (input.as_ptr(), sr.as_ptr());
            drop(input);
            // `sr` is kept (by the app, say).
            let (same_input, same_sr) = next_reuses(py, &mut spares, &io, ptrs.0, ptrs.1);
            assert_eq!((same_input, same_sr), (true, false));
            let this = sr.borrow();
            assert!(this.finished, "what the app kept refuses to act");
            assert!(this.write_method().is_none(), "the cycle is broken");
        });
    }

    #[test]
    fn a_kept_write_or_environ_or_input_means_new_objects() {
        let (io, _client) = pair();
        with_python(|py| {
            let mut spares = Spares::default();

            // The app kept write().
            let mut write = None;
            let (input, sr) = request(py, &mut spares, &io, |_, sr| {
                write = Some(call_start_response(sr));
            });
            let ptrs = (input.as_ptr(), sr.as_ptr());
            drop((input, sr));
            let reused = next_reuses(py, &mut spares, &io, ptrs.0, ptrs.1);
            assert_eq!(reused, (true, false), "write kept: a new start_response");
            drop(write);

            // The app kept the environ: it holds wsgi.input and early_hints.
            let mut environ = None;
            let (input, sr) = request(py, &mut spares, &io, |env, _| {
                environ = Some(env.clone());
            });
            let ptrs = (input.as_ptr(), sr.as_ptr());
            drop((input, sr));
            let reused = next_reuses(py, &mut spares, &io, ptrs.0, ptrs.1);
            assert_eq!(reused, (false, false), "environ kept: both new");
            drop(environ);

            // The app kept wsgi.input only.
            let (input, sr) = request(py, &mut spares, &io, |_, _| {});
            let ptrs = (input.as_ptr(), sr.as_ptr());
            drop(sr);
            let reused = next_reuses(py, &mut spares, &io, ptrs.0, ptrs.1);
            assert_eq!(reused, (false, true), "input kept: a new input");
            assert!(input.borrow().finished, "and the kept one stays finished");
        });
    }
}
