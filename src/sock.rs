//! Listening sockets: parsing Gunicorn's bind addresses and creating the listeners the
//! master binds once and every worker inherits.
//!
//! Kinds: TCP over IPv4 or IPv6 (`HOST`, `HOST:PORT`, `[V6]:PORT`, `tcp://HOST:PORT`),
//! unix sockets (`unix:PATH`) and inherited descriptors (`fd://N`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage, UnixAddr,
};

use crate::unix::os_error;

/// One `bind` entry as the user wrote it, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindAddress {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
    Fd(RawFd),
}

impl BindAddress {
    /// Parses `HOST`, `HOST:PORT`, `[V6]:PORT`, `tcp://HOST:PORT`, `unix:PATH`, `fd://N`.
    ///
    /// # Errors
    /// A malformed address, in Gunicorn's words where it has them.
    pub fn parse(text: &str) -> Result<BindAddress, String> {
        if let Some(path) = text
            .strip_prefix("unix://")
            .or_else(|| text.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(format!(
                    "invalid bind address '{text}': empty unix socket path"
                ));
            }
            return Ok(BindAddress::Unix(PathBuf::from(path)));
        }
        if let Some(fd) = text.strip_prefix("fd://") {
            return fd
                .parse::<RawFd>()
                .ok()
                .filter(|&n| n >= 0)
                .map(BindAddress::Fd)
                .ok_or_else(|| format!("invalid bind address '{text}': fd must be a number"));
        }
        let rest = text.strip_prefix("tcp://").unwrap_or(text);
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("invalid bind address '{text}': unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(port) => (host.to_string(), port),
                None if after.is_empty() => (host.to_string(), "8000"),
                None => return Err(format!("invalid bind address '{text}'")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), port),
                None => (rest.to_string(), "8000"),
            }
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("'{port}' is not a valid port number."))?;
        Ok(BindAddress::Tcp { host, port })
    }
}

/// What a listener is bound to; shown in `Listening at:` and used for `SERVER_NAME`/`SERVER_PORT`.
#[derive(Clone, Debug)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(SocketAddr::V4(a)) => write!(f, "http://{a}"),
            ListenAddr::Tcp(SocketAddr::V6(a)) => write!(f, "http://[{}]:{}", a.ip(), a.port()),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How listeners are created (from the settings).
#[derive(Clone, Copy, Debug, Default)]
pub struct BindOptions {
    pub backlog: i32,
    /// Applied around unix socket binds only (Gunicorn: not process-wide).
    pub umask: u32,
    /// SO_REUSEPORT on TCP listeners.
    pub reuse_port: bool,
    /// Unix socket files are chowned to the workers' user and group.
    pub owner: Option<(u32, u32)>,
}

/// The `Listening at:` list: `http://H:P` (or `https://` under TLS), `unix:PATH`, joined by commas.
pub fn describe_all(listeners: &[Listener], tls: bool) -> String {
    listeners
        .iter()
        .map(|l| {
            let shown = l.addr.to_string();
            match (tls, shown.strip_prefix("http://")) {
                (true, Some(rest)) => format!("https://{rest}"),
                _ => shown,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A bound, listening, non-blocking socket.
#[derive(Debug)]
pub struct Listener {
    pub fd: OwnedFd,
    pub addr: ListenAddr,
    /// The `bind` entry it came from (None for sockets passed by systemd).
    pub bind: Option<BindAddress>,
    /// A unix socket file this process created (and so unlinks on stop).
    pub owns_path: bool,
}

impl Listener {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Connections waiting in the accept queue of a TCP listener (Linux's `tcpi_unacked`
    /// for a listening socket, as Gunicorn reads it); -1 for other sockets, 0 if the kernel
    /// would not say.
    pub fn backlog(&self) -> i64 {
        match self.accept_queue() {
            Some((waiting, _)) => i64::from(waiting),
            None if matches!(self.addr, ListenAddr::Tcp(_)) => 0,
            None => -1,
        }
    }

    /// A TCP listener's accept queue: connections waiting, and how many it may hold
    /// (`--backlog` as the kernel capped it: `tcpi_sacked` of a listening socket); None
    /// for other sockets or if the kernel would not say.
    pub fn accept_queue(&self) -> Option<(u32, u32)> {
        if !matches!(self.addr, ListenAddr::Tcp(_)) {
            return None;
        }
        // SAFETY: a zeroed tcp_info is a valid value of this plain C struct.
        let mut info: nix::libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<nix::libc::tcp_info>() as nix::libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large.
        let rc = unsafe {
            nix::libc::getsockopt(
                self.fd.as_raw_fd(),
                nix::libc::IPPROTO_TCP,
                nix::libc::TCP_INFO,
                std::ptr::addr_of_mut!(info).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some((info.tcpi_unacked, info.tcpi_sacked))
    }
}

/// Why a bind failed; `Connection in use` is retried, the rest are not.
#[derive(Debug)]
pub enum BindError {
    InUse(String),
    Other(String),
}

fn describe(addr: &SocketAddr) -> String {
    // Gunicorn prints Python's tuple repr of the address.
    format!("('{}', {})", addr.ip(), addr.port())
}

fn tcp_listener(addr: SocketAddr, opts: &BindOptions) -> Result<Listener, BindError> {
    let other = |e: nix::Error| {
        BindError::Other(format!(
            "connection to {} failed: {}",
            describe(&addr),
            os_error(e)
        ))
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK, None).map_err(other)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(other)?;
    if opts.reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(other)?;
    }
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(other)?;
    }
    setsockopt(&fd, sockopt::TcpNoDelay, &true).map_err(other)?;
    let bound = match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match bound {
        Ok(()) => {}
        Err(e @ nix::Error::EADDRINUSE) => {
            // Gunicorn's two lines: what it means, then the OS error as Python words it.
            return Err(BindError::InUse(format!(
                "Connection in use: {shown}\nconnection to {shown} failed: {}",
                os_error(e),
                shown = describe(&addr)
            )));
        }
        Err(e) => return Err(other(e)),
    }
    listen(&fd, backlog_of(opts.backlog)).map_err(other)?;
    let local = local_tcp_addr(fd.as_raw_fd()).unwrap_or(addr);
    Ok(Listener {
        fd,
        addr: ListenAddr::Tcp(local),
        bind: None,
        owns_path: false,
    })
}

fn backlog_of(n: i32) -> Backlog {
    Backlog::new(n.clamp(1, i32::MAX)).unwrap_or(Backlog::MAXCONN)
}

fn local_tcp_addr(fd: RawFd) -> Option<SocketAddr> {
    let storage: SockaddrStorage = getsockname(fd).ok()?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

fn unix_listener(path: &PathBuf, opts: &BindOptions) -> Result<Listener, BindError> {
    let shown = path.display().to_string();
    let other = |e: String| BindError::Other(format!("connection to {shown} failed: {e}"));
    // An old socket file from a previous run is replaced; anything else is not ours to delete.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(|e| other(e.to_string()))?;
        } else {
            return Err(BindError::Other(format!("{shown} is not a socket file")));
        }
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| other(e.to_string()))?;
    let addr = UnixAddr::new(path).map_err(|e| other(e.to_string()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| other(e.to_string()))?;
    listen(&fd, backlog_of(opts.backlog)).map_err(|e| other(e.to_string()))?;
    if let Some((uid, gid)) = opts.owner {
        // Workers run as this user; the socket file is theirs, as in Gunicorn.
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| other(e.to_string()))?;
    }
    Ok(Listener {
        fd,
        addr: ListenAddr::Unix(path.clone()),
        bind: None,
        owns_path: true,
    })
}

pub fn inherited_listener(fd: RawFd) -> Result<Listener, BindError> {
    // Check before taking ownership: a wrong number could name a descriptor that some other
    // part of this process owns, and closing it later would break that owner.
    // SAFETY: the borrow only lives for this getsockopt call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if !nix::sys::socket::getsockopt(&borrowed, sockopt::AcceptConn).unwrap_or(false) {
        return Err(BindError::Other(format!(
            "fd://{fd} is not a listening socket"
        )));
    }
    // SAFETY: the descriptor is a listening socket the launcher passed us; we own it now.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let storage: SockaddrStorage =
        getsockname(fd).map_err(|e| BindError::Other(format!("fd://{fd} is not a socket: {e}")))?;
    let addr = if let Some(un) = storage.as_unix_addr() {
        ListenAddr::Unix(un.path().map(PathBuf::from).unwrap_or_default())
    } else {
        ListenAddr::Tcp(local_tcp_addr(fd).ok_or_else(|| {
            BindError::Other(format!(
                "fd://{fd}: unsupported socket family {:?}",
                storage.family()
            ))
        })?)
    };
    nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| BindError::Other(format!("fd://{fd}: {e}")))?;
    Ok(Listener {
        fd: owned,
        addr,
        bind: None,
        owns_path: false,
    })
}

/// Creates one listener per bind address (a host name may stand for several addresses; like
/// Gunicorn we bind the first one it resolves to).
///
/// # Errors
/// The first address that could not be bound.
pub fn bind_one(address: &BindAddress, opts: &BindOptions) -> Result<Listener, BindError> {
    match address {
        BindAddress::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| BindError::Other(format!("Invalid address: ('{host}', {port}): {e}")))?
                .next()
                .ok_or_else(|| BindError::Other(format!("Invalid address: ('{host}', {port})")))?;
            tcp_listener(addr, opts)
        }
        BindAddress::Unix(path) => {
            // The socket file's mode comes from the umask at bind time; Gunicorn applies
            // `--umask` only around this, not to the whole process.
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(opts.umask));
            let result = unix_listener(path, opts);
            nix::sys::stat::umask(old);
            result
        }
        BindAddress::Fd(fd) => inherited_listener(*fd),
    }
}

/// Binds every address, retrying a busy one as Gunicorn does (5 tries, 1 s apart).
///
/// # Errors
/// Gunicorn's `Can't connect to ...` for the first address that never bound (the ones
/// bound before it are closed again).
pub fn bind_all(binds: &[BindAddress], opts: &BindOptions) -> Result<Vec<Listener>, String> {
    let mut listeners = Vec::new();
    for address in binds {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match bind_one(address, opts) {
                Ok(mut l) => {
                    l.bind = Some(address.clone());
                    listeners.push(l);
                    break;
                }
                Err(BindError::InUse(msg)) | Err(BindError::Other(msg)) => {
                    for line in msg.lines() {
                        tracing::error!("{line}");
                    }
                    if attempt >= BIND_ATTEMPTS {
                        listeners.into_iter().for_each(Listener::close);
                        return Err(cannot_connect(address));
                    }
                    // Gunicorn logs this one at debug.
                    tracing::debug!("Retrying in 1 second.");
                    std::thread::sleep(BIND_RETRY_DELAY);
                }
            }
        }
    }
    Ok(listeners)
}

/// Moves to a new `bind` list: listeners whose entry is still wanted are kept as they are
/// (their queued connections survive), new entries are bound, dropped ones are closed — but
/// only once every new address is bound; on failure `current` comes back untouched.
///
/// # Errors
/// The bind failure, with the unchanged `current` listeners.
pub fn rebind(
    binds: &[BindAddress],
    opts: &BindOptions,
    current: Vec<Listener>,
) -> Result<Vec<Listener>, (String, Vec<Listener>)> {
    let missing: Vec<BindAddress> = binds
        .iter()
        .filter(|b| !current.iter().any(|l| l.bind.as_ref() == Some(*b)))
        .cloned()
        .collect();
    let mut fresh = match bind_all(&missing, opts) {
        Ok(f) => f,
        Err(msg) => return Err((msg, current)),
    };
    let mut old = current;
    let mut out = Vec::with_capacity(binds.len());
    for b in binds {
        if let Some(i) = old.iter().position(|l| l.bind.as_ref() == Some(b)) {
            out.push(old.swap_remove(i));
        } else if let Some(i) = fresh.iter().position(|l| l.bind.as_ref() == Some(b)) {
            out.push(fresh.swap_remove(i));
        }
    }
    old.into_iter().for_each(Listener::close);
    Ok(out)
}

impl Listener {
    /// Closes the socket, removing a unix socket file we created.
    pub fn close(self) {
        if let (true, ListenAddr::Unix(path)) = (self.owns_path, &self.addr) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Marks each inherited listener with the `bind` entry it serves (so a later HUP with the
/// same `bind` keeps it instead of binding the address a second time).
pub fn match_binds(listeners: &mut [Listener], binds: &[BindAddress]) {
    for l in listeners.iter_mut() {
        l.bind = binds
            .iter()
            .find(|b| match (b, &l.addr) {
                (BindAddress::Unix(p), ListenAddr::Unix(q)) => p == q,
                (BindAddress::Tcp { host, port }, ListenAddr::Tcp(addr)) => (host.as_str(), *port)
                    .to_socket_addrs()
                    .map(|mut all| all.any(|a| a == *addr))
                    .unwrap_or(false),
                _ => false,
            })
            .cloned();
    }
}

/// How many times, and how far apart, a busy address is retried (Gunicorn: 5 x 1 s).
pub const BIND_ATTEMPTS: u32 = 5;
pub const BIND_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The text Gunicorn logs when it gives up on an address.
pub fn cannot_connect(address: &BindAddress) -> String {
    match address {
        BindAddress::Tcp { host, port } => format!("Can't connect to ('{host}', {port})"),
        BindAddress::Unix(p) => format!("Can't connect to {}", p.display()),
        BindAddress::Fd(fd) => format!("Can't connect to fd://{fd}"),
    }
}

/// The peer of an accepted connection, as the environ and the access log need it.
#[derive(Clone, Debug)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Unix => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_parse_like_gunicorn() {
        assert_eq!(
            BindAddress::parse("127.0.0.1:9000").unwrap(),
            BindAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 9000
            }
        );
        assert_eq!(
            BindAddress::parse("localhost").unwrap(),
            BindAddress::Tcp {
                host: "localhost".into(),
                port: 8000
            }
        );
        assert_eq!(
            BindAddress::parse("[::1]:9000").unwrap(),
            BindAddress::Tcp {
                host: "::1".into(),
                port: 9000
            }
        );
        assert_eq!(
            BindAddress::parse("tcp://0.0.0.0:80").unwrap(),
            BindAddress::Tcp {
                host: "0.0.0.0".into(),
                port: 80
            }
        );
        assert_eq!(
            BindAddress::parse("unix:/tmp/x.sock").unwrap(),
            BindAddress::Unix("/tmp/x.sock".into())
        );
        assert_eq!(BindAddress::parse("fd://3").unwrap(), BindAddress::Fd(3));
        assert!(BindAddress::parse("host:notaport").is_err());
        assert!(BindAddress::parse("[::1:80").is_err());
    }

    #[test]
    fn listen_addresses_display_as_gunicorn_logs_them() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(ListenAddr::Tcp(v6).to_string(), "http://[::1]:80");
        assert_eq!(ListenAddr::Unix("/tmp/a".into()).to_string(), "unix:/tmp/a");
    }
}
