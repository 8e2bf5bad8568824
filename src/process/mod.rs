//! The rgunicorn process itself: the start-up sequence ([`run`]: command line, interpreter,
//! configuration, logs, daemonizing, the app when preloaded, the listening sockets, then
//! the master), and the same entered from a running interpreter when installed with pip
//! ([`extension`]).

pub mod extension;

use pyo3::Python;
use tracing::{debug, error, info, warn};

use crate::config::{self, ConfigError, Invocation};
use crate::error::{EXIT_CONFIG, EXIT_OK, EXIT_USAGE};
use crate::unix::{identity, pidfile, proctitle, systemd};
use crate::{log, master, python, sock, wsgi, VERSION};

/// Prints a settings error the way Gunicorn does and returns its exit status.
fn report_config_error(e: ConfigError) -> i32 {
    match e {
        ConfigError::Usage(e) => {
            let _ = e.print();
            if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            }
        }
        ConfigError::BadArgument(msg) => {
            eprintln!("usage: rgunicorn [OPTIONS] [APP_MODULE]\nrgunicorn: error: {msg}");
            EXIT_USAGE
        }
        ConfigError::Invalid(msg) => config_error(&msg),
        ConfigError::File(msg) => {
            eprintln!("{msg}");
            EXIT_CONFIG
        }
        e @ ConfigError::FileValue { .. } => {
            eprintln!("{e}");
            EXIT_CONFIG
        }
    }
}

/// Bytes of the main thread's alternate signal stack (inherited by every forked worker).
const SIGNAL_STACK_BYTES: usize = 256 * 1024;

/// Gives the main thread a roomy alternate signal stack. Python installs its handlers with
/// SA_ONSTACK, and the one Rust's runtime sets up (for its stack-overflow report) is a few
/// KiB: a terminal's Ctrl-C (INT) followed at once by the master's QUIT nests two handlers
/// there, each first resolving a libpython symbol through the dynamic linker (which saves
/// the whole vector register state on the stack), and the worker crashed with SIGSEGV.
fn install_signal_stack() {
    let stack: &'static mut [u8] = Box::leak(vec![0u8; SIGNAL_STACK_BYTES].into_boxed_slice());
    let ss = nix::libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: stack.len(),
    };
    // SAFETY: `ss` describes a live, leaked (never freed) buffer of `ss_size` bytes; the
    // old stack is not needed (a null pointer asks for nothing back).
    let _ = unsafe { nix::libc::sigaltstack(&ss, std::ptr::null_mut()) };
}

/// Prints `Error: <msg>` as Gunicorn does for a setting it refuses, and returns exit status 1.
fn config_error(msg: &str) -> i32 {
    eprintln!("Error: {msg}");
    EXIT_CONFIG
}

/// Runs rgunicorn with the process arguments (`argv[0]` included); returns the exit status.
pub fn run(argv: &[String]) -> i32 {
    // What a USR2 re-exec must reproduce, before anything below changes it.
    run_with(argv, master::reexec::StartState::capture(argv))
}

/// [`run`], with what a USR2 re-exec executes already captured (see
/// `python::extension`, where the process is `python` rather than rgunicorn's binary).
pub fn run_with(argv: &[String], start: master::reexec::StartState) -> i32 {
    install_signal_stack();
    let args = argv.get(1..).unwrap_or_default();
    // Usage errors and --version need no interpreter.
    match config::cli::parse(args) {
        Ok(given) if given.version => return print_version(argv),
        Ok(_) => {}
        Err(e) => return report_config_error(e),
    }
    // Our handlers go in before Python starts, so it never claims SIGINT for itself.
    let signals = match master::signals::SignalQueue::install() {
        Ok(s) => s,
        Err(e) => return config_error(&format!("can't install signal handlers: {e}")),
    };
    // The interpreter comes before the settings: the configuration file is Python.
    if let Err(msg) = python::interpreter::initialize(argv) {
        return config_error(&msg);
    }
    let config = match Python::attach(|py| config::load(py, args)) {
        Ok(Invocation::Run(config)) => *config,
        Ok(Invocation::Version) => return print_version(argv),
        Err(e) => return report_config_error(e),
    };
    let Some(app_module) = config.app_module.clone() else {
        return config_error("No application module specified.");
    };

    // `-e` variables and SERVER_SOFTWARE go into os.environ (which also calls putenv), so the
    // master's Python code and every worker see them.
    let mut environ = config.raw_env.clone();
    environ.push((
        "SERVER_SOFTWARE".to_string(),
        format!("rgunicorn/{VERSION}"),
    ));
    if let Err(msg) = Python::attach(|py| python::set_environ(py, &environ)) {
        return config_error(&msg);
    }
    if let Err(e) = std::env::set_current_dir(&config.chdir) {
        return config_error(&format!("can't chdir to '{}': {e}", config.chdir.display()));
    }
    // Not when a USR2 parent started us: it is daemonized already.
    if config.daemon && std::env::var_os("GUNICORN_FD").is_none() {
        if let Err(msg) = daemonize(config.enable_stdio_inheritance) {
            return config_error(&msg);
        }
    }
    if let Err(e) = log::init(&config.errorlog, config.loglevel) {
        return config_error(&format!("can't open error log '{}': {e}", config.errorlog));
    }
    for warning in &config.warnings {
        warn!("{warning}");
    }
    if let Some((addr, facility, prefix)) = &config.syslog {
        if let Err(e) = log::syslog::init(
            addr,
            facility,
            prefix,
            !config.disable_redirect_access_to_syslog,
        ) {
            warn!("syslog: can't reach {addr}: {e}; not logging to syslog");
        }
    }
    if let Some((host, prefix, tags)) = &config.statsd {
        match log::statsd::Statsd::connect(host, prefix, tags) {
            Ok(client) => log::statsd::init(client),
            Err(e) => warn!("statsd: can't reach {host}: {e}; metrics are off"),
        }
    }
    if let Some(path) = config.accesslog.as_deref().filter(|p| *p != "-") {
        if let Err(e) = log::Sink::open(path, log::Sink::Stdout) {
            return config_error(&format!("can't open access log '{path}': {e}"));
        }
    }
    if let Some(identity) = &config.identity {
        // Workers run as this user and must be able to reopen their logs (USR1).
        let logs = [Some(config.errorlog.as_str()), config.accesslog.as_deref()];
        identity::give_files(identity, logs.into_iter().flatten().filter(|p| *p != "-"));
    }
    if let Err(msg) = Python::attach(|py| prepare_interpreter(py, &config)) {
        return config_error(&msg);
    }
    Python::attach(|py| python::hooks::install(py, &config.hooks));
    if config.logconfig_dict.is_some()
        || config.logconfig_json.is_some()
        || config.logconfig.is_some()
    {
        let configured = Python::attach(|py| {
            log::python::configure(
                py,
                config.logconfig_dict.as_deref(),
                config.logconfig_json.as_deref(),
                config.logconfig.as_deref(),
                config.loglevel,
            )
        });
        match configured {
            Ok(level) => log::set_level(level),
            Err(msg) => return config_error(&msg),
        }
    }

    if config.print_config {
        // Written, not println!'d: `--print-config | head` must not panic on a closed pipe.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for (name, value) in config.describe() {
            if writeln!(out, "{name} = {value}").is_err() {
                break;
            }
        }
    }
    if config.check_config || config.print_config {
        // Load the app in this process, as Gunicorn does, and report.
        return Python::attach(|py| match wsgi::app::load(py, &app_module) {
            Ok(_) => EXIT_OK,
            Err(e) => {
                eprintln!("{}", e.message(py));
                EXIT_CONFIG
            }
        });
    }

    if config.preload_app {
        // Imported here, before `Starting rgunicorn` (as Gunicorn does); workers inherit it
        // through fork, sharing its memory copy-on-write.
        let failed = Python::attach(|py| match wsgi::app::load(py, &app_module) {
            Ok(app) => {
                wsgi::app::set_preloaded(app);
                None
            }
            Err(e) => {
                if let wsgi::app::AppError::Import(err) = &e {
                    python::log_exception(py, "Exception while preloading the application", err);
                    if let Some(hint) = wsgi::app::forgotten_virtualenv_hint(py, err) {
                        error!("{hint}");
                    }
                } else {
                    eprintln!("{}", e.message(py));
                }
                Some(e.exit_code())
            }
        });
        if let Some(code) = failed {
            return code;
        }
    }
    if config.capture_output && config.errorlog != "-" {
        // The app's print() and stray writes to stdout/stderr go to the error log file.
        if let Err(e) = log::capture_output() {
            return config_error(&format!("can't capture output: {e}"));
        }
    }
    if log::enabled(log::LogLevel::Debug) {
        debug!("Current configuration:");
        for (name, value) in config.describe() {
            debug!("  {}: {value}", name.trim_end());
        }
    }
    info!("Starting rgunicorn {VERSION}");
    if config.reload {
        warn!("Reloader is on. Use in development only!");
    }
    // A master started by USR2 adopts its parent's sockets and writes `<pidfile>.2`.
    let upgrade = master::reexec::inherited();
    let pidfile_path = config.pidfile.as_ref().map(|p| match &upgrade {
        Some(_) => {
            let mut name = p.clone().into_os_string();
            name.push(".2");
            std::path::PathBuf::from(name)
        }
        None => p.clone(),
    });
    let pidfile = match &pidfile_path {
        Some(path) => match pidfile::Pidfile::create(path, std::process::id() as i32) {
            Ok(p) => Some(p),
            Err(msg) => {
                error!("{msg}");
                return EXIT_CONFIG;
            }
        },
        None => None,
    };
    if python::hooks::is_set("on_starting") {
        Python::attach(|py| {
            let pid = nix::unistd::getpid();
            match crate::worker::hooks::server_namespace(py, &config, pid, &[], &[], config.workers)
            {
                Ok(server) => python::hooks::call(py, "on_starting", &[server]),
                Err(e) => python::log_exception(py, "Exception in on_starting hook", &e),
            }
        });
    }
    debug!("Arbiter booted");
    let listeners = match &upgrade {
        Some((fds, _)) => inherit(fds, &config),
        None => listen(&config),
    };
    let listeners = match listeners {
        Ok(l) => l,
        Err(msg) => {
            error!("{msg}");
            if let Some(p) = &pidfile {
                p.unlink();
            }
            return EXIT_CONFIG;
        }
    };
    let shown = sock::describe_all(&listeners, config.tls.is_some());
    info!("Listening at: {shown} ({})", std::process::id());
    info!(
        "Using worker: {}",
        if config.threaded { "gthread" } else { "sync" }
    );
    if config.threaded && config.keepalive > 0 && config.worker_connections <= config.threads {
        // Gunicorn's gthread check: keep-alive slots are worker_connections - threads.
        warn!("No keepalived connections can be handled. Check the number of worker connections and threads.");
    }
    // The configuration file, hooks and a preloaded app are Python code run in this process:
    // one that took a master signal for itself would leave the master deaf to it.
    for sig in signals.reclaim() {
        warn!("{sig} had a Python handler in the master (set by the configuration or the app); rgunicorn's own is restored");
    }
    proctitle::set(&format!("rgunicorn: master [{}]", config.proc_name));
    systemd::notify("READY=1\nSTATUS=rgunicorn arbiter booted");
    match master::Master::new(config, listeners, signals, pidfile, args.to_vec()) {
        Ok(m) => m
            .with_upgrade(start, upgrade.map(|(_, parent)| parent))
            .run(),
        Err(e) => {
            error!("can't set up worker heartbeats: {e}");
            EXIT_CONFIG
        }
    }
}

/// The sockets a USR2 parent handed over (`bind` is not bound again; entries are matched
/// so a later HUP with the same `bind` keeps them).
fn inherit(
    fds: &[std::os::fd::RawFd],
    config: &config::Config,
) -> Result<Vec<sock::Listener>, String> {
    let mut listeners = fds
        .iter()
        .map(|&fd| {
            sock::inherited_listener(fd).map_err(|e| match e {
                sock::BindError::InUse(m) | sock::BindError::Other(m) => m,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    sock::match_binds(&mut listeners, &config.binds);
    Ok(listeners)
}

/// The listeners: sockets systemd passed (then `bind` is ignored, as in Gunicorn) plus
/// `fd://N` binds, or else every `bind` address.
fn listen(config: &config::Config) -> Result<Vec<sock::Listener>, String> {
    let activated = systemd::listen_fds();
    if activated.is_empty() {
        return sock::bind_all(&config.binds, &config.bind_options());
    }
    let fd_binds = config.binds.iter().filter_map(|b| match b {
        sock::BindAddress::Fd(fd) => Some(*fd),
        _ => None,
    });
    activated
        .into_iter()
        .chain(fd_binds)
        .map(|fd| {
            sock::inherited_listener(fd).map_err(|e| match e {
                sock::BindError::InUse(m) | sock::BindError::Other(m) => m,
            })
        })
        .collect()
}

/// `sys.path` gets `--pythonpath` entries and the working directory first; the
/// `gunicorn.error` logger is routed to our error log.
fn prepare_interpreter(py: Python<'_>, config: &config::Config) -> Result<(), String> {
    use pyo3::types::{PyAnyMethods, PyListMethods};
    let setup = || -> pyo3::PyResult<()> {
        let path = py.import("sys")?.getattr("path")?;
        let path = path.cast::<pyo3::types::PyList>()?;
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| ".".to_string());
        let mut first: Vec<String> = config.pythonpath.clone();
        first.push(cwd);
        for entry in first.iter().rev() {
            path.insert(0, entry)?;
        }
        python::install_bridge(py, config.loglevel)
    };
    setup().map_err(|e| format!("can't prepare the Python interpreter: {e}"))
}

/// Detaches from the terminal as Gunicorn's `-D` does: fork, setsid, fork again, umask
/// 022, standard streams to /dev/null (stdout/stderr kept with `-R`).
fn daemonize(keep_stdio: bool) -> Result<(), String> {
    use nix::unistd::setsid;
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        eprintln!("Warning: --daemon with systemd's NOTIFY_SOCKET set; use Type=notify without --daemon instead.");
    }
    for step in 0..2 {
        // The interpreter is alive: fork with its protocol (we are single-threaded).
        match Python::attach(python::fork::fork) {
            Ok(python::fork::Forked::Parent(_)) => {
                // SAFETY: the parent leaves at once without running destructors that could
                // touch state the child now owns.
                unsafe { nix::libc::_exit(0) }
            }
            Ok(python::fork::Forked::Child) => {}
            Err(e) => return Err(format!("can't daemonize: fork failed: {e}")),
        }
        if step == 0 {
            setsid().map_err(|e| format!("can't daemonize: setsid failed: {e}"))?;
        }
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("can't daemonize: /dev/null: {e}"))?;
    let redirect = |e: nix::Error| format!("can't daemonize: redirecting stdio: {e}");
    nix::unistd::dup2_stdin(&null).map_err(redirect)?;
    if !keep_stdio {
        nix::unistd::dup2_stdout(&null).map_err(redirect)?;
        nix::unistd::dup2_stderr(&null).map_err(redirect)?;
    }
    Ok(())
}

/// `rgunicorn (version X.Y.Z)` and the Python in use.
fn print_version(argv: &[String]) -> i32 {
    println!("rgunicorn (version {VERSION})");
    match python::interpreter::initialize(argv) {
        Ok(()) => println!("{}", Python::attach(python::interpreter::describe)),
        Err(msg) => println!(
            "Python {} (not usable: {msg})",
            python::interpreter::BUILD_PYTHON
        ),
    }
    EXIT_OK
}
