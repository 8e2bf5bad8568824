//! The settings table: one row per Gunicorn setting rgunicorn understands, in Gunicorn's
//! section order. This is the only place a setting is described; the command line,
//! `GUNICORN_CMD_ARGS` and the resolved [`super::Config`] are all driven by it.

use super::setting::{
    parse_bool, parse_choice, parse_int, parse_pos_int, parse_string, Action, Setting, Support,
    Value,
};

fn none() -> Value {
    Value::None
}
fn no() -> Value {
    Value::Bool(false)
}
fn empty_list() -> Value {
    Value::List(Vec::new())
}

/// `bind` defaults to `0.0.0.0:$PORT` when the platform sets `PORT` (Heroku and friends).
fn default_bind() -> Value {
    match std::env::var("PORT") {
        Ok(port) if !port.is_empty() => Value::List(vec![format!("0.0.0.0:{port}")]),
        _ => Value::List(vec!["127.0.0.1:8000".to_string()]),
    }
}

/// `workers` defaults to `WEB_CONCURRENCY` when set.
fn default_workers() -> Value {
    match std::env::var("WEB_CONCURRENCY") {
        Ok(n) if !n.trim().is_empty() => parse_pos_int(&n).unwrap_or(Value::Int(1)),
        _ => Value::Int(1),
    }
}

fn default_forwarded_allow_ips() -> Value {
    match std::env::var("FORWARDED_ALLOW_IPS") {
        Ok(v) => Value::Str(v),
        Err(_) => Value::Str("127.0.0.1,::1".to_string()),
    }
}

fn parse_worker_class(text: &str) -> Result<Value, String> {
    // Only the sync contract exists here; any other class would silently change behaviour.
    let short = text.trim();
    match short {
        "sync" | "gunicorn.workers.sync.SyncWorker" | "gunicorn.workers.SyncWorker" => {
            Ok(Value::Str("sync".to_string()))
        }
        other => Err(format!(
            "worker class '{other}' is not supported by rgunicorn: only 'sync' is available"
        )),
    }
}

fn parse_threads(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(n) if n > 1 => Err(format!(
            "threads = {n}: rgunicorn runs the sync worker (one request at a time per process); use more workers instead"
        )),
        v => Ok(v),
    }
}

fn parse_workers(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(0) => Err("Value must be positive: 0".to_string()),
        v => Ok(v),
    }
}

/// Gunicorn's umask: `int(x, 0)`, plus a leading-zero string read as octal (`022`).
fn parse_octal(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let digits = t
        .strip_prefix('0')
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
    match digits {
        Some(octal) => i64::from_str_radix(octal, 8)
            .map(Value::Int)
            .map_err(|_| format!("Not a valid octal number: {text}")),
        None => parse_pos_int(t),
    }
}

fn parse_loglevel(text: &str) -> Result<Value, String> {
    parse_choice(
        text,
        &["debug", "info", "warning", "error", "critical"],
        "log level",
    )
}

fn parse_env_entry(text: &str) -> Result<Value, String> {
    if text.contains('=') {
        Ok(Value::Str(text.to_string()))
    } else {
        Err(format!("Invalid value for raw_env: {text}"))
    }
}

/// Every setting, in the order Gunicorn documents them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "bind",
        section: "Server Socket",
        flags: &["-b", "--bind"],
        meta: "ADDRESS",
        action: Action::Append,
        parse: parse_string,
        default: default_bind,
        help: "The socket to bind.",
        support: Support::Full,
    },
    Setting {
        name: "backlog",
        section: "Server Socket",
        flags: &["--backlog"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(2048),
        help: "The maximum number of pending connections.",
        support: Support::Full,
    },
    Setting {
        name: "workers",
        section: "Worker Processes",
        flags: &["-w", "--workers"],
        meta: "INT",
        action: Action::Set,
        parse: parse_workers,
        default: default_workers,
        help: "The number of worker processes for handling requests.",
        support: Support::Full,
    },
    Setting {
        name: "worker_class",
        section: "Worker Processes",
        flags: &["-k", "--worker-class"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_worker_class,
        default: || Value::Str("sync".to_string()),
        help: "The type of workers to use (rgunicorn: sync).",
        support: Support::Full,
    },
    Setting {
        name: "threads",
        section: "Worker Processes",
        flags: &["--threads"],
        meta: "INT",
        action: Action::Set,
        parse: parse_threads,
        default: || Value::Int(1),
        help: "The number of worker threads for handling requests (rgunicorn: 1).",
        support: Support::Full,
    },
    Setting {
        name: "worker_connections",
        section: "Worker Processes",
        flags: &["--worker-connections"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(1000),
        help: "The maximum number of simultaneous connections per worker.",
        support: Support::Full,
    },
    Setting {
        name: "max_requests",
        section: "Worker Processes",
        flags: &["--max-requests"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(0),
        help: "The maximum number of requests a worker will process before restarting.",
        support: Support::Full,
    },
    Setting {
        name: "max_requests_jitter",
        section: "Worker Processes",
        flags: &["--max-requests-jitter"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(0),
        help: "The maximum jitter to add to the max_requests setting.",
        support: Support::Full,
    },
    Setting {
        name: "timeout",
        section: "Worker Processes",
        flags: &["-t", "--timeout"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(30),
        help: "Workers silent for more than this many seconds are killed and restarted.",
        support: Support::Full,
    },
    Setting {
        name: "graceful_timeout",
        section: "Worker Processes",
        flags: &["--graceful-timeout"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(30),
        help: "Timeout for graceful workers restart.",
        support: Support::Full,
    },
    Setting {
        name: "keepalive",
        section: "Worker Processes",
        flags: &["--keep-alive"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(2),
        help: "The number of seconds to wait for requests on a Keep-Alive connection.",
        support: Support::Full,
    },
    Setting {
        name: "limit_request_line",
        section: "Security",
        flags: &["--limit-request-line"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(4094),
        help: "The maximum size of HTTP request line in bytes.",
        support: Support::Full,
    },
    Setting {
        name: "limit_request_fields",
        section: "Security",
        flags: &["--limit-request-fields"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(100),
        help: "Limit the number of HTTP headers fields in a request.",
        support: Support::Full,
    },
    Setting {
        name: "limit_request_field_size",
        section: "Security",
        flags: &["--limit-request-field_size"],
        meta: "INT",
        action: Action::Set,
        parse: parse_int,
        default: || Value::Int(8190),
        help: "Limit the allowed size of an HTTP request header field.",
        support: Support::Full,
    },
    Setting {
        name: "check_config",
        section: "Debugging",
        flags: &["--check-config"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Check the configuration and exit.",
        support: Support::Full,
    },
    Setting {
        name: "sendfile",
        section: "Server Mechanics",
        flags: &["--no-sendfile"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: none,
        help: "Disables the use of sendfile().",
        support: Support::Full,
    },
    Setting {
        name: "chdir",
        section: "Server Mechanics",
        flags: &["--chdir"],
        meta: "",
        action: Action::Set,
        parse: parse_string,
        default: || {
            Value::Str(
                std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| ".".to_string()),
            )
        },
        help: "Change directory to specified directory before loading apps.",
        support: Support::Full,
    },
    Setting {
        name: "reuse_port",
        section: "Server Mechanics",
        flags: &["--reuse-port"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Set the SO_REUSEPORT flag on the listening socket.",
        support: Support::Full,
    },
    Setting {
        name: "daemon",
        section: "Server Mechanics",
        flags: &["-D", "--daemon"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Daemonize the rgunicorn process.",
        support: Support::Full,
    },
    Setting {
        name: "enable_stdio_inheritance",
        section: "Logging",
        flags: &["-R", "--enable-stdio-inheritance"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Keep stdout and stderr when daemonized.",
        support: Support::Full,
    },
    Setting {
        name: "user",
        section: "Server Mechanics",
        flags: &["-u", "--user"],
        meta: "USER",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "Switch worker processes to run as this user (name or uid).",
        support: Support::Full,
    },
    Setting {
        name: "group",
        section: "Server Mechanics",
        flags: &["-g", "--group"],
        meta: "GROUP",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "Switch worker process to run as this group (name or gid).",
        support: Support::Full,
    },
    Setting {
        name: "initgroups",
        section: "Server Mechanics",
        flags: &["--initgroups"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Set the worker's supplementary groups to those of the worker user.",
        support: Support::Full,
    },
    Setting {
        name: "pidfile",
        section: "Server Mechanics",
        flags: &["-p", "--pid"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "A filename to use for the PID file.",
        support: Support::Full,
    },
    Setting {
        name: "worker_tmp_dir",
        section: "Server Mechanics",
        flags: &["--worker-tmp-dir"],
        meta: "DIR",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "A directory for worker heartbeat files (accepted; rgunicorn's heartbeat lives in shared memory).",
        support: Support::Full,
    },
    Setting {
        name: "umask",
        section: "Server Mechanics",
        flags: &["-m", "--umask"],
        meta: "INT",
        action: Action::Set,
        parse: parse_octal,
        default: || Value::Int(0),
        help: "A bit mask for the file mode on files written by rgunicorn (unix sockets).",
        support: Support::Full,
    },
    Setting {
        name: "raw_env",
        section: "Server Mechanics",
        flags: &["-e", "--env"],
        meta: "ENV",
        action: Action::Append,
        parse: parse_env_entry,
        default: empty_list,
        help: "Set environment variables in the execution environment.",
        support: Support::Full,
    },
    Setting {
        name: "forwarded_allow_ips",
        section: "Server Mechanics",
        flags: &["--forwarded-allow-ips"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_string,
        default: default_forwarded_allow_ips,
        help:
            "Front-end's IP addresses or networks from which allowed to handle set secure headers.",
        support: Support::Full,
    },
    Setting {
        name: "control_socket_disable",
        section: "Control",
        flags: &["--no-control-socket"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Disable the control socket (rgunicorn has none; accepted for compatibility).",
        support: Support::Full,
    },
    Setting {
        name: "accesslog",
        section: "Logging",
        flags: &["--access-logfile"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "The Access log file to write to.",
        support: Support::Full,
    },
    Setting {
        name: "access_log_format",
        section: "Logging",
        flags: &["--access-logformat"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_string,
        default: || Value::Str(crate::log::access::DEFAULT_FORMAT.to_string()),
        help: "The access log format.",
        support: Support::Full,
    },
    Setting {
        name: "errorlog",
        section: "Logging",
        flags: &["--error-logfile", "--log-file"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_string,
        default: || Value::Str("-".to_string()),
        help: "The Error log file to write to.",
        support: Support::Full,
    },
    Setting {
        name: "loglevel",
        section: "Logging",
        flags: &["--log-level"],
        meta: "LEVEL",
        action: Action::Set,
        parse: parse_loglevel,
        default: || Value::Str("info".to_string()),
        help: "The granularity of Error log outputs.",
        support: Support::Full,
    },
    Setting {
        name: "proc_name",
        section: "Process Naming",
        flags: &["-n", "--name"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "A base to use with setproctitle for process naming.",
        support: Support::Full,
    },
    Setting {
        name: "pythonpath",
        section: "Server Mechanics",
        flags: &["--pythonpath"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_string,
        default: none,
        help: "A comma-separated list of directories to add to the Python path.",
        support: Support::Full,
    },
];

/// The row named `name`.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_are_unique() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
        let mut flags: Vec<_> = SETTINGS.iter().flat_map(|s| s.flags.iter()).collect();
        let before = flags.len();
        flags.sort_unstable();
        flags.dedup();
        assert_eq!(flags.len(), before);
    }

    #[test]
    fn worker_class_accepts_only_sync() {
        assert_eq!(
            parse_worker_class("sync").unwrap(),
            Value::Str("sync".into())
        );
        assert!(parse_worker_class("gevent").unwrap_err().contains("gevent"));
    }

    #[test]
    fn workers_must_be_positive() {
        assert!(parse_workers("0").is_err());
        assert_eq!(parse_workers("4").unwrap(), Value::Int(4));
    }

    #[test]
    fn umask_accepts_gunicorn_spellings() {
        assert_eq!(parse_octal("0o22").unwrap(), Value::Int(0o22));
        assert_eq!(parse_octal("022").unwrap(), Value::Int(0o22));
        assert_eq!(parse_octal("0x12").unwrap(), Value::Int(0x12));
        assert_eq!(parse_octal("18").unwrap(), Value::Int(18));
        assert!(parse_octal("089").is_err());
    }

    #[test]
    fn log_level_is_a_choice() {
        assert_eq!(parse_loglevel("DEBUG").unwrap(), Value::Str("debug".into()));
        assert!(parse_loglevel("verbose").is_err());
    }
}
