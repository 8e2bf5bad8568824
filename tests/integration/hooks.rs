//! Issue 18: the objects server hooks receive, and `worker.alive = False` in
//! `post_request` recycling the worker (Gunicorn's recipe for a worker that grew too big).

use std::time::Duration;

use crate::lifecycle::assert_none_lost;
use crate::support::load::KeepAliveLoad;
use crate::support::{poll_until, Server, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);

/// The app: `/pid`, `/echo` (reads the body, chunked or not), `/short` (announces 10
/// bytes, sends 5), `/long` (announces 3, gives 5), `/stream` (no Content-Length).
const APP: &str = r#"
import os

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/short":
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]
    if path == "/long":
        start_response("200 OK", [("Content-Length", "3")])
        return [b"hello"]
    if path == "/stream":
        start_response("200 OK", [])
        return iter([b"abc", b"defg"])
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
"#;

/// A directory with the app and a `gunicorn.conf.py`.
fn project(tag: &str, conf: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.join("hookapp.py"), APP).unwrap();
    std::fs::write(dir.join("gunicorn.conf.py"), conf).unwrap();
    dir
}

/// `post_request` setting `worker.alive = False` recycles the worker: it finishes, a new
/// one boots, and keep-alive clients lose nothing (their idle connections pass to the
/// successor); in the sync worker and with threads.
#[test]
fn post_request_setting_alive_false_recycles_the_worker() {
    let conf = r#"
def post_request(worker, req, environ, resp):
    if environ.get("HTTP_X_RECYCLE") or worker.nr >= 40:
        before = worker.alive
        worker.alive = False
        worker.log.info("HOOK recycling %s alive %s -> %s", worker.pid, before, worker.alive)

def worker_exit(server, worker):
    server.log.info("HOOK worker_exit %s alive=%s", worker.pid, worker.alive)
"#;
    for threads in ["1", "2"] {
        let dir = project("hook-alive", conf);
        let mut s = Server::builder("hook-alive")
            .cwd(dir.path())
            .args(["-w", "1", "--threads", threads, "--keep-alive", "30"])
            .arg("hookapp:application")
            .start();
        let first = s.wait_workers(1, DEADLINE)[0];
        // One keep-alive client asks for the recycle, then goes on using its connection.
        let mut c = s.connect();
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\nX-Recycle: 1\r\n\r\n");
        let r = c.read_response();
        assert_eq!((r.status, r.body_str()), (200, first.to_string()));
        let second = poll_until(DEADLINE, || {
            let now = s.worker_pids();
            (now.len() == 1 && now[0] != first && !crate::support::is_alive(first)).then(|| now[0])
        })
        .unwrap_or_else(|| panic!("threads {threads}: not replaced\n{}", s.stderr()));
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.read_response();
        assert_eq!(
            (r.status, r.body_str()),
            (200, second.to_string()),
            "threads {threads}: the kept-alive connection reached the successor"
        );
        let log = s.wait_for_log(&format!("Booting worker with pid: {second}"), DEADLINE);
        for line in [
            format!("HOOK recycling {first} alive True -> False"),
            format!("Worker exiting (pid: {first})"),
            format!("HOOK worker_exit {first} alive=False"),
        ] {
            assert!(
                log.contains(&line),
                "threads {threads}: no {line:?} in\n{log}"
            );
        }
        // Under keep-alive load, recycled every 40 requests: nothing is lost.
        let load = KeepAliveLoad::start(s.port, 4);
        s.wait_for_log_count("Booting worker with pid", 5, DEADLINE);
        load.wait_for_more(20);
        let (ok, lost) = load.finish();
        assert_none_lost(ok, &lost, &s);
        s.send_signal("TERM");
        assert!(s.wait_exit(DEADLINE).success(), "{}", s.stderr());
    }
}
