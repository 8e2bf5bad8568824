//! Master and workers (GUNICORN.md §4; issue 2 point 4): booting N workers, replacing dead
//! ones, the heartbeat timeout, max-requests recycling, TERM/INT/QUIT shutdown.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    describe, is_alive, log_lines_with, number_after, poll_until, Conn, Server, LOG_DEADLINE,
};

/// The pid a `/pid` request was served by.
fn served_by(s: &Server) -> u32 {
    let r = s.get("/pid");
    assert_eq!(r.status, 200, "{r:?}");
    r.body_str().trim().parse().expect("pid body")
}

/// `-w 2` boots two workers, each logging `Booting worker with pid: N` under its own pid.
#[test]
fn two_workers_boot() {
    let mut s = Server::start("two-workers", &["-w", "2", "app"]);
    let log = s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let mut workers = s.wait_workers(2, LOG_DEADLINE);
    workers.sort_unstable();
    let mut booted: Vec<u32> = log_lines_with(&log, "Booting worker with pid: ")
        .into_iter()
        .map(|(pid, level, msg)| {
            assert_eq!(level, "INFO");
            let n = number_after(&msg, "Booting worker with pid:").expect("pid in message");
            assert_eq!(pid, n, "the worker logs its own boot line");
            n
        })
        .collect();
    booted.sort_unstable();
    assert_eq!(
        booted, workers,
        "boot lines name the master's children\n{log}"
    );
}

/// A worker killed with SIGKILL is reported as Gunicorn does and replaced.
#[test]
fn killed_worker_is_reported_and_replaced() {
    let mut s = Server::start("kill-worker", &["-w", "2", "app"]);
    s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let before = s.wait_workers(2, LOG_DEADLINE);
    let victim = before[0];
    assert!(crate::support::send_signal_to(victim, "KILL"));
    let log = s.wait_for_log(
        &format!("Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?"),
        LOG_DEADLINE,
    );
    let line = log_lines_with(&log, &format!("Worker (pid:{victim}) was sent SIGKILL!"));
    assert_eq!(line.first().map(|l| l.1.as_str()), Some("ERROR"), "{log}");
    assert_eq!(
        line.first().map(|l| l.0),
        Some(s.pid()),
        "logged by the master: {log}"
    );
    s.wait_for_log_count("Booting worker with pid: ", 3, LOG_DEADLINE);
    let after = poll_until(LOG_DEADLINE, || {
        let now: Vec<u32> = s
            .worker_pids()
            .into_iter()
            .filter(|p| is_alive(*p))
            .collect();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    })
    .unwrap_or_else(|| panic!("no replacement worker\n{}", s.stderr()));
    assert!(
        after.contains(&before[1]),
        "the other worker was left alone"
    );
    assert_eq!(s.get("/after").status, 200);
}

/// A worker that exits with a non-zero code is reported and replaced.
#[test]
fn worker_exit_code_is_reported_and_replaced() {
    let mut s = Server::start("exit-worker", &["-w", "1", "app"]);
    let first = s.wait_workers(1, LOG_DEADLINE)[0];
    let mut c = s.connect();
    c.send("GET /exit?code=7 HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = c.read_to_end();
    s.wait_for_log(
        &format!("Worker (pid:{first}) exited with code 7."),
        LOG_DEADLINE,
    );
    s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let second = served_by(&s);
    assert_ne!(first, second);
}

/// `--timeout 2` with a request that sleeps 30 s: `WORKER TIMEOUT (pid:N)`, the client
/// gets a 500 at about the timeout, and the next request is served by a new worker.
///
/// When: the master looks every second, at a heartbeat the idle worker renews every half
/// timeout (1 s here, as Gunicorn's sync worker), so the kill comes 1 to 3 s after the
/// request arrives.
#[test]
fn hung_request_is_killed_by_timeout() {
    let mut s = Server::start("timeout", &["-w", "1", "--timeout", "2", "app"]);
    let first = s.wait_workers(1, LOG_DEADLINE)[0];
    assert_eq!(served_by(&s), first, "the worker has booted");
    let started = Instant::now();
    let r = s.get("/sleep?s=30");
    let took = started.elapsed();
    assert_eq!(r.status, 500, "a timed-out request gets 500: {r:?}");
    assert!(
        took > Duration::from_secs(1) && took < Duration::from_secs(6),
        "killed {took:?} after the request (--timeout 2)"
    );
    let log = s.wait_for_log(&format!("WORKER TIMEOUT (pid:{first})"), LOG_DEADLINE);
    let lines = log_lines_with(&log, "WORKER TIMEOUT");
    assert_eq!(
        lines.first().map(|l| l.1.as_str()),
        Some("CRITICAL"),
        "{log}"
    );
    let next = poll_until(LOG_DEADLINE, || {
        let pid = served_by(&s);
        (pid != first).then_some(pid)
    });
    assert!(
        next.is_some(),
        "a new worker serves after the timeout\n{}",
        s.stderr()
    );
    assert!(!is_alive(first) || !s.worker_pids().contains(&first));
}

/// `--max-requests 3`: after its third request the worker logs
/// `Autorestarting worker after current request.` and a new worker serves.
#[test]
fn max_requests_recycles_worker() {
    let mut s = Server::start("maxreq", &["-w", "1", "--max-requests", "3", "app"]);
    let first = s.wait_workers(1, LOG_DEADLINE)[0];
    for i in 0..3 {
        assert_eq!(
            served_by(&s),
            first,
            "request {i} is served by the first worker"
        );
    }
    let log = s.wait_for_log("Autorestarting worker after current request.", LOG_DEADLINE);
    let lines = log_lines_with(&log, "Autorestarting worker after current request.");
    assert_eq!(
        lines.first().map(|l| (l.0, l.1.as_str())),
        Some((first, "INFO")),
        "{log}"
    );
    let second = served_by(&s);
    assert_ne!(
        second, first,
        "the fourth request is served by a new worker"
    );
    for _ in 0..2 {
        assert_eq!(served_by(&s), second);
    }
}

/// `--max-requests 2 --max-requests-jitter 2`: a worker serves between 2 and 4 requests.
#[test]
fn max_requests_jitter_bounds_the_limit() {
    let mut s = Server::start(
        "jitter",
        &[
            "-w",
            "1",
            "--max-requests",
            "2",
            "--max-requests-jitter",
            "2",
            "app",
        ],
    );
    let first = s.wait_workers(1, LOG_DEADLINE)[0];
    let mut served = 0;
    loop {
        let pid = served_by(&s);
        if pid != first {
            break;
        }
        served += 1;
        assert!(
            served <= 4,
            "the worker served more than max_requests + jitter"
        );
    }
    assert!(
        served >= 2,
        "the worker was recycled after {served} < max_requests requests"
    );
}

/// Keep-alive connections count towards `--max-requests` too, and the recycled worker
/// closes the connection after the last request it serves.
#[test]
fn max_requests_counts_keep_alive_requests() {
    let s = Server::start("maxreq-ka", &["-w", "1", "--max-requests", "2", "app"]);
    let mut c = s.connect();
    let mut pids = Vec::new();
    for _ in 0..2 {
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.read_response();
        assert_eq!(r.status, 200);
        pids.push(r.body_str());
    }
    assert_eq!(pids[0], pids[1]);
    // Closed right after the last response, well before the 2 s keep-alive would.
    assert!(
        c.closed_within(Duration::from_secs(1)),
        "connection closed after the limit"
    );
    s.wait_for_log("Autorestarting worker after current request.", LOG_DEADLINE);
}

/// SIGTERM while a 2 s request is in flight: the request completes with 200, workers log
/// `Worker exiting`, the master logs `Shutting down: Master` and exits 0.
#[test]
fn sigterm_is_graceful_for_in_flight_request() {
    let mut s = Server::start("term", &["-w", "1", "app"]);
    let mut c = s.slow_request(2);
    let client = thread::spawn(move || c.read_response());
    s.send_signal("TERM");
    let r = client.join().expect("client thread");
    assert_eq!(r.status, 200, "the in-flight request completes: {r:?}");
    assert_eq!(r.body_str(), "slept");
    let status = s.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "master exit {}\n{}",
        describe(&status),
        s.stderr()
    );
    let log = s.stderr();
    assert!(log.contains("Handling signal: term"), "{log}");
    assert!(log.contains("Worker exiting (pid: "), "{log}");
    assert!(log.contains("Shutting down: Master"), "{log}");
}

/// SIGTERM with a request longer than `--graceful-timeout 2`: the master does not wait
/// for it; it kills the worker and exits well before the request would end.
#[test]
fn sigterm_is_bounded_by_graceful_timeout() {
    let mut s = Server::start("graceful", &["-w", "1", "--graceful-timeout", "2", "app"]);
    let mut c = s.slow_request(60);
    let client = thread::spawn(move || c.read_to_end());
    let sent = Instant::now();
    s.send_signal("TERM");
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "graceful timeout not enforced: {:?}",
        sent.elapsed()
    );
    assert!(
        status.success(),
        "exit {}\n{}",
        describe(&status),
        s.stderr()
    );
    let _ = client.join();
}

/// SIGINT stops quickly, even with a long request in flight.
#[test]
fn sigint_exits_quickly() {
    let mut s = Server::start("int", &["-w", "2", "app"]);
    s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let workers = s.wait_workers(2, LOG_DEADLINE);
    let mut c = s.slow_request(60);
    let client = thread::spawn(move || c.read_to_end());
    let sent = Instant::now();
    s.send_signal("INT");
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "SIGINT took {:?}",
        sent.elapsed()
    );
    assert!(
        status.success(),
        "exit {}\n{}",
        describe(&status),
        s.stderr()
    );
    assert!(
        s.stderr().contains("Shutting down: Master"),
        "{}",
        s.stderr()
    );
    let _ = client.join();
    let gone = poll_until(Duration::from_secs(10), || {
        workers.iter().all(|p| !is_alive(*p)).then_some(())
    });
    assert!(gone.is_some(), "workers outlived the master");
}

/// SIGQUIT is a quick stop as well.
#[test]
fn sigquit_exits_quickly() {
    let mut s = Server::start("quit", &["-w", "1", "app"]);
    s.wait_for_log("Booting worker with pid: ", LOG_DEADLINE);
    let sent = Instant::now();
    s.send_signal("QUIT");
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "SIGQUIT took {:?}",
        sent.elapsed()
    );
    assert!(
        status.success(),
        "exit {}\n{}",
        describe(&status),
        s.stderr()
    );
}

/// With `-w 2` two slow requests run at the same time, in two different workers.
#[test]
fn two_workers_serve_concurrently() {
    let s = Server::start("concurrent", &["-w", "2", "app"]);
    s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let marker = s.dir.join("concurrent");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let port = s.port;
            let path = format!("/sleep?s=4&marker={}", marker.display());
            thread::spawn(move || {
                let mut c = Conn::tcp(port);
                c.send(format!(
                    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                ));
                c.read_response()
            })
        })
        .collect();
    // Both requests reach the app while both are still sleeping.
    let text = crate::support::wait_for_file(&marker, "\n", LOG_DEADLINE);
    let both = poll_until(LOG_DEADLINE, || {
        let text = std::fs::read_to_string(&marker).unwrap_or_default();
        (text.lines().count() == 2).then_some(text)
    })
    .unwrap_or_else(|| panic!("only one request in the app at a time: {text:?}"));
    let pids: Vec<&str> = both.lines().collect();
    assert_ne!(pids[0], pids[1], "served by two workers");
    for c in clients {
        assert_eq!(c.join().expect("client").status, 200);
    }
}

/// If the master dies abruptly (SIGKILL), its workers notice and exit.
#[test]
fn workers_exit_when_master_dies() {
    let mut s = Server::start("orphans", &["-w", "2", "app"]);
    s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let workers = s.wait_workers(2, LOG_DEADLINE);
    s.send_signal("KILL");
    s.wait_exit(LOG_DEADLINE);
    // Each worker looks for its parent every second.
    let gone = poll_until(Duration::from_secs(4), || {
        workers.iter().all(|p| !is_alive(*p)).then_some(())
    });
    assert!(
        gone.is_some(),
        "workers {workers:?} outlived a killed master"
    );
}

/// SIGTERM does not wait for idle keep-alive connections: with `--keep-alive 60` and an
/// idle connection open, the master still exits promptly and the connection is closed.
#[test]
fn sigterm_closes_idle_keep_alive_connections() {
    let mut s = Server::start("term-idle", &["-w", "1", "--keep-alive", "60", "app"]);
    let mut c = s.connect();
    c.send("GET /k HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    let sent = Instant::now();
    s.send_signal("TERM");
    let status = s.wait_exit(Duration::from_secs(40));
    assert!(status.success(), "{}", describe(&status));
    // At most the idle connection's 2 s last call, not its 60 s keep-alive.
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "an idle keep-alive connection held the shutdown for {:?}",
        sent.elapsed()
    );
    assert!(c.closed_within(Duration::from_secs(1)));
}

/// A client that sends half a head and stalls is dropped after a deadline (`--timeout 3`),
/// and the worker keeps serving others meanwhile.
#[test]
fn stalled_client_is_dropped_after_deadline() {
    let s = Server::start("stalled", &["-w", "1", "--timeout", "3", "app"]);
    let mut stalled = s.connect();
    let sent = Instant::now();
    stalled.send("GET /stall HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(s.get("/other").status, 200);
    assert!(
        stalled.closed_within(
            Duration::from_secs(6)
                .saturating_sub(sent.elapsed())
                .max(Duration::from_millis(1))
        ),
        "a stalled head kept its connection {:?} (--timeout 3)",
        sent.elapsed()
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(2500),
        "dropped {:?} after its first bytes, before the deadline",
        sent.elapsed()
    );
}

/// Whether a process still holds the server's end of the TCP connection from 127.0.0.1
/// port `client` to 127.0.0.1 port `server` (from /proc/net/tcp: the entry exists and has
/// an inode; a socket its owner closed is gone or orphaned, inode 0).
fn server_holds_connection(server: u16, client: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{server:04X}");
    let remote = format!("0100007F:{client:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 9 && fields[1] == local && fields[2] == remote && fields[9] != "0"
    })
}

/// A client that asks for `size` bytes of `/big` and reads only the response's head.
struct NonReader {
    stream: std::net::TcpStream,
    /// Body bytes that came with the head.
    body: Vec<u8>,
    /// When the request was sent.
    sent: Instant,
}

impl NonReader {
    fn start(port: u16, size: usize) -> NonReader {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(crate::support::READ_TIMEOUT))
            .unwrap();
        let sent = Instant::now();
        stream
            .write_all(format!("GET /big?size={size}&cl=1 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("send");
        let mut got = Vec::new();
        let end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                other => panic!("no response head: {other:?}"),
            }
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            head.contains(&format!("content-length: {size}\r\n")),
            "{head}"
        );
        NonReader {
            body: got[end..].to_vec(),
            stream,
            sent,
        }
    }

    fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// Reads the rest until the server's EOF (or a reset); the body bytes received.
    fn read_to_close(mut self) -> Vec<u8> {
        use std::io::Read;
        let mut body = std::mem::take(&mut self.body);
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return body,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("the connection stayed open after {} bytes", body.len())
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    panic!("the connection stayed open after {} bytes", body.len())
                }
                Err(_) => return body,
            }
        }
    }
}

/// Waits until the server lets go of the non-reader's connection, at most until `bound`
/// after its request; how long after its request that was.
fn cut_after(s: &Server, hog: &NonReader, bound: Duration) -> Duration {
    let port = hog.local_port();
    poll_until(bound.saturating_sub(hog.sent.elapsed()), || {
        (!server_holds_connection(s.port, port)).then(|| hog.sent.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "the non-reader's connection was still held {:?} after its request\n{}",
            hog.sent.elapsed(),
            s.stderr()
        )
    })
}

/// The non-reader's connection is cut past the write timeout (`--timeout 3`), not before,
/// and within a bound.
///
/// Today the cut comes about one more `--timeout` later than the stall's timeout (6-7 s,
/// not 3 s): when the app's write times out, what it had queued (up to 1 MiB) is still
/// given a flush deadline of its own before the connection is closed, though it can never
/// complete the response. The bound allows that, and catches a connection held forever.
fn assert_cut_in_time(s: &Server, hog: &NonReader) {
    let cut = cut_after(s, hog, Duration::from_secs(10));
    assert!(
        cut > Duration::from_millis(2500),
        "the non-reader was cut {cut:?} after its request, before the write timeout"
    );
}

/// The non-reader got the start of its response and less than all of it.
fn assert_cut_short(hog: NonReader, size: usize) {
    let body = hog.read_to_close();
    assert!(
        body.len() < size,
        "the non-reader got its whole response ({} bytes): it was not cut",
        body.len()
    );
    assert!(
        body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
        "what it got is the response's start"
    );
}

/// A client that never reads a large generated response (64 MiB, more than the 1 MiB a
/// connection may buffer) holds its worker, or its thread, for one write timeout
/// (`--timeout 3`) at most. Its connection is cut past that timeout, not before (see
/// [`assert_cut_in_time`]), and it gets less than its Content-Length, then EOF.
///
/// The sync worker (`-w 1`) serves a client waiting behind it as soon as it is cut. (The
/// master's own `--timeout` races the write timeout there: either ends the stall at about
/// 3 s.) The threaded worker (`--threads 2`) serves others at once meanwhile, and there
/// only the write timeout can end the stall: the pool never wedges.
#[test]
fn non_reading_client_does_not_wedge_worker() {
    const SIZE: usize = 64 << 20;
    let s = Server::start("slow-reader", &["-w", "1", "--timeout", "3", "app"]);
    assert_eq!(s.get("/booted").status, 200);
    let hog = NonReader::start(s.port, SIZE);
    // The hog reads nothing from here. Another client waits behind it, one write timeout.
    let r = s.get("/after-hog");
    let served = hog.sent.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello /after-hog");
    assert!(
        served < Duration::from_secs(6),
        "the other client waited {served:?} behind the non-reader (--timeout 3)"
    );
    assert_cut_in_time(&s, &hog);
    assert_cut_short(hog, SIZE);
    assert_eq!(s.get("/after").status, 200);
    drop(s);

    let s = Server::start(
        "slow-reader-threads",
        &["-w", "1", "--threads", "2", "--timeout", "3", "app"],
    );
    assert_eq!(s.get("/booted").status, 200);
    let hog = NonReader::start(s.port, SIZE);
    for _ in 0..3 {
        let asked = Instant::now();
        let r = s.get("/beside-hog");
        assert_eq!(r.status, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "a client waited {:?} beside the non-reader",
            asked.elapsed()
        );
    }
    assert_cut_in_time(&s, &hog);
    assert_cut_short(hog, SIZE);
    assert_eq!(s.get("/after").status, 200);
    assert!(
        !s.stderr().contains("WORKER TIMEOUT"),
        "the write timeout, not the master, ended the stall\n{}",
        s.stderr()
    );
}
