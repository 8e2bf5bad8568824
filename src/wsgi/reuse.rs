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
