//! A worker's life flags and its signal handlers: TERM stops it after the request in hand
//! (serving the backlog first when the stop came from outside), QUIT/INT leave at once,
//! ABRT reports a timeout, USR1 reopens the logs. The event loop reads the flags; the
//! handlers set them and wake the loop through a pipe.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{signal, SigHandler, Signal};
use pyo3::exceptions::PySystemExit;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use tracing::debug;

use super::heartbeat::{Heartbeat, Leaving};

/// Cleared by SIGTERM: finish the request in hand, then leave.
static ALIVE: AtomicBool = AtomicBool::new(true);
/// Set by SIGUSR1: reopen log files at the next loop turn.
static REOPEN_LOGS: AtomicBool = AtomicBool::new(false);

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
/// (max_requests, reload, asked by the master): the sockets stay open in the master and
/// the other workers, so queued connections are served there. The master is told at once
/// (and `why`), so the successor boots while this worker finishes what it has.
pub fn retire(why: Leaving) {
    if ALIVE.swap(false, Ordering::Relaxed) {
        if let Some(notice) = LEAVING_NOTICE.get() {
            notice.heartbeat.mark_leaving(notice.slot, why);
            notice.wake_master();
        }
    }
}

/// The worker's loop accepts: the master is told at once (it may be waiting for this
/// worker before asking an old one to retire).
pub(super) fn announce_serving() {
    if let Some(notice) = LEAVING_NOTICE.get() {
        notice.heartbeat.mark_serving(notice.slot);
        notice.wake_master();
    }
}

/// Whether the master asked this worker to retire (`--workers-max-rss`,
/// `--workers-lifetime`).
pub(super) fn asked_to_retire() -> bool {
    LEAVING_NOTICE
        .get()
        .is_some_and(|notice| notice.heartbeat.asked_to_retire(notice.slot))
}

/// How a worker tells its master it is leaving on its own (see [`retire`]).
pub(super) struct LeavingNotice {
    pub heartbeat: Heartbeat,
    pub slot: usize,
    pub master_wake: std::os::fd::RawFd,
}

impl LeavingNotice {
    fn wake_master(&self) {
        // SAFETY: sends one byte from a live buffer on the master's wake socket, which
        // stays open in this process; never blocks.
        let _ = unsafe {
            nix::libc::send(
                self.master_wake,
                [0u8].as_ptr().cast(),
                1,
                nix::libc::MSG_DONTWAIT | nix::libc::MSG_NOSIGNAL,
            )
        };
    }
}

pub(super) static LEAVING_NOTICE: std::sync::OnceLock<LeavingNotice> = std::sync::OnceLock::new();

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
pub(super) fn die_of_a_foreign_term(code: i32) {
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

/// The worker is booted and starts serving: from now on a quit interrupts what it does.
/// False if a quit came while booting: then it leaves without serving.
pub(super) fn start_serving() -> bool {
    SERVING.store(true, Ordering::Relaxed);
    !QUIT_WHILE_BOOTING.load(Ordering::Relaxed)
}

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
pub(super) fn ignore_stop_signals(py: Python<'_>) {
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
        crate::log::LogLevel::Error,
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
pub(super) fn install_signals(py: Python<'_>, master_pid: nix::unistd::Pid) -> PyResult<OwnedFd> {
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

/// Consumes the SIGUSR1 flag.
pub fn take_reopen_request() -> bool {
    REOPEN_LOGS.swap(false, Ordering::Relaxed)
}
