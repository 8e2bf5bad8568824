//! Starting the embedded interpreter (PEP 587 `PyConfig`), with the user's virtualenv.
//!
//! The interpreter does not find a virtualenv by itself: CPython locates `pyvenv.cfg` next
//! to (or one level above) `sys.executable`, so we point `executable` at the venv's
//! `bin/python` when `VIRTUAL_ENV` is set, and at the interpreter we were built against
//! otherwise (so `sys.prefix` is right and no "could not find platform libraries" noise).

#[cfg(not(Py_LIMITED_API))]
use std::ffi::CString;
use std::path::{Path, PathBuf};

use pyo3::ffi;

/// `major.minor` of the Python this binary links (set by build.rs).
pub const BUILD_PYTHON: &str = env!("RGUNICORN_BUILD_PYTHON");

fn build_python_exe() -> Option<&'static str> {
    option_env!("RGUNICORN_BUILD_PYTHON_EXE")
}

/// Reads `version`/`version_info` from a virtualenv's `pyvenv.cfg` as `major.minor`.
fn venv_python_version(venv: &Path) -> Option<String> {
    let text = std::fs::read_to_string(venv.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        if key != "version" && key != "version_info" {
            return None;
        }
        let mut parts = value.trim().split('.');
        Some(format!("{}.{}", parts.next()?, parts.next()?))
    })
}

/// The interpreter executable to present as `sys.executable`, after checking the virtualenv.
///
/// # Errors
/// `VIRTUAL_ENV` names a venv of another Python version, or something that is not a venv.
pub fn choose_executable() -> Result<Option<PathBuf>, String> {
    let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) else {
        return Ok(build_python_exe().map(PathBuf::from));
    };
    let venv = PathBuf::from(venv);
    let Some(version) = venv_python_version(&venv) else {
        return Err(format!(
            "VIRTUAL_ENV={} is not a virtualenv (no readable pyvenv.cfg)",
            venv.display()
        ));
    };
    if version != BUILD_PYTHON {
        return Err(format!(
            "the virtualenv {} uses Python {version}, but rgunicorn was built against Python {BUILD_PYTHON}; \
             recreate the virtualenv with Python {BUILD_PYTHON} or rebuild rgunicorn with PYO3_PYTHON pointing at Python {version}",
            venv.display()
        ));
    }
    Ok(Some(venv.join("bin").join("python")))
}

#[cfg(not(Py_LIMITED_API))]
fn check(status: ffi::PyStatus, what: &str) -> Result<(), String> {
    // SAFETY: `status` was just returned by a PyConfig call.
    if unsafe { ffi::PyStatus_Exception(status) } == 0 {
        return Ok(());
    }
    let msg = if status.err_msg.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: a non-null err_msg is a static NUL-terminated C string owned by CPython.
        unsafe { std::ffi::CStr::from_ptr(status.err_msg) }
            .to_string_lossy()
            .into_owned()
    };
    Err(format!("cannot start Python ({what}): {msg}"))
}

/// Initialises the interpreter once, without Python's own signal handlers (ours are installed
/// already), with `sys.argv` = our command line, then releases the GIL.
///
/// # Errors
/// A virtualenv mismatch or a failed initialisation, as one line.
pub fn initialize(argv: &[String]) -> Result<(), String> {
    // SAFETY: reading a flag is always allowed.
    if unsafe { ffi::Py_IsInitialized() } != 0 {
        return Ok(());
    }
    start(argv, choose_executable()?)
}

/// An extension built against the limited API (the `abi3` feature) is only ever entered
/// from a running interpreter: the start-up API (PEP 587) is outside that API.
#[cfg(Py_LIMITED_API)]
fn start(_argv: &[String], _executable: Option<PathBuf>) -> Result<(), String> {
    Err("this rgunicorn is a Python extension module: run it as `python -m rgunicorn`".into())
}

#[cfg(not(Py_LIMITED_API))]
fn start(argv: &[String], executable: Option<PathBuf>) -> Result<(), String> {
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let mut c_ptrs: Vec<*const std::ffi::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: PyConfig is a plain C struct; PyConfig_InitPythonConfig fills every field before use.
    let mut config: ffi::PyConfig = unsafe { std::mem::zeroed() };
    // SAFETY: `config` is a valid, writable PyConfig for all the calls below, and every string
    // we pass lives until the call returns (CPython copies them).
    unsafe {
        ffi::PyConfig_InitPythonConfig(&mut config);
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let result = (|| {
            if let Some(exe) = &executable {
                let exe = CString::new(exe.display().to_string())
                    .map_err(|_| "interpreter path contains a NUL byte".to_string())?;
                check(
                    ffi::PyConfig_SetBytesString(&mut config, &mut config.executable, exe.as_ptr()),
                    "executable",
                )?;
                check(
                    ffi::PyConfig_SetBytesString(
                        &mut config,
                        &mut config.program_name,
                        exe.as_ptr(),
                    ),
                    "program name",
                )?;
            }
            let argc = ffi::Py_ssize_t::try_from(c_ptrs.len()).unwrap_or(0);
            check(
                ffi::PyConfig_SetBytesArgv(&mut config, argc, c_ptrs.as_mut_ptr()),
                "argv",
            )?;
            check(ffi::Py_InitializeFromConfig(&config), "initialisation")
        })();
        ffi::PyConfig_Clear(&mut config);
        result?;
        // pyo3 expects to take the GIL itself from here on.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

/// One line naming the interpreter in use: version and `sys.prefix` (for `--version`).
pub fn describe(py: pyo3::Python<'_>) -> String {
    use pyo3::types::PyAnyMethods;
    let sys = match py.import("sys") {
        Ok(sys) => sys,
        Err(_) => return format!("Python {BUILD_PYTHON}"),
    };
    let version: String = sys
        .getattr("version")
        .and_then(|v| v.extract())
        .unwrap_or_default();
    let prefix: String = sys
        .getattr("prefix")
        .and_then(|v| v.extract())
        .unwrap_or_default();
    let version = version
        .split_whitespace()
        .next()
        .unwrap_or(BUILD_PYTHON)
        .to_string();
    format!("Python {version} ({prefix})")
}
