//! Issue 3: the master and workers as a process manager — stop, drain, signals.

use std::time::Duration;

use crate::support::{wait_for_file, Conn, Server, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);

/// Beyond Gunicorn (its #3397): connections queued in the listen backlog when TERM
/// arrives are accepted and answered before the worker exits, not reset.
#[test]
fn term_drains_fifty_queued_connections() {
    let tmp = TempDir::new("drain");
    let marker = tmp.join("busy");
    let mut s = Server::start(
        "drain",
        &["-w", "1", "--graceful-timeout", "60", "app:application"],
    );
    // Keep the only worker inside the app so new connections stay in the backlog.
    let mut busy = Conn::tcp(s.port);
    busy.send(format!(
        "GET /sleep?s=2&marker={} HTTP/1.1\r\nHost: x\r\n\r\n",
        marker.display()
    ));
    wait_for_file(&marker, "\n", DEADLINE);
    let mut queued: Vec<Conn> = (0..50)
        .map(|i| {
            let mut c = Conn::tcp(s.port);
            c.send(format!("GET /pid?n={i} HTTP/1.1\r\nHost: x\r\n\r\n"));
            c
        })
        .collect();
    s.send_signal("TERM");
    assert_eq!(
        busy.read_response().status,
        200,
        "the in-flight request finishes"
    );
    for (i, c) in queued.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.status, 200, "queued connection {i} was answered: {r:?}");
        assert!(
            r.says_close(),
            "answers during the drain close the connection: {r:?}"
        );
    }
    let status = s.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "master exits 0 after the drain: {status:?}"
    );
}

/// Idle keep-alive connections do not hold a stopping worker: they are closed at once.
#[test]
fn term_closes_idle_keepalive_connections_at_once() {
    let mut s = Server::start(
        "idle",
        &[
            "-w",
            "1",
            "--keep-alive",
            "60",
            "--graceful-timeout",
            "60",
            "app:application",
        ],
    );
    let mut idle = Conn::tcp(s.port);
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);
    s.send_signal("TERM");
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "the idle connection was closed"
    );
}

/// A timed-out worker says which request hung and where the app was (every thread's
/// Python stack), before answering 500 — what Gunicorn users ask for in #185/#2284.
#[test]
fn timeout_report_names_the_request_and_the_python_stack() {
    let s = Server::start("abort-report", &["-w", "1", "-t", "2", "app:application"]);
    let r = s.get("/sleep?s=30");
    assert_eq!(r.status, 500, "{r:?}");
    let log = s.wait_for_log("Python stacks:", DEADLINE);
    assert!(
        log.contains("handling GET /sleep?s=30 from 127.0.0.1 after"),
        "the report names the request: {log}"
    );
    assert!(log.contains("Thread MainThread"), "{log}");
    assert!(
        log.contains("in sleep_route"),
        "the app's frame is in the stack: {log}"
    );
}
