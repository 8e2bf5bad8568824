//! The connection lifecycle under keep-alive: a request that was sent is answered, across
//! slow requests and `--max-requests` recycling (HUP and USR2 are in `signals`),
//! descriptor exhaustion, privilege drops and read-ahead floods.
//!
//! The clients behave like production ones ([`KeepAliveLoad`]): persistent connections,
//! the next request sent right after a response, a reconnect only when the server said
//! `Connection: close`. Any request that was sent and got no complete response is lost.

use std::time::{Duration, Instant};

use crate::support::load::KeepAliveLoad;
use crate::support::{poll_until, Server, TempDir, LOG_DEADLINE as DEADLINE};

/// Asserts that a load ran and lost nothing.
pub fn assert_none_lost(ok: u32, lost: &[String], s: &Server) {
    assert!(ok > 50, "the load ran ({ok} requests)");
    assert!(
        lost.is_empty(),
        "{} of {} requests lost: {:?}\n--- server log ---\n{}",
        lost.len(),
        ok as usize + lost.len(),
        &lost[..lost.len().min(5)],
        s.stderr()
    );
}

/// Keep-alive clients that wait behind another client's slow request (longer than
/// `--keep-alive`) are answered when the worker is free, not reset: the idle clock stands
/// still while the worker cannot serve them.
///
/// First on one worker (nobody else can take the connection over): a connection idle
/// since just before a 3 s request, with `--keep-alive 2`, is still open when the worker
/// is free again and answers the next request. On a wall clock it would have been idle
/// 3.5 s and closed; on the loop's clock (time serving requests left out) it was idle for
/// the 0.5 s pause only. Then on two workers under keep-alive load: nothing is lost.
#[test]
fn a_slow_request_costs_other_keepalive_clients_nothing() {
    let s = Server::start(
        "ka-slow-one",
        &["-w", "1", "--keep-alive", "2", "app:application"],
    );
    let mut idle = s.connect();
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = idle.read_response();
    assert_eq!(first.status, 200);
    assert!(!first.says_close(), "{}", first.raw_head);
    // The idle connection's keep-alive runs from here; the worker is then busy for 3 s.
    let mut slow = s.slow_request(3);
    let r = slow.read_response();
    assert_eq!(r.body_str(), "slept", "{r:?}");
    // Idle a little longer on a free worker (the loop's expiry check, which runs right after
    // the slow request, surely comes first), still well within the 2 s keep-alive.
    std::thread::sleep(Duration::from_millis(500));
    idle.try_send(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("the idle connection was reset: {e}\n{}", s.stderr()));
    let next = idle.try_read_response().unwrap_or_else(|| {
        panic!(
            "the idle connection was closed while the worker was busy\n{}",
            s.stderr()
        )
    });
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(
        next.body_str(),
        first.body_str(),
        "the same worker answered"
    );
    drop(s);

    let s = Server::start(
        "ka-slow",
        &["-w", "2", "--keep-alive", "1", "app:application"],
    );
    let load = KeepAliveLoad::start(s.port, 10);
    load.wait_for_more(50);
    // Longer than the keep-alive timeout; clients on this worker wait behind it.
    let slow = s.get("/sleep?s=3");
    assert_eq!(slow.status, 200);
    load.wait_for_more(50);
    let (ok, lost) = load.finish();
    assert_none_lost(ok, &lost, &s);
}

/// `--max-requests` recycles workers many times under keep-alive load (4 clients, as
/// measured in the issue, then 50); nothing is lost.
#[test]
fn max_requests_recycling_loses_no_keepalive_request() {
    for clients in [4, 50] {
        let s = Server::start(
            "ka-max",
            &["-w", "2", "--max-requests", "50", "app:application"],
        );
        let load = KeepAliveLoad::start(s.port, clients);
        load.wait_for_more(600);
        let (ok, lost) = load.finish();
        let recycled = s
            .stderr()
            .matches("Autorestarting worker after current request.")
            .count();
        assert!(recycled >= 5, "workers were recycled ({recycled} times)");
        assert_none_lost(ok, &lost, &s);
    }
}

/// Tests that switch to `nobody` need root (CI runs as root); elsewhere they say so and pass.
fn running_as_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to switch users");
    }
    root
}

/// An app that imports nothing: only what the worker itself needs from the standard library.
const BARE_APP: &str = r#"
def application(environ, start_response):
    sock = environ["gunicorn.socket"]
    body = ("%s %s" % (type(sock).__name__, sock.fileno() >= 0)).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// With `-u nobody` and an interpreter under a directory `nobody` cannot read (here the
/// build's Python, under root's home, or any root-only install), the worker still serves:
/// everything it needs was imported before the privilege drop.
#[test]
fn a_worker_as_nobody_serves_without_reading_the_standard_library() {
    if !running_as_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("nobody-app");
    std::fs::write(dir.join("bare.py"), BARE_APP).unwrap();
    // The access log sits where only root may write: it is opened before the drop.
    let logs = dir.join("root-only");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700)).unwrap();
    let access = logs.join("access.log");
    for threads in ["1", "2"] {
        let s = Server::builder("nobody")
            .cwd(dir.path())
            .args([
                "-w",
                "1",
                "--threads",
                threads,
                "-u",
                "nobody",
                "-g",
                "65534",
            ])
            .args([
                "--access-logfile",
                &access.display().to_string(),
                "bare:application",
            ])
            .start();
        let r = s.get("/");
        assert_eq!(r.status, 200, "{}", s.stderr());
        assert_eq!(r.body_str(), "ConnectionSocket True");
        crate::support::wait_for_file(&access, "GET / HTTP/1.1", DEADLINE);
        assert!(
            !s.stderr().contains("Can't open the access log"),
            "{}",
            s.stderr()
        );
    }
}

/// A worker whose user cannot read the app's packages fails to boot loudly (exit 3, as
/// Gunicorn's import failures), naming the path it cannot read.
#[test]
fn a_worker_that_cannot_read_the_app_says_which_path() {
    if !running_as_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("nobody-private");
    let private = dir.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("bare.py"), BARE_APP).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let done = crate::support::run_to_exit_in(
        &private,
        &[
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "-u",
            "nobody",
            "-g",
            "65534",
            "bare:application",
        ],
        &[],
        DEADLINE,
    );
    done.expect_code(3);
    let output = done.output();
    let line = output
        .lines()
        .find(|l| l.contains("Permission denied: the worker's user (uid 65534"))
        .unwrap_or_else(|| panic!("no permission report: {output}"));
    assert!(
        line.contains(&private.display().to_string()),
        "the report names the unreadable directory: {line}"
    );
}

/// The descriptor numbers process `pid` has open now.
fn open_fds(pid: u32) -> Vec<u64> {
    let mut fds: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    fds
}

/// The `RLIMIT_NOFILE` that leaves exactly `n` descriptor numbers free below it (new
/// descriptors take the lowest free number; the limit bounds numbers, not a count).
fn limit_leaving(open: &[u64], n: usize) -> u64 {
    (0..)
        .filter(|fd| !open.contains(fd))
        .nth(n)
        .unwrap_or(u64::MAX)
}

/// Sets process `pid`'s descriptor limit so that exactly `n` more descriptors fit. Only the
/// soft limit moves (raising a hard limit needs CAP_SYS_RESOURCE), so it can be raised
/// again.
pub(crate) fn leave_descriptors(pid: u32, n: usize) {
    let limit = limit_leaving(&open_fds(pid), n);
    let mut old = nix::libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with no new limit only writes the current one into `old`.
    let got = unsafe {
        nix::libc::prlimit(
            pid as nix::libc::pid_t,
            nix::libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(
        got,
        0,
        "prlimit on pid {pid}: {}",
        std::io::Error::last_os_error()
    );
    let rlimit = nix::libc::rlimit {
        rlim_cur: limit.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit only reads `rlimit` and writes nothing back (old limit: null).
    let set = unsafe {
        nix::libc::prlimit(
            pid as nix::libc::pid_t,
            nix::libc::RLIMIT_NOFILE,
            &rlimit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        set,
        0,
        "prlimit on pid {pid} to {limit}: {}",
        std::io::Error::last_os_error()
    );
}

/// Out of descriptors, a worker says so once, keeps the queued client waiting, and answers
/// it as soon as descriptors are free again (a timer retries `accept`: no new connection
/// has to come first). Each connection costs one descriptor.
#[test]
fn a_worker_out_of_descriptors_recovers_without_a_new_connection() {
    let mut s = Server::start(
        "emfile",
        &["-w", "1", "--keep-alive", "60", "app:application"],
    );
    let worker = s.wait_workers(1, DEADLINE)[0];
    // A first keep-alive connection, answered: the worker is booted and holds it.
    let mut first = s.connect();
    first.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(first.read_response().status, 200);
    // Room for exactly three more descriptors.
    leave_descriptors(worker, 3);
    let mut held: Vec<crate::support::Conn> = (0..3)
        .map(|_| {
            let mut c = s.connect();
            c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(c.read_response().status, 200);
            c
        })
        .collect();
    held.push(first);
    let mut queued = s.connect();
    queued.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.wait_for_log("Can't accept new connections", DEADLINE);
    held.clear();
    let freed = Instant::now();
    let r = queued.read_response();
    assert_eq!(r.status, 200);
    // The retry timer fires every 100 ms.
    assert!(
        freed.elapsed() < Duration::from_secs(1),
        "answered {:?} after descriptors were freed",
        freed.elapsed()
    );
    let log = s.wait_for_log("Accepting connections again after", DEADLINE);
    assert_eq!(
        log.matches("Can't accept new connections").count(),
        1,
        "logged once per burst: {log}"
    );
}

/// A TCP connection with a tiny receive buffer, so the server's writes stall as soon as
/// this client stops reading (loopback buffers would otherwise absorb megabytes).
fn non_reading_client(port: u16) -> std::net::TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    let addr = SockaddrIn::new(127, 0, 0, 1, port);
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).unwrap();
    std::net::TcpStream::from(fd)
}

/// Slow readers cannot pin a worker: with `-w 1`, a client that never reads a 512 KiB
/// generated response and another that never reads a 50 MB file are answered from the
/// event loop, and a third client is served at once (before: after `--timeout` per stall).
#[test]
fn clients_that_do_not_read_their_responses_do_not_hold_the_worker() {
    use std::io::Write;
    let tmp = TempDir::new("slow-readers");
    let file = tmp.join("big.bin");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(50_000_000)
        .unwrap();
    let s = Server::start("slow-readers", &["-w", "1", "-t", "10", "app:application"]);
    let mut big = non_reading_client(s.port);
    big.write_all(b"GET /big?size=524288&cl=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut huge = non_reading_client(s.port);
    let request = format!(
        "GET /file?path={} HTTP/1.1\r\nHost: x\r\n\r\n",
        file.display()
    );
    huge.write_all(request.as_bytes()).unwrap();
    // Both responses have started (their first bytes wait in the clients' buffers).
    for client in [&big, &huge] {
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        assert!(client.peek(&mut [0u8; 1]).is_ok_and(|n| n == 1));
    }
    let asked = Instant::now();
    let r = s.get("/pid");
    assert_eq!(r.status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "the third client waited {:?} behind the non-reading ones",
        asked.elapsed()
    );
    // The stalled responses are still there for their clients, whole.
    use std::io::Read;
    let mut got = Vec::new();
    let complete = |got: &[u8]| {
        got.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|i| got.len() - (i + 4) >= 524_288)
    };
    while !complete(&got) {
        let mut chunk = [0u8; 65536];
        match big.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    let body_start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - body_start, 524_288, "the whole 512 KiB arrived");
    assert!(got[body_start..]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
}

/// Pushes up to `each` bytes of `pattern` (repeated) into every connection without reading
/// anything back, for at most 5 s; returns the connections (kept open).
fn flood(port: u16, conns: usize, pattern: &[u8], each: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write;
    let mut streams: Vec<(std::net::TcpStream, usize)> = (0..conns)
        .map(|_| {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect();
    let data: Vec<u8> = pattern.iter().copied().cycle().take(each).collect();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && streams.iter().any(|(_, sent)| *sent < each) {
        for (s, sent) in streams.iter_mut().filter(|(_, sent)| *sent < each) {
            match s.write(&data[*sent..]) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *sent = each,
            }
        }
        std::thread::yield_now();
    }
    streams.into_iter().map(|(s, _)| s).collect()
}

/// Read-ahead is bounded: 100 slow clients with 800 KB heads that never end (each within
/// every limit) and 300 connections that each push 1 MB of pipelined requests and never
/// read leave the worker under 64 MB of memory while normal clients are served.
#[test]
fn read_ahead_floods_stay_within_the_worker_budget() {
    let mut s = Server::start("read-ahead", &["-w", "1", "app:application"]);
    let worker = s.wait_workers(1, DEADLINE)[0];
    assert_eq!(s.get("/pid").status, 200);
    // 98 header lines of 8000 bytes each, and no empty line.
    let line = format!("X-Long: {}\r\n", "y".repeat(7990));
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\n{}", line.repeat(98));
    let partial = flood(s.port, 100, head.as_bytes(), head.len());
    // 1 KiB requests, pipelined.
    let padding = "x".repeat(1024 - 39);
    let request = format!("GET /pid HTTP/1.1\r\nHost: x\r\nX-Pad: {padding}\r\n\r\n");
    assert_eq!(request.len(), 1024);
    let pipelined = flood(s.port, 300, request.as_bytes(), 1 << 20);
    // The kernel holds what the worker has not read yet; give it time to read greedily
    // (as it did before), serving normal clients meanwhile.
    let over = poll_until(Duration::from_secs(3), || {
        assert_eq!(s.get("/pid").status, 200, "a normal client is served");
        let peak = crate::support::proc_status_kib(worker, "VmHWM").unwrap_or(0);
        (peak >= 64 * 1024).then_some(peak)
    });
    assert_eq!(over, None, "the worker's memory peaked past 64 MiB");
    assert!(
        s.stderr().contains("read-ahead budget"),
        "the largest heads were refused: {}",
        s.stderr()
    );
    drop((pipelined, partial));
}

/// Opens keep-alive connections until two are served by the same worker; returns them
/// with that worker's pid.
fn two_connections_on_one_worker(
    s: &Server,
) -> (crate::support::Conn, crate::support::Conn, String) {
    let mut seen: Vec<(crate::support::Conn, String)> = Vec::new();
    for _ in 0..40 {
        let mut c = s.connect();
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        let pid = c.read_response().body_str();
        if let Some(i) = seen.iter().position(|(_, p)| *p == pid) {
            let (first, _) = seen.swap_remove(i);
            return (first, c, pid);
        }
        seen.push((c, pid));
    }
    panic!("no two connections landed on the same worker");
}

/// A request on an idle keep-alive connection of a worker that is busy in a long app call
/// goes to an idle sibling within 50 ms of being sent (before: it waited for the call).
#[test]
fn a_busy_worker_hands_a_waiting_request_to_an_idle_sibling() {
    let s = Server::start("handoff", &["-w", "2", "app:application"]);
    let (mut idle, mut busy, pid) = two_connections_on_one_worker(&s);
    let marker = s.dir.join("in-app");
    busy.send(format!(
        "GET /sleep?s=3&marker={} HTTP/1.1\r\nHost: x\r\n\r\n",
        marker.display()
    ));
    let in_app = poll_until(DEADLINE, || marker.exists().then_some(()));
    assert!(in_app.is_some(), "the slow request reached the app");
    let sent = Instant::now();
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = idle.read_response();
    let waited = sent.elapsed();
    assert_eq!(r.status, 200);
    assert_ne!(r.body_str(), pid, "a sibling answered");
    assert!(
        waited < Duration::from_millis(300),
        "answered after {waited:?} (the busy worker's call lasts 3 s)"
    );
    // The connection stays usable, and the slow request is answered too.
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);
    assert_eq!(busy.read_response().body_str(), "slept");
}

/// A worker killed for a timeout passes its other connections to a sibling instead of
/// resetting them: their next request is answered.
#[test]
fn a_timed_out_worker_passes_its_connections_on() {
    let s = Server::start("handoff-abort", &["-w", "2", "-t", "2", "app:application"]);
    let (mut idle, mut busy, pid) = two_connections_on_one_worker(&s);
    busy.send("GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        busy.read_response().status,
        500,
        "the hung request is aborted"
    );
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = idle.read_response();
    assert_eq!(r.status, 200);
    assert_ne!(r.body_str(), pid, "a sibling answered");
}

/// A worker recycled by `--max-requests` passes its idle keep-alive connections to its
/// successor instead of holding them (and its place) for a last call: with `-w 1`, an
/// idle connection is still usable after the old worker has gone.
#[test]
fn a_recycled_worker_passes_idle_connections_to_its_successor() {
    let mut s = Server::start(
        "handoff-recycle",
        &[
            "-w",
            "1",
            "--max-requests",
            "3",
            "--keep-alive",
            "60",
            "app:application",
        ],
    );
    let old = s.wait_workers(1, DEADLINE)[0];
    let mut idle = s.connect();
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().body_str(), old.to_string());
    for _ in 0..2 {
        assert_eq!(s.get("/pid").status, 200);
    }
    let replaced = poll_until(DEADLINE, || {
        let now = s.worker_pids();
        (now.len() == 1 && now[0] != old && !crate::support::is_alive(old)).then(|| now[0])
    });
    let new = replaced.expect("the recycled worker was replaced");
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().body_str(), new.to_string());
}

/// A client that sends its request and closes its sending side at once (its FIN may come
/// with the request's bytes) is answered, and its connection is closed then, not held for
/// the keep-alive time.
#[test]
fn a_half_closing_client_is_answered_and_let_go() {
    let s = Server::start(
        "half-close",
        &["-w", "1", "--keep-alive", "30", "app:application"],
    );
    for _ in 0..5 {
        let mut c = s.connect();
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        c.shutdown_write();
        assert_eq!(c.read_response().status, 200);
        assert!(
            c.closed_within(Duration::from_secs(1)),
            "the server let the half-closed connection go"
        );
    }
}

/// A saturated sync worker serves requests close to their arrival order, new connections
/// included: 12 keep-alive clients arriving at once on one worker, each request 50 ms in
/// the app. In arrival order every request waits at most for the other eleven (about
/// 0.6 s; 0.66 s measured). Accepting one connection per turn of the loop (each turn one
/// request per connection it has) made the last clients wait 1.4 s and more.
#[test]
fn a_saturated_worker_takes_new_connections_in_turn() {
    let s = Server::start("fair-accept", &["-w", "1", "app"]);
    let port = s.port;
    let clients: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = crate::support::Conn::tcp(port);
                let mut slowest = Duration::ZERO;
                for _ in 0..3 {
                    let sent = Instant::now();
                    c.send("GET /sleep?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n");
                    assert_eq!(c.read_response().status, 200);
                    slowest = slowest.max(sent.elapsed());
                }
                slowest
            })
        })
        .collect();
    let slowest = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .max()
        .unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(1100),
        "a request waited {slowest:?}"
    );
}
