//! The master as the control socket and the metrics exporter see and steer it: opening
//! their sockets, waiting on them with the signals, serving their clients, the
//! [`Arbiter`] facts and changes the commands use, and the snapshot a scrape reports.
//! (Methods of [`Master`], kept apart from its loop.)

use std::time::Duration;

use tracing::{debug, error, info};

use super::commands::{self, Arbiter};
use super::control::ControlServer;
use super::metrics::MetricsServer;
use super::prometheus::{LiveWorker, SlotView, Snapshot};
use super::recycle::read_rss;
use super::Master;
use crate::config::Config;
use crate::sock::Listener;
use crate::unix::clock::monotonic_ms;
use crate::worker::heartbeat::MAX_WORKER_SLOTS;

impl Master {
    /// Sleeps until a signal, a control or metrics client, or `timeout`.
    pub(super) fn wait(&self, timeout: Duration) {
        // Requests already read and not yet answered: no sleep this turn.
        let has_work = self.control.as_ref().is_some_and(ControlServer::has_work)
            || self.metrics.as_ref().is_some_and(MetricsServer::has_work);
        if has_work {
            return self.signals.wait(Duration::ZERO);
        }
        let mut fds = Vec::new();
        if let Some(control) = &self.control {
            fds.extend(control.poll_fds());
        }
        if let Some(metrics) = &self.metrics {
            fds.extend(metrics.poll_fds());
        }
        if fds.is_empty() {
            self.signals.wait(timeout);
        } else {
            self.signals.wait_also(timeout, &fds);
        }
    }

    /// Opens the metrics exporter (`--metrics`) and the workers' shared meters, before the
    /// first workers are forked. A master started by USR2 finds the port still held by
    /// the old master: it takes the port over once the old master has gone.
    ///
    /// # Errors
    /// The meters could not be mapped, or the port could not be bound.
    pub(super) fn start_metrics(&mut self) -> Result<(), String> {
        let Some(addr) = self.config.metrics else {
            return Ok(());
        };
        if self.meters.is_none() {
            let meters = crate::log::meters::Meters::new(MAX_WORKER_SLOTS)
                .map_err(|e| format!("Can't map the workers' meters: {e}"))?;
            self.meters = Some(meters);
        }
        match MetricsServer::bind(addr) {
            Ok(server) => {
                info!(
                    "Metrics exporter listening at http://{}/metrics",
                    server.addr()
                );
                self.metrics = Some(server);
                self.metrics_pending = false;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && self.master_parent.is_some() => {
                if !self.metrics_pending {
                    info!("Metrics port {addr} is held by the old master; taking it over once it has gone");
                }
                self.metrics_pending = true;
                Ok(())
            }
            Err(e) => Err(format!("Can't start the metrics exporter at {addr}: {e}")),
        }
    }

    /// Answers scrapes (and takes the port over once it is free: after a USR2, when the old
    /// master leaves; after a reload whose port was taken).
    pub(super) fn serve_metrics(&mut self) {
        if self.metrics_pending {
            if let Err(e) = self.start_metrics() {
                debug!("{e}");
            }
        }
        if let Some(mut server) = self.metrics.take() {
            server.serve(|| super::prometheus::render(&self.metrics_snapshot()));
            self.metrics = Some(server);
        }
    }

    /// What a scrape reports now.
    fn metrics_snapshot(&self) -> Snapshot {
        let now = monotonic_ms();
        let mut live: std::collections::HashMap<usize, LiveWorker> = self
            .workers
            .records()
            .map(|(pid, record)| {
                let worker = LiveWorker {
                    pid: pid.as_raw(),
                    age: record.age,
                    uptime_seconds: now.saturating_sub(record.born_ms) as f64 / 1000.0,
                    rss: read_rss(*pid),
                };
                (record.slot, worker)
            })
            .collect();
        let slots = match &self.meters {
            Some(meters) => self
                .used_slots
                .iter()
                .map(|&slot| SlotView {
                    slot,
                    meters: meters.slot(slot),
                    live: live.remove(&slot),
                })
                .collect(),
            None => Vec::new(),
        };
        let recycled = self.recycled;
        Snapshot {
            start_time: self
                .started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            master_rss: read_rss(self.pid),
            workers_target: self.num_workers,
            spawned: self.spawned,
            respawned: vec![
                ("error", self.crashed),
                ("timeout", self.timed_out),
                ("max_requests", recycled.max_requests),
                ("max_rss", recycled.max_rss),
                ("lifetime", recycled.lifetime),
            ],
            reloads: self.reloads,
            rescued: self.rescued,
            listeners: self
                .listeners
                .iter()
                .filter_map(|l| {
                    let (waiting, limit) = l.accept_queue()?;
                    Some((l.addr.to_string(), waiting, limit))
                })
                .collect(),
            slots,
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
