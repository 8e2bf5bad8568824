//! `gunicorn.conf.py`: located (`-c PATH`, `file:PATH`, `python:module`, or
//! `./gunicorn.conf.py` when no `-c` is given), executed as real Python in the master as the
//! module `__config__`, and read back: every top-level name that is a setting's name counts,
//! everything else (helpers, imports, typos) is ignored, as in Gunicorn.

use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::error::ConfigError;
use super::setting::{Action, Setting, Value};

/// Where the configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Module(String),
}

/// The file Gunicorn would read: `-c` (command line first, then `GUNICORN_CMD_ARGS`), or
/// `./gunicorn.conf.py` if it exists.
///
/// # Errors
/// A `-c` file that does not exist: `'PATH' doesn't exist`.
pub fn locate(given: Option<&str>) -> Result<Option<Source>, ConfigError> {
    let Some(spec) = given else {
        let default = Path::new("gunicorn.conf.py");
        return Ok(default
            .exists()
            .then(|| Source::Path(default.to_path_buf())));
    };
    if let Some(module) = spec.strip_prefix("python:") {
        return Ok(Some(Source::Module(module.to_string())));
    }
    let path = PathBuf::from(spec.strip_prefix("file:").unwrap_or(spec));
    if !path.exists() {
        return Err(ConfigError::Invalid(format!(
            "'{}' doesn't exist",
            path.display()
        )));
    }
    Ok(Some(Source::Path(path)))
}

/// Puts the current directory first on `sys.path` unless it is there already, as Gunicorn's
/// `chdir()` does before it reads the configuration: a `gunicorn.conf.py` may import
/// modules that sit next to it (`import hooks`), and `python:module` is found there.
fn current_dir_on_path(py: Python<'_>) -> PyResult<()> {
    let Ok(cwd) = std::env::current_dir() else {
        return Ok(());
    };
    let cwd = cwd.display().to_string();
    let path = py.import("sys")?.getattr("path")?;
    if !path.contains(&cwd)? {
        path.call_method1("insert", (0, cwd))?;
    }
    Ok(())
}

/// Runs the configuration and returns its namespace.
fn execute<'py>(py: Python<'py>, source: &Source) -> Result<Bound<'py, PyDict>, ConfigError> {
    let failed = |what: &str, e: PyErr| {
        ConfigError::File(format!(
            "Failed to read config file: {what}\n{}",
            crate::python::format_exception(py, &e).trim_end()
        ))
    };
    current_dir_on_path(py).map_err(|e| failed("sys.path", e))?;
    match source {
        Source::Module(name) => {
            let module = py.import(name.as_str()).map_err(|e| failed(name, e))?;
            module.dict().copy().map_err(|e| failed(name, e))
        }
        Source::Path(path) => {
            let shown = path.display().to_string();
            if path.extension().and_then(|e| e.to_str()) != Some("py") {
                eprintln!("configuration file should have a valid Python extension.");
            }
            let run = || -> PyResult<Bound<'py, PyDict>> {
                // SourceFileLoader accepts any extension (Gunicorn only warns about it).
                let machinery = py.import("importlib.machinery")?;
                let util = py.import("importlib.util")?;
                let loader = machinery
                    .getattr("SourceFileLoader")?
                    .call1(("__config__", &shown))?;
                let spec = util.call_method1("spec_from_loader", ("__config__", &loader))?;
                let module = util.call_method1("module_from_spec", (&spec,))?;
                py.import("sys")?
                    .getattr("modules")?
                    .set_item("__config__", &module)?;
                loader.call_method1("exec_module", (&module,))?;
                module
                    .getattr("__dict__")?
                    .cast_into::<PyDict>()
                    .map_err(PyErr::from)
            };
            run().map_err(|e| failed(&shown, e))
        }
    }
}

/// Converts a Python value to the text forms the row's parser understands.
fn texts(value: &Bound<'_, PyAny>) -> Option<Vec<String>> {
    if value.is_instance_of::<PyBool>() {
        let b: bool = value.extract().ok()?;
        return Some(vec![if b { "true" } else { "false" }.to_string()]);
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyString>() {
        return Some(vec![value.str().ok()?.to_string()]);
    }
    if value.is_instance_of::<PyFloat>() {
        // Gunicorn's int(): 30.7 -> 30.
        let f: f64 = value.extract().ok()?;
        return Some(vec![format!("{}", f.trunc() as i64)]);
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        return value
            .try_iter()
            .ok()?
            .map(|item| item.ok().and_then(|i| i.str().ok().map(|s| s.to_string())))
            .collect();
    }
    None
}

/// A value as Gunicorn's error messages show it: formatted with `%s`, so `str()`.
fn as_printed(value: &Bound<'_, PyAny>) -> String {
    value
        .str()
        .or_else(|_| value.repr())
        .map(|r| r.to_string())
        .unwrap_or_default()
}

/// Applies one setting's row to a Python value from the file.
///
/// # Errors
/// Gunicorn's `Invalid value for NAME: VALUE` with the reason.
pub fn value_for(setting: &Setting, value: &Bound<'_, PyAny>) -> Result<Value, ConfigError> {
    let shown = as_printed(value);
    let invalid = |reason: String| ConfigError::FileValue {
        name: setting.name.to_string(),
        value: shown.clone(),
        reason,
    };
    if value.is_none() {
        return Ok(Value::None);
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut pairs = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let (Ok(k), Ok(v)) = (k.str(), v.str()) else {
                return Err(invalid(format!("Value is not a dictionary: {shown} ")));
            };
            pairs.push((k.to_string(), v.to_string()));
        }
        return match setting.name {
            "secure_scheme_headers" => Ok(Value::Dict(pairs)),
            _ => Err(invalid(format!(
                "{shown} is not a supported value for {}",
                setting.name
            ))),
        };
    }
    let parts = texts(value).ok_or_else(|| {
        invalid(format!(
            "{shown} is not a supported value for {}",
            setting.name
        ))
    })?;
    match setting.action {
        Action::Append => {
            let mut items = Vec::with_capacity(parts.len());
            for part in &parts {
                match (setting.parse)(part).map_err(&invalid)? {
                    Value::Str(s) => items.push(s),
                    other => items.push(other.to_string()),
                }
            }
            Ok(Value::List(items))
        }
        Action::SetTrue | Action::SetFalse | Action::Set => {
            let text = parts.first().cloned().unwrap_or_default();
            if setting.action != Action::Set {
                return super::setting::parse_bool(&text).map_err(invalid);
            }
            (setting.parse)(&text).map_err(invalid)
        }
    }
}

/// What a configuration source sets: plain values by name, and server hooks.
#[derive(Default)]
pub struct FileSettings {
    pub values: Vec<(&'static str, Value)>,
    pub hooks: Vec<(&'static str, Py<PyAny>)>,
    /// Settings kept as the Python objects themselves (`logconfig_dict`, a nested dict).
    pub objects: Vec<(&'static str, Py<PyAny>)>,
}

/// The settings a configuration source sets.
///
/// # Errors
/// The source cannot run, a value is invalid, or a hook has the wrong arity.
pub fn read(
    py: Python<'_>,
    source: &Source,
    table: &'static [Setting],
) -> Result<FileSettings, ConfigError> {
    let namespace = execute(py, source)?;
    let mut out = FileSettings::default();
    for setting in table {
        let Ok(Some(value)) = namespace.get_item(setting.name) else {
            continue;
        };
        if super::hooks::is_hook(setting.name) {
            if value.is_none() {
                continue;
            }
            let hook = super::hooks::resolve(py, setting.name, &value).map_err(|reason| {
                ConfigError::FileValue {
                    name: setting.name.to_string(),
                    value: as_printed(&value),
                    reason,
                }
            })?;
            // Shown by --print-config the way Gunicorn shows callables: <Class.func()>.
            let qualname = hook
                .getattr("__qualname__")
                .and_then(|q| q.extract::<String>())
                .unwrap_or_else(|_| setting.name.to_string());
            out.values
                .push((setting.name, Value::Str(format!("<{qualname}()>"))));
            out.hooks.push((setting.name, hook.unbind()));
            continue;
        }
        if setting.name == "logconfig_dict" {
            if !value.is_instance_of::<PyDict>() {
                return Err(ConfigError::FileValue {
                    name: setting.name.to_string(),
                    value: as_printed(&value),
                    reason: format!("Value is not a dictionary: {} ", as_printed(&value)),
                });
            }
            let shown = value.repr().map(|r| r.to_string()).unwrap_or_default();
            let shown = if value.len().unwrap_or(0) == 0 {
                Value::Dict(Vec::new())
            } else {
                Value::Str(shown)
            };
            out.values.push((setting.name, shown));
            out.objects.push((setting.name, value.unbind()));
            continue;
        }
        out.values.push((setting.name, value_for(setting, &value)?));
    }
    Ok(out)
}
