//! The master as the control socket sees and steers it: opening the socket, waiting on
//! it with the signals, serving its clients, and the [`Arbiter`] facts and changes the
//! commands use. (Methods of [`Master`], kept apart from its loop.)

use std::time::Duration;

use tracing::{debug, error, info};

use super::commands::{self, Arbiter};
use super::control::ControlServer;
use super::Master;
use crate::config::Config;
use crate::sock::Listener;
use crate::unix::clock::monotonic_ms;
use crate::worker::heartbeat::MAX_WORKER_SLOTS;

impl Master {
    /// Sleeps until a signal, a control client, or `timeout`.
    pub(super) fn wait(&self, timeout: Duration) {
        match &self.control {
            // Requests already read and not yet answered: no sleep this turn.
            Some(control) if control.has_work() => self.signals.wait(Duration::ZERO),
            Some(control) => self.signals.wait_also(timeout, &control.poll_fds()),
            None => self.signals.wait(timeout),
        }
    }

    /// Opens the control socket (Gunicorn: once the first workers are forked).
    pub(super) fn start_control(&mut self) {
        let Some(configured) = &self.config.control_socket else {
            debug!("Control socket disabled");
            return;
        };
        let path = std::env::current_dir()
            .map(|cwd| cwd.join(configured))
            .unwrap_or_else(|_| configured.clone());
        match ControlServer::start(&path, self.config.control_socket_mode) {
            Ok(server) => {
                info!("Control socket listening at {}", server.path().display());
                self.control = Some(server);
            }
            Err(e) => error!("Control server error: {e}"),
        }
    }

    /// Answers the control socket's clients (taken out while they use `self`).
    pub(super) fn serve_control(&mut self) {
        if let Some(mut control) = self.control.take() {
            control.serve(self);
            self.control = Some(control);
        }
    }
}

/// What the control socket's commands see of the master and may change.
impl Arbiter for Master {
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    fn worker_facts(&self) -> Vec<commands::WorkerFacts> {
        let now = monotonic_ms();
        self.workers
            .records()
            .map(|(pid, record)| commands::WorkerFacts {
                pid: pid.as_raw(),
                age: record.age,
                aborted: record.aborted,
                last_heartbeat: Some(
                    now.saturating_sub(self.heartbeat.last(record.slot)) as f64 / 1000.0,
                ),
            })
            .collect()
    }

    fn counters(&self) -> commands::Counters {
        commands::Counters {
            uptime_seconds: self.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
            spawned: self.spawned,
            killed: self.killed,
            reloads: self.reloads,
            recycled: self.recycled,
        }
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    fn target(&self) -> usize {
        self.num_workers
    }

    fn set_target(&mut self, workers: usize) {
        self.set_num_workers(workers);
    }

    fn max_target(&self) -> usize {
        MAX_WORKER_SLOTS
    }
}
