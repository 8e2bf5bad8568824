//! The master (Gunicorn's arbiter): binds the listeners, forks the workers, and supervises
//! them from a loop of named steps — wait for a signal or a second, `reap_workers`, handle
//! the pending signals, serve the control socket and the metrics exporter (`steering`),
//! `murder_workers` (heartbeat
//! timeouts), `recycle_workers` (memory, age; `recycling`), `manage_workers` (respawn or
//! trim), then `retire_recycled` (once successors serve). It never touches HTTP.

mod commands;
mod control;
mod hooks;
mod json;
mod metrics;
mod prometheus;
mod recycle;
mod recycling;
pub mod reexec;
mod service;
pub mod signals;
mod steering;
mod workers;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pyo3::Python;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::critical;
use crate::python::fork::{fork, Forked};
use crate::sock::Listener;
use crate::unix::clock::monotonic_ms;
use crate::worker::heartbeat::{Heartbeat, MAX_WORKER_SLOTS};
use crate::worker::hooks::worker_namespace;
use crate::worker::WorkerSeed;
use recycle::{Cause, Recycled};
use signals::{signal_name, SignalQueue};
use workers::{Late, WorkerRecord, Workers};

/// Why the master stops.
enum Stop {
    Graceful,
    Quick,
    Halt { reason: &'static str, code: i32 },
}

/// The arbiter's state.
pub struct Master {
    config: Config,
    listeners: Vec<Listener>,
    signals: SignalQueue,
    heartbeat: Heartbeat,
    /// Shared by every worker of this master, like the listeners.
    handoff: crate::worker::handoff::Channel,
    workers: Workers,
    num_workers: usize,
    /// The worker count last logged (`N workers`, at debug, when it changes).
    logged_count: usize,
    pid: Pid,
    pidfile: Option<crate::unix::pidfile::Pidfile>,
    /// The command line (without the program), re-read on HUP.
    args: Vec<String>,
    /// How we were started, for a USR2 re-exec.
    start: Option<reexec::StartState>,
    /// The new master a USR2 started, while it runs.
    reexec_child: Option<Pid>,
    /// The old master that started us by USR2, until we are promoted.
    master_parent: Option<Pid>,
    /// Gunicorn 27's control socket (`gunicornc`), once the first workers are forked.
    control: Option<control::ControlServer>,
    /// `--metrics`: the workers' shared meters, every slot a worker has used, and the
    /// exporter's socket (None while a USR2 parent still holds its port).
    meters: Option<crate::log::meters::Meters>,
    used_slots: std::collections::BTreeSet<usize>,
    metrics: Option<metrics::MetricsServer>,
    metrics_pending: bool,
    /// For `show stats`: when we started, workers forked, workers stopped by us (trimmed
    /// or killed after a timeout), HUPs.
    started: std::time::SystemTime,
    spawned: u64,
    killed: u64,
    reloads: u64,
    /// Workers recycled, by cause (`show stats`, after Gunicorn's keys).
    recycled: Recycled,
    /// Workers that died unasked (crashed, killed), and after a `--timeout`.
    crashed: u64,
    timed_out: u64,
    /// Idle connections of dead workers passed to the others.
    rescued: u64,
    /// When the workers' memory is next sampled (`monotonic_ms`).
    next_rss_sample: u64,
}

impl Master {
    pub fn new(
        config: Config,
        listeners: Vec<Listener>,
        signals: SignalQueue,
        pidfile: Option<crate::unix::pidfile::Pidfile>,
        args: Vec<String>,
    ) -> nix::Result<Master> {
        let pid = nix::unistd::getpid();
        Ok(Master {
            num_workers: config.workers,
            heartbeat: Heartbeat::new()?,
            handoff: crate::worker::handoff::Channel::new()?,
            workers: Workers::new(monotonic_ms() ^ (u64::from(pid.as_raw().unsigned_abs()) << 32)),
            logged_count: 0,
            config,
            listeners,
            signals,
            pid,
            pidfile,
            args,
            start: None,
            reexec_child: None,
            master_parent: None,
            control: None,
            meters: None,
            used_slots: std::collections::BTreeSet::new(),
            metrics: None,
            metrics_pending: false,
            started: std::time::SystemTime::now(),
            spawned: 0,
            killed: 0,
            reloads: 0,
            recycled: Recycled::default(),
            crashed: 0,
            timed_out: 0,
            rescued: 0,
            next_rss_sample: 0,
        })
    }

    /// Enables USR2 (re-exec from `start`) and, for a master started by USR2, records the old
    /// master so we can tell when we are promoted.
    pub fn with_upgrade(mut self, start: reexec::StartState, parent: Option<Pid>) -> Master {
        self.start = Some(start);
        self.master_parent = parent.filter(|p| p.as_raw() > 0);
        self
    }

    /// The old master is gone (we were reparented): we are the master now.
    fn maybe_promote_master(&mut self) {
        let Some(parent) = self.master_parent else {
            return;
        };
        if nix::unistd::getppid() == parent {
            return;
        }
        info!("Master has been promoted.");
        self.master_parent = None;
        if let (Some(p), Some(base)) = (self.pidfile.as_mut(), self.config.pidfile.as_ref()) {
            p.rename(base);
        }
        for l in self.listeners.iter_mut() {
            // The sockets are ours alone now: a unix socket file is ours to remove on stop.
            l.owns_path = l.bind.is_some();
        }
    }

    /// USR2: start a new master from the binary on disk, handing it our sockets.
    fn reexec(&mut self) {
        if self.reexec_child.is_some() {
            warn!("USR2 signal ignored. Child exists.");
            return;
        }
        if self.master_parent.is_some() {
            warn!("USR2 signal ignored. Parent exists.");
            return;
        }
        let Some(start) = &self.start else { return };
        let fds: Vec<_> = self.listeners.iter().map(Listener::raw_fd).collect();
        let prepared = match reexec::prepare(start, &fds, self.pid) {
            Ok(p) => p,
            Err(e) => {
                error!("USR2 re-exec failed: {e}");
                return;
            }
        };
        // The interpreter's fork protocol: the child runs the pre_exec hook before exec.
        match Python::attach(fork) {
            Ok(Forked::Parent(child)) => self.reexec_child = Some(child),
            Ok(Forked::Child) => {
                self.run_hook("pre_exec", |_| Ok(Vec::new()));
                prepared.exec()
            }
            Err(e) => error!("USR2 re-exec failed: fork: {e}"),
        }
    }

    /// Runs until stopped; returns the process exit status.
    pub fn run(mut self) -> i32 {
        // A worker's keeper (see `worker::keeper`) becomes our child when its worker dies.
        // SAFETY: prctl with integer arguments only.
        if unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            debug!("Could not become a child subreaper: idle connections of a worker that dies are lost");
        }
        if let Err(e) = self.start_metrics() {
            error!("{e}");
            return self.stop(Stop::Halt {
                reason: "Can't start the metrics exporter.",
                code: 1,
            });
        }
        self.run_hook("when_ready", |_| Ok(Vec::new()));
        let initial = self.num_workers;
        self.run_hook("nworkers_changed", |py| {
            use pyo3::IntoPyObject;
            Ok(vec![
                initial.into_pyobject(py)?.into_any(),
                py.None().into_bound(py),
            ])
        });
        self.manage_workers();
        self.start_control();
        let stop = loop {
            self.wait(self.loop_timeout());
            self.serve_control();
            self.serve_metrics();
            if let Some(stop) = self.reap_workers() {
                break stop;
            }
            let mut stop = None;
            for sig in self.signals.drain() {
                if sig == Signal::SIGCHLD {
                    debug!("Handling signal: chld");
                    if let Some(s) = self.reap_workers() {
                        stop = Some(s);
                        break;
                    }
                    continue;
                }
                info!("Handling signal: {}", signal_name(sig));
                if let Some(s) = self.handle_signal(sig) {
                    stop = Some(s);
                    break;
                }
            }
            if let Some(stop) = stop {
                break stop;
            }
            self.maybe_promote_master();
            self.murder_workers();
            self.recycle_workers();
            self.manage_workers();
            self.retire_recycled();
        };
        self.stop(stop)
    }

    fn handle_signal(&mut self, sig: Signal) -> Option<Stop> {
        match sig {
            Signal::SIGTERM => Some(Stop::Graceful),
            Signal::SIGINT | Signal::SIGQUIT => Some(Stop::Quick),
            Signal::SIGHUP => {
                self.reload();
                None
            }
            Signal::SIGTTIN => {
                if self.num_workers < MAX_WORKER_SLOTS {
                    self.set_num_workers(self.num_workers + 1);
                }
                None
            }
            Signal::SIGTTOU => {
                // Never below 1 (after a WINCH it stays at 0 until TTIN or HUP).
                let fewer = self
                    .num_workers
                    .saturating_sub(1)
                    .max(1.min(self.num_workers));
                self.set_num_workers(fewer);
                None
            }
            Signal::SIGUSR2 => {
                self.reexec();
                None
            }
            Signal::SIGUSR1 => {
                crate::log::reopen();
                self.workers.signal_all(Signal::SIGUSR1);
                None
            }
            Signal::SIGWINCH => {
                if self.config.daemon {
                    info!("graceful stop of workers");
                    self.set_num_workers(0);
                } else {
                    debug!("SIGWINCH ignored. Not daemonized");
                }
                None
            }
            other => {
                debug!("Ignoring signal: {}", signal_name(other));
                None
            }
        }
    }

    /// HUP: re-read the configuration, reopen the logs, rebind if `bind` changed, then start
    /// a full set of new workers; the old ones are stopped gracefully by `manage_workers`,
    /// so the service never stops answering. A configuration that no longer loads is
    /// reported and the running one is kept.
    fn reload(&mut self) {
        info!("Hang up: Master");
        self.reloads += 1;
        crate::unix::systemd::notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            crate::unix::systemd::monotonic_usec()
        ));
        match Python::attach(|py| crate::config::load(py, &self.args)) {
            Ok(crate::config::Invocation::Run(new)) => {
                Python::attach(|py| crate::python::hooks::install(py, &new.hooks));
                self.apply(*new)
            }
            Ok(crate::config::Invocation::Version) => {}
            Err(e) => error!("Reload failed, keeping the running configuration: {e}"),
        }
        self.run_hook("on_reload", |_| Ok(Vec::new()));
        for sig in self.signals.reclaim() {
            warn!("{sig} had a Python handler in the master (set by the configuration); rgunicorn's own is restored");
        }
        for _ in 0..self.config.workers {
            self.spawn_worker();
        }
        self.set_num_workers(self.config.workers);
        crate::unix::systemd::notify("READY=1");
    }

    fn apply(&mut self, new: Config) {
        if let Err(msg) = Python::attach(|py| crate::python::set_environ(py, &new.raw_env)) {
            error!("{msg}");
        }
        for warning in &new.warnings {
            warn!("{warning}");
        }
        if let Err(e) = crate::log::init(&new.errorlog, new.loglevel) {
            error!(
                "can't reopen error log '{}': {e}; keeping the current one",
                new.errorlog
            );
        }
        // Sockets passed by systemd (or a parent master) are kept; `bind` does not apply.
        let inherited = self.listeners.iter().any(|l| l.bind.is_none());
        if !inherited && new.binds != self.config.binds {
            let current = std::mem::take(&mut self.listeners);
            match crate::sock::rebind(&new.binds, &new.bind_options(), current) {
                Ok(listeners) => {
                    self.listeners = listeners;
                    let shown =
                        crate::sock::describe_all(&self.listeners, self.config.tls.is_some());
                    info!("Listening at: {shown} ({})", self.pid);
                }
                Err((msg, current)) => {
                    error!("{msg}; keeping the current sockets");
                    self.listeners = current;
                }
            }
        }
        let metrics_moved = new.metrics != self.config.metrics;
        self.config = new;
        if metrics_moved {
            drop(self.metrics.take());
            if let Err(e) = self.start_metrics() {
                // The port may be freed later (an old process leaving): tried each second.
                error!("{e}; retrying every second");
                self.metrics_pending = true;
            }
        }
    }

    /// Collects exited children and logs why each one went; a boot or app-load failure
    /// halts the server with Gunicorn's exit code.
    fn reap_workers(&mut self) -> Option<Stop> {
        let mut halt = None;
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { break };
            if self.reexec_child == Some(pid) {
                info!("New master (pid:{pid}) exited");
                self.reexec_child = None;
                continue;
            }
            let Some(record) = self.workers.remove(pid) else {
                // Not one of ours (a worker's keeper, an orphan reparented to a PID-1 or
                // subreaper master): reaped, no effect.
                debug!("Reaped unknown child (pid:{pid})");
                continue;
            };
            if let Some(meters) = &self.meters {
                meters.clear_gauges(record.slot);
            }
            if record.aborted {
                self.timed_out += 1;
            } else if workers::died_unasked(status) {
                self.crashed += 1;
            }
            if let Some(table) = record.conn_table {
                // A worker that died mid-way leaves idle keep-alive connections in its
                // keeper: they go to the other workers instead of being reset.
                let moved = crate::worker::keeper::rescue(&table, &self.handoff);
                self.rescued += moved as u64;
                if moved > 0 {
                    info!("Passed {moved} idle connections of worker (pid:{pid}) to the other workers");
                }
                table.unmap();
            }
            if workers::runs_child_exit(status) {
                let (ppid, age, aborted) = (self.pid, record.age, record.aborted);
                let config = &self.config;
                self.run_hook("child_exit", |py| {
                    Ok(vec![worker_namespace(
                        py,
                        config,
                        Some(pid),
                        ppid,
                        age,
                        aborted,
                    )?])
                });
            }
            if let Some((reason, code)) = workers::report_exit(pid, status) {
                halt.get_or_insert(Stop::Halt { reason, code });
            }
        }
        halt
    }

    /// Sends SIGABRT to a worker whose heartbeat is older than `timeout`, then SIGKILL on
    /// the next pass if it is still there.
    fn murder_workers(&mut self) {
        if self.config.timeout == 0 {
            return;
        }
        let heartbeat = self.heartbeat;
        let late = self
            .workers
            .late(monotonic_ms(), self.config.timeout * 1000, |slot| {
                heartbeat.last(slot)
            });
        for (pid, late) in late {
            if late == Late::Abort {
                critical!("WORKER TIMEOUT (pid:{pid})");
                let _ = kill(pid, Signal::SIGABRT);
            } else if kill(pid, Signal::SIGKILL).is_ok() {
                self.killed += 1;
            }
        }
    }

    /// Spawns missing workers and stops the oldest extras.
    fn manage_workers(&mut self) {
        // A worker leaving on its own is replaced now, not once it has gone.
        let heartbeat = self.heartbeat;
        for _ in 0..self.workers.note_leaving(|slot| heartbeat.leaving(slot)) {
            self.count_recycle(Cause::MaxRequests);
        }
        while self.workers.active() < self.num_workers {
            if !self.spawn_worker() {
                break;
            }
        }
        while self.workers.active() > self.num_workers {
            let Some(pid) = self.workers.retire_oldest() else {
                break;
            };
            if kill(pid, Signal::SIGTERM).is_ok() {
                self.killed += 1;
            }
        }
        let count = self.workers.active();
        if count != self.logged_count {
            self.logged_count = count;
            debug!("{count} workers");
            crate::log::statsd::workers(count);
        }
        if self.config.backlog_metric {
            // As Gunicorn: a unix listener counts -1, and then nothing is sent.
            let waiting: i64 = self.listeners.iter().map(Listener::backlog).sum();
            if waiting >= 0 {
                debug!("socket backlog: {waiting}");
                crate::log::statsd::backlog(waiting);
            }
        }
    }

    /// Forks one worker; the child never returns from here.
    fn spawn_worker(&mut self) -> bool {
        let Some(slot) = self.workers.free_slot() else {
            error!("No free worker slot; not spawning more than {MAX_WORKER_SLOTS} workers");
            return false;
        };
        self.heartbeat.start(slot);
        if let Some(meters) = &self.meters {
            meters.clear_gauges(slot);
            self.used_slots.insert(slot);
        }
        let age = self.workers.next_age();
        let max_requests = self
            .workers
            .max_requests(self.config.max_requests, self.config.max_requests_jitter);
        let ppid = self.pid;
        let config = &self.config;
        self.run_hook("pre_fork", |py| {
            Ok(vec![worker_namespace(py, config, None, ppid, age, false)?])
        });
        // Held back until the child has its own handlers; see `signals::master_sigset`.
        let blocked = signals::master_sigset();
        let previous = blocked.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
        let conn_table = crate::worker::conn_table::ConnTable::new(self.config.worker_connections)
            .map_err(|e| warn!("No connection table for the next worker: {e}"))
            .ok();
        let forked = Python::attach(fork);
        if !matches!(forked, Ok(Forked::Child)) {
            if let Ok(mask) = previous {
                let _ = mask.thread_set_mask();
            }
        }
        match forked {
            Ok(Forked::Parent(pid)) => {
                self.spawned += 1;
                let lifetime = self.workers.lifetime(self.config.workers_lifetime_ms);
                self.workers.insert(
                    pid,
                    WorkerRecord {
                        conn_table,
                        ..WorkerRecord::new(age, slot, monotonic_ms(), lifetime)
                    },
                );
                true
            }
            Ok(Forked::Child) => {
                // The control socket is the master's: the worker closes its copies.
                if let Some(control) = self.control.take() {
                    control.close_in_child();
                }
                drop(self.metrics.take());
                let siblings = self.workers.summaries();
                let seed = WorkerSeed {
                    config: &self.config,
                    listeners: &self.listeners,
                    heartbeat: self.heartbeat,
                    slot,
                    meters: self.meters,
                    age,
                    max_requests,
                    master_pid: self.pid,
                    handoff: &self.handoff,
                    master_wake: self.signals.notice_fd(),
                    conn_table,
                    siblings,
                    num_workers: self.num_workers,
                    blocked_signals: blocked,
                };
                crate::worker::run(seed)
            }
            Err(e) => {
                error!("Unable to fork a worker: {e}");
                if let Some(table) = conn_table {
                    table.unmap();
                }
                false
            }
        }
    }

    /// Closes the listeners, stops the workers (TERM for graceful, QUIT for quick), waits up
    /// to `graceful_timeout`, kills what is left, and says goodbye.
    fn stop(mut self, how: Stop) -> i32 {
        crate::unix::systemd::notify("STOPPING=1");
        // As Gunicorn: the control socket goes first, before the workers drain.
        if let Some(control) = self.control.take() {
            control.stop();
        }
        drop(self.metrics.take());
        // A USR2 child or parent shares our unix socket files: leave them in place.
        let shared = self.reexec_child.is_some() || self.master_parent.is_some();
        for mut l in std::mem::take(&mut self.listeners) {
            l.owns_path &= !shared;
            l.close();
        }
        let (mut sig, code, reason) = match how {
            Stop::Graceful => (Signal::SIGTERM, 0, None),
            Stop::Quick => (Signal::SIGQUIT, 0, None),
            Stop::Halt { reason, code } => (Signal::SIGTERM, code, Some(reason)),
        };
        self.workers.signal_all(sig);
        let mut deadline = Instant::now() + Duration::from_secs(self.config.graceful_timeout);
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.reap_workers();
            for s in self.signals.drain() {
                if matches!(s, Signal::SIGINT | Signal::SIGQUIT) && sig == Signal::SIGTERM {
                    info!("Quick shutdown requested");
                    sig = Signal::SIGQUIT;
                    self.workers.signal_all(sig);
                    deadline = deadline.min(Instant::now() + Duration::from_secs(2));
                }
            }
            if self.workers.is_empty() {
                break;
            }
            self.signals.wait(Duration::from_millis(100));
        }
        self.workers.signal_all(Signal::SIGKILL);
        for (pid, record) in self.workers.take_all() {
            let _ = waitpid(pid, None);
            // Nobody is left to serve what it kept: its keeper goes now, so the dead
            // worker's descriptors (a listener among them) do not outlive the master.
            if let Some(table) = record.conn_table {
                crate::worker::keeper::end(&table);
                table.unmap();
            }
        }
        match reason {
            Some(reason) => {
                error!("Shutting down: Master");
                error!("Reason: {reason}");
            }
            None => info!("Shutting down: Master"),
        }
        if let Some(p) = &self.pidfile {
            p.unlink();
        }
        self.run_hook("on_exit", |_| Ok(Vec::new()));
        code
    }
}
