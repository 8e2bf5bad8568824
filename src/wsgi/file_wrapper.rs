//! `wsgi.file_wrapper`: wraps a file-like object; when the app returns one over a real file,
//! the worker sends it with `sendfile(2)` instead of iterating it through Python.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// `environ['wsgi.file_wrapper'](filelike, blksize=8192)`.
#[pyclass(module = "_rgunicorn", name = "FileWrapper")]
pub struct FileWrapper {
    #[pyo3(get)]
    pub filelike: Py<PyAny>,
    #[pyo3(get)]
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> FileWrapper {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let empty = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes().is_empty(),
            Err(_) => data.len().map(|n| n == 0).unwrap_or(true),
        };
        Ok((!empty).then(|| data.unbind()))
    }

    /// Closes the wrapped object, if it can be closed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let file = self.filelike.bind(py);
        if file.hasattr("close")? {
            file.call_method0("close")?;
        }
        Ok(())
    }
}

/// The file descriptor and current offset of a wrapped real file, if sendfile can serve it.
pub fn sendfile_source(py: Python<'_>, wrapper: &FileWrapper) -> Option<(i32, i64, u64)> {
    let file = wrapper.filelike.bind(py);
    let fd: i32 = file.call_method0("fileno").ok()?.extract().ok()?;
    let offset = nix::unistd::lseek(
        // SAFETY: the fd belongs to the app's open file object, alive while we hold it.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        0,
        nix::unistd::Whence::SeekCur,
    )
    .ok()?;
    let stat = nix::sys::stat::fstat(
        // SAFETY: as above.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )
    .ok()?;
    // Only regular files: sendfile from a pipe or socket is not the zero-copy path.
    if stat.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        return None;
    }
    let size = u64::try_from(stat.st_size).ok()?;
    let offset_u = u64::try_from(offset).ok()?;
    Some((fd, offset, size.saturating_sub(offset_u)))
}
