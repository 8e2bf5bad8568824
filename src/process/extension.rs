//! rgunicorn installed with pip: the same server, entered from a running interpreter.
//!
//! The binary starts CPython itself (`interpreter`); the wheel's console script and
//! `python -m rgunicorn` are Python code that calls [`run`] in the native module
//! `rgunicorn._native`, built from this same crate by maturin. From there on every line is
//! shared: the interpreter is simply there already (the venv's own, whatever its version,
//! shared libpython or not), so there is no virtualenv check and no libpython to find.

use std::path::PathBuf;

use pyo3::prelude::*;

use crate::master::reexec::StartState;

/// Runs rgunicorn as the binary would with `argv` (`argv[0]` included), and returns its exit
/// status. `exe` and `reexec_argv` are what a USR2 upgrade executes to start the new master
/// (the venv's `python` and the command line that started this one).
///
/// Called on the main thread with the GIL held, before any other thread exists.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<String>, exe: PathBuf, reexec_argv: Vec<String>) -> i32 {
    crate::unix::proctitle::init();
    let start = StartState::capture_with(exe, reexec_argv);
    // The server takes and releases the GIL as the binary's does: it must not sit on it while
    // it waits for signals or connections.
    py.detach(|| crate::process::run_with(&argv, start))
}

/// `rgunicorn._native`: the wheel's native module.
// Not checked without the GIL (request objects are reused by their reference count, and
// threaded workers call the app from several threads): a free-threaded CPython would turn
// the GIL back on for the whole server, so the build backend refuses one (src/pep517).
#[pymodule(gil_used = true)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add("__version__", crate::VERSION)?;
    Ok(())
}
