//! Server hooks (`on_starting`, `post_fork`, `pre_request`, ...): Python callables from
//! the configuration file (or dotted strings naming one), checked for arity when loaded, and
//! called at Gunicorn's moments with duck-typed `server`, `worker`, `req` and `resp`
//! objects carrying the attributes Gunicorn's own objects have. An exception in a hook is
//! logged (`Exception in <hook> hook` with its traceback) and the server carries on.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

/// Every hook Gunicorn has and the numbers of arguments each accepts.
pub const HOOKS: &[(&str, &[usize])] = &[
    ("on_starting", &[1]),
    ("on_reload", &[1]),
    ("when_ready", &[1]),
    ("pre_fork", &[2]),
    ("post_fork", &[2]),
    ("post_worker_init", &[1]),
    ("worker_int", &[1]),
    ("worker_abort", &[1]),
    ("pre_exec", &[1]),
    ("pre_request", &[2]),
    ("post_request", &[2, 3, 4]),
    ("child_exit", &[2]),
    ("worker_exit", &[2]),
    ("nworkers_changed", &[3]),
    ("on_exit", &[1]),
];

/// Whether `name` is a server hook setting.
pub fn is_hook(name: &str) -> bool {
    HOOKS.iter().any(|(n, _)| *n == name)
}

thread_local! {
    /// This worker's `worker` object for hooks.
    static WORKER_OBJ: std::cell::RefCell<Option<Py<PyAny>>> = const { std::cell::RefCell::new(None) };
}

/// The hooks in force with their parameter counts (replaced as a whole on HUP).
static HOOKS_SET: Mutex<Vec<(&'static str, Py<PyAny>, usize)>> = Mutex::new(Vec::new());

/// Resolves a hook value: a callable, or a dotted string `pkg.mod.func`; checks its arity.
///
/// # Errors
/// Not callable, not importable, or the wrong number of parameters (Gunicorn's message).
pub fn resolve<'py>(
    py: Python<'py>,
    name: &str,
    value: &Bound<'py, PyAny>,
) -> Result<Bound<'py, PyAny>, String> {
    let arities = HOOKS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .unwrap_or(&[1]);
    let callable = if let Ok(path) = value.extract::<String>() {
        let (module, attr) = path
            .rsplit_once('.')
            .ok_or_else(|| format!("Value must be a callable or a dotted path: {path}"))?;
        py.import(module)
            .and_then(|m| m.getattr(attr))
            .map_err(|e| format!("Can not load {path}: {e}"))?
    } else {
        value.clone()
    };
    if !callable.is_callable() {
        return Err(format!(
            "Value is not callable: {}",
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ));
    }
    // inspect.signature counts parameters the way Gunicorn's arity check does.
    let count = py
        .import("inspect")
        .and_then(|i| i.call_method1("signature", (&callable,)))
        .and_then(|sig| sig.getattr("parameters"))
        .and_then(|p| p.len());
    if let Ok(count) = count {
        if !arities.contains(&count) {
            let expected = arities
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(format!("Value must have an arity of: {expected}"));
        }
    }
    Ok(callable)
}

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

/// The `cfg` object: every setting as an attribute (strings, numbers, lists, None).
pub fn cfg_object<'py>(
    py: Python<'py>,
    values: &std::collections::BTreeMap<&'static str, crate::config::setting::Value>,
) -> PyResult<Bound<'py, PyAny>> {
    use crate::config::setting::Value;
    let mut attrs = Vec::with_capacity(values.len());
    for (name, value) in values {
        let v: Bound<'py, PyAny> = match value {
            Value::None => py.None().into_bound(py),
            Value::Bool(b) => pyo3::types::PyBool::new(py, *b).to_owned().into_any(),
            Value::Int(n) => n.into_pyobject(py)?.into_any(),
            Value::Str(s) => s.into_pyobject(py)?.into_any(),
            Value::List(items) => PyList::new(py, items)?.into_any(),
            Value::Address(host, port) => (host, port).into_pyobject(py)?.into_any(),
            Value::Dict(pairs) => {
                let d = PyDict::new(py);
                for (k, v) in pairs {
                    d.set_item(k, v)?;
                }
                d.into_any()
            }
        };
        attrs.push((*name, v));
    }
    for (name, hook, _) in HOOKS_SET.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        attrs.push((*name, hook.bind(py).clone()));
    }
    namespace(py, &attrs)
}
