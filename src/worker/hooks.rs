//! The duck-typed `server` and `worker` objects Gunicorn's hooks receive, built for the
//! master's hooks (`on_starting`, `pre_fork`, ...) and for a worker's own (its `server` is
//! the arbiter as the worker saw it when forked).

use nix::unistd::Pid;
use pyo3::Python;

use crate::config::Config;

/// The `server` object hooks receive (Gunicorn's Arbiter, duck-typed): `log`, `cfg`,
/// `pid`, `WORKERS` (pid -> worker), `num_workers`, `LISTENERS`, `app`, `proc_name`.
pub fn server_namespace<'py>(
    py: Python<'py>,
    config: &Config,
    pid: Pid,
    workers: &[(Pid, u64, bool)],
    listeners: &[String],
    num_workers: usize,
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
    use crate::config::hooks::cfg_object;
    use crate::python::hooks::{logger, namespace};
    use pyo3::types::PyDictMethods;
    use pyo3::IntoPyObject;
    let log = logger(py)?;
    let cfg = cfg_object(py, &config.values)?;
    let table = pyo3::types::PyDict::new(py);
    for &(wpid, age, aborted) in workers {
        let w = worker_namespace(py, config, Some(wpid), pid, age, aborted)?;
        table.set_item(wpid.as_raw(), w)?;
    }
    let num = num_workers.into_pyobject(py)?.into_any();
    namespace(
        py,
        &[
            ("log", log),
            ("cfg", cfg),
            ("pid", pid.as_raw().into_pyobject(py)?.into_any()),
            ("WORKERS", table.into_any()),
            ("num_workers", num),
            (
                "LISTENERS",
                pyo3::types::PyList::new(py, listeners)?.into_any(),
            ),
            ("app", py.None().into_bound(py)),
            (
                "proc_name",
                config.proc_name.clone().into_pyobject(py)?.into_any(),
            ),
        ],
    )
}

/// The `worker` object hooks receive (Gunicorn's Worker, duck-typed).
pub fn worker_namespace<'py>(
    py: Python<'py>,
    config: &Config,
    pid: Option<Pid>,
    ppid: Pid,
    age: u64,
    aborted: bool,
) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
    use crate::config::hooks::cfg_object;
    use crate::python::hooks::{logger, namespace};
    use pyo3::IntoPyObject;
    let none = || py.None().into_bound(py);
    let pid_obj = match pid {
        Some(p) => p.as_raw().into_pyobject(py)?.into_any(),
        None => none(),
    };
    namespace(
        py,
        &[
            ("pid", pid_obj),
            ("ppid", ppid.as_raw().into_pyobject(py)?.into_any()),
            ("age", age.into_pyobject(py)?.into_any()),
            ("log", logger(py)?),
            ("cfg", cfg_object(py, &config.values)?),
            ("nr", 0u64.into_pyobject(py)?.into_any()),
            (
                "alive",
                pyo3::types::PyBool::new(py, true).to_owned().into_any(),
            ),
            (
                "booted",
                pyo3::types::PyBool::new(py, pid.is_some())
                    .to_owned()
                    .into_any(),
            ),
            (
                "aborted",
                pyo3::types::PyBool::new(py, aborted).to_owned().into_any(),
            ),
            ("tmp", none()),
            ("wsgi", none()),
            ("app", none()),
            ("sockets", pyo3::types::PyList::empty(py).into_any()),
        ],
    )
}
