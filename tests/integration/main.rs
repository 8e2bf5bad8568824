//! rgunicorn's integration suite: the built binary, real sockets, raw bytes.
//!
//! Run it with `tests/run` (it creates the Flask/Django virtualenv the framework tests
//! need and sets `RGUNICORN_TEST_VENV`). One module per area; `support` holds the
//! server fixture and the raw HTTP client.

#![allow(clippy::unwrap_used)]

mod support;

mod cli;
mod config;
mod control;
mod frameworks;
mod hooks;
mod http;
mod lifecycle;
mod logging;
mod metrics;
mod nginx;
mod pinning;
mod process;
mod recycling;
mod signals;
mod statics;
mod threads;
mod wsgi;
