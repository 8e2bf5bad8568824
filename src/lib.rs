//! rgunicorn: a Gunicorn-compatible, pre-fork WSGI HTTP server.
//!
//! # Map
//! The modules are layers, top to bottom: each uses only those below it, never one above,
//! and inside a module the files are layered the same way (`tests/layering.rs` holds the
//! order and checks every `use`). `ARCHITECTURE.md` follows one request through them.
//! - [`process`]: the start-up sequence ([`run`]; or entered from Python when installed with
//!   pip), daemonizing.
//! - [`master`]: the arbiter — forks workers, supervises them with signals and heartbeats,
//!   recycles them on memory and age, re-executes itself on USR2.
//! - [`worker`]: one process — boot, signal flags, a mio event loop (`event_loop`), one
//!   connection's state machine (`conn`), the thread pool, hand-off of waiting connections
//!   between workers (`handoff`), the keeper that outlives a crash (`keeper`).
//! - [`wsgi`]: PEP 3333 — app loading, `environ`, `wsgi.input`, `start_response`, responses.
//! - [`transport`]: a connection's bytes — socket or TLS session, waits with deadlines, the
//!   outbox a slow reader's response drains from.
//! - [`config`]: the settings table → command line, `GUNICORN_CMD_ARGS`, config file →
//!   [`config::Config`]; hooks as settings.
//! - [`python`]: the embedded interpreter — start, virtualenv, fork protocol, hooks in force.
//! - [`log`]: Gunicorn's error log and access log formats, syslog, StatsD, Python logging.
//! - [`http`]: HTTP/1.1 bytes → request heads and bodies, response heads, error pages (no I/O).
//! - [`tls`], [`sock`]: the rustls server configuration; listening sockets.
//! - [`unix`]: the process's own: user and group, pid file, process title, systemd, clock.
//! - [`error`]: exit codes.

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
pub mod unix;
pub mod worker;
pub mod wsgi;

pub use process::run;

/// rgunicorn's version, as `Starting rgunicorn X.Y.Z`, `SERVER_SOFTWARE` and `--version` show it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
