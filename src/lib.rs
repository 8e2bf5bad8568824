//! rgunicorn: a Gunicorn-compatible, pre-fork WSGI HTTP server.
//!
//! # Map
//! A request's path through the crate, top to bottom; each module uses only those below it
//! (`process` and `master` aside, which start and supervise the rest).
//! - [`process`]: the start-up sequence ([`run`]), daemonizing, the privilege drop, pid
//!   file, process title, systemd.
//! - [`config`]: the settings table → command line, `GUNICORN_CMD_ARGS`, config file →
//!   [`config::Config`].
//! - [`master`]: the arbiter — forks workers, supervises them with signals and heartbeats.
//! - [`worker`]: one process — a mio event loop (`event_loop`), one connection's state
//!   machine (`conn`), hand-off of waiting connections between workers (`handoff`).
//! - [`wsgi`]: PEP 3333 — app loading, `environ`, `wsgi.input`, `start_response`, responses.
//! - [`transport`]: a connection's bytes — socket or TLS session, waits with deadlines, the
//!   outbox a slow reader's response drains from.
//! - [`http`]: HTTP/1.1 bytes → request heads and bodies, response heads, error pages (no I/O).
//! - [`sock`], [`tls`]: listening sockets; the rustls server configuration.
//! - [`python`]: the embedded interpreter — start, virtualenv, fork protocol, log bridge.
//! - [`log`]: Gunicorn's error log and access log formats, syslog, StatsD.

pub mod config;
pub mod error;
pub mod http;
pub mod log;
pub mod master;
pub mod process;
pub mod python;
pub mod sock;
pub mod tls;
pub mod transport;
pub mod worker;
pub mod wsgi;

pub use process::run;

/// rgunicorn's version, as `Starting rgunicorn X.Y.Z`, `SERVER_SOFTWARE` and `--version` show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
