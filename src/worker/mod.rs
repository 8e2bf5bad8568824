//! A worker process: boots (signals, app import), then serves connections from a mio loop,
//! one request at a time through the app (the sync contract: `wsgi.multithread = False`).
//!
//! Connection I/O happens outside Python: idle keep-alive connections and slow clients cost
//! a buffer, not the worker. Only a complete request head reaches the app.

mod conn;
mod event_loop;
pub mod handoff;
pub mod keeper;
mod object;
mod pool;
mod reload;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{signal, SigHandler, Signal};
use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use tracing::{debug, info};

use crate::log::access::{AccessFormat, AccessLog};
use crate::log::Sink;
use crate::master::WorkerSeed;
use crate::wsgi::app::AppError;

/// Cleared by SIGTERM: finish the request in hand, then leave.
static ALIVE: AtomicBool = AtomicBool::new(true);
/// Set by SIGUSR1: reopen log files at the next loop turn.
static REOPEN_LOGS: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Files of a failed import, watched by `--reload` in addition to loaded modules.
    static BROKEN_FILES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Calls a `(server, worker)` hook (post_fork, worker_exit) from the worker.
fn run_server_worker_hook(py: Python<'_>, name: &str, seed: &WorkerSeed<'_>) {
    if !crate::python::hooks::is_set(name) {
        return;
    }
    let Some(worker) = crate::python::hooks::worker_object(py) else {
        return;
    };
    // The master's view when it forked us, as Gunicorn's child has its arbiter's.
    let listeners: Vec<String> = seed.listeners.iter().map(|l| l.addr.to_string()).collect();
    match crate::master::server_namespace(
        py,
        seed.config,
        seed.master_pid,
        &seed.siblings,
        &listeners,
        seed.num_workers,
    ) {
        Ok(server) => crate::python::hooks::call(py, name, &[server, worker]),
        Err(e) => crate::python::log_exception(py, &format!("Exception in {name} hook"), &e),
    }
}

/// Whether the worker should keep accepting and serving.
pub fn is_alive() -> bool {
    ALIVE.load(Ordering::Relaxed)
}

/// Set when the stop came from outside (TERM, master gone): the listening sockets may be
/// closing, so connections queued in the backlog are served before leaving.
static DRAIN_BACKLOG: AtomicBool = AtomicBool::new(false);

/// Stops the worker after the current request and serves the listen backlog first (TERM,
/// parent gone).
pub fn stop_gracefully() {
    DRAIN_BACKLOG.store(true, Ordering::Relaxed);
    ALIVE.store(false, Ordering::Relaxed);
}

/// Stops the worker after the current request without taking more connections
/// (max_requests, reload): the sockets stay open in the master and the other workers, so
/// queued connections are served there. The master is told at once, so the successor
/// boots while this worker finishes what it has.
pub fn retire() {
    if ALIVE.swap(false, Ordering::Relaxed) {
        if let Some(notice) = LEAVING_NOTICE.get() {
            notice.heartbeat.mark_leaving(notice.slot);
            // SAFETY: sends one byte from a live buffer on the master's wake socket, which
            // stays open in this process; never blocks.
            let _ = unsafe {
                nix::libc::send(
                    notice.master_wake,
                    [0u8].as_ptr().cast(),
                    1,
                    nix::libc::MSG_DONTWAIT | nix::libc::MSG_NOSIGNAL,
                )
            };
        }
    }
}

/// How a worker tells its master it is leaving on its own (see [`retire`]).
struct LeavingNotice {
    heartbeat: crate::master::heartbeat::Heartbeat,
    slot: usize,
    master_wake: std::os::fd::RawFd,
}

static LEAVING_NOTICE: std::sync::OnceLock<LeavingNotice> = std::sync::OnceLock::new();

/// Whether a stopping worker should serve the listen backlog before leaving.
pub fn drains_backlog() -> bool {
    DRAIN_BACKLOG.load(Ordering::Relaxed)
}

/// The master's pid, to tell its SIGTERM from one sent by anyone else.
static MASTER_PID: AtomicI32 = AtomicI32::new(0);
/// A SIGTERM came from another process than the master (see [`die_of_a_foreign_term`]).
static FOREIGN_TERM: AtomicBool = AtomicBool::new(false);
/// The write end of the wakeup pipe the event loop polls.
static WAKE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// TERM: finish the request in hand, then leave. A C handler rather than a Python one, for
/// the sender's pid; it only touches atomics and write(2), which are async-signal-safe.
extern "C" fn on_term(
    _signum: nix::libc::c_int,
    info: *mut nix::libc::siginfo_t,
    _context: *mut nix::libc::c_void,
) {
    let sender = if info.is_null() {
        0
    } else {
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo for the handler's
        // duration; si_pid is set for kill(2), and 0 for signals the kernel raises.
        unsafe { (*info).si_pid() }
    };
    if sender != MASTER_PID.load(Ordering::Relaxed) {
        FOREIGN_TERM.store(true, Ordering::Relaxed);
    }
    stop_gracefully();
    let fd = WAKE_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // write(2) may set errno, which the interrupted code may be about to read.
        let saved = nix::errno::Errno::last_raw();
        // SAFETY: writes one byte from a live buffer to our own non-blocking pipe.
        let _ = unsafe { nix::libc::write(fd, [0u8].as_ptr().cast(), 1) };
        nix::errno::Errno::set_raw(saved);
    }
}

/// A worker stopped by a SIGTERM its master did not send (the whole process group was
/// signalled: systemd's `KillMode=control-group`, `docker stop`, honcho) ends by that
/// signal once everything is done, so the master logs `Worker (pid:N) was sent SIGTERM!`
/// as Gunicorn's does: there the master's own TERM follows and lands while the worker's
/// interpreter shuts down, its handlers back to the default. The master's TERM alone ends
/// the worker with its exit status, as in Gunicorn.
fn die_of_a_foreign_term(code: i32) {
    // A failed boot keeps its exit status (3, 4): the master halts on it.
    if code != 0 || !FOREIGN_TERM.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: restoring the default disposition installs no handler code.
    let _ = unsafe { signal(Signal::SIGTERM, SigHandler::SigDfl) };
    let mut term = nix::sys::signal::SigSet::empty();
    term.add(Signal::SIGTERM);
    let _ = term.thread_unblock();
    let _ = nix::sys::signal::raise(Signal::SIGTERM);
}

/// Set once the worker serves: before, a quit only stops it (see [`on_quit`]).
static SERVING: AtomicBool = AtomicBool::new(false);
/// A quit (INT/QUIT) came while booting: leave without serving.
static QUIT_WHILE_BOOTING: AtomicBool = AtomicBool::new(false);

/// QUIT/INT: leave at once, interrupting the request in progress (Gunicorn: `sys.exit(0)`).
///
/// While the worker is still booting, the exception would surface in whatever Python code
/// boot runs (the app's import, our own set-up) as a boot failure; a terminal's Ctrl-C
/// reaches every worker at once, booting or not. Then the worker only notes the stop and
/// leaves cleanly when boot is done.
#[pyfunction]
fn on_quit(py: Python<'_>, _signum: i32, _frame: &Bound<'_, PyAny>) -> PyResult<()> {
    // Stopping first: the hook sees `worker.alive` False, as in Gunicorn.
    stop_gracefully();
    crate::python::hooks::call_worker_hook(py, "worker_int", &[]);
    if SERVING.load(Ordering::Relaxed) {
        Err(PySystemExit::new_err(0))
    } else {
        QUIT_WHILE_BOOTING.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The worker is leaving: a further stop signal (a terminal's Ctrl-C reaches the workers
/// and the master, which then signals them again) must not raise into the exit handlers
/// (Python prints "Exception ignored in atexit callback ... SystemExit"), so they are
/// ignored from here on (TERM only sets flags); the master's kill is the backstop.
fn ignore_stop_signals(py: Python<'_>) {
    const STOPS: [Signal; 3] = [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGABRT];
    // First at the OS level, so no new signal trips a Python handler from here on.
    for sig in STOPS {
        // SAFETY: ignoring a signal installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // The loop that read the wakeup pipe is gone (its read end closes): TERM only sets flags.
    WAKE_WRITE_FD.store(-1, Ordering::Relaxed);
    let Ok(sigmod) = py.import("signal") else {
        return;
    };
    // A stop signal that came just before may still have its Python handler pending: it
    // runs (and raises SystemExit) at the start of the next call, which then does not
    // happen. Each call is retried so that the wakeup fd is surely cleared (else Python
    // writes to a pipe without a reader: "Exception ignored ... BrokenPipeError").
    for _ in 0..4 {
        if sigmod.call_method1("set_wakeup_fd", (-1,)).is_ok() {
            break;
        }
    }
    if let Ok(ignore) = sigmod.getattr("SIG_IGN") {
        for sig in STOPS {
            for _ in 0..4 {
                if sigmod.call_method1("signal", (sig as i32, &ignore)).is_ok() {
                    break;
                }
            }
        }
    }
}

/// ABRT: the master timed us out. Says which request hung and where every thread was,
/// then SystemExit(1) unwinds the app and the request gets a 500.
#[pyfunction]
fn on_abort(py: Python<'_>, _signum: i32, _frame: &Bound<'_, PyAny>) -> PyResult<()> {
    stop_gracefully();
    crate::python::hooks::call_worker_hook(py, "worker_abort", &[]);
    let what = crate::wsgi::describe_current_request(py)
        .unwrap_or_else(|| "no request (between requests)".to_string());
    let stacks = thread_stacks(py).unwrap_or_else(|e| format!("(stacks unavailable: {e})\n"));
    crate::log::error_log(
        crate::config::LogLevel::Error,
        &format!(
            "Worker timed out (pid: {}) handling {what}; Python stacks:",
            std::process::id()
        ),
        Some(&stacks),
    );
    Err(PySystemExit::new_err(1))
}

/// Every Python thread's stack, innermost call last, as `traceback.format_stack` gives it.
fn thread_stacks(py: Python<'_>) -> PyResult<String> {
    let globals = pyo3::types::PyDict::new(py);
    py.run(
        c"
import sys, threading, traceback
names = {t.ident: t.name for t in threading.enumerate()}
parts = []
me = threading.get_ident()
for ident, frame in sys._current_frames().items():
    if ident == me:
        frame = frame.f_back  # skip this report's own frame
    parts.append('Thread %s (%d):\\n' % (names.get(ident, '?'), ident))
    parts.extend(traceback.format_stack(frame))
out = ''.join(parts)
",
        Some(&globals),
        None,
    )?;
    globals
        .get_item("out")?
        .map(|o| o.extract())
        .unwrap_or_else(|| Ok(String::new()))
}

#[pyfunction]
fn on_usr1(_signum: i32, _frame: &Bound<'_, PyAny>) {
    REOPEN_LOGS.store(true, Ordering::Relaxed);
}

#[pyfunction]
fn on_winch(_signum: i32, _frame: &Bound<'_, PyAny>) {
    debug!("worker: SIGWINCH ignored.");
}

/// Installs the worker's signal handling through Python's `signal` module, so a handler can
/// raise into the app, and returns the read end of the wakeup pipe the event loop polls.
fn install_signals(py: Python<'_>, master_pid: nix::unistd::Pid) -> PyResult<OwnedFd> {
    MASTER_PID.store(master_pid.as_raw(), Ordering::Relaxed);
    // The master's own dispositions do not apply here; HUP/USR2/TTIN/TTOU/CHLD sent to a
    // worker get the default action, as in Gunicorn.
    for sig in [
        Signal::SIGHUP,
        Signal::SIGUSR2,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGCHLD,
    ] {
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    let module = PyModule::new(py, "_rgunicorn_signals")?;
    let sigmod = py.import("signal")?;
    let handlers = [
        (Signal::SIGINT, wrap_pyfunction!(on_quit, &module)?),
        (Signal::SIGQUIT, wrap_pyfunction!(on_quit, &module)?),
        (Signal::SIGABRT, wrap_pyfunction!(on_abort, &module)?),
        (Signal::SIGUSR1, wrap_pyfunction!(on_usr1, &module)?),
        (Signal::SIGWINCH, wrap_pyfunction!(on_winch, &module)?),
    ];
    for (sig, handler) in handlers {
        sigmod.call_method1("signal", (sig as i32, handler))?;
    }
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("warn_on_full_buffer", false)?;
    sigmod.call_method("set_wakeup_fd", (write.as_raw_fd(),), Some(&kwargs))?;
    WAKE_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
    let term = nix::sys::signal::SigAction::new(
        SigHandler::SigAction(on_term),
        // SA_RESTART as Gunicorn's siginterrupt(SIGTERM, False): the app's system calls are
        // not interrupted by a graceful stop; SA_ONSTACK as Python's own handlers.
        nix::sys::signal::SaFlags::SA_SIGINFO
            | nix::sys::signal::SaFlags::SA_RESTART
            | nix::sys::signal::SaFlags::SA_ONSTACK,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: `on_term` is async-signal-safe (atomics and write(2) only).
    unsafe { nix::sys::signal::sigaction(Signal::SIGTERM, &term) }
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    // Python keeps using the raw fd number; the write end must stay open for our lifetime.
    std::mem::forget(write);
    crate::transport::set_wake_fd(read.as_raw_fd());
    Ok(read)
}

/// The worker's life after fork; never returns.
pub fn run(seed: WorkerSeed<'_>) -> ! {
    let code = Python::attach(|py| {
        let code = boot_and_serve(py, &seed);
        ignore_stop_signals(py);
        info!("Worker exiting (pid: {})", std::process::id());
        run_server_worker_hook(py, "worker_exit", &seed);
        crate::python::run_exit_handlers(py);
        code
    });
    die_of_a_foreign_term(code);
    // SAFETY: _exit skips Rust and C atexit machinery inherited from the master (its
    // listeners and heartbeat map are the master's to clean up); Python's atexit ran above.
    unsafe { nix::libc::_exit(code) }
}

fn boot_and_serve(py: Python<'_>, seed: &WorkerSeed<'_>) -> i32 {
    crate::process::proctitle::set(&format!("rgunicorn: worker [{}]", seed.config.proc_name));
    info!("Booting worker with pid: {}", std::process::id());
    let _ = LEAVING_NOTICE.set(LeavingNotice {
        heartbeat: seed.heartbeat,
        slot: seed.slot,
        master_wake: seed.master_wake,
    });
    match object::build(py, seed) {
        Ok(obj) => crate::python::hooks::set_worker_object(obj.unbind()),
        Err(e) => crate::python::log_exception(py, "Exception in worker process", &e),
    }
    run_server_worker_hook(py, "post_fork", seed);
    let installed = install_signals(py, seed.master_pid);
    // The master blocked its signals across fork; now that ours are in place, a TERM that
    // arrived meanwhile is delivered to our handler instead of being lost.
    let _ = crate::master::signals::master_sigset().thread_unblock();
    // The wakeup pipe's read end stays open for the worker's whole life, whichever way
    // this function returns: Python's signal handlers write to the pipe until
    // `ignore_stop_signals` detaches it, and a pipe without a reader would make them print
    // "Exception ignored ... BrokenPipeError" (an early return used to close it first).
    let wake = match installed {
        Ok(fd) => std::os::fd::IntoRawFd::into_raw_fd(fd),
        Err(e) => {
            crate::python::log_exception(py, "Exception in worker process", &e);
            return crate::error::WORKER_BOOT_ERROR;
        }
    };
    // Log files are opened while we may still be root; then privileges drop, before any
    // app code runs (Gunicorn's order).
    // With a logging configuration, access records go to `gunicorn.access` even without
    // --access-logfile (as in Gunicorn); the sink is then unused.
    let syslog_access =
        seed.config.syslog.is_some() && !seed.config.disable_redirect_access_to_syslog;
    let access_path = match seed.config.accesslog.as_deref() {
        Some(path) => Some(path),
        None if crate::python::logging::is_active() || syslog_access => Some("-"),
        None => None,
    };
    // One per thread that runs requests (each writes whole lines to the same file).
    let open_access_log = || {
        access_path.and_then(|path| match Sink::open(path, Sink::Stdout) {
            Ok(sink) => Some(AccessLog {
                format: AccessFormat::compile(&seed.config.access_log_format),
                format_text: seed.config.access_log_format.clone(),
                sink,
                to_sink: seed.config.accesslog.is_some(),
                failed_lines: 0,
            }),
            Err(e) => {
                crate::log::error_log(
                    crate::config::LogLevel::Error,
                    &format!("Can't open the access log {path}: {e}; requests are not logged"),
                    None,
                );
                None
            }
        })
    };
    // Opened now, before the privilege drop (Gunicorn's order): one per thread that runs
    // requests (each writes whole lines to the same file), the loop itself in sync.
    let runners = if seed.config.threaded {
        seed.config.threads
    } else {
        1
    };
    let mut access_logs: Vec<Option<AccessLog>> = (0..runners).map(|_| open_access_log()).collect();
    if let Some(identity) = &seed.config.identity {
        if let Err(msg) = crate::process::identity::drop_privileges(identity) {
            crate::log::error_log(
                crate::config::LogLevel::Error,
                &format!("Exception in worker process: can't switch user/group: {msg}"),
                None,
            );
            return crate::error::WORKER_BOOT_ERROR;
        }
    }
    let app_module = seed.config.app_module.clone().unwrap_or_default();
    let app = match crate::wsgi::app::load_or_preloaded(py, &app_module) {
        Ok(app) => app,
        Err(e) if seed.config.reload => {
            // Under --reload a broken app is shown, not fatal: fix the file and it reloads.
            let text = match &e {
                AppError::Import(err) => crate::python::format_exception(py, err),
                AppError::Load(msg) => msg.clone(),
            };
            BROKEN_FILES.with(|f| *f.borrow_mut() = crate::wsgi::app::failure_files(py, &e));
            report_boot_failure(py, seed, e);
            match crate::wsgi::app::error_app(py, &text) {
                Ok(app) => app,
                Err(e) => {
                    crate::python::log_exception(py, "Exception in worker process", &e);
                    return crate::error::WORKER_BOOT_ERROR;
                }
            }
        }
        Err(e) => return report_boot_failure(py, seed, e),
    };
    if let Some(worker) = crate::python::hooks::worker_object(py) {
        let _ = worker.setattr("wsgi", app.bind(py));
        let _ = worker.setattr("booted", true);
    }
    crate::python::hooks::call_worker_hook(py, "post_worker_init", &[]);
    let pool = if seed.config.threaded {
        match pool::Pool::start(py, seed.config, &app, std::mem::take(&mut access_logs)) {
            Ok(pool) => Some(pool),
            Err(e) => {
                crate::python::log_exception(py, "Exception in worker process", &e);
                return crate::error::WORKER_BOOT_ERROR;
            }
        }
    } else {
        None
    };
    // The threaded worker's loop runs no request itself: its runtime needs no access log.
    let access_log = access_logs.pop().flatten();
    let runtime = match crate::wsgi::Runtime::new(py, app, seed.config, access_log) {
        Ok(r) => r,
        Err(e) => {
            crate::python::log_exception(py, "Exception in worker process", &e);
            return crate::error::WORKER_BOOT_ERROR;
        }
    };
    SERVING.store(true, Ordering::Relaxed);
    if QUIT_WHILE_BOOTING.load(Ordering::Relaxed) {
        // Told to quit while booting: leave cleanly without serving. (A TERM instead
        // still serves the backlog on the way out, as any stopping worker does.)
        return 0;
    }
    if let Some(table) = &seed.conn_table {
        keeper::start(table);
    }
    let code = match event_loop::EventLoop::new(seed, runtime, wake, pool) {
        Ok(mut lp) => lp.run(py),
        Err(e) => {
            crate::log::error_log(
                crate::config::LogLevel::Error,
                &format!("Exception in worker process: {e}"),
                None,
            );
            crate::error::WORKER_BOOT_ERROR
        }
    };
    // Signals arriving while exit handlers run only set flags from here on.
    ignore_stop_signals(py);
    code
}

/// Logs a failed app import the way Gunicorn does and returns the exit status for it.
fn report_boot_failure(py: Python<'_>, seed: &WorkerSeed<'_>, e: AppError) -> i32 {
    match &e {
        AppError::Import(err) => {
            crate::python::log_exception(py, "Exception in worker process", err);
            if let Some(hint) = crate::wsgi::app::forgotten_virtualenv_hint(py, err) {
                crate::log::error_log(crate::config::LogLevel::Error, &hint, None);
            }
            if let Some(identity) = &seed.config.identity {
                let paths = unreadable_paths(py, err);
                if !paths.is_empty() {
                    crate::log::error_log(
                        crate::config::LogLevel::Error,
                        &format!(
                            "Permission denied: the worker's user (uid {}, gid {}) cannot read \
                             {}; imports from there fail",
                            identity.uid,
                            identity.gid,
                            paths.join(", ")
                        ),
                        None,
                    );
                }
            }
        }
        AppError::Load(msg) => {
            debug!("Exception while loading the application");
            eprintln!("{msg}");
        }
    }
    e.exit_code()
}

/// After a privilege drop, why an import may have failed: the file a PermissionError names,
/// or the `sys.path` entries the worker's user cannot list (a module there is then simply
/// "not found").
fn unreadable_paths(py: Python<'_>, err: &PyErr) -> Vec<String> {
    let globals = pyo3::types::PyDict::new(py);
    let found = (|| -> PyResult<Vec<String>> {
        globals.set_item("err", err.value(py))?;
        py.run(
            c"
import os, sys
found = []
if isinstance(err, PermissionError) and err.filename:
    found.append(str(err.filename))
for entry in sys.path:
    try:
        os.listdir(entry or '.')
    except PermissionError:
        found.append(os.path.abspath(entry or '.'))
    except OSError:
        pass
",
            Some(&globals),
            None,
        )?;
        globals
            .get_item("found")?
            .map_or_else(|| Ok(Vec::new()), |f| f.extract())
    })();
    found.unwrap_or_default()
}

/// Files `--reload` must watch because the app failed to import from them.
pub(crate) fn broken_files() -> Vec<String> {
    BROKEN_FILES.with(|f| f.borrow().clone())
}

/// Consumes the SIGUSR1 flag.
pub(crate) fn take_reopen_request() -> bool {
    REOPEN_LOGS.swap(false, Ordering::Relaxed)
}
