//! A worker process: boots (signals, app import), then serves connections from a mio loop,
//! one request at a time through the app (the sync contract: `wsgi.multithread = False`).
//!
//! Connection I/O happens outside Python: idle keep-alive connections and slow clients cost
//! a buffer, not the worker. Only a complete request head reaches the app.

mod accept;
mod conn;
pub mod conn_table;
mod conns;
mod dispatch;
mod event_loop;
pub mod handoff;
pub mod heartbeat;
pub mod hooks;
pub mod keeper;
mod object;
mod pool;
mod reload;
mod seed;
mod signals;
mod static_route;
mod statics;

use pyo3::prelude::*;
use tracing::{debug, info};

use crate::log::access::{AccessFormat, AccessLog};
use crate::log::Sink;
use crate::wsgi::app::AppError;
pub use seed::WorkerSeed;
use signals::{
    die_of_a_foreign_term, ignore_stop_signals, install_signals, LeavingNotice, LEAVING_NOTICE,
};

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
    match hooks::server_namespace(
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

/// The worker's life after fork; never returns.
pub fn run(seed: WorkerSeed<'_>) -> ! {
    let seed: *const WorkerSeed<'_> = Box::leak(Box::new(seed));
    // SAFETY: this function never returns: the process ends in `_exit` below, so neither
    // the leaked seed nor the master's stack frames it borrows from are ever dropped or
    // unwound in this process (a panic aborts, below). The seed is thus valid
    // for the process's life, which is what the threaded worker's threads need: they run
    // the event loop, which holds it (see `EventLoop::serve_threaded`), and may still be
    // inside a request when the process exits.
    let seed: &'static WorkerSeed<'static> = unsafe { &*seed.cast::<WorkerSeed<'static>>() };
    let serve = || {
        Python::attach(|py| {
            let code = boot_and_serve(py, seed);
            ignore_stop_signals(py);
            info!("Worker exiting (pid: {})", std::process::id());
            run_server_worker_hook(py, "worker_exit", seed);
            crate::python::run_exit_handlers(py);
            code
        })
    };
    // A panic must not unwind past here (see above); release builds abort on it anyway.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(serve))
        .unwrap_or_else(|_| std::process::abort());
    die_of_a_foreign_term(code);
    // SAFETY: _exit skips Rust and C atexit machinery inherited from the master (its
    // listeners and heartbeat map are the master's to clean up); Python's atexit ran above.
    unsafe { nix::libc::_exit(code) }
}

fn boot_and_serve(py: Python<'_>, seed: &'static WorkerSeed<'static>) -> i32 {
    crate::unix::proctitle::set(&format!("rgunicorn: worker [{}]", seed.config.proc_name));
    info!("Booting worker with pid: {}", std::process::id());
    let _ = LEAVING_NOTICE.set(LeavingNotice {
        heartbeat: seed.heartbeat,
        slot: seed.slot,
        master_wake: seed.master_wake,
    });
    if let Some(meters) = &seed.meters {
        let threads = if seed.config.threaded {
            seed.config.threads
        } else {
            1
        };
        crate::log::meters::adopt(meters, seed.slot, threads);
    }
    match object::build(py, seed) {
        Ok(obj) => crate::python::hooks::set_worker_object(obj.unbind()),
        Err(e) => crate::python::log_exception(py, "Exception in worker process", &e),
    }
    // The classes requests are served with join `_rgunicorn` (made by the master) here, in
    // the process that serves them.
    if let Err(e) = py
        .import("_rgunicorn")
        .and_then(|module| crate::wsgi::register_types(&module))
    {
        crate::python::log_exception(py, "Exception in worker process", &e);
    }
    run_server_worker_hook(py, "post_fork", seed);
    let installed = install_signals(py, seed.master_pid);
    // The master blocked its signals across fork; now that ours are in place, a TERM that
    // arrived meanwhile is delivered to our handler instead of being lost.
    let _ = seed.blocked_signals.thread_unblock();
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
        None if crate::log::python::is_active() || syslog_access => Some("-"),
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
                    crate::log::LogLevel::Error,
                    &format!("Can't open the access log {path}: {e}; requests are not logged"),
                    None,
                );
                None
            }
        })
    };
    // Opened now, before the privilege drop (Gunicorn's order): one per thread that runs
    // requests (each writes whole lines to the same file), the loop itself in sync.
    // A threaded worker's loop logs the static files it serves itself.
    let runners = if seed.config.threaded {
        seed.config.threads + usize::from(!seed.config.statics.is_empty())
    } else {
        1
    };
    let mut access_logs: Vec<Option<AccessLog>> = (0..runners).map(|_| open_access_log()).collect();
    if let Some(identity) = &seed.config.identity {
        if let Err(msg) = crate::unix::identity::drop_privileges(identity) {
            crate::log::error_log(
                crate::log::LogLevel::Error,
                &format!("Exception in worker process: can't switch user/group: {msg}"),
                None,
            );
            return crate::error::WORKER_BOOT_ERROR;
        }
    }
    let statics = match statics::Statics::open(seed.config) {
        Ok(statics) => statics,
        Err(msg) => {
            crate::log::error_log(crate::log::LogLevel::Error, &msg, None);
            return crate::error::WORKER_BOOT_ERROR;
        }
    };
    let app_module = seed.config.app_module.clone().unwrap_or_default();
    let app = match crate::wsgi::app::load_or_preloaded(py, &app_module) {
        Ok(app) => app,
        Err(e) if seed.config.reload => {
            // Under --reload a broken app is shown, not fatal: fix the file and it reloads.
            let text = match &e {
                AppError::Import(err) => crate::python::format_exception(py, err),
                AppError::Load(msg) => msg.clone(),
            };
            reload::note_broken_files(crate::wsgi::app::failure_files(py, &e));
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
    // The loop's own access log (static files) is the last; the threads take the rest.
    let loop_log = if seed.config.threaded && statics.is_some() {
        access_logs.pop().flatten()
    } else {
        None
    };
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
    // The threaded worker's loop runs no app request itself: its runtime's access log is
    // for static files only.
    let access_log = access_logs.pop().flatten().or(loop_log);
    let runtime = match crate::wsgi::Runtime::new(py, app, seed.config, access_log) {
        Ok(r) => r,
        Err(e) => {
            crate::python::log_exception(py, "Exception in worker process", &e);
            return crate::error::WORKER_BOOT_ERROR;
        }
    };
    if !signals::start_serving() {
        // Told to quit while booting: leave cleanly without serving. (A TERM instead
        // still serves the backlog on the way out, as any stopping worker does.)
        return 0;
    }
    if let Some(table) = &seed.conn_table {
        keeper::start(table);
    }
    let code = match event_loop::EventLoop::new(seed, runtime, wake, pool, statics) {
        Ok(lp) => lp.run(py),
        Err(e) => {
            crate::log::error_log(
                crate::log::LogLevel::Error,
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
                crate::log::error_log(crate::log::LogLevel::Error, &hint, None);
            }
            if let Some(identity) = &seed.config.identity {
                let paths = unreadable_paths(py, err);
                if !paths.is_empty() {
                    crate::log::error_log(
                        crate::log::LogLevel::Error,
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
