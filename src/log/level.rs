//! Gunicorn's five log levels, shared by the error log, syslog and Python's logging.

/// Log verbosity, Gunicorn's five levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl LogLevel {
    /// Gunicorn's `--log-level` names; an unknown name is INFO, as in Gunicorn.
    pub fn from_name(name: &str) -> LogLevel {
        match name {
            "debug" => LogLevel::Debug,
            "warning" => LogLevel::Warning,
            "error" => LogLevel::Error,
            "critical" => LogLevel::Critical,
            _ => LogLevel::Info,
        }
    }
}
