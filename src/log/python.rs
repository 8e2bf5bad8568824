//! Python logging configuration (`logconfig_dict`, `--log-config-json`, `--log-config`):
//! when one is given, it is merged over Gunicorn's default dictConfig and applied in the
//! master (workers inherit it), and from then on our error log and access log are emitted
//! through the `gunicorn.error` / `gunicorn.access` loggers, so the user's handlers and
//! formatters (JSON, syslog, files) decide where lines go and how they look.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::level::LogLevel;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether logs go through Python logging.
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Gunicorn's `CONFIG_DEFAULTS`, the base a user's dict is merged over, plus the helpers.
const SETUP: &std::ffi::CStr = c"
import copy, json, os, logging, logging.config

CONFIG_DEFAULTS = {
    'version': 1,
    'disable_existing_loggers': False,
    'root': {'level': 'INFO', 'handlers': ['console']},
    'loggers': {
        'gunicorn.error': {'level': 'INFO', 'handlers': ['error_console'], 'propagate': True, 'qualname': 'gunicorn.error'},
        'gunicorn.access': {'level': 'INFO', 'handlers': ['console'], 'propagate': True, 'qualname': 'gunicorn.access'},
    },
    'handlers': {
        'console': {'class': 'logging.StreamHandler', 'formatter': 'generic', 'stream': 'ext://sys.stdout'},
        'error_console': {'class': 'logging.StreamHandler', 'formatter': 'generic', 'stream': 'ext://sys.stderr'},
    },
    'formatters': {
        'generic': {'format': '%(asctime)s [%(process)d] [%(levelname)s] %(message)s', 'datefmt': '[%Y-%m-%d %H:%M:%S %z]', 'class': 'logging.Formatter'},
    },
}

class SafeAtoms(dict):
    # Gunicorn's: unknown atoms render '-', header/environ lookups are case-insensitive.
    def __getitem__(self, k):
        if k.startswith('{'):
            k = k.lower()
        return super().get(k, '-')

def apply(user_dict, json_path, ini_path, level):
    error = logging.getLogger('gunicorn.error')
    # Our records now flow Rust -> Python: the Python -> Rust bridge handler must go.
    error.handlers = [h for h in error.handlers if type(h).__name__ != 'ErrorLogHandler']
    error.propagate = True
    error.setLevel(level)
    if user_dict or json_path:
        config = copy.deepcopy(CONFIG_DEFAULTS)
        if not user_dict:
            if not os.path.exists(json_path):
                raise RuntimeError(\"Error: log config '%s' not found\" % json_path)
            with open(json_path) as f:
                user_dict = json.load(f)
        # One level deeper than Gunicorn's config.update(): the user's loggers, handlers,
        # formatters and filters are added to the defaults instead of replacing them, so a
        # config that only adds a handler keeps the root logger's 'console' working.
        for key, value in user_dict.items():
            if key in ('loggers', 'handlers', 'formatters', 'filters') and isinstance(value, dict):
                config.setdefault(key, {}).update(value)
            else:
                config[key] = value
        logging.config.dictConfig(config)
    elif ini_path:
        if not os.path.exists(ini_path):
            raise RuntimeError(\"Error: log config '%s' not found\" % ini_path)
        defaults = {'__file__': ini_path, 'here': os.path.dirname(ini_path)}
        logging.config.fileConfig(ini_path, defaults=defaults, disable_existing_loggers=False)
    return logging.getLogger('gunicorn.error').getEffectiveLevel()
";

/// Applies the user's logging configuration; returns the effective `gunicorn.error` level.
///
/// # Errors
/// The configuration does not load (Gunicorn's message), as one line.
pub fn configure(
    py: Python<'_>,
    user_dict: Option<&Py<PyAny>>,
    json_path: Option<&str>,
    ini_path: Option<&str>,
    level: LogLevel,
) -> Result<LogLevel, String> {
    let module = pyo3::types::PyModule::from_code(
        py,
        SETUP,
        c"_rgunicorn_logging.py",
        c"_rgunicorn_logging",
    )
    .map_err(|e| e.to_string())?;
    let dict = user_dict.map(|d| d.bind(py).clone());
    let effective: i64 = module
        .getattr("apply")
        .and_then(|f| f.call1((dict, json_path, ini_path, level as i64)))
        .and_then(|l| l.extract())
        .map_err(|e| {
            let msg = e.value(py).to_string();
            if msg.starts_with("Error: ") {
                msg.trim_start_matches("Error: ").to_string()
            } else {
                format!("invalid logging configuration: {msg}")
            }
        })?;
    py.import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|m| m.set_item("_rgunicorn_logging", &module))
        .map_err(|e| e.to_string())?;
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(match effective {
        n if n >= 50 => LogLevel::Critical,
        n if n >= 40 => LogLevel::Error,
        n if n >= 30 => LogLevel::Warning,
        n if n >= 20 => LogLevel::Info,
        _ => LogLevel::Debug,
    })
}

/// Emits an error-log line through `gunicorn.error`.
pub fn error(level: LogLevel, message: &str, traceback: Option<&str>) {
    Python::attach(|py| {
        let text = match traceback {
            Some(tb) => format!("{message}\n{}", tb.trim_end()),
            None => message.to_string(),
        };
        let _ = py
            .import("logging")
            .and_then(|l| l.call_method1("getLogger", ("gunicorn.error",)))
            .and_then(|logger| logger.call_method1("log", (level as i64, text)));
    });
}

/// Emits an access-log record through `gunicorn.access` as Gunicorn does:
/// `info(access_log_format, atoms)`.
pub fn access(py: Python<'_>, format: &str, atoms: &[(String, String)]) {
    let emit = || -> PyResult<()> {
        let module = py.import("_rgunicorn_logging")?;
        let dict = PyDict::new(py);
        for (k, v) in atoms {
            dict.set_item(k, v)?;
        }
        let safe = module.getattr("SafeAtoms")?.call1((dict,))?;
        py.import("logging")?
            .call_method1("getLogger", ("gunicorn.access",))?
            .call_method1("info", (format, safe))?;
        Ok(())
    };
    if let Err(e) = emit() {
        eprintln!("access log: {e}");
    }
}
