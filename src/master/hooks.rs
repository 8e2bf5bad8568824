//! The master's hooks: the `server` object they receive, calling one, and
//! `nworkers_changed` with every change of the target worker count. (Methods of
//! [`Master`], kept apart from its loop.)

use pyo3::Python;

use super::Master;
use crate::worker::hooks::server_namespace;

impl Master {
    pub(super) fn server_object<'py>(
        &self,
        py: Python<'py>,
    ) -> pyo3::PyResult<pyo3::Bound<'py, pyo3::PyAny>> {
        let workers = self.workers.summaries();
        let listeners: Vec<String> = self.listeners.iter().map(|l| l.addr.to_string()).collect();
        server_namespace(
            py,
            &self.config,
            self.pid,
            &workers,
            &listeners,
            self.num_workers,
        )
    }

    /// Calls a master-side hook with `server` first and the arguments `rest` builds; does
    /// nothing (and builds nothing) when the hook is not set.
    pub(super) fn run_hook<F>(&self, name: &str, rest: F)
    where
        F: for<'py> FnOnce(Python<'py>) -> pyo3::PyResult<Vec<pyo3::Bound<'py, pyo3::PyAny>>>,
    {
        if !crate::python::hooks::is_set(name) {
            return;
        }
        Python::attach(|py| {
            let args = self.server_object(py).and_then(|server| {
                let mut args = vec![server];
                args.extend(rest(py)?);
                Ok(args)
            });
            match args {
                Ok(args) => crate::python::hooks::call(py, name, &args),
                Err(e) => {
                    crate::python::log_exception(py, &format!("Exception in {name} hook"), &e)
                }
            }
        });
    }

    /// Changes the target worker count, telling `nworkers_changed`.
    pub(super) fn set_num_workers(&mut self, new: usize) {
        let old = self.num_workers;
        self.num_workers = new;
        if new != old {
            self.run_hook("nworkers_changed", |py| {
                use pyo3::IntoPyObject;
                Ok(vec![
                    new.into_pyobject(py)?.into_any(),
                    old.into_pyobject(py)?.into_any(),
                ])
            });
        }
    }
}
