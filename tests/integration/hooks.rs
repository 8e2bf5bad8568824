//! Issue 18: the objects server hooks receive carry Gunicorn 27's values, and
//! `worker.alive = False` in `post_request` recycles the worker (Gunicorn's recipe for a
//! worker that grew too big).

use std::time::Duration;

use crate::lifecycle::assert_none_lost;
use crate::support::load::KeepAliveLoad;
use crate::support::{log_lines_with, poll_until, Server, TempDir};

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

/// The text after `marker` on the first log line that has it, if any.
fn line_after<'a>(log: &'a str, marker: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim()))
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

/// What each hook sees, against Gunicorn 27: `worker.nr`/`alive`/`sockets`/`tmp`,
/// `server.WORKERS`/`LISTENERS`/`num_workers` in the worker's own hooks,
/// `req.trailers`, `req.proxy_protocol_info`, `resp.sent`/`response_length`.
#[test]
fn hook_objects_carry_gunicorns_values() {
    let conf = r#"
import io, time

workers = 2
proxy_protocol = "auto"

def post_fork(server, worker):
    names = [s.getsockname() for s in worker.sockets]
    # Closing a duplicate leaves the worker's own listener alone.
    for s in worker.sockets:
        s.close()
    worker.tmp.notify()
    fresh = abs(time.monotonic() - worker.tmp.last_update()) < 5
    try:
        worker.tmp.fileno()
        fileno = "a descriptor"
    except io.UnsupportedOperation:
        fileno = "unsupported"
    server.log.info(
        "HOOK post_fork %s nr=%s alive=%s sockets=%s tmp=%s/%s workers=%s listeners=%s num=%s",
        worker.pid, worker.nr, worker.alive, names, fresh, fileno,
        sorted(server.WORKERS), server.LISTENERS, server.num_workers)

def pre_request(worker, req):
    info = req.proxy_protocol_info
    worker.log.info("HOOK pre_request %s nr=%s proxy=%s", req.path, worker.nr,
                    sorted(info.items()) if info else info)

def post_request(worker, req, environ, resp):
    worker.log.info("HOOK post_request %s nr=%s trailers=%s sent=%s length=%s", req.path,
                    worker.nr, req.trailers, resp.sent, resp.response_length)

def worker_int(worker):
    worker.log.info("HOOK worker_int %s alive=%s", worker.pid, worker.alive)

def worker_exit(server, worker):
    server.log.info("HOOK worker_exit %s alive=%s nr=%s workers=%s listeners=%s", worker.pid,
                    worker.alive, worker.nr, sorted(server.WORKERS), server.LISTENERS)
"#;
    let dir = project("hook-values", conf);
    let mut s = Server::builder("hook-values")
        .cwd(dir.path())
        .arg("hookapp:application")
        .start();
    let pids = s.wait_workers(2, DEADLINE);
    let port = s.port;
    let listeners = format!("['http://127.0.0.1:{port}']");
    let log = s.wait_for_log_count("HOOK post_fork", 2, DEADLINE);
    // The first worker forked sees no sibling, the second sees the first.
    let mut siblings = Vec::new();
    for pid in &pids {
        let seen = line_after(&log, &format!("HOOK post_fork {pid} "))
            .unwrap_or_else(|| panic!("no post_fork for {pid}:\n{log}"));
        let expected = format!(
            "nr=0 alive=True sockets=[('127.0.0.1', {port})] tmp=True/unsupported workers="
        );
        assert!(seen.starts_with(&expected), "{seen}");
        assert!(
            seen.ends_with(&format!("listeners={listeners} num=2")),
            "{seen}"
        );
        siblings.push(seen.to_string());
    }
    let (a, b) = (pids[0], pids[1]);
    let saw = |line: &str, pid: u32| line.contains(&format!("workers=[{pid}] "));
    let (first, second) = if saw(&siblings[1], a) { (0, 1) } else { (1, 0) };
    assert!(
        saw(&siblings[second], pids[first]) && siblings[first].contains("workers=[] "),
        "the first worker forked sees no sibling, the second sees the first ({a}, {b}): \
         {siblings:?}"
    );

    // A keep-alive connection: nr counts the worker's requests (pre_request sees the count
    // before the request, post_request after); Content-Length bodies cut or short.
    let mut c = s.connect();
    c.send("GET /short HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // Its body is short of its length: the connection closes after what was sent.
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(
        raw.starts_with("HTTP/1.1 200") && raw.ends_with("\r\n\r\n12345"),
        "{raw:?}"
    );
    let log = s.wait_for_log("HOOK post_request /short", DEADLINE);
    let seen = line_after(&log, "HOOK post_request /short ").unwrap_or_default();
    assert!(
        seen.starts_with("nr=1 trailers=[] sent=5 length=10"),
        "{seen}"
    );
    assert!(
        log.contains("HOOK pre_request /short nr=0 proxy=None"),
        "{log}"
    );

    let mut c = s.connect();
    for path in ["/long", "/stream"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(c.read_response().status, 200);
    }
    let log = s.wait_for_log("HOOK post_request /stream", DEADLINE);
    let long = line_after(&log, "HOOK post_request /long ").unwrap_or_default();
    let stream = line_after(&log, "HOOK post_request /stream ").unwrap_or_default();
    assert!(long.ends_with("trailers=[] sent=3 length=3"), "{long}");
    assert!(
        stream.ends_with("trailers=[] sent=7 length=None"),
        "{stream}"
    );

    // Trailers of a chunked body, once read (one with an underscore is dropped).
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\nX-Checksum: 42\r\nX_Under: 1\r\nx-more:  b \r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!((r.status, r.body_str()), (200, "hello".to_string()));
    let log = s.wait_for_log("HOOK post_request /echo", DEADLINE);
    let echo = line_after(&log, "HOOK post_request /echo ").unwrap_or_default();
    assert!(
        echo.contains("trailers=[('X-CHECKSUM', '42'), ('X-MORE', 'b')] sent=5 length=5"),
        "{echo}"
    );

    // A PROXY v1 header: every request of the connection sees it.
    let mut p = s.connect();
    p.send(
        "PROXY TCP4 192.0.2.7 198.51.100.9 4711 8080\r\n\
         GET /pid HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(p.read_response().status, 200);
    p.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(p.read_response().status, 200);
    let proxy = "proxy=[('client_addr', '192.0.2.7'), ('client_port', 4711), \
                 ('proxy_addr', '198.51.100.9'), ('proxy_port', 8080), \
                 ('proxy_protocol', 'TCP4')]";
    s.wait_for_log_count(proxy, 2, DEADLINE);
    // The response goes out before post_request runs: wait for the last one.
    s.wait_for_log_count("HOOK post_request /stream", 2, DEADLINE);

    // A quick stop: worker_int already sees alive False; at exit, worker.nr is the number
    // of requests the worker handled.
    s.send_signal("QUIT");
    assert!(s.wait_exit(DEADLINE).success(), "{}", s.stderr());
    let log = s.stderr();
    for pid in &pids {
        assert!(
            log.contains(&format!("HOOK worker_int {pid} alive=False")),
            "{log}"
        );
        let exit = line_after(&log, &format!("HOOK worker_exit {pid} "))
            .unwrap_or_else(|| panic!("no worker_exit for {pid}:\n{log}"));
        assert!(exit.starts_with("alive=False nr="), "{exit}");
        assert!(exit.ends_with(&format!("listeners={listeners}")), "{exit}");
        let handled = log_lines_with(&log, "HOOK post_request")
            .iter()
            .filter(|(from, _, _)| from == pid)
            .count();
        assert!(
            exit.starts_with(&format!("alive=False nr={handled} ")),
            "worker {pid} handled {handled}: {exit}\n{log}"
        );
    }
    // Each worker's worker_exit sees the server as it was when the worker was forked.
    let exit_of = |pid: u32| line_after(&log, &format!("HOOK worker_exit {pid} "));
    assert!(
        exit_of(pids[second]).is_some_and(|l| saw(l, pids[first]))
            && exit_of(pids[first]).is_some_and(|l| l.contains("workers=[] ")),
        "{log}"
    );
}
