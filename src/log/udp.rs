//! The UDP targets of syslog and StatsD: resolving `host[:port]`, a connected socket.

/// Resolves `host[:port]` (`default_port` when none is given; `[v6]:port` works).
///
/// # Errors
/// The name does not resolve.
pub fn resolve(hostport: &str, default_port: u16) -> std::io::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let has_port = hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')));
    let full = if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    full.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("can't resolve {hostport}")))
}

/// A UDP socket connected to `target` (fire-and-forget log and metric datagrams).
///
/// # Errors
/// The socket cannot be created or connected.
pub fn udp_client(target: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let sock = std::net::UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    sock.set_nonblocking(true)?;
    sock.connect(target)?;
    Ok(sock)
}
