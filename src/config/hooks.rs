//! Server hooks as settings: which settings are hooks (Gunicorn's table, with the arities
//! each accepts), resolving a value to a callable, and the `cfg` object hooks receive. Calling
//! the hooks in force is `python::hooks`.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::setting::Value;
use crate::python::hooks;

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

/// The `cfg` object: every setting as an attribute (strings, numbers, lists, None).
pub fn cfg_object<'py>(
    py: Python<'py>,
    values: &BTreeMap<&'static str, Value>,
) -> PyResult<Bound<'py, PyAny>> {
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
    attrs.extend(hooks::installed(py));
    hooks::namespace(py, &attrs)
}
