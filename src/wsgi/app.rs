//! Loading the app: `module`, `module:name`, `module:factory()` or
//! `module:factory('x', k=1)` (literal arguments only), with Gunicorn's messages.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::error::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};

/// The app imported by the master with `--preload`; workers inherit it through fork.
static PRELOADED: std::sync::Mutex<Option<Py<PyAny>>> = std::sync::Mutex::new(None);

/// Keeps the master's preloaded app for the workers it forks.
pub fn set_preloaded(app: Py<PyAny>) {
    *PRELOADED.lock().unwrap_or_else(|p| p.into_inner()) = Some(app);
}

/// The app a worker serves: the preloaded one, or a fresh import of `spec`.
///
/// # Errors
/// See [`load`].
pub fn load_or_preloaded(py: Python<'_>, spec: &str) -> Result<Py<PyAny>, AppError> {
    if let Some(app) = PRELOADED.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        return Ok(app.clone_ref(py));
    }
    load(py, spec)
}

/// Under `--reload`, an app that failed to import is replaced by one that answers every
/// request with a plain-text 500 carrying `text` (the traceback), as Gunicorn does for a
/// SyntaxError, until the file is fixed and the worker reloads.
///
/// # Errors
/// A Python error while defining it.
pub fn error_app(py: Python<'_>, text: &str) -> PyResult<Py<PyAny>> {
    let globals = pyo3::types::PyDict::new(py);
    globals.set_item("_body", text.as_bytes())?;
    py.run(
        c"def app(environ, start_response):
    start_response('500 Internal Server Error', [('Content-Type', 'text/plain'), ('Content-Length', str(len(_body)))])
    return [_body]
",
        Some(&globals),
        None,
    )?;
    Ok(globals
        .get_item("app")?
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("error app missing"))?
        .unbind())
}

/// When the app's import failed for a missing module and no virtualenv is active (no
/// `VIRTUAL_ENV`, `sys.prefix == sys.base_prefix`), the likely cause, in one line: the
/// app's packages live in a virtualenv that was not activated.
pub fn forgotten_virtualenv_hint(py: Python<'_>, err: &PyErr) -> Option<String> {
    if !err.is_instance_of::<pyo3::exceptions::PyModuleNotFoundError>(py)
        || std::env::var_os("VIRTUAL_ENV").is_some()
    {
        return None;
    }
    let sys = py.import("sys").ok()?;
    let prefix: String = sys.getattr("prefix").ok()?.extract().ok()?;
    let base: String = sys.getattr("base_prefix").ok()?.extract().ok()?;
    (prefix == base).then(|| {
        format!(
            "No virtualenv is active (VIRTUAL_ENV is not set; Python is {prefix}): rgunicorn \
             imports the app's packages from its interpreter's site-packages, or from the \
             virtualenv that is active when it starts; activate the app's virtualenv (or set \
             VIRTUAL_ENV) first"
        )
    })
}

/// The files named in an import failure's traceback (and a SyntaxError's own file), so
/// `--reload` can watch them although the broken module never made it into sys.modules.
pub fn failure_files(py: Python<'_>, err: &AppError) -> Vec<String> {
    let AppError::Import(e) = err else {
        return Vec::new();
    };
    let mut files = Vec::new();
    if let Ok(name) = e
        .value(py)
        .getattr("filename")
        .and_then(|f| f.extract::<String>())
    {
        files.push(name);
    }
    let frames = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("extract_tb", (e.traceback(py),)))
        .and_then(|frames| {
            frames
                .try_iter()
                .map(|it| it.filter_map(Result::ok).collect::<Vec<_>>())
        });
    for frame in frames.unwrap_or_default() {
        if let Ok(name) = frame
            .getattr("filename")
            .and_then(|f| f.extract::<String>())
        {
            files.push(name);
        }
    }
    files
}

/// Why the app could not be loaded.
pub enum AppError {
    /// An exception while importing the module (including ModuleNotFoundError): exit 3.
    Import(PyErr),
    /// The module imported but the app is not there or not usable: exit 4.
    Load(String),
}

impl AppError {
    /// Gunicorn's exit status for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Import(_) => WORKER_BOOT_ERROR,
            AppError::Load(_) => APP_LOAD_ERROR,
        }
    }

    /// The one-line message (for an import error, the exception's own text).
    pub fn message(&self, py: Python<'_>) -> String {
        match self {
            AppError::Import(e) => e.value(py).to_string(),
            AppError::Load(msg) => msg.clone(),
        }
    }
}

/// Positional and keyword arguments of a `module:factory(...)` app spec.
type FactoryArgs<'py> = (Bound<'py, PyTuple>, Bound<'py, PyDict>);

fn py_repr(text: &str) -> String {
    crate::config::setting::Value::Str(text.to_string()).to_string()
}

/// Imports the module and finds (or builds) the WSGI callable.
///
/// # Errors
/// See [`AppError`]; the messages are Gunicorn's.
pub fn load(py: Python<'_>, spec: &str) -> Result<Py<PyAny>, AppError> {
    let (module_name, expr) = match spec.split_once(':') {
        Some((m, e)) => (m, e),
        None => (spec, "application"),
    };
    let module = match py.import(module_name) {
        Ok(m) => m,
        Err(e) => {
            if e.is_instance_of::<pyo3::exceptions::PyImportError>(py)
                && module_name.ends_with(".py")
                && std::path::Path::new(module_name).exists()
            {
                let stem = module_name.trim_end_matches(".py");
                return Err(AppError::Import(pyo3::exceptions::PyImportError::new_err(
                    format!("Failed to find application, did you mean '{stem}:{expr}'?"),
                )));
            }
            return Err(AppError::Import(e));
        }
    };
    let unparsable = || {
        AppError::Load(format!(
            "Failed to parse {} as an attribute name or function call.",
            py_repr(expr)
        ))
    };
    // Parse the attribute part with Python's own grammar, as Gunicorn does.
    let ast = py.import("ast").map_err(AppError::Import)?;
    let parsed = ast
        .call_method1("parse", (expr, "<string>", "eval"))
        .map_err(|_| unparsable())?;
    let body = parsed.getattr("body").map_err(AppError::Import)?;
    let node_type = body
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    let (name, call): (String, Option<FactoryArgs<'_>>) = match node_type.as_str() {
        "Name" => (
            body.getattr("id")
                .and_then(|v| v.extract())
                .map_err(|_| unparsable())?,
            None,
        ),
        "Call" => {
            let func = body.getattr("func").map_err(|_| unparsable())?;
            let is_name = func
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
                == "Name";
            if !is_name {
                return Err(AppError::Load(format!(
                    "Function reference must be a simple name: {}",
                    py_repr(expr)
                )));
            }
            let name: String = func
                .getattr("id")
                .and_then(|v| v.extract())
                .map_err(|_| unparsable())?;
            let bad_args = || {
                AppError::Load(format!(
                    "Failed to parse arguments as literal values: {}",
                    py_repr(expr)
                ))
            };
            let literal_eval = ast.getattr("literal_eval").map_err(AppError::Import)?;
            let args = PyList::empty(py);
            for arg in body
                .getattr("args")
                .and_then(|a| a.try_iter())
                .map_err(|_| bad_args())?
            {
                let arg = arg.map_err(|_| bad_args())?;
                args.append(literal_eval.call1((arg,)).map_err(|_| bad_args())?)
                    .map_err(AppError::Import)?;
            }
            let kwargs = PyDict::new(py);
            for kw in body
                .getattr("keywords")
                .and_then(|a| a.try_iter())
                .map_err(|_| bad_args())?
            {
                let kw = kw.map_err(|_| bad_args())?;
                let key = kw.getattr("arg").map_err(|_| bad_args())?;
                let value = literal_eval
                    .call1((kw.getattr("value").map_err(|_| bad_args())?,))
                    .map_err(|_| bad_args())?;
                kwargs.set_item(key, value).map_err(AppError::Import)?;
            }
            (name, Some((args.to_tuple(), kwargs)))
        }
        _ => return Err(unparsable()),
    };
    let attr = module.getattr(name.as_str()).map_err(|_| {
        AppError::Load(format!(
            "Failed to find attribute {} in {}.",
            py_repr(&name),
            py_repr(module_name)
        ))
    })?;
    let app = match call {
        None => attr,
        Some((args, kwargs)) => attr.call(args, Some(&kwargs)).map_err(|e| {
            if e.is_instance_of::<pyo3::exceptions::PyTypeError>(py) {
                AppError::Load(format!("Error in calling factory: {}", e.value(py)))
            } else {
                AppError::Import(e)
            }
        })?,
    };
    if app.is_none() {
        return Err(AppError::Load(format!(
            "Failed to find application object: {}",
            py_repr(expr)
        )));
    }
    if !app.is_callable() {
        return Err(AppError::Load(
            "Application object must be callable.".to_string(),
        ));
    }
    Ok(app.unbind())
}
