//! `--log-syslog`: every error-log line (and access line, unless
//! `--disable-redirect-access-to-syslog`) is also sent to syslog, formatted as Gunicorn's
//! SysLogHandler sends it: `<PRI>gunicorn.<prefix>.<error|access>: [pid] message`.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Mutex;

use super::level::LogLevel;

enum Target {
    Udp(UdpSocket),
    UnixDgram(UnixDatagram),
    UnixStream(UnixStream),
    Tcp(TcpStream),
}

struct Syslog {
    target: Target,
    facility: u8,
    /// `gunicorn.<prefix>.` before `error`/`access`.
    ident: String,
    access: bool,
}

static SYSLOG: Mutex<Option<Syslog>> = Mutex::new(None);

/// Python's SysLogHandler facility numbers.
fn facility_code(name: &str) -> u8 {
    match name.to_ascii_lowercase().as_str() {
        "kern" => 0,
        "mail" => 2,
        "daemon" => 3,
        "auth" | "security" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        n if n.starts_with("local") => n[5..].parse::<u8>().map(|k| 16 + k.min(7)).unwrap_or(1),
        _ => 1, // user
    }
}

fn severity(level: LogLevel) -> u8 {
    match level {
        LogLevel::Critical => 2,
        LogLevel::Error => 3,
        LogLevel::Warning => 4,
        LogLevel::Info => 6,
        LogLevel::Debug => 7,
    }
}

fn connect(addr: &str) -> std::io::Result<Target> {
    if let Some(rest) = addr.strip_prefix("unix://") {
        let (path, kind) = rest.split_once('#').unwrap_or((rest, ""));
        return if kind == "stream" {
            UnixStream::connect(path).map(Target::UnixStream)
        } else {
            let sock = UnixDatagram::unbound()?;
            sock.connect(path)?;
            Ok(Target::UnixDgram(sock))
        };
    }
    let (tcp, hostport) = match addr.strip_prefix("tcp://") {
        Some(rest) => (true, rest),
        None => (false, addr.strip_prefix("udp://").unwrap_or(addr)),
    };
    let target = super::udp::resolve(hostport, 514)?;
    if tcp {
        return TcpStream::connect(target).map(Target::Tcp);
    }
    let sock = super::udp::udp_client(target)?;
    Ok(Target::Udp(sock))
}

/// Starts sending logs to syslog.
///
/// # Errors
/// The address cannot be reached (for unix and TCP targets) or resolved.
pub fn init(addr: &str, facility: &str, prefix: &str, access: bool) -> std::io::Result<()> {
    let target = connect(addr)?;
    *SYSLOG.lock().unwrap_or_else(|p| p.into_inner()) = Some(Syslog {
        target,
        facility: facility_code(facility),
        ident: format!("gunicorn.{}.", prefix.replace(':', ".")),
        access,
    });
    Ok(())
}

fn send(kind: &str, level: LogLevel, message: &str) {
    let mut guard = SYSLOG.lock().unwrap_or_else(|p| p.into_inner());
    let Some(s) = guard.as_mut() else { return };
    if kind == "access" && !s.access {
        return;
    }
    let pri = u16::from(s.facility) * 8 + u16::from(severity(level));
    let line = format!(
        "<{pri}>{}{kind}: [{}] {}\0",
        s.ident,
        std::process::id(),
        message.trim_end()
    );
    let _ = match &mut s.target {
        Target::Udp(u) => u.send(line.as_bytes()).map(|_| ()),
        Target::UnixDgram(u) => u.send(line.as_bytes()).map(|_| ()),
        Target::UnixStream(u) => u.write_all(line.as_bytes()),
        Target::Tcp(t) => t.write_all(line.as_bytes()),
    };
}

/// An error-log line.
pub fn error(level: LogLevel, message: &str) {
    send("error", level, message);
}

/// An access-log line.
pub fn access(line: &str) {
    send("access", LogLevel::Info, line);
}
