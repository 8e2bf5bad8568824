//! StatsD metrics (`--statsd-host`), with Gunicorn's names: `gunicorn.requests`,
//! `gunicorn.request.status.<code>`, `gunicorn.request.duration` (ms), `gunicorn.workers`
//! (gauge, from the master), `gunicorn.backlog` (histogram, with `--enable-backlog-metric`)
//! and `gunicorn.log.<level>` counters; `--statsd-prefix` goes in
//! front and `--dogstatsd-tags` are appended as `|#tags`. Datagrams are fire-and-forget:
//! a missing collector never slows or stops the server.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;

enum Target {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// A connected StatsD client.
pub struct Statsd {
    target: Target,
    prefix: String,
    tags: String,
}

static STATSD: Mutex<Option<Statsd>> = Mutex::new(None);

impl Statsd {
    /// Connects a datagram socket to `host:port` or `unix://PATH`.
    ///
    /// # Errors
    /// The address does not resolve or the socket cannot be created.
    pub fn connect(host: &str, prefix: &str, tags: &str) -> std::io::Result<Statsd> {
        let target = if let Some(path) = host
            .strip_prefix("unix://")
            .or_else(|| host.strip_prefix("unix:"))
        {
            let sock = UnixDatagram::unbound()?;
            sock.connect(path)?;
            Target::Unix(sock)
        } else {
            let addr = super::udp::resolve(host.strip_prefix("udp://").unwrap_or(host), 8125)?;
            let sock = super::udp::udp_client(addr)?;
            Target::Udp(sock)
        };
        // Gunicorn: a non-empty prefix gets exactly one trailing dot.
        let prefix = match prefix.trim_end_matches('.') {
            "" => String::new(),
            p => format!("{p}."),
        };
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!("|#{tags}")
        };
        Ok(Statsd {
            target,
            prefix,
            tags,
        })
    }

    fn send(&self, name: &str, value: &str, kind: &str) {
        let line = format!("{}gunicorn.{name}:{value}|{kind}{}", self.prefix, self.tags);
        let _ = match &self.target {
            Target::Udp(s) => s.send(line.as_bytes()),
            Target::Unix(s) => s.send(line.as_bytes()),
        };
    }
}

/// Turns metrics on (master, before forking; workers inherit the socket).
pub fn init(client: Statsd) {
    *STATSD.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
}

fn with(f: impl FnOnce(&Statsd)) {
    if let Some(client) = STATSD.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        f(client);
    }
}

/// One request done: count, status, duration since `started` (the clock is read only when
/// StatsD is on).
pub fn request(status: &str, started: std::time::Instant) {
    with(|s| {
        let status: u16 = status.parse().unwrap_or(0);
        let duration = started.elapsed();
        s.send("requests", "1", "c|@1.0");
        s.send(&format!("request.status.{status}"), "1", "c|@1.0");
        s.send(
            "request.duration",
            &format!("{:.3}", duration.as_secs_f64() * 1000.0),
            "ms",
        );
    });
}

/// Connections waiting in the listen backlogs (`--enable-backlog-metric`), as Gunicorn
/// sends it: `gunicorn.backlog`, a histogram, each pass of the master's loop.
pub fn backlog(waiting: i64) {
    with(|s| s.send("backlog", &waiting.to_string(), "h"));
}

/// The master's worker count changed.
pub fn workers(count: usize) {
    with(|s| s.send("workers", &count.to_string(), "g"));
}

/// A worker recycled for `cause` (`max_requests`, `max_rss`, `lifetime`): rgunicorn's own
/// counter, `gunicorn.workers.recycled.<cause>`.
pub fn recycled(cause: &str) {
    with(|s| s.send(&format!("workers.recycled.{cause}"), "1", "c|@1.0"));
}

/// A log line at warning level or above (`exception` when it carries a traceback).
pub fn log_line(level: &str) {
    with(|s| s.send(&format!("log.{level}"), "1", "c|@1.0"));
}
