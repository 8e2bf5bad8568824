//! The embedded CPython: starting it (`interpreter`; installed with pip, the running one is
//! entered instead, see `process::extension`), forking with it alive (`fork`), the hooks
//! in force (`hooks`), and the small internal
//! module `_rgunicorn` through which Python code reaches our error log.

#[cfg(test)]
mod base_interpreter;
pub mod fork;
pub mod hooks;
pub mod interpreter;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

use crate::log::LogLevel;

/// Writes a Python logging record (already formatted, traceback included) to the error log.
#[pyfunction]
fn log(levelno: i64, message: &str) {
    let level = match levelno {
        n if n >= 50 => LogLevel::Critical,
        n if n >= 40 => LogLevel::Error,
        n if n >= 30 => LogLevel::Warning,
        n if n >= 20 => LogLevel::Info,
        _ => LogLevel::Debug,
    };
    crate::log::error_log(level, message, None);
}

/// Python side of the error-log bridge: `logging.getLogger("gunicorn.error")` writes to our
/// error log with our line format, at our level, as an app running under Gunicorn expects.
const LOGGING_BRIDGE: &std::ffi::CStr = c"
import logging, sys
import _rgunicorn

class ErrorLogHandler(logging.Handler):
    def emit(self, record):
        try:
            _rgunicorn.log(record.levelno, self.format(record))
        except Exception:
            self.handleError(record)

_logger = logging.getLogger('gunicorn.error')
_logger.handlers[:] = [ErrorLogHandler()]
_logger.setLevel(LEVEL)
_logger.propagate = False
";

/// Standard modules a worker uses after it has dropped privileges (`gunicorn.socket`,
/// timeout reports, tracebacks, hooks, the app spec, `--reload`). The master imports them
/// before any fork, so a worker whose user cannot read the standard library still works.
const WORKER_MODULES: [&str; 10] = [
    "socket",
    "threading",
    "traceback",
    "ast",
    "inspect",
    "types",
    "atexit",
    "glob",
    "signal",
    "logging",
];

/// Registers `_rgunicorn`, routes the `gunicorn.error` logger to our error log, and imports
/// what workers will need (`WORKER_MODULES`).
///
/// # Errors
/// A Python exception while setting up (it would mean a broken interpreter).
pub fn install_bridge(py: Python<'_>, level: LogLevel) -> PyResult<()> {
    for name in WORKER_MODULES {
        py.import(name)?;
    }
    let module = PyModule::new(py, "_rgunicorn")?;
    module.add_function(wrap_pyfunction!(log, &module)?)?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("_rgunicorn", &module)?;
    let globals = PyDict::new(py);
    globals.set_item("LEVEL", level as i64)?;
    py.run(LOGGING_BRIDGE, Some(&globals), None)
}

/// Sets variables in `os.environ` (which also updates the process environment).
///
/// # Errors
/// A Python error, as one line.
pub fn set_environ(py: Python<'_>, vars: &[(String, String)]) -> Result<(), String> {
    let set = || -> PyResult<()> {
        let environ = py.import("os")?.getattr("environ")?;
        for (key, value) in vars {
            environ.set_item(key, value)?;
        }
        Ok(())
    };
    set().map_err(|e| format!("can't set the environment: {e}"))
}

/// Formats a Python exception with its traceback, as `traceback.print_exception` would.
pub fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )
    });
    match formatted.and_then(|lines| {
        let mut out = String::new();
        for line in lines.try_iter()? {
            out.push_str(&line?.extract::<String>()?);
        }
        Ok(out)
    }) {
        Ok(text) => text,
        Err(_) => format!("{err}\n"),
    }
}

/// The exit status a `SystemExit` asks for (`None` → 0, a non-integer → 1).
pub fn system_exit_code(py: Python<'_>, err: &PyErr) -> i32 {
    let code = err.value(py).getattr("code").ok();
    match code {
        Some(c) if c.is_none() => 0,
        Some(c) => c.extract::<i32>().unwrap_or(1),
        None => 1,
    }
}

/// Logs `message` at ERROR with the exception's traceback after it.
pub fn log_exception(py: Python<'_>, message: &str, err: &PyErr) {
    crate::log::error_log(LogLevel::Error, message, Some(&format_exception(py, err)));
}

/// Runs `atexit` handlers and flushes Python's standard streams, as a normal interpreter
/// exit would, without `Py_Finalize` (which waits for non-daemon threads and can hang).
pub fn run_exit_handlers(py: Python<'_>) {
    if let Ok(atexit) = py.import("atexit") {
        let _ = atexit.call_method0("_run_exitfuncs");
    }
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}
