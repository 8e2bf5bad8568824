//! Load generators for tests that change the server under traffic (HUP, USR2, recycling):
//! [`SteadyLoad`] opens a fresh connection per request, [`KeepAliveLoad`] keeps
//! persistent connections the way production clients do. Both are bounded in count and
//! time and stop by themselves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{poll_until, LOG_DEADLINE as DEADLINE};

/// A load client's bound (with its deadline): a release build answers tens of
/// thousands of requests a second, so this must not be what ends a test's load.
const MAX_REQUESTS_PER_CLIENT: u32 = 10_000_000;

/// Waits (with a deadline) until `answered` has grown by `n`.
#[track_caller]
fn wait_for_more(answered: &AtomicU32, n: u32) {
    let target = answered.load(Ordering::Relaxed) + n;
    let reached = poll_until(DEADLINE, || {
        (answered.load(Ordering::Relaxed) >= target).then_some(())
    });
    assert!(reached.is_some(), "the load made no progress");
}

/// A client thread sending requests on fresh connections until stopped (bounded by a
/// deadline and a count), counting what it got.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answered: std::sync::Arc<std::sync::atomic::AtomicU32>,
    thread: std::thread::JoinHandle<(u32, Vec<String>)>,
}

impl SteadyLoad {
    pub fn start(port: u16) -> SteadyLoad {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let answered = std::sync::Arc::new(AtomicU32::new(0));
        let (stop2, answered2) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let end = std::time::Instant::now() + Duration::from_secs(90);
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded by the deadline, not by a count: a release build answers thousands of
            // fresh connections a second, and a count of 20,000 ran out in the middle of a
            // slow USR2 test, which then saw "no progress".
            for i in 0..MAX_REQUESTS_PER_CLIENT {
                if stop2.load(Ordering::Relaxed) || std::time::Instant::now() > end {
                    break;
                }
                let result = (|| -> std::io::Result<String> {
                    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
                    c.set_read_timeout(Some(Duration::from_secs(10)))?;
                    c.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                    let mut out = String::new();
                    c.read_to_string(&mut out)?;
                    Ok(out)
                })();
                // The first failures are kept (a dead server fails fast, for the whole
                // deadline).
                let failure = match result {
                    Ok(out) if out.starts_with("HTTP/1.1 200") => None,
                    Ok(out) => Some(format!("request {i}: {}", out.lines().next().unwrap_or(""))),
                    Err(e) => Some(format!("request {i}: {e}")),
                };
                match failure {
                    None => ok += 1,
                    Some(f) if failed.len() < 1000 => failed.push(f),
                    Some(_) => {}
                }
                answered2.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed)
        });
        SteadyLoad {
            stop,
            answered,
            thread,
        }
    }

    /// Waits (with a deadline) until `n` more requests went through.
    #[track_caller]
    pub fn wait_for_more(&self, n: u32) {
        wait_for_more(&self.answered, n);
    }

    /// Stops the client; (answered with 200, failures).
    pub fn finish(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// What one keep-alive client saw.
#[derive(Default)]
struct Tally {
    ok: u32,
    /// Requests that were sent and got no complete, correct response.
    lost: Vec<String>,
}

/// Clients, each on its own persistent connection, POSTing back to back (bounded by a
/// count and a deadline) until stopped.
pub struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU32>,
    clients: Vec<JoinHandle<Tally>>,
}

/// Sends one POST to `path` (an echo) on `stream` and reads its response; `Ok(close)` when the response was
/// complete and echoed `body` (close: the server ends the connection after it).
fn exchange(stream: &mut TcpStream, path: &str, body: &str) -> Result<bool, String> {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!("status {:?}", head.lines().next()));
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no Content-Length")?;
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed inside the body".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read body: {e}")),
        }
    }
    if &buf[head_end..] != body.as_bytes() {
        return Err(format!(
            "wrong body {:?}",
            String::from_utf8_lossy(&buf[head_end..])
        ));
    }
    Ok(head.contains("connection: close"))
}

impl KeepAliveLoad {
    pub fn start(port: u16, clients: usize) -> KeepAliveLoad {
        KeepAliveLoad::start_on(port, clients, "/echo")
    }

    /// As [`KeepAliveLoad::start`], POSTing to `path`, a route that echoes the body.
    pub fn start_on(port: u16, clients: usize, path: &'static str) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU32::new(0));
        let clients = (0..clients)
            .map(|c| {
                let (stop, answered) = (stop.clone(), answered.clone());
                std::thread::spawn(move || {
                    let end = Instant::now() + Duration::from_secs(90);
                    let mut tally = Tally::default();
                    let mut conn: Option<TcpStream> = None;
                    for i in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || Instant::now() > end {
                            break;
                        }
                        let stream = match conn.as_mut() {
                            Some(s) => s,
                            None => match TcpStream::connect(("127.0.0.1", port)) {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                                    s.set_nodelay(true).ok();
                                    conn.insert(s)
                                }
                                Err(e) => {
                                    tally.lost.push(format!("client {c} connect: {e}"));
                                    break;
                                }
                            },
                        };
                        match exchange(stream, path, &format!("client {c} request {i}")) {
                            Ok(close) => {
                                tally.ok += 1;
                                if close {
                                    conn = None;
                                }
                            }
                            Err(e) => {
                                tally.lost.push(format!("client {c} request {i}: {e}"));
                                conn = None;
                            }
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    tally
                })
            })
            .collect();
        KeepAliveLoad {
            stop,
            answered,
            clients,
        }
    }

    /// Waits (with a deadline) until `n` more requests went through.
    #[track_caller]
    pub fn wait_for_more(&self, n: u32) {
        wait_for_more(&self.answered, n);
    }

    /// Stops the clients: (answered, lost).
    pub fn finish(self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for client in self.clients {
            let tally = client.join().unwrap();
            total.ok += tally.ok;
            total.lost.extend(tally.lost);
        }
        (total.ok, total.lost)
    }
}
