//! The threaded worker (issue 11): `--threads N` / `-k gthread` run requests in a pool of
//! Python threads while the Rust loop keeps the sockets.

use std::time::{Duration, Instant};

use crate::support::load::KeepAliveLoad;
use crate::support::{poll_until, Conn, Server, TempDir, LOG_DEADLINE};

/// Sends one GET on a new connection and returns the response's status.
fn get_status(port: u16, path: &str) -> u16 {
    let mut c = Conn::tcp(port);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    c.read_response().status
}

const DEADLINE: Duration = Duration::from_secs(30);

/// `--threads 4` and `-k gthread` select the threaded worker (as in Gunicorn), which says so
/// and gives apps `wsgi.multithread = True`; other classes are still refused.
#[test]
fn threads_and_gthread_select_the_threaded_worker() {
    for args in [
        &["--threads", "4", "app"][..],
        &["-k", "gthread", "app"][..],
    ] {
        let s = Server::start("gthread-select", args);
        s.wait_for_log("Using worker: gthread", LOG_DEADLINE);
        let environ = s.get("/environ").body_str();
        assert!(
            environ.contains("\"wsgi.multithread\": \"True\""),
            "{args:?}: {environ}"
        );
    }
    let s = Server::start("sync-select", &["app"]);
    s.wait_for_log("Using worker: sync", LOG_DEADLINE);
    assert!(s
        .get("/environ")
        .body_str()
        .contains("\"wsgi.multithread\": \"False\""));
    // Gunicorn's check: keep-alive slots are worker_connections - threads.
    let s = Server::start(
        "gthread-no-keepalive",
        &["--threads", "4", "--worker-connections", "4", "app"],
    );
    s.wait_for_log("No keepalived connections can be handled.", LOG_DEADLINE);
    assert!(s.get("/pid").says_close());
    let refused = crate::support::run_to_exit(&["-k", "gevent", "app"], &[], DEADLINE);
    assert_eq!(refused.code(), Some(1), "{}", refused.output());
}

/// One worker with 4 threads runs 8 requests that each wait 0.6 s in about two rounds,
/// not eight; the loop meanwhile still answers a quick request.
#[test]
fn requests_run_in_parallel_threads() {
    let s = Server::start("gthread-parallel", &["-w", "1", "--threads", "4", "app"]);
    let port = s.port;
    let started = Instant::now();
    let slow: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get_status(port, "/sleep?s=0.6")))
        .collect();
    let statuses: Vec<u16> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed();
    assert_eq!(statuses, vec![200; 8]);
    // Serially this takes 4.8 s; two rounds of four take 1.2 s.
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
}

/// The loop runs without the GIL: while a thread holds it in one long C call, the loop
/// still accepts, serves a static file and refuses a malformed request (none needs
/// Python), where a loop that took the GIL each turn would wait for the call to end.
#[test]
fn the_loop_needs_no_gil_to_accept_serve_static_files_and_refuse() {
    let files = TempDir::new("gthread-gil-files");
    std::fs::write(files.join("a.txt"), b"static").unwrap();
    let s = Server::builder("gthread-gil")
        .args(["-w", "1", "--threads", "2", "--graceful-timeout", "1"])
        .args(["--static-path-mount", &files.path().display().to_string()])
        .arg("app")
        .start();
    let marker = s.dir.join("held");
    let mut hold = s.connect();
    // Seconds of CPU here; a few on a faster machine, still long past the checks below.
    hold.send(format!(
        "GET /hold_gil?n=600000000&marker={} HTTP/1.1\r\nHost: x\r\n\r\n",
        marker.display()
    ));
    crate::support::wait_for_file(&marker, "held", LOG_DEADLINE);
    let r = s.get("/static/a.txt");
    assert_eq!((r.status, r.body_str().as_str()), (200, "static"));
    let refused = s.request("NOT HTTP\r\n\r\n");
    assert_eq!(refused.status, 400);
    let log = std::fs::read_to_string(&marker).unwrap();
    assert!(!log.contains("done"), "the GIL was let go first: {log}");
}

/// A connection that served a request is closed by a thread (the loop has no GIL to let
/// its `gunicorn.socket` go): a socket the app kept lets go of the descriptor, so it cannot
/// reach a later connection that gets the same number.
#[test]
fn a_kept_gunicorn_socket_lets_go_when_its_connection_closes() {
    let s = Server::start("gthread-kept-socket", &["-w", "1", "--threads", "2", "app"]);
    let kept = s.get("/keep_socket");
    assert_eq!(kept.body_str(), "kept");
    // `get` read to the end and closed; the loop sees the close, a thread releases it.
    let released = poll_until(DEADLINE, || {
        (s.get("/kept_socket").body_str() == "-1").then_some(())
    });
    assert!(
        released.is_some(),
        "the kept socket still holds its descriptor"
    );
}

/// 24 keep-alive clients POST unique bodies back to back through 2 workers × 8 threads:
/// every response reaches its own client with its own body (no cross-talk between threads).
#[test]
fn many_threads_never_cross_responses() {
    let s = Server::start("gthread-crosstalk", &["-w", "2", "--threads", "8", "app"]);
    let load = KeepAliveLoad::start(s.port, 24);
    load.wait_for_more(3000);
    let (answered, lost) = load.finish();
    assert!(
        lost.is_empty(),
        "{} lost of {answered}: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Pipelined requests on one connection are answered in order, each by a thread in turn.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start("gthread-pipeline", &["-w", "1", "--threads", "4", "app"]);
    let mut c = s.connect();
    c.send(
        "GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nb\
         POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nc",
    );
    let bodies: Vec<String> = (0..3).map(|_| c.read_response().body_str()).collect();
    assert_eq!(bodies, ["slept", "b", "c"]);
}

/// A thread gives a kept-alive connection back without waking the loop; a request that
/// arrives before it does (the client is quick: it has its answer) must still be seen at
/// once, not when the loop next wakes for something else (up to a second later). A client
/// alone (no other client's bytes wake the loop) requests back to back: no request waits
/// anywhere near that long.
#[test]
fn back_to_back_requests_never_wait_for_the_loop_to_wake() {
    let s = Server::start(
        "gthread-back-to-back",
        &["-w", "1", "--threads", "2", "app"],
    );
    let port = s.port;
    let clients: Vec<_> = (0..1)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::tcp(port);
                let mut slowest = Duration::ZERO;
                for _ in 0..300 {
                    let began = Instant::now();
                    c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
                    assert_eq!(c.read_response().status, 200);
                    slowest = slowest.max(began.elapsed());
                }
                slowest
            })
        })
        .collect();
    for client in clients {
        let slowest = client.join().unwrap();
        // A missed wake-up costs up to the loop's one-second poll; a loaded machine's
        // hiccup is far shorter.
        assert!(slowest < Duration::from_millis(700), "{slowest:?}");
    }
}

/// A thread whose response the client has not taken yet (here a file's rest, left for the
/// loop to send) wakes the loop to send it: the client, waiting for those bytes, has
/// nothing to send that would wake the loop itself.
#[test]
fn what_a_slow_client_has_not_taken_goes_out_without_waiting_for_the_loop() {
    let files = TempDir::new("gthread-rest");
    let path = files.join("big.bin");
    let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let s = Server::builder("gthread-rest")
        .args(["-w", "1", "--threads", "2", "--access-logfile", "-"])
        .arg("app")
        .start();
    let mut c = s.connect();
    c.send(format!(
        "GET /file?path={} HTTP/1.1\r\nHost: x\r\n\r\n",
        path.display()
    ));
    // The thread is done (its line is logged) long before this client reads the rest.
    s.wait_for_stdout("GET /file", LOG_DEADLINE);
    let began = Instant::now();
    let r = c.read_response();
    let took = began.elapsed();
    assert_eq!((r.status, r.body.len()), (200, data.len()));
    assert!(r.body == data, "the body is the file");
    // Without the wake-up the rest waits for the loop's next poll, up to a second.
    assert!(took < Duration::from_millis(700), "{took:?}");
}

/// A kept-alive connection the loop closes (its keep-alive is up) is closed at once, also
/// while every thread is busy: the client sees the end now, not once a thread is free to
/// let its `gunicorn.socket` go.
#[test]
fn an_expired_connection_closes_while_every_thread_is_busy() {
    let s = Server::start(
        "gthread-expire-busy",
        &[
            "-w",
            "1",
            "-k",
            "gthread",
            "--threads",
            "1",
            "--keep-alive",
            "1",
            "app",
        ],
    );
    let mut idle = s.connect();
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);
    // The only thread sleeps for 6 s.
    let _busy = s.slow_request(6);
    let began = Instant::now();
    assert!(idle.read_to_end().is_empty(), "closed without a word");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
}

/// TERM while requests run in threads: each is answered before the worker exits, and
/// `--max-requests` recycles a threaded worker without losing keep-alive requests.
#[test]
fn term_and_max_requests_lose_nothing() {
    let mut s = Server::start("gthread-term", &["-w", "1", "--threads", "4", "app"]);
    let port = s.port;
    let dir = TempDir::new("gthread-term-marker");
    let marker = dir.join("started");
    let path = format!("/sleep?s=1&marker={}", marker.display());
    let running: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || get_status(port, &path))
        })
        .collect();
    // All four are inside the app (each wrote its line) before the TERM.
    poll_until(DEADLINE, || {
        let lines = std::fs::read_to_string(&marker).unwrap_or_default();
        (lines.lines().count() == 4).then_some(())
    })
    .expect("four requests in their threads");
    s.send_signal("TERM");
    for t in running {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(s.wait_exit(DEADLINE).success());

    let s = Server::start(
        "gthread-max-requests",
        &["-w", "2", "--threads", "4", "--max-requests", "50", "app"],
    );
    let load = KeepAliveLoad::start(s.port, 8);
    load.wait_for_more(600);
    let (answered, lost) = load.finish();
    assert!(
        lost.is_empty(),
        "{} lost of {answered}: {lost:?}",
        lost.len()
    );
    s.wait_for_log("Autorestarting worker after current request.", LOG_DEADLINE);
}

/// Sends one GET on a new connection; what came back (a status, or None when the server
/// closed the connection without a response) and when. Panics if nothing comes within
/// the read timeout: a client must never hang.
fn get_outcome(port: u16, path: &str) -> (Option<u16>, Instant) {
    let mut c = Conn::tcp(port);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let status = c.try_read_response().map(|r| r.status);
    (status, Instant::now())
}

/// The `--timeout` watchdog with threads: one slow request (longer than the timeout) does
/// not stop a worker whose other thread keeps serving, and it completes; when every thread
/// is stuck past the timeout, the master kills the worker (`WORKER TIMEOUT`, the stacks
/// logged), the hung clients are let go at once, not left to hang, and a new worker serves.
#[test]
fn a_wedged_pool_is_restarted_but_one_slow_request_is_not() {
    let mut s = Server::start(
        "gthread-timeout",
        &["-w", "1", "--threads", "2", "-t", "3", "app"],
    );
    let worker = s.wait_workers(1, DEADLINE)[0];
    let port = s.port;
    let dir = TempDir::new("gthread-timeout-marker");
    let marker = dir.join("started");
    let lines = || {
        std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .lines()
            .count()
    };
    // One request slower than the timeout (5 s against 3 s); the other thread serves all
    // the while, and nobody is killed.
    let slow = {
        let path = format!("/sleep?s=5&marker={}", marker.display());
        std::thread::spawn(move || get_outcome(port, &path))
    };
    poll_until(DEADLINE, || (lines() == 1).then_some(())).expect("the slow request runs");
    let slow_began = Instant::now();
    let mut bystanders = 0;
    while !slow.is_finished() {
        let sent = Instant::now();
        let mut c = Conn::tcp(port);
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body_str(),
            worker.to_string(),
            "served by the same worker"
        );
        // A free thread answers at once, not after the slow request.
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "a bystander waited {:?}",
            sent.elapsed()
        );
        bystanders += 1;
    }
    let (status, ended) = slow.join().unwrap();
    assert_eq!(
        status,
        Some(200),
        "the slow request completes\n{}",
        s.stderr()
    );
    let took = ended - slow_began;
    assert!(
        took < Duration::from_secs(8),
        "the 5 s request took {took:?}"
    );
    assert!(bystanders > 10, "the other thread served ({bystanders})");
    assert!(!s.stderr().contains("WORKER TIMEOUT"), "{}", s.stderr());
    // Both threads stuck: the worker is restarted, and the new one answers, even while
    // new requests keep arriving and queue behind them (queued is not progress).
    let hung = format!("/sleep?s=30&marker={}", marker.display());
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let hung = hung.clone();
            std::thread::spawn(move || get_outcome(port, &hung))
        })
        .collect();
    poll_until(DEADLINE, || (lines() == 3).then_some(())).expect("both hung requests run");
    let wedged = Instant::now();
    let mut queued = Vec::new();
    for _ in 0..8 {
        queued.push(std::thread::spawn(move || get_outcome(port, "/pid")));
        if s.stderr().contains("WORKER TIMEOUT") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500)); // a steady trickle, not a sync
    }
    s.wait_for_log("WORKER TIMEOUT", DEADLINE);
    // Killed one timeout after the pool stopped making progress (the master checks every
    // second), not two.
    let waited = wedged.elapsed();
    assert!(waited < Duration::from_secs(5), "killed after {waited:?}");
    // The report names both hung requests (and shows every thread's stack).
    let report = s.wait_for_log("Python stacks:", DEADLINE);
    let line = report
        .lines()
        .find(|l| l.contains("Worker timed out"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(line.matches("GET /sleep?s=30").count(), 2, "{report}");
    s.wait_for_log_count("Booting worker with pid", 2, DEADLINE);
    assert_eq!(get_status(port, "/pid"), 200);
    // The hung clients (and those queued behind them) are let go with the worker, soon
    // after the kill, never at the end of their 30 s sleep. Today each hung client's
    // connection is closed without a response; a 500 would do as well.
    let let_go = |t: std::thread::JoinHandle<(Option<u16>, Instant)>| {
        let (status, ended) = t.join().unwrap();
        let after = ended.saturating_duration_since(wedged);
        assert!(
            after < Duration::from_secs(8),
            "a client was let go {after:?} after the pool wedged ({status:?})"
        );
        status
    };
    for t in stuck {
        let status = let_go(t);
        assert!(
            matches!(status, None | Some(500)),
            "a hung request got {status:?}"
        );
    }
    for t in queued {
        let_go(t);
    }
}

/// An app that raises SystemExit in one thread: its client gets the 500, the requests in
/// the other threads are still answered, and the worker is replaced.
#[test]
fn system_exit_in_one_thread_spares_the_others() {
    let s = Server::start("gthread-exit", &["-w", "1", "--threads", "4", "app"]);
    let port = s.port;
    let sleepers: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get_status(port, "/sleep?s=1.5")))
        .collect();
    s.wait_for_log_count("Booting worker with pid", 1, LOG_DEADLINE);
    assert_eq!(get_status(port, "/sysexit"), 500);
    for t in sleepers {
        assert_eq!(t.join().unwrap(), 200);
    }
    s.wait_for_log_count("Booting worker with pid", 2, DEADLINE);
    assert_eq!(get_status(port, "/pid"), 200);
}

/// A worker at its connection limit with every thread busy does not spin: it waits.
#[test]
fn a_saturated_worker_at_its_connection_limit_stays_idle() {
    let mut s = Server::start(
        "gthread-no-spin",
        &[
            "-w",
            "2",
            "--threads",
            "2",
            "--worker-connections",
            "2",
            "app",
        ],
    );
    let workers = s.wait_workers(2, DEADLINE);
    let port = s.port;
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || get_status(port, "/sleep?s=4")))
        .collect();
    let ticks = crate::support::cpu_ticks;
    std::thread::sleep(Duration::from_millis(500)); // the requests reach their threads
    let before: u64 = workers.iter().map(|&w| ticks(w)).sum();
    std::thread::sleep(Duration::from_secs(2));
    let after: u64 = workers.iter().map(|&w| ticks(w)).sum();
    // A spinning loop burns ~200 ticks (2 s, 100 Hz) per worker; an idle one a few.
    assert!(
        after - before < 60,
        "workers used {} ticks in 2 s",
        after - before
    );
    for t in clients {
        let _ = t.join();
    }
}

/// `req.req_number` in the hooks is the request's number on its connection, as in
/// Gunicorn (1 for a connection's first request), with threads and without.
#[test]
fn req_number_counts_requests_per_connection() {
    let dir = TempDir::new("req-number");
    let conf = dir.join("conf.py");
    std::fs::write(
        &conf,
        "def pre_request(worker, req):\n    worker.log.info('REQNUM %s', req.req_number)\n",
    )
    .expect("config");
    for extra in [&[][..], &["--threads", "2"]] {
        let mut args = vec!["-w", "1", "-c", conf.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        args.push("app");
        let s = Server::start("req-number", &args);
        for _ in 0..2 {
            let mut c = Conn::tcp(s.port);
            for _ in 0..3 {
                c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
                assert_eq!(c.read_response().status, 200);
            }
        }
        let log = s.wait_for_log_count("REQNUM", 6, DEADLINE);
        let numbers: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split("REQNUM ").nth(1))
            .collect();
        assert_eq!(numbers, ["1", "2", "3", "1", "2", "3"], "{extra:?}\n{log}");
    }
}
