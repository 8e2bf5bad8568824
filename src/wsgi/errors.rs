//! `wsgi.errors`: a text stream whose writes land in the error log, unformatted.

use pyo3::prelude::*;

/// `environ['wsgi.errors']`.
#[pyclass(module = "_rgunicorn", name = "ErrorStream")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, text: &str) -> usize {
        crate::log::error_log_raw(text);
        text.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            crate::log::error_log_raw(&line?.extract::<String>()?);
        }
        Ok(())
    }

    fn flush(&self) {}
}
