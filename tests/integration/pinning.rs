//! Slow or stalled clients never pin a worker, and a stopping or retiring worker never
//! strands a request: bodies the app did not read, half-sent heads across a recycle.

use std::time::{Duration, Instant};

use crate::support::*;

/// A body the app did not read and the client never finishes (3 of 100,000 bytes) costs
/// the worker nothing: its connection closes with a lingering close, and a bystander is
/// answered at once, in the sync worker and with every thread of a threaded one taken.
#[test]
fn an_unread_body_that_never_comes_pins_no_worker() {
    for threads in ["1", "2"] {
        let s = Server::start(
            "unread-stall",
            &["app", "-w", "1", "-t", "10", "--threads", threads],
        );
        let mut stalled = Vec::new();
        for _ in 0..3 {
            let mut c = s.connect();
            c.send("POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc");
            assert_eq!(c.read_response().status, 200, "threads {threads}");
            stalled.push(c);
        }
        // One more trickles its body, a byte at a time.
        let mut trickle = s.connect();
        trickle.send("POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\na");
        assert_eq!(trickle.read_response().status, 200, "threads {threads}");
        let began = Instant::now();
        let r = s.get("/pid");
        assert_eq!(r.status, 200);
        let waited = began.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "threads {threads}: the bystander waited {waited:?}"
        );
        // Each stalled connection was told the response was the last (our FIN follows it).
        for c in &mut stalled {
            assert!(c.closed_within(Duration::from_secs(1)), "threads {threads}");
        }
        for _ in 0..3 {
            let _ = trickle.try_send(b"b");
        }
        assert!(trickle.closed_within(Duration::from_secs(1)));
    }
}

/// A connection that closes anyway (`Connection: close`, `--keep-alive 0`) is not drained:
/// the worker does not wait for its body either.
#[test]
fn a_closing_connection_is_not_drained() {
    let s = Server::start(
        "unread-close",
        &["app", "-w", "1", "-t", "10", "--keep-alive", "0"],
    );
    let mut c = s.connect();
    c.send(
        "POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(c.read_response().status, 200);
    let began = Instant::now();
    assert_eq!(s.get("/pid").status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
}

/// What of an unread body has already arrived is still discarded, so the connection stays
/// usable for the next request.
#[test]
fn an_unread_body_that_arrived_keeps_the_connection() {
    let s = Server::start("unread-arrived", &["app", "-w", "1"]);
    let mut c = s.connect();
    // In one write, so that it has all arrived when the app returns.
    let mut request = b"POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n".to_vec();
    request.extend_from_slice(&[b'x'; 50_000]);
    c.send(request);
    assert_eq!(c.read_response().status, 200);
    c.send("GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body_str(), "hello /second");
}

/// A worker recycled by `--max-requests` while a client is part-way through a head: the
/// master forks the successor at once, the next request is answered by it without waiting
/// for the old worker's connections, and the half-sent head travels to the successor with
/// its bytes and is answered there.
#[test]
fn a_half_sent_head_does_not_hold_a_recycled_worker() {
    let mut s = Server::start(
        "retire-partial",
        &["app", "-w", "1", "-t", "8", "--max-requests", "2"],
    );
    let old = s.wait_workers(1, Duration::from_secs(10))[0];
    let mut partial = s.connect();
    partial.send("GET /partial HTTP/1.1\r\nHost: x\r\n");
    // The worker has read it (it is past the fresh-connection grace) once it serves another.
    assert_eq!(s.get("/pid").body_str(), old.to_string());
    assert_eq!(s.get("/pid").body_str(), old.to_string());
    let began = Instant::now();
    let next = s.get("/pid");
    let waited = began.elapsed();
    assert_ne!(next.body_str(), old.to_string());
    assert!(
        waited < Duration::from_secs(2),
        "the next request waited {waited:?}"
    );
    partial.send("\r\n");
    let r = partial.read_response();
    assert_eq!(r.body_str(), "hello /partial");
    assert!(
        poll_until(Duration::from_secs(5), || (!is_alive(old)).then_some(())).is_some(),
        "the recycled worker is still there"
    );
}

/// After TERM, a connection that comes is either served or refused at once: the workers
/// answer what the kernel queued, then let the listening socket go (a worker busy in a
/// long request through its watcher thread), so a health check is refused instead of
/// waiting in a backlog nobody accepts from and being reset when the last worker leaves.
#[test]
fn after_term_new_connections_are_refused_at_once() {
    use std::io::{Read, Write};
    let mut s = Server::start(
        "term-refuse",
        &["app", "-w", "2", "--graceful-timeout", "20"],
    );
    s.wait_workers(2, Duration::from_secs(10));
    // A slow request keeps one worker (and so the server) alive through the drain.
    let mut slow = s.slow_request(3);
    s.send_signal("TERM");
    let began = Instant::now();
    let (mut refused, mut served, mut slowest) = (0, 0, Duration::ZERO);
    while began.elapsed() < Duration::from_secs(1) {
        let probe = Instant::now();
        match std::net::TcpStream::connect(("127.0.0.1", s.port)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
            Err(e) => panic!("probe: {e}"),
            Ok(mut c) => {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut out = String::new();
                let _ = c.read_to_string(&mut out);
                assert!(out.starts_with("HTTP/1.1 200"), "a probe got {out:?}");
                served += 1;
            }
        }
        slowest = slowest.max(probe.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        refused > 0,
        "no probe was refused after TERM ({served} served)"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a probe took {slowest:?} ({refused} refused, {served} served)"
    );
    let r = slow.read_response();
    assert_eq!(r.status, 200);
    s.wait_exit(Duration::from_secs(20));
}

/// An app that makes `gunicorn.socket` blocking (as `settimeout(None)` does) changes the
/// flag on the descriptor the event loop shares; the server's own I/O must not care: a
/// file response to a client that is not reading yet waits in the outbox instead of
/// blocking the worker in `sendfile`, the connection's next request is read without
/// blocking, and a bystander is served meanwhile.
#[test]
fn an_app_making_its_socket_blocking_blocks_nothing() {
    let s = Server::start("blocking-socket", &["app", "-w", "1", "-t", "10"]);
    let file = s.dir.join("big.bin");
    std::fs::write(&file, vec![b'f'; 8 << 20]).unwrap();
    let mut reader = s.connect();
    reader.send(format!(
        "GET /blocking_socket?path={} HTTP/1.1\r\nHost: x\r\n\r\n",
        file.display()
    ));
    // The reader takes nothing yet: 8 MiB cannot fit in the socket buffers.
    let began = Instant::now();
    let r = s.get("/pid");
    assert_eq!(r.status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    let r = reader.read_response();
    assert_eq!(r.body.len(), 8 << 20);
    reader.send("GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reader.read_response().body_str(), "hello /next");
    assert_eq!(s.get("/pid").status, 200);
}

/// A threaded worker killed for `--timeout` with every thread wedged answers each hung
/// request with a 500, as the sync worker answers its one, instead of closing them; the
/// requests queued for a thread pass to the successor with their connections.
#[test]
fn a_timed_out_threaded_worker_answers_its_hung_requests() {
    let mut s = Server::start(
        "threads-abort",
        &["app", "-w", "1", "--threads", "2", "-t", "3"],
    );
    let old = s.wait_workers(1, Duration::from_secs(10))[0];
    let mut hung = [s.slow_request(60), s.slow_request(60)];
    // Queued behind them, for a thread that will never be free.
    let mut queued: Vec<Conn> = (0..2)
        .map(|_| {
            let mut c = s.connect();
            c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
            c
        })
        .collect();
    for c in &mut hung {
        let r = c.read_response();
        assert_eq!(r.status, 500);
    }
    // Those no thread started are served by the successor, not answered with a 500.
    for c in &mut queued {
        let r = c.read_response();
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_ne!(r.body_str(), old.to_string());
    }
    s.wait_for_log("WORKER TIMEOUT", Duration::from_secs(10));
    assert!(poll_until(Duration::from_secs(5), || (!is_alive(old)).then_some(())).is_some());
    assert_eq!(s.get("/pid").status, 200);
}

/// QUIT (a quick stop) lets a threaded worker's requests in flight finish, as Gunicorn's
/// gthread does, instead of dropping them.
#[test]
fn quit_lets_threaded_requests_in_flight_finish() {
    let mut s = Server::start("threads-quit", &["app", "-w", "1", "--threads", "4"]);
    s.wait_workers(1, Duration::from_secs(10));
    let mut slow: Vec<Conn> = (0..4).map(|_| s.slow_request(2)).collect();
    s.send_signal("QUIT");
    for c in &mut slow {
        assert_eq!(c.read_response().status, 200);
    }
    s.wait_exit(Duration::from_secs(10));
}

/// A connection handed off while every sibling is out of descriptors is not dropped: a
/// descriptor passed into a full table would be lost (the kernel truncates the message), so
/// a worker takes a hand-off only with a descriptor free, and the connection waits in the
/// channel until a worker has room (here, the one that passed it, after its slow request).
#[test]
fn a_hand_off_into_a_full_descriptor_table_is_not_dropped() {
    let mut s = Server::start("handoff-emfile", &["app", "-w", "2", "--keep-alive", "60"]);
    let workers = s.wait_workers(2, Duration::from_secs(10));
    let mut kept = s.connect();
    kept.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let owner: u32 = kept.read_response().body_str().parse().unwrap();
    let full = *workers.iter().find(|&&w| w != owner).unwrap();
    crate::lifecycle::leave_descriptors(full, 0);
    // The sibling cannot accept it: the slow request goes to the owner.
    let mut slow = s.slow_request(2);
    // Its request during the slow call makes the owner's watcher pass `kept` on.
    kept.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = kept
        .try_read_response()
        .expect("the handed-off connection was dropped");
    assert_eq!(r.status, 200);
    assert_eq!(slow.read_response().status, 200);
    assert!(
        !s.stderr().contains("Dropping a connection handed over"),
        "{}",
        s.stderr()
    );
}

/// A worker that dies mid-way (`kill -9`, as the OOM killer does) costs only its request
/// in flight: its idle keep-alive connections, requests already sent on them included, are
/// taken from its keeper by the master and served by the other workers.
#[test]
fn a_killed_worker_loses_at_most_its_request_in_flight() {
    use crate::support::load::KeepAliveLoad;
    let mut s = Server::start("kill-9", &["app", "-w", "4"]);
    s.wait_workers(4, Duration::from_secs(10));
    let load = KeepAliveLoad::start(s.port, 32);
    load.wait_for_more(500);
    let kills = 5;
    for _ in 0..kills {
        let victim = s.wait_workers(4, Duration::from_secs(10))[0];
        assert!(crate::support::send_signal_to(victim, "KILL"));
        assert!(poll_until(Duration::from_secs(5), || (!is_alive(victim)).then_some(())).is_some());
        load.wait_for_more(300);
    }
    let (ok, lost) = load.finish();
    let log = s.stderr();
    assert!(
        lost.len() <= kills,
        "{} of {} requests lost over {kills} kills: {:?}\n{log}",
        lost.len(),
        ok as usize + lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(log.contains("idle connections of worker"), "{log}");
}
