//! The `worker` object a worker's hooks receive (Gunicorn's `Worker`, duck-typed): plain
//! attributes (`pid`, `ppid`, `age`, `log`, `cfg`, `booted`, `aborted`, `wsgi`, `app`,
//! `sockets`, `tmp`, and whatever a hook adds) plus the ones that must follow the worker's
//! real state: `alive` reads and writes the worker's stop flag (a hook setting it False
//! recycles the worker, Gunicorn's recipe for one that grew too big), `nr` counts its
//! requests, and `notify()`/`tmp.notify()` beat its heartbeat.

use std::os::fd::{AsRawFd, IntoRawFd};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::heartbeat::Heartbeat;
use super::seed::WorkerSeed;

/// Gunicorn's `Worker` as hooks see it; other attributes live in its `__dict__`.
#[pyclass(dict, module = "_rgunicorn", name = "Worker")]
pub struct WorkerObject {
    pid: i32,
    heartbeat: Heartbeat,
    slot: usize,
}

#[pymethods]
impl WorkerObject {
    /// True while the worker serves; False once it stops (TERM, QUIT, recycling).
    #[getter]
    fn alive(&self) -> bool {
        super::signals::is_alive()
    }

    /// `worker.alive = False` (any false value): the worker finishes what it has and is
    /// replaced, as `--max-requests` does. A stop cannot be undone: True changes nothing.
    #[setter]
    fn set_alive(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !value.is_truthy()? && super::signals::is_alive() {
            super::signals::retire(super::heartbeat::Leaving::Other);
        }
        Ok(())
    }

    /// Requests this worker has handled (the current one included once the app runs).
    #[getter]
    fn nr(&self) -> u64 {
        crate::python::hooks::requests_handled()
    }

    #[setter]
    fn set_nr(&self, value: u64) {
        crate::python::hooks::set_requests_handled(value);
    }

    /// Tells the master the worker is alive (its `--timeout`), as Gunicorn's `notify()`.
    fn notify(&self) {
        self.heartbeat.beat(self.slot);
    }

    fn __str__(&self) -> String {
        format!("<Worker {}>", self.pid)
    }
}

/// `worker.tmp`: Gunicorn's `WorkerTmp` over rgunicorn's heartbeat, which lives in shared
/// memory rather than in a file: `notify()` beats it and `last_update()` reads it (seconds
/// on the monotonic clock, as the file's mtime is in Gunicorn); there is no descriptor.
#[pyclass(module = "_rgunicorn", name = "WorkerTmp", frozen)]
pub struct WorkerTmp {
    heartbeat: Heartbeat,
    slot: usize,
}

#[pymethods]
impl WorkerTmp {
    fn notify(&self) {
        self.heartbeat.beat(self.slot);
    }

    fn last_update(&self) -> f64 {
        // Milliseconds to seconds; exact enough for a timeout check.
        #[allow(clippy::cast_precision_loss)]
        let ms = self.heartbeat.last(self.slot) as f64;
        ms / 1000.0
    }

    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        let unsupported = py.import("io")?.getattr("UnsupportedOperation")?;
        Err(PyErr::from_value(unsupported.call1((
            "rgunicorn's heartbeat is in shared memory, not a file",
        ))?))
    }

    fn close(&self) {}
}

/// Builds this worker's `worker` object (once, at boot).
///
/// # Errors
/// A Python error while building its attributes.
pub fn build<'py>(py: Python<'py>, seed: &WorkerSeed<'_>) -> PyResult<Bound<'py, PyAny>> {
    let pid = nix::unistd::getpid().as_raw();
    let obj = Bound::new(
        py,
        WorkerObject {
            pid,
            heartbeat: seed.heartbeat,
            slot: seed.slot,
        },
    )?;
    let tmp = Bound::new(
        py,
        WorkerTmp {
            heartbeat: seed.heartbeat,
            slot: seed.slot,
        },
    )?;
    let none = py.None().into_bound(py);
    let attrs = PyDict::new(py);
    attrs.set_item("pid", pid)?;
    attrs.set_item("ppid", seed.master_pid.as_raw())?;
    attrs.set_item("age", seed.age)?;
    attrs.set_item("log", crate::python::hooks::logger(py)?)?;
    attrs.set_item(
        "cfg",
        crate::config::hooks::cfg_object(py, &seed.config.values)?,
    )?;
    attrs.set_item("booted", false)?;
    attrs.set_item("aborted", false)?;
    attrs.set_item("tmp", tmp)?;
    attrs.set_item("wsgi", &none)?;
    attrs.set_item("app", &none)?;
    // Duplicates are made only when a hook can see them (they hold descriptors).
    let sockets = if crate::python::hooks::worker_object_used() {
        // Out of descriptors, say: the hooks still get their worker, without sockets.
        listening_sockets(py, seed).unwrap_or_else(|e| {
            crate::python::log_exception(py, "Exception in worker process", &e);
            PyList::empty(py)
        })
    } else {
        PyList::empty(py)
    };
    attrs.set_item("sockets", sockets)?;
    let dict = obj.getattr("__dict__")?;
    dict.call_method1("update", (attrs,))?;
    Ok(obj.into_any())
}

/// Stopping on TERM: `worker.sockets` let go of their duplicates along with the worker's
/// own listeners, so that they do not keep a listening socket open (and new connections
/// queued for nobody) once every process has closed it (see `EventLoop::wind_down`).
pub fn close_sockets(py: Python<'_>) {
    let Some(worker) = crate::python::hooks::worker_object(py) else {
        return;
    };
    let Ok(sockets) = worker.getattr("sockets") else {
        return;
    };
    if let Ok(iter) = sockets.try_iter() {
        for sock in iter.flatten() {
            let _ = sock.call_method0("close");
        }
    }
}

/// `worker.sockets`: a `socket.socket` per listener, each on a duplicate descriptor, so
/// closing or collecting one never closes the worker's own.
fn listening_sockets<'py>(py: Python<'py>, seed: &WorkerSeed<'_>) -> PyResult<Bound<'py, PyList>> {
    let socket = py.import("socket")?.getattr("socket")?;
    let list = PyList::empty(py);
    for listener in seed.listeners {
        let dup = listener
            .fd
            .try_clone()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("fileno", dup.as_raw_fd())?;
        let sock = socket.call((), Some(&kwargs))?;
        // The socket object owns the duplicate from here on.
        let _ = dup.into_raw_fd();
        list.append(sock)?;
    }
    Ok(list)
}
