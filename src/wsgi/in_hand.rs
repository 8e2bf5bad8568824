//! The requests in hand, for the report of a worker that timed out: each thread that runs
//! requests records its request's environ while the app has it.

use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The environ of each request in hand (one per thread that runs requests) and when it
/// started, for the timeout report (a reference, so recording it costs an incref).
static IN_HAND: std::sync::Mutex<Vec<(std::thread::ThreadId, Py<PyDict>, Instant)>> =
    std::sync::Mutex::new(Vec::new());

fn in_hand() -> std::sync::MutexGuard<'static, Vec<(std::thread::ThreadId, Py<PyDict>, Instant)>> {
    IN_HAND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets (or with None, clears) this thread's request in hand.
pub fn set_in_hand(request: Option<(Py<PyDict>, Instant)>) {
    let me = std::thread::current().id();
    let previous = {
        let mut all = in_hand();
        let previous = all
            .iter()
            .position(|(thread, _, _)| *thread == me)
            .map(|i| all.swap_remove(i));
        if let Some((environ, start)) = request {
            all.push((me, environ, start));
        }
        previous
    };
    // Released outside the lock: freeing an environ can run Python code (finalizers), which
    // may let another thread in, and that thread may be on its way to this lock.
    drop(previous);
}

/// Describes the requests in hand (`GET /path from 127.0.0.1 after 31.2 s`, one per busy
/// thread, joined with "; "), if any.
pub fn describe_current_request(py: Python<'_>) -> Option<String> {
    let all = in_hand();
    let described: Vec<String> = all
        .iter()
        .map(|(_, environ, started)| describe_request(environ.bind(py), *started))
        .collect();
    (!described.is_empty()).then(|| described.join("; "))
}

fn describe_request(environ: &Bound<'_, PyDict>, started: Instant) -> String {
    let get = |key: &str| -> String {
        environ
            .get_item(key)
            .ok()
            .flatten()
            .and_then(|v| v.extract::<String>().ok())
            .unwrap_or_default()
    };
    let peer = get("REMOTE_ADDR");
    format!(
        "{} {} from {} after {:.1} s",
        get("REQUEST_METHOD"),
        get("RAW_URI"),
        if peer.is_empty() {
            "a unix socket peer".to_string()
        } else {
            peer
        },
        started.elapsed().as_secs_f64()
    )
}
