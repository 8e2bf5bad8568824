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

/// An exit status, the reason already reported: a start-up step that ends the process.
type Exit = i32;

/// [`run`], with what a USR2 re-exec executes already captured (see `extension`, where the
/// process is `python` rather than rgunicorn's binary).
pub fn run_with(argv: &[String], start: master::reexec::StartState) -> i32 {
    match start_up(argv, start) {
        Ok(code) | Err(code) => code,
    }
}

/// The start-up sequence, in Gunicorn's order; each step either goes on or ends the process
/// with its exit status.
fn start_up(argv: &[String], start: master::reexec::StartState) -> Result<i32, Exit> {
    install_signal_stack();
    let args = argv.get(1..).unwrap_or_default();
    // Usage errors and --version need no interpreter.
    if parse_command_line(args)? {
        return Ok(print_version(argv));
    }
    // Our handlers go in before Python starts, so it never claims SIGINT for itself.
    let signals = master::signals::SignalQueue::install()
        .map_err(|e| config_error(&format!("can't install signal handlers: {e}")))?;
    let Some(config) = load_settings(argv, args)? else {
        return Ok(print_version(argv));
    };
    let app_module = config
        .app_module
        .clone()
        .ok_or_else(|| config_error("No application module specified."))?;
    prepare_process(&config)?;
    open_logs(&config)?;
    prepare_python(&config)?;
    if config.print_config {
        print_config(&config);
    }
    if config.check_config || config.print_config {
        // Load the app in this process, as Gunicorn does, and report.
        return Ok(check_app(&app_module));
    }
    if config.preload_app {
        preload(&app_module)?;
    }
    if config.capture_output && config.errorlog != "-" {
        // The app's print() and stray writes to stdout/stderr go to the error log file.
        log::capture_output().map_err(|e| config_error(&format!("can't capture output: {e}")))?;
    }
    announce(&config);
    // A master started by USR2 adopts its parent's sockets and writes `<pidfile>.2`.
    let upgrade = master::reexec::inherited();
    let pidfile = write_pidfile(&config, upgrade.is_some())?;
    run_on_starting(&config);
    debug!("Arbiter booted");
    let listeners = open_listeners(&config, upgrade.as_ref().map(|(fds, _)| &fds[..]))
        .inspect_err(|_| {
            if let Some(p) = &pidfile {
                p.unlink();
            }
        })?;
    announce_listening(&config, &listeners);
    // The configuration file, hooks and a preloaded app are Python code run in this process:
    // one that took a master signal for itself would leave the master deaf to it.
    for sig in signals.reclaim() {
        warn!("{sig} had a Python handler in the master (set by the configuration or the app); rgunicorn's own is restored");
    }
    proctitle::set(&format!("rgunicorn: master [{}]", config.proc_name));
    systemd::notify("READY=1\nSTATUS=rgunicorn arbiter booted");
    match master::Master::new(config, listeners, signals, pidfile, args.to_vec()) {
        Ok(m) => Ok(m
            .with_upgrade(start, upgrade.map(|(_, parent)| parent))
            .run()),
        Err(e) => {
            error!("can't set up worker heartbeats: {e}");
            Err(EXIT_CONFIG)
        }
    }
}

/// Checks the command line alone; true if it asks for `--version`.
fn parse_command_line(args: &[String]) -> Result<bool, Exit> {
    match config::cli::parse(args) {
        Ok(given) => Ok(given.version),
        Err(e) => Err(report_config_error(e)),
    }
}

/// Starts the interpreter (the configuration file is Python) and resolves the settings;
/// None if they ask for `--version`.
fn load_settings(argv: &[String], args: &[String]) -> Result<Option<config::Config>, Exit> {
    python::interpreter::initialize(argv).map_err(|msg| config_error(&msg))?;
    match Python::attach(|py| config::load(py, args)) {
        Ok(Invocation::Run(config)) => Ok(Some(*config)),
        Ok(Invocation::Version) => Ok(None),
        Err(e) => Err(report_config_error(e)),
    }
}

/// The process's environment: `-e` variables, `--chdir`, `--daemon`.
fn prepare_process(config: &config::Config) -> Result<(), Exit> {
    // `-e` variables and SERVER_SOFTWARE go into os.environ (which also calls putenv), so the
    // master's Python code and every worker see them.
    let mut environ = config.raw_env.clone();
    environ.push((
        "SERVER_SOFTWARE".to_string(),
        format!("rgunicorn/{VERSION}"),
    ));
    Python::attach(|py| python::set_environ(py, &environ)).map_err(|msg| config_error(&msg))?;
    std::env::set_current_dir(&config.chdir)
        .map_err(|e| config_error(&format!("can't chdir to '{}': {e}", config.chdir.display())))?;
    // Not when a USR2 parent started us: it is daemonized already.
    if config.daemon && std::env::var_os("GUNICORN_FD").is_none() {
        daemonize(config.enable_stdio_inheritance).map_err(|msg| config_error(&msg))?;
    }
    Ok(())
}

/// The error log, syslog, StatsD and the access log file; the logs handed to the workers'
/// user.
fn open_logs(config: &config::Config) -> Result<(), Exit> {
    log::init(&config.errorlog, config.loglevel)
        .map_err(|e| config_error(&format!("can't open error log '{}': {e}", config.errorlog)))?;
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
        log::Sink::open(path, log::Sink::Stdout)
            .map_err(|e| config_error(&format!("can't open access log '{path}': {e}")))?;
    }
    if let Some(identity) = &config.identity {
        // Workers run as this user and must be able to reopen their logs (USR1).
        let logs = [Some(config.errorlog.as_str()), config.accesslog.as_deref()];
        identity::give_files(identity, logs.into_iter().flatten().filter(|p| *p != "-"));
    }
    Ok(())
}

/// `sys.path`, the log bridge, the hooks, and a Python logging configuration if one is set.
fn prepare_python(config: &config::Config) -> Result<(), Exit> {
    Python::attach(|py| prepare_interpreter(py, config)).map_err(|msg| config_error(&msg))?;
    Python::attach(|py| python::hooks::install(py, &config.hooks));
    if config.logconfig_dict.is_none()
        && config.logconfig_json.is_none()
        && config.logconfig.is_none()
    {
        return Ok(());
    }
    let level = Python::attach(|py| {
        log::python::configure(
            py,
            config.logconfig_dict.as_deref(),
            config.logconfig_json.as_deref(),
            config.logconfig.as_deref(),
            config.loglevel,
        )
    })
    .map_err(|msg| config_error(&msg))?;
    log::set_level(level);
    Ok(())
}

/// `--print-config`: every setting, `name = value`.
fn print_config(config: &config::Config) {
    // Written, not println!'d: `--print-config | head` must not panic on a closed pipe.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (name, value) in config.describe() {
        if writeln!(out, "{name} = {value}").is_err() {
            break;
        }
    }
}

/// `--check-config`: imports the app here and says whether it loads.
fn check_app(app_module: &str) -> i32 {
    Python::attach(|py| match wsgi::app::load(py, app_module) {
        Ok(_) => EXIT_OK,
        Err(e) => {
            eprintln!("{}", e.message(py));
            EXIT_CONFIG
        }
    })
}

/// `--preload`: the app is imported here, before `Starting rgunicorn` (as Gunicorn does);
/// workers inherit it through fork, sharing its memory copy-on-write.
fn preload(app_module: &str) -> Result<(), Exit> {
    Python::attach(|py| match wsgi::app::load(py, app_module) {
        Ok(app) => {
            wsgi::app::set_preloaded(app);
            Ok(())
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
            Err(e.exit_code())
        }
    })
}

/// The configuration at debug level, then `Starting rgunicorn X.Y.Z`.
fn announce(config: &config::Config) {
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
}

/// The pid file, `<pidfile>.2` for a master started by USR2.
fn write_pidfile(config: &config::Config, upgrade: bool) -> Result<Option<pidfile::Pidfile>, Exit> {
    let Some(path) = &config.pidfile else {
        return Ok(None);
    };
    let path = if upgrade {
        let mut name = path.clone().into_os_string();
        name.push(".2");
        std::path::PathBuf::from(name)
    } else {
        path.clone()
    };
    match pidfile::Pidfile::create(&path, std::process::id() as i32) {
        Ok(p) => Ok(Some(p)),
        Err(msg) => {
            error!("{msg}");
            Err(EXIT_CONFIG)
        }
    }
}

fn run_on_starting(config: &config::Config) {
    if !python::hooks::is_set("on_starting") {
        return;
    }
    Python::attach(|py| {
        let pid = nix::unistd::getpid();
        match crate::worker::hooks::server_namespace(py, config, pid, &[], &[], config.workers) {
            Ok(server) => python::hooks::call(py, "on_starting", &[server]),
            Err(e) => python::log_exception(py, "Exception in on_starting hook", &e),
        }
    });
}

/// The listening sockets: inherited from a USR2 parent, or bound (or passed by systemd).
fn open_listeners(
    config: &config::Config,
    inherited: Option<&[std::os::fd::RawFd]>,
) -> Result<Vec<sock::Listener>, Exit> {
    let listeners = match inherited {
        Some(fds) => inherit(fds, config),
        None => listen(config),
    };
    listeners.map_err(|msg| {
        error!("{msg}");
        EXIT_CONFIG
    })
}

/// `Listening at: …` and `Using worker: …`, with Gunicorn's gthread warning.
fn announce_listening(config: &config::Config, listeners: &[sock::Listener]) {
    let shown = sock::describe_all(listeners, config.tls.is_some());
    info!("Listening at: {shown} ({})", std::process::id());
    info!(
        "Using worker: {}",
        if config.threaded { "gthread" } else { "sync" }
    );
    if config.threaded && config.keepalive > 0 && config.worker_connections <= config.threads {
        // Gunicorn's gthread check: keep-alive slots are worker_connections - threads.
        warn!("No keepalived connections can be handled. Check the number of worker connections and threads.");
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
