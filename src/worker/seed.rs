//! What a forked worker starts from: everything the master hands over at `fork()`.

use nix::unistd::Pid;

use super::heartbeat::Heartbeat;
use crate::config::Config;
use crate::sock::Listener;

/// Everything a forked worker starts from.
pub struct WorkerSeed<'a> {
    pub config: &'a Config,
    pub listeners: &'a [Listener],
    pub heartbeat: Heartbeat,
    pub slot: usize,
    /// The `--metrics` table (see `log::meters`): the worker records into block `slot`.
    pub meters: Option<crate::log::meters::Meters>,
    pub age: u64,
    pub max_requests: u64,
    pub master_pid: Pid,
    /// Connections passed between workers (see `worker::handoff`).
    pub handoff: &'a super::handoff::Channel,
    /// Wakes the master's loop (see `SignalQueue::notice_fd`).
    pub master_wake: std::os::fd::RawFd,
    /// Where the worker notes its idle connections for the master to rescue if it dies
    /// (see `worker::keeper`); None if it could not be mapped.
    pub conn_table: Option<super::conn_table::ConnTable>,
    /// The other workers when this one was forked (pid, age, aborted): `server.WORKERS`
    /// in the worker's own hooks, as Gunicorn's child sees its copy of the arbiter.
    pub siblings: Vec<(Pid, u64, bool)>,
    /// The master's target worker count then (`server.num_workers`).
    pub num_workers: usize,
    /// The signals the master held blocked across the fork, for the worker to unblock once
    /// its own handlers are installed.
    pub blocked_signals: nix::sys::signal::SigSet,
}
