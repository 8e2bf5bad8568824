//! The settings table: one row per Gunicorn setting (all 120 of Gunicorn 27.0.1), in
//! Gunicorn's order, then rgunicorn's own (taken from Granian). This is the only place a setting is described; the command line,
//! `GUNICORN_CMD_ARGS` and the resolved [`super::Config`] are all driven by it.
//!
//! Every row says whether rgunicorn implements it ([`Support`]). Rows it does not implement
//! still parse and validate their values the way Gunicorn does, so a bad value is reported
//! the same way whether or not the setting is honoured.

use std::path::{Path, PathBuf};

// The table names its parsers; they are all in `parse`.
use super::parse::*;
use super::setting::{
    parse_bool, parse_int, parse_pos_int, parse_string, Action, Setting, Support, Value,
};

/// HTTP/2 settings: Gunicorn's own sync worker warns and serves HTTP/1.1 only.
const HTTP2_ONLY: &str =
    "the sync worker serves HTTP/1.x only (Gunicorn's sync worker ignores HTTP/2 too)";
const ASGI_ONLY: &str = "applies to the asgi worker only";
/// `dirty_apps`/`dirty_workers` turn the dirty arbiter on; the app then relies on it.
const NO_DIRTY: &str = "dirty arbiters are not supported";
/// The other dirty settings: Gunicorn only reads them when dirty arbiters run.
const DIRTY_ONLY: &str =
    "only used by dirty arbiters (dirty_apps and dirty_workers), which rgunicorn does not support";
const NO_PASTE: &str = "PasteDeploy is not supported; give APP_MODULE instead";
const PASTE_ONLY: &str = "only used with paste, which rgunicorn does not support";

fn none() -> Value {
    Value::None
}
fn no() -> Value {
    Value::Bool(false)
}
fn yes() -> Value {
    Value::Bool(true)
}
fn empty_list() -> Value {
    Value::List(Vec::new())
}
fn empty_str() -> Value {
    Value::Str(String::new())
}
/// `'127.0.0.1,::1'` once Gunicorn's `validate_string_to_addr_list` has split it.
fn local_addrs() -> Value {
    Value::List(vec!["127.0.0.1".to_string(), "::1".to_string()])
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

/// `FORWARDED_ALLOW_IPS` or `127.0.0.1,::1`, split into the list Gunicorn keeps (its
/// items are checked with the others' when the settings are resolved).
fn default_forwarded_allow_ips() -> Value {
    let text = std::env::var("FORWARDED_ALLOW_IPS").unwrap_or_else(|_| "127.0.0.1,::1".into());
    Value::List(split_comma_list(&text))
}

/// Gunicorn's documented per-platform syslog target. (Gunicorn compares `sys.platform`
/// with `'freebsd'`/`'openbsd'` exactly, which never matches the versioned names those
/// systems report; we follow the documentation, which names the socket that exists there.)
fn default_syslog_addr() -> Value {
    let addr = if cfg!(target_os = "macos") {
        "unix:///var/run/syslog"
    } else if cfg!(any(target_os = "freebsd", target_os = "dragonfly")) {
        "unix:///var/run/log"
    } else if cfg!(target_os = "openbsd") {
        "unix:///dev/log"
    } else {
        "udp://localhost:514"
    };
    Value::Str(addr.to_string())
}

/// `$XDG_RUNTIME_DIR/gunicorn.ctl` when that directory exists, else
/// `~/.gunicorn/gunicorn.ctl` (`~` expanded as Python's `os.path.expanduser` does).
fn default_control_socket() -> Value {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(xdg) if !xdg.is_empty() && Path::new(&xdg).is_dir() => PathBuf::from(xdg),
        _ => {
            let home = std::env::var_os("HOME").map(PathBuf::from).or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|user| user.dir)
            });
            home.unwrap_or_else(|| PathBuf::from("~")).join(".gunicorn")
        }
    };
    Value::Str(dir.join("gunicorn.ctl").to_string_lossy().into_owned())
}

/// Gunicorn's default: header (upper case) -> the value that means HTTPS.
fn default_secure_scheme_headers() -> Value {
    Value::Dict(vec![
        ("X-FORWARDED-PROTOCOL".to_string(), "ssl".to_string()),
        ("X-FORWARDED-PROTO".to_string(), "https".to_string()),
        ("X-FORWARDED-SSL".to_string(), "on".to_string()),
    ])
}

/// A server hook: set from a config file only. Its value is what `--print-config` shows:
/// `<qualname()>` of the callable, as Gunicorn shows it, so the default is Gunicorn's own
/// default (a no-op, or `pre_request`'s debug log line) as Gunicorn 27 prints it
/// (`<OnStarting.on_starting()>`: the function defined in the setting's class).
const fn hook(
    name: &'static str,
    default: fn() -> Value,
    section: &'static str,
    help: &'static str,
    support: Support,
) -> Setting {
    Setting {
        name,
        section,
        flags: &[],
        meta: "",
        action: Action::Set,
        parse: parse_hook,
        default,
        help,
        support,
    }
}

/// Every setting, in the order Gunicorn documents them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "config",
        section: "Config File",
        flags: &["-c", "--config"],
        meta: "CONFIG",
        action: Action::Set,
        parse: parse_stripped,
        default: || Value::Str("./gunicorn.conf.py".to_string()),
        help: "The Gunicorn config file: PATH, file:PATH or python:MODULE_NAME.",
        support: Support::Full,
    },
    Setting {
        name: "wsgi_app",
        section: "Config File",
        flags: &[],
        meta: "STRING",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "A WSGI application path in pattern $(MODULE_NAME):$(VARIABLE_NAME).",
        support: Support::Full,
    },
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
        help: "The type of workers to use (rgunicorn: sync or gthread).",
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
        help: "The number of worker threads for handling requests (above 1: gthread).",
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
        name: "reload",
        section: "Debugging",
        flags: &["--reload"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Restart workers when code changes.",
        support: Support::Full,
    },
    Setting {
        name: "reload_engine",
        section: "Debugging",
        flags: &["--reload-engine"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_reload_engine,
        default: || Value::Str("auto".to_string()),
        help: "The implementation that should be used to power reload: auto, poll or inotify.",
        support: Support::Full,
    },
    Setting {
        name: "reload_extra_files",
        section: "Debugging",
        flags: &["--reload-extra-file"],
        meta: "FILES",
        action: Action::Append,
        parse: parse_reload_extra_file,
        default: empty_list,
        help: "Extends reload option to also watch and reload on additional files (glob patterns allowed).",
        support: Support::Full,
    },
    Setting {
        name: "spew",
        section: "Debugging",
        flags: &["--spew"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Install a trace function that spews every line executed by the server.",
        support: Support::Ignored("line-by-line tracing is not available in rgunicorn"),
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
        name: "print_config",
        section: "Debugging",
        flags: &["--print-config"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Print the configuration settings as fully resolved. Implies check-config.",
        support: Support::Full,
    },
    Setting {
        name: "preload_app",
        section: "Server Mechanics",
        flags: &["--preload"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Load application code before the worker processes are forked.",
        support: Support::Full,
    },
    Setting {
        name: "sendfile",
        section: "Server Mechanics",
        flags: &["--no-sendfile"],
        meta: "",
        action: Action::SetFalse,
        parse: parse_bool,
        default: none,
        help: "Disables the use of sendfile().",
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
        help: "A directory to use for the worker heartbeat temporary file.",
        support: Support::Ignored(
            "the worker heartbeat lives in shared memory, not in a file, so no directory is used",
        ),
    },
    Setting {
        name: "user",
        section: "Server Mechanics",
        flags: &["-u", "--user"],
        meta: "USER",
        action: Action::Set,
        parse: parse_user,
        default: || Value::Int(i64::from(nix::unistd::geteuid().as_raw())),
        help: "Switch worker processes to run as this user (name or uid).",
        support: Support::Full,
    },
    Setting {
        name: "group",
        section: "Server Mechanics",
        flags: &["-g", "--group"],
        meta: "GROUP",
        action: Action::Set,
        parse: parse_group,
        default: || Value::Int(i64::from(nix::unistd::getegid().as_raw())),
        help: "Switch worker process to run as this group (name or gid).",
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
        name: "tmp_upload_dir",
        section: "Server Mechanics",
        flags: &[],
        meta: "DIR",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "Directory to store temporary request data as they are read.",
        support: Support::Ignored("Gunicorn does not use it either"),
    },
    Setting {
        name: "secure_scheme_headers",
        section: "Server Mechanics",
        flags: &[],
        meta: "",
        action: Action::Set,
        parse: parse_dict,
        default: default_secure_scheme_headers,
        help: "A dictionary containing headers and values that the front-end proxy uses to indicate HTTPS requests.",
        support: Support::Full,
    },
    Setting {
        name: "forwarded_allow_ips",
        section: "Server Mechanics",
        flags: &["--forwarded-allow-ips"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_addr_list,
        default: default_forwarded_allow_ips,
        help:
            "Front-end's IP addresses or networks from which allowed to handle set secure headers.",
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
        name: "disable_redirect_access_to_syslog",
        section: "Logging",
        flags: &["--disable-redirect-access-to-syslog"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Disable redirect access logs to syslog.",
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
        name: "capture_output",
        section: "Logging",
        flags: &["--capture-output"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Redirect stdout/stderr to specified file in errorlog.",
        support: Support::Full,
    },
    Setting {
        name: "logger_class",
        section: "Logging",
        flags: &["--logger-class"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_stripped,
        default: || Value::Str("gunicorn.glogging.Logger".to_string()),
        help: "The logger you want to use to log events in Gunicorn.",
        support: Support::Ignored("rgunicorn logs natively; route logs through Python with logconfig_dict instead"),
    },
    Setting {
        name: "logconfig",
        section: "Logging",
        flags: &["--log-config"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "The log config file to use (logging.fileConfig format).",
        support: Support::Full,
    },
    Setting {
        name: "logconfig_dict",
        section: "Logging",
        flags: &[],
        meta: "",
        action: Action::Set,
        parse: parse_dict,
        default: || Value::Dict(Vec::new()),
        help: "The log config dictionary to use, in the logging module's dictConfig format.",
        support: Support::Full,
    },
    Setting {
        name: "logconfig_json",
        section: "Logging",
        flags: &["--log-config-json"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "The log config to read config from a JSON file.",
        support: Support::Full,
    },
    Setting {
        name: "syslog_addr",
        section: "Logging",
        flags: &["--log-syslog-to"],
        meta: "SYSLOG_ADDR",
        action: Action::Set,
        parse: parse_syslog_addr,
        default: default_syslog_addr,
        help: "Address to send syslog messages.",
        support: Support::Full,
    },
    Setting {
        name: "syslog",
        section: "Logging",
        flags: &["--log-syslog"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Send Gunicorn logs to syslog.",
        support: Support::Full,
    },
    Setting {
        name: "syslog_prefix",
        section: "Logging",
        flags: &["--log-syslog-prefix"],
        meta: "SYSLOG_PREFIX",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "Makes Gunicorn use the parameter as program-name in the syslog entries.",
        support: Support::Full,
    },
    Setting {
        name: "syslog_facility",
        section: "Logging",
        flags: &["--log-syslog-facility"],
        meta: "SYSLOG_FACILITY",
        action: Action::Set,
        parse: parse_syslog_facility,
        default: || Value::Str("user".to_string()),
        help: "Syslog facility name.",
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
        name: "statsd_host",
        section: "Logging",
        flags: &["--statsd-host"],
        meta: "STATSD_ADDR",
        action: Action::Set,
        parse: parse_statsd_host,
        default: none,
        help: "The address of the StatsD server to log to.",
        support: Support::Full,
    },
    Setting {
        name: "dogstatsd_tags",
        section: "Logging",
        flags: &["--dogstatsd-tags"],
        meta: "DOGSTATSD_TAGS",
        action: Action::Set,
        parse: parse_dogstatsd_tags,
        default: empty_str,
        help: "A comma-delimited list of datadog statsd (dogstatsd) tags to append to statsd metrics.",
        support: Support::Full,
    },
    Setting {
        name: "statsd_prefix",
        section: "Logging",
        flags: &["--statsd-prefix"],
        meta: "STATSD_PREFIX",
        action: Action::Set,
        parse: parse_stripped,
        default: empty_str,
        help: "Prefix to use when emitting statsd metrics (a trailing . is added, if not provided).",
        support: Support::Full,
    },
    Setting {
        name: "enable_backlog_metric",
        section: "Logging",
        flags: &["--enable-backlog-metric"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Enable socket backlog metric (only supported on Linux).",
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
        name: "default_proc_name",
        section: "Process Naming",
        flags: &[],
        meta: "",
        action: Action::Set,
        parse: parse_stripped,
        default: || Value::Str("gunicorn".to_string()),
        help: "Internal setting that is adjusted for each type of application.",
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
    Setting {
        name: "paste",
        section: "Server Mechanics",
        flags: &["--paste", "--paster"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "Load a PasteDeploy config file (FILE or FILE#SECTION).",
        support: Support::Refused(NO_PASTE),
    },
    hook(
        "on_starting",
        || Value::Str("<OnStarting.on_starting()>".to_string()),
        "Server Hooks",
        "Called just before the master process is initialized.",
        Support::Full,
    ),
    hook(
        "on_reload",
        || Value::Str("<OnReload.on_reload()>".to_string()),
        "Server Hooks",
        "Called to recycle workers during a reload via SIGHUP.",
        Support::Full,
    ),
    hook(
        "when_ready",
        || Value::Str("<WhenReady.when_ready()>".to_string()),
        "Server Hooks",
        "Called just after the server is started.",
        Support::Full,
    ),
    hook(
        "pre_fork",
        || Value::Str("<Prefork.pre_fork()>".to_string()),
        "Server Hooks",
        "Called just before a worker is forked.",
        Support::Full,
    ),
    hook(
        "post_fork",
        || Value::Str("<Postfork.post_fork()>".to_string()),
        "Server Hooks",
        "Called just after a worker has been forked.",
        Support::Full,
    ),
    hook(
        "post_worker_init",
        || Value::Str("<PostWorkerInit.post_worker_init()>".to_string()),
        "Server Hooks",
        "Called just after a worker has initialized the application.",
        Support::Full,
    ),
    hook(
        "worker_int",
        || Value::Str("<WorkerInt.worker_int()>".to_string()),
        "Server Hooks",
        "Called just after a worker exited on SIGINT or SIGQUIT.",
        Support::Full,
    ),
    hook(
        "worker_abort",
        || Value::Str("<WorkerAbort.worker_abort()>".to_string()),
        "Server Hooks",
        "Called when a worker received the SIGABRT signal.",
        Support::Full,
    ),
    hook(
        "pre_exec",
        || Value::Str("<PreExec.pre_exec()>".to_string()),
        "Server Hooks",
        "Called just before a new master process is forked.",
        Support::Full,
    ),
    hook(
        "pre_request",
        || Value::Str("<PreRequest.pre_request()>".to_string()),
        "Server Hooks",
        "Called just before a worker processes the request.",
        Support::Full,
    ),
    hook(
        "post_request",
        || Value::Str("<PostRequest.post_request()>".to_string()),
        "Server Hooks",
        "Called after a worker processes the request.",
        Support::Full,
    ),
    hook(
        "child_exit",
        || Value::Str("<ChildExit.child_exit()>".to_string()),
        "Server Hooks",
        "Called just after a worker has been exited, in the master process.",
        Support::Full,
    ),
    hook(
        "worker_exit",
        || Value::Str("<WorkerExit.worker_exit()>".to_string()),
        "Server Hooks",
        "Called just after a worker has been exited, in the worker process.",
        Support::Full,
    ),
    hook(
        "nworkers_changed",
        || Value::Str("<NumWorkersChanged.nworkers_changed()>".to_string()),
        "Server Hooks",
        "Called just after num_workers has been changed.",
        Support::Full,
    ),
    hook(
        "on_exit",
        || Value::Str("<OnExit.on_exit()>".to_string()),
        "Server Hooks",
        "Called just before exiting Gunicorn.",
        Support::Full,
    ),
    hook(
        "ssl_context",
        || Value::Str("<NewSSLContext.ssl_context()>".to_string()),
        "Server Hooks",
        "Called when SSLContext is needed.",
        Support::Refused(
            "rgunicorn's TLS is rustls, which a Python SSLContext cannot configure; use \
             certfile, keyfile, ca_certs and cert_reqs",
        ),
    ),
    Setting {
        name: "proxy_protocol",
        section: "Server Mechanics",
        flags: &["--proxy-protocol"],
        meta: "MODE",
        // Gunicorn's flag takes an optional value (`nargs="?"`: a bare `--proxy-protocol`
        // means `auto`). The row type cannot say so; the CLI builder handles that form.
        action: Action::Set,
        parse: parse_proxy_protocol,
        default: || Value::Str("off".to_string()),
        help: "Enable PROXY protocol support: off, v1, v2 or auto (a bare --proxy-protocol means auto).",
        support: Support::Full,
    },
    Setting {
        name: "proxy_allow_ips",
        section: "Server Mechanics",
        flags: &["--proxy-allow-from"],
        meta: "PROXY_ALLOW_IPS",
        action: Action::Set,
        parse: parse_addr_list,
        default: local_addrs,
        help: "Front-end's IP addresses or networks from which allowed accept proxy requests (comma separated).",
        support: Support::Full,
    },
    Setting {
        name: "protocol",
        section: "Server Mechanics",
        flags: &["--protocol"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_protocol,
        default: || Value::Str("http".to_string()),
        help: "The protocol for incoming connections: http or uwsgi.",
        support: Support::Refused("the uwsgi protocol is not supported; have the proxy speak HTTP to rgunicorn"),
    },
    Setting {
        name: "uwsgi_allow_ips",
        section: "Server Mechanics",
        flags: &["--uwsgi-allow-from"],
        meta: "UWSGI_ALLOW_IPS",
        action: Action::Set,
        parse: parse_addr_list,
        default: local_addrs,
        help: "IPs allowed to send uWSGI protocol requests (comma separated).",
        support: Support::Ignored("only used with protocol = uwsgi, which rgunicorn does not support"),
    },
    Setting {
        name: "keyfile",
        section: "SSL",
        flags: &["--keyfile"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "SSL key file.",
        support: Support::Full,
    },
    Setting {
        name: "certfile",
        section: "SSL",
        flags: &["--certfile"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "SSL certificate file.",
        support: Support::Full,
    },
    Setting {
        name: "ssl_version",
        section: "SSL",
        flags: &["--ssl-version"],
        meta: "SSL_VERSION",
        action: Action::Set,
        parse: parse_stripped,
        default: || Value::Int(2),
        help: "SSL version to use (deprecated and ignored; use ssl_context).",
        support: Support::Ignored("deprecated; Gunicorn ignores it too"),
    },
    Setting {
        name: "cert_reqs",
        section: "SSL",
        flags: &["--cert-reqs"],
        meta: "CERT_REQS",
        action: Action::Set,
        parse: parse_cert_reqs,
        default: || Value::Int(0),
        help: "Whether client certificate is required (0 = none, 1 = optional, 2 = required).",
        support: Support::Full,
    },
    Setting {
        name: "ca_certs",
        section: "SSL",
        flags: &["--ca-certs"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "CA certificates file.",
        support: Support::Full,
    },
    Setting {
        name: "suppress_ragged_eofs",
        section: "SSL",
        flags: &["--suppress-ragged-eofs"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: yes,
        help: "Suppress ragged EOFs (see stdlib ssl module's); always on in rgunicorn, \
               so False is refused with TLS on.",
        support: Support::Full,
    },
    Setting {
        name: "do_handshake_on_connect",
        section: "SSL",
        flags: &["--do-handshake-on-connect"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Whether to perform SSL handshake on socket connect (see stdlib ssl module's).",
        support: Support::Ignored(
            "the TLS handshake always runs in the worker's event loop, without blocking, \
             before the request is read; there is no blocking handshake to choose",
        ),
    },
    Setting {
        name: "ciphers",
        section: "SSL",
        flags: &["--ciphers"],
        meta: "CIPHERS",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "SSL Cipher suite to use, in the format of an OpenSSL cipher list (refused \
               with TLS on: rustls offers only its own safe suites).",
        support: Support::Full,
    },
    Setting {
        name: "http_protocols",
        section: "HTTP/2",
        flags: &["--http-protocols"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_http_protocols,
        default: || Value::List(vec!["h1".to_string()]),
        help: "HTTP protocol versions to support (comma-separated h1, h2; order = preference).",
        support: Support::Ignored(HTTP2_ONLY),
    },
    Setting {
        name: "http2_cleartext",
        section: "HTTP/2",
        flags: &["--http2-cleartext"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_http2_cleartext,
        default: || Value::Str("off".to_string()),
        help: "Accept HTTP/2 over cleartext TCP (h2c): off, prior-knowledge, upgrade or both.",
        support: Support::Ignored(HTTP2_ONLY),
    },
    Setting {
        name: "http2_max_concurrent_streams",
        section: "HTTP/2",
        flags: &["--http2-max-concurrent-streams"],
        meta: "INT",
        action: Action::Set,
        parse: parse_http2_max_concurrent_streams,
        default: || Value::Int(100),
        help: "Maximum number of concurrent HTTP/2 streams per connection.",
        support: Support::Ignored(HTTP2_ONLY),
    },
    Setting {
        name: "http2_initial_window_size",
        section: "HTTP/2",
        flags: &["--http2-initial-window-size"],
        meta: "INT",
        action: Action::Set,
        parse: parse_http2_initial_window_size,
        default: || Value::Int(65_535),
        help: "Initial HTTP/2 flow control window size in bytes.",
        support: Support::Ignored(HTTP2_ONLY),
    },
    Setting {
        name: "http2_max_frame_size",
        section: "HTTP/2",
        flags: &["--http2-max-frame-size"],
        meta: "INT",
        action: Action::Set,
        parse: parse_http2_max_frame_size,
        default: || Value::Int(16_384),
        help: "Maximum HTTP/2 frame payload size in bytes.",
        support: Support::Ignored(HTTP2_ONLY),
    },
    Setting {
        name: "http2_max_header_list_size",
        section: "HTTP/2",
        flags: &["--http2-max-header-list-size"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(65_536),
        help: "Maximum size of HTTP/2 header list in bytes (HPACK protection).",
        support: Support::Ignored(HTTP2_ONLY),
    },
    Setting {
        name: "raw_paste_global_conf",
        section: "Server Mechanics",
        flags: &["--paste-global"],
        meta: "CONF",
        action: Action::Append,
        parse: parse_stripped,
        default: empty_list,
        help: "Set a PasteDeploy global config variable in key=value form.",
        support: Support::Ignored(PASTE_ONLY),
    },
    Setting {
        name: "permit_obsolete_folding",
        section: "Server Mechanics",
        flags: &["--permit-obsolete-folding"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Permit requests employing obsolete HTTP line folding mechanism.",
        support: Support::Full,
    },
    Setting {
        name: "strip_header_spaces",
        section: "Server Mechanics",
        flags: &["--strip-header-spaces"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Strip spaces present between the header name and the ':'.",
        support: Support::Full,
    },
    Setting {
        name: "permit_unconventional_http_method",
        section: "Server Mechanics",
        flags: &["--permit-unconventional-http-method"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Permit HTTP methods not matching conventions, such as IANA registration guidelines.",
        support: Support::Full,
    },
    Setting {
        name: "permit_unconventional_http_version",
        section: "Server Mechanics",
        flags: &["--permit-unconventional-http-version"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Permit HTTP version not matching conventions of 2023.",
        support: Support::Full,
    },
    Setting {
        name: "casefold_http_method",
        section: "Server Mechanics",
        flags: &["--casefold-http-method"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Transform received HTTP methods to uppercase.",
        support: Support::Full,
    },
    Setting {
        name: "forwarder_headers",
        section: "Server Mechanics",
        flags: &["--forwarder-headers"],
        meta: "FORWARDER_HEADERS",
        action: Action::Set,
        parse: parse_comma_list,
        default: || Value::List(vec!["SCRIPT_NAME".to_string(), "PATH_INFO".to_string()]),
        help: "Upper-case header names a trusted front-end proxy may set, to be used in the WSGI environ.",
        support: Support::Full,
    },
    Setting {
        name: "header_map",
        section: "Server Mechanics",
        flags: &["--header-map"],
        meta: "HEADER_MAP",
        action: Action::Set,
        parse: parse_header_map,
        default: || Value::Str("drop".to_string()),
        help: "Configure how header field names are mapped into environ: drop, refuse or dangerous.",
        support: Support::Full,
    },
    Setting {
        name: "asgi_loop",
        section: "Worker Processes",
        flags: &["--asgi-loop"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_asgi_loop,
        default: || Value::Str("auto".to_string()),
        help: "Event loop implementation for ASGI workers.",
        support: Support::Ignored(ASGI_ONLY),
    },
    Setting {
        name: "asgi_lifespan",
        section: "Worker Processes",
        flags: &["--asgi-lifespan"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_asgi_lifespan,
        default: || Value::Str("auto".to_string()),
        help: "Control ASGI lifespan protocol handling.",
        support: Support::Ignored(ASGI_ONLY),
    },
    Setting {
        name: "asgi_disconnect_grace_period",
        section: "Worker Processes",
        flags: &["--asgi-disconnect-grace-period"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(3),
        help: "Grace period (seconds) for ASGI apps to handle client disconnects.",
        support: Support::Ignored(ASGI_ONLY),
    },
    Setting {
        name: "websocket_max_message_size",
        section: "Worker Processes",
        flags: &["--websocket-max-message-size"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(16_777_216),
        help: "Largest WebSocket message, in bytes, the asgi worker accepts.",
        support: Support::Ignored(ASGI_ONLY),
    },
    Setting {
        name: "http_parser",
        section: "Worker Processes",
        flags: &["--http-parser"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_http_parser,
        default: || Value::Str("auto".to_string()),
        help: "HTTP parser implementation: auto, fast or python.",
        support: Support::Ignored("rgunicorn always uses its own HTTP parser"),
    },
    Setting {
        name: "root_path",
        section: "Server Mechanics",
        flags: &["--root-path"],
        meta: "STRING",
        action: Action::Set,
        parse: parse_stripped,
        default: empty_str,
        help: "The root path for ASGI applications.",
        support: Support::Ignored(ASGI_ONLY),
    },
    Setting {
        name: "dirty_apps",
        section: "Dirty Arbiters",
        flags: &["--dirty-app"],
        meta: "STRING",
        action: Action::Append,
        parse: parse_stripped,
        default: empty_list,
        help: "Dirty applications to load in the dirty worker pool.",
        support: Support::Refused(NO_DIRTY),
    },
    Setting {
        name: "dirty_workers",
        section: "Dirty Arbiters",
        flags: &["--dirty-workers"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(0),
        help: "The number of dirty worker processes.",
        support: Support::Refused(NO_DIRTY),
    },
    Setting {
        name: "dirty_timeout",
        section: "Dirty Arbiters",
        flags: &["--dirty-timeout"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(300),
        help: "Timeout for dirty task execution in seconds.",
        support: Support::Ignored(DIRTY_ONLY),
    },
    Setting {
        name: "dirty_threads",
        section: "Dirty Arbiters",
        flags: &["--dirty-threads"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(1),
        help: "The number of threads per dirty worker.",
        support: Support::Ignored(DIRTY_ONLY),
    },
    Setting {
        name: "dirty_graceful_timeout",
        section: "Dirty Arbiters",
        flags: &["--dirty-graceful-timeout"],
        meta: "INT",
        action: Action::Set,
        parse: parse_pos_int,
        default: || Value::Int(30),
        help: "Timeout for graceful dirty worker shutdown in seconds.",
        support: Support::Ignored(DIRTY_ONLY),
    },
    hook(
        "on_dirty_starting",
        || Value::Str("<OnDirtyStarting.on_dirty_starting()>".to_string()),
        "Dirty Arbiter Hooks",
        "Called just before the dirty arbiter process is initialized.",
        Support::Ignored(DIRTY_ONLY),
    ),
    hook(
        "dirty_post_fork",
        || Value::Str("<DirtyPostFork.dirty_post_fork()>".to_string()),
        "Dirty Arbiter Hooks",
        "Called just after a dirty worker has been forked.",
        Support::Ignored(DIRTY_ONLY),
    ),
    hook(
        "dirty_worker_init",
        || Value::Str("<DirtyWorkerInit.dirty_worker_init()>".to_string()),
        "Dirty Arbiter Hooks",
        "Called just after a dirty worker has initialized all applications.",
        Support::Ignored(DIRTY_ONLY),
    ),
    hook(
        "dirty_worker_exit",
        || Value::Str("<DirtyWorkerExit.dirty_worker_exit()>".to_string()),
        "Dirty Arbiter Hooks",
        "Called when a dirty worker has exited.",
        Support::Ignored(DIRTY_ONLY),
    ),
    Setting {
        name: "control_socket",
        section: "Control",
        flags: &["--control-socket"],
        meta: "PATH",
        action: Action::Set,
        parse: parse_stripped,
        default: default_control_socket,
        help: "Unix socket path for control interface.",
        support: Support::Full,
    },
    Setting {
        name: "control_socket_mode",
        section: "Control",
        flags: &["--control-socket-mode"],
        meta: "INT",
        action: Action::Set,
        parse: parse_octal,
        default: || Value::Int(0o600),
        help: "Permission mode for control socket.",
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
        help: "Disable control socket.",
        support: Support::Full,
    },
    // rgunicorn's own, taken from Granian (Gunicorn has none): recycling on memory and age.
    Setting {
        name: "workers_max_rss",
        section: "Worker Processes",
        flags: &["--workers-max-rss"],
        meta: "MIB",
        action: Action::Set,
        parse: parse_workers_max_rss,
        default: none,
        help: "Recycle a worker whose resident memory stays above this many MiB \
               (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "rss_sample_interval",
        section: "Worker Processes",
        flags: &["--rss-sample-interval"],
        meta: "DURATION",
        action: Action::Set,
        parse: parse_rss_sample_interval,
        default: || Value::Int(30),
        help: "How often the master samples the workers' memory for --workers-max-rss: \
               seconds or 1h30m, 5m, 30s; 1 to 300 s (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "rss_samples",
        section: "Worker Processes",
        flags: &["--rss-samples"],
        meta: "INT",
        action: Action::Set,
        parse: parse_rss_samples,
        default: || Value::Int(1),
        help: "Consecutive samples over --workers-max-rss before a worker is recycled \
               (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "workers_lifetime",
        section: "Worker Processes",
        flags: &["--workers-lifetime"],
        meta: "DURATION",
        action: Action::Set,
        parse: parse_workers_lifetime,
        default: none,
        help: "Recycle each worker after this long, plus up to 10% jitter: seconds or 1h30m, \
               5m; at least 60 s (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    // rgunicorn's own, taken from Granian: static files served by the worker's loop.
    Setting {
        name: "static_path_route",
        section: "Static Files",
        flags: &["--static-path-route"],
        meta: "ROUTE",
        action: Action::Append,
        parse: parse_static_route,
        default: || Value::List(vec!["/static".to_string()]),
        help: "The URL path under which each --static-path-mount is served, in order \
               (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "static_path_mount",
        section: "Static Files",
        flags: &["--static-path-mount"],
        meta: "DIRECTORY",
        action: Action::Append,
        parse: parse_stripped,
        default: empty_list,
        help: "A directory whose files are served under its --static-path-route, by the \
               server itself (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "static_path_dir_to_file",
        section: "Static Files",
        flags: &["--static-path-dir-to-file"],
        meta: "FILE",
        action: Action::Set,
        parse: parse_stripped,
        default: none,
        help: "The file served for a directory under a static route, such as index.html \
               (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "static_path_expires",
        section: "Static Files",
        flags: &["--static-path-expires"],
        meta: "DURATION",
        action: Action::Set,
        parse: parse_static_expires,
        default: || Value::Int(86400),
        help: "Cache-Control max-age of static files: seconds or 1h30m, 5m; 0 sends none \
               (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    // rgunicorn's own, taken from Granian: the Prometheus exporter.
    Setting {
        name: "metrics",
        section: "Metrics",
        flags: &["--metrics"],
        meta: "",
        action: Action::SetTrue,
        parse: parse_bool,
        default: no,
        help: "Serve Prometheus metrics at GET /metrics on --metrics-address:--metrics-port, \
               from the master (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "metrics_address",
        section: "Metrics",
        flags: &["--metrics-address"],
        meta: "ADDRESS",
        action: Action::Set,
        parse: parse_metrics_address,
        default: || Value::Str("127.0.0.1".to_string()),
        help: "The IP address the metrics exporter binds to (rgunicorn's own, from Granian).",
        support: Support::Full,
    },
    Setting {
        name: "metrics_port",
        section: "Metrics",
        flags: &["--metrics-port"],
        meta: "INT",
        action: Action::Set,
        parse: parse_metrics_port,
        default: || Value::Int(9090),
        help: "The port the metrics exporter binds to; 0 picks a free one, which is logged \
               (rgunicorn's own, from Granian).",
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

    /// rgunicorn's own settings, after Gunicorn's, taken from Granian.
    const OWN: [&str; 11] = [
        "workers_max_rss",
        "rss_sample_interval",
        "rss_samples",
        "workers_lifetime",
        "static_path_route",
        "static_path_mount",
        "static_path_dir_to_file",
        "static_path_expires",
        "metrics",
        "metrics_address",
        "metrics_port",
    ];

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
    fn the_table_has_all_120_gunicorn_settings_in_order_then_our_own() {
        assert_eq!(SETTINGS.len(), 120 + OWN.len());
        let own: Vec<_> = SETTINGS[120..].iter().map(|s| s.name).collect();
        assert_eq!(own, OWN);
        let first_and_last: Vec<_> = [0, 1, 2, 58, 59, 75, 76, 116, 117, 119]
            .iter()
            .map(|&i| SETTINGS[i].name)
            .collect();
        assert_eq!(
            first_and_last,
            [
                "config",
                "wsgi_app",
                "bind",
                "pythonpath",
                "paste",
                "ssl_context",
                "proxy_protocol",
                "dirty_worker_exit",
                "control_socket",
                "control_socket_disable"
            ]
        );
    }

    #[test]
    fn file_only_settings_have_no_flags() {
        for name in [
            "wsgi_app",
            "tmp_upload_dir",
            "secure_scheme_headers",
            "logconfig_dict",
            "default_proc_name",
            "on_starting",
            "ssl_context",
            "dirty_worker_exit",
        ] {
            assert!(find(name).unwrap().flags.is_empty(), "{name}");
        }
    }

    /// A setting left at its default is never reported as ignored or refused: the text of
    /// each default must parse back to the default itself.
    #[test]
    fn defaults_survive_their_own_parser() {
        for setting in SETTINGS {
            // Gunicorn keeps `--ssl-version` as text against an int default (and warns).
            if setting.action != Action::Set || setting.name == "ssl_version" {
                continue;
            }
            let text = match (setting.default)() {
                Value::Str(text) => text,
                Value::Int(n) => n.to_string(),
                Value::List(items) => items.join(","),
                // Dicts only come from a config file, never as text.
                Value::None | Value::Bool(_) | Value::Dict(_) | Value::Address(..) => continue,
            };
            assert_eq!(
                (setting.parse)(&text),
                Ok((setting.default)()),
                "{}",
                setting.name
            );
        }
    }

    #[test]
    fn control_socket_default_ends_with_gunicorn_ctl() {
        match default_control_socket() {
            Value::Str(path) => assert!(path.ends_with("/gunicorn.ctl"), "{path}"),
            other => panic!("{other:?}"),
        }
    }
}
