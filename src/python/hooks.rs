//! Server hooks in force (`on_starting`, `post_fork`, `pre_request`, ...): the Python
//! callables the configuration resolved and checked (`config::hooks`), installed here and
//! called at Gunicorn's moments with duck-typed `server`, `worker`, `req` and `resp`
//! objects carrying the attributes Gunicorn's own objects have. An exception in a hook is
//! logged (`Exception in <hook> hook` with its traceback) and the server carries on.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

thread_local! {
    /// This worker's `worker` object for hooks.
    static WORKER_OBJ: std::cell::RefCell<Option<Py<PyAny>>> = const { std::cell::RefCell::new(None) };
}

/// The hooks in force with their parameter counts (replaced as a whole on HUP).
static HOOKS_SET: Mutex<Vec<(&'static str, Py<PyAny>, usize)>> = Mutex::new(Vec::new());

/// Installs the hooks of a configuration (the previous set is dropped).
pub fn install(py: Python<'_>, hooks: &[(&'static str, std::sync::Arc<Py<PyAny>>)]) {
    let inspect = py.import("inspect").ok();
    let set = hooks
        .iter()
        .map(|(name, hook)| {
            let arity = inspect
                .as_ref()
                .and_then(|i| i.call_method1("signature", (hook.bind(py),)).ok())
                .and_then(|s| s.getattr("parameters").ok())
                .and_then(|p| p.len().ok())
                .unwrap_or(1);
            (*name, hook.clone_ref(py), arity)
        })
        .collect();
    *HOOKS_SET.lock().unwrap_or_else(|p| p.into_inner()) = set;
}

/// The hook `name` and its parameter count, if the configuration set one.
pub fn get(py: Python<'_>, name: &str) -> Option<(Py<PyAny>, usize)> {
    HOOKS_SET
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, h, a)| (h.clone_ref(py), *a))
}

/// The hooks that receive this worker's `worker` object (and may keep it): while none is
/// set, nothing can see `worker.nr`, so requests need not count it.
const WORKER_HOOKS: [&str; 7] = [
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_request",
    "post_request",
    "worker_exit",
];

/// Whether a hook that receives the worker object is set.
pub fn worker_object_used() -> bool {
    WORKER_HOOKS.iter().any(|name| is_set(name))
}

/// Requests this worker has handled so far: Gunicorn's `worker.nr`.
static REQUESTS_HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a request for `worker.nr` (at Gunicorn's moment: after `pre_request`, before the
/// app runs).
pub fn count_request() {
    REQUESTS_HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// `worker.nr`.
pub fn requests_handled() -> u64 {
    REQUESTS_HANDLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A hook assigned `worker.nr`; counting goes on from there, as in Gunicorn.
pub fn set_requests_handled(n: u64) {
    REQUESTS_HANDLED.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a hook is set (lets hot paths skip building objects for it).
pub fn is_set(name: &str) -> bool {
    HOOKS_SET
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|(n, _, _)| *n == name)
}

/// Calls hook `name` with as many of `args` as it takes (post_request accepts 2 to 4), if
/// it is set; an exception is logged, never raised.
pub fn call(py: Python<'_>, name: &str, args: &[Bound<'_, PyAny>]) {
    let Some((hook, arity)) = get(py, name) else {
        return;
    };
    let args = match PyTuple::new(py, &args[..arity.min(args.len())]) {
        Ok(t) => t,
        Err(_) => return,
    };
    if let Err(e) = hook.bind(py).call1(args) {
        super::log_exception(py, &format!("Exception in {name} hook"), &e);
    }
}

/// Records this worker's `worker` object (built once at boot) for the hooks that get it.
pub fn set_worker_object(worker: Py<PyAny>) {
    WORKER_OBJ.with(|w| *w.borrow_mut() = Some(worker));
}

/// The `worker` object hooks receive, if this process is a worker.
pub fn worker_object(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    WORKER_OBJ.with(|w| w.borrow().as_ref().map(|o| o.bind(py).clone()))
}

/// Calls a worker-side hook (`pre_request`, `worker_int`, ...) with `worker` first, then
/// `rest`; nothing outside a worker or when the hook is not set.
pub fn call_worker_hook(py: Python<'_>, name: &str, rest: &[Bound<'_, PyAny>]) {
    if !is_set(name) {
        return;
    }
    let Some(worker) = worker_object(py) else {
        return;
    };
    let mut args = vec![worker];
    args.extend(rest.iter().cloned());
    call(py, name, &args);
}

/// A `types.SimpleNamespace` with the given attributes: the duck-typed objects hooks get.
pub fn namespace<'py>(
    py: Python<'py>,
    attrs: &[(&str, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyAny>> {
    let kwargs = PyDict::new(py);
    for (k, v) in attrs {
        kwargs.set_item(*k, v)?;
    }
    py.import("types")?
        .getattr("SimpleNamespace")?
        .call((), Some(&kwargs))
}

/// `logging.getLogger("gunicorn.error")`, what Gunicorn's `server.log`/`worker.log` behave like.
pub fn logger(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("logging")?
        .call_method1("getLogger", ("gunicorn.error",))
}

/// The hooks in force, by setting name (the `cfg` object shows them as attributes).
pub fn installed(py: Python<'_>) -> Vec<(&'static str, Bound<'_, PyAny>)> {
    HOOKS_SET
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(name, hook, _)| (*name, hook.bind(py).clone()))
        .collect()
}
