//! `GUNICORN_CMD_ARGS`: extra command-line arguments from the environment, split by
//! Python's own `shlex.split`, as Gunicorn splits them (a look-alike in Rust differed on
//! backslashes inside double quotes and on backslash-newline).

use pyo3::prelude::*;

/// Splits `text` with `shlex.split`.
///
/// # Errors
/// What `shlex` refuses (an unterminated quote, a trailing backslash), in its words.
pub fn shell_split(py: Python<'_>, text: &str) -> Result<Vec<String>, String> {
    let split = || -> PyResult<Vec<String>> {
        py.import("shlex")?
            .call_method1("split", (text,))?
            .extract()
    };
    split().map_err(|e| format!("GUNICORN_CMD_ARGS: {}", e.value(py)))
}
