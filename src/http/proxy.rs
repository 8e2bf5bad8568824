//! HAProxy's PROXY protocol (`--proxy-protocol`): the v1 text line and the v2 binary header
//! a load balancer puts before the first request of a connection, carrying the client's
//! real address. Pure: bytes in, a header (and how many bytes it took) out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which headers are looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Off,
    V1,
    V2,
    /// Either version; a connection without a header is served normally.
    Auto,
}

impl ProxyMode {
    /// Gunicorn's setting values (`true` means auto, `false` off).
    pub fn from_setting(text: &str) -> ProxyMode {
        match text.trim().to_ascii_lowercase().as_str() {
            "v1" => ProxyMode::V1,
            "v2" => ProxyMode::V2,
            "auto" | "true" | "1" | "yes" | "on" => ProxyMode::Auto,
            _ => ProxyMode::Off,
        }
    }
}

/// What the header said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// `TCP4`, `TCP6`, `UNKNOWN` (v1) or `LOCAL`/`UNSPEC` (v2).
    pub protocol: &'static str,
    /// The client as the proxy saw it (None for UNKNOWN/LOCAL).
    pub source: Option<SocketAddr>,
    /// The address the client connected to, on the proxy (Gunicorn's `proxy_addr` and
    /// `proxy_port`, the environ's `PROXY_ADDR`/`PROXY_PORT`).
    pub destination: Option<SocketAddr>,
}

/// The outcome of looking at the start of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyParse {
    /// Not enough bytes to decide.
    NeedMore,
    /// No PROXY header: the bytes are the request itself.
    Absent,
    /// A header, and how many bytes it occupied.
    Header(ProxyHeader, usize),
}

/// v2's 12-byte signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1's longest line (RFC-like spec: 107 bytes with CRLF).
const V1_MAX_LINE: usize = 107;

fn invalid(msg: &str) -> String {
    format!("Invalid PROXY line: {msg}")
}

fn parse_v1(buf: &[u8]) -> Result<ProxyParse, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LINE {
            Err(invalid("line too long"))
        } else {
            Ok(ProxyParse::NeedMore)
        };
    };
    if end + 2 > V1_MAX_LINE {
        return Err(invalid("line too long"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| invalid("not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader {
            protocol: "UNKNOWN",
            source: None,
            destination: None,
        },
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = *proto == "TCP4";
            let address = |text: &str, port: &str, which: &str| -> Result<SocketAddr, String> {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| invalid(&format!("bad {which} address {text:?}")))?;
                if v4 != ip.is_ipv4() {
                    return Err(invalid("address family does not match"));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid(&format!("bad {which} port {port:?}")))?;
                Ok(SocketAddr::new(ip, port))
            };
            ProxyHeader {
                protocol: if v4 { "TCP4" } else { "TCP6" },
                source: Some(address(src, sport, "source")?),
                destination: Some(address(dst, dport, "destination")?),
            }
        }
        _ => return Err(invalid(&format!("{line:?}"))),
    };
    Ok(ProxyParse::Header(header, end + 2))
}

fn parse_v2(buf: &[u8]) -> Result<ProxyParse, String> {
    if buf.len() < 16 {
        return Ok(ProxyParse::NeedMore);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err("Invalid PROXY v2 header: bad version".to_string());
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Ok(ProxyParse::NeedMore);
    }
    let body = &buf[16..total];
    let header = match (ver_cmd & 0x0f, buf[13]) {
        (0x0, _) => ProxyHeader {
            protocol: "LOCAL",
            source: None,
            destination: None,
        },
        (0x1, 0x11) if body.len() >= 12 => {
            let v4 = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            ProxyHeader {
                protocol: "TCP4",
                source: Some(SocketAddr::new(IpAddr::V4(v4(0)), port(8))),
                destination: Some(SocketAddr::new(IpAddr::V4(v4(4)), port(10))),
            }
        }
        (0x1, 0x21) if body.len() >= 36 => {
            let v6 = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
            ProxyHeader {
                protocol: "TCP6",
                source: Some(SocketAddr::new(v6(0), port(32))),
                destination: Some(SocketAddr::new(v6(16), port(34))),
            }
        }
        (0x1, 0x00) => ProxyHeader {
            protocol: "UNSPEC",
            source: None,
            destination: None,
        },
        (0x1, fam) => {
            return Err(format!(
                "Invalid PROXY v2 header: unsupported family/protocol 0x{fam:02x}"
            ))
        }
        (cmd, _) => {
            return Err(format!(
                "Invalid PROXY v2 header: unknown command 0x{cmd:x}"
            ))
        }
    };
    Ok(ProxyParse::Header(header, total))
}

/// Looks for a PROXY header at the start of `buf`.
///
/// # Errors
/// A malformed header (the connection gets a 400).
pub fn parse_proxy(buf: &[u8], mode: ProxyMode) -> Result<ProxyParse, String> {
    if mode == ProxyMode::Off {
        return Ok(ProxyParse::Absent);
    }
    let v1_prefix = b"PROXY ";
    let could_be = |sig: &[u8]| buf.len() < sig.len() && sig.starts_with(buf);
    if matches!(mode, ProxyMode::V1 | ProxyMode::Auto) {
        if buf.starts_with(v1_prefix) {
            return parse_v1(buf);
        }
        if could_be(v1_prefix) {
            return Ok(ProxyParse::NeedMore);
        }
    }
    if matches!(mode, ProxyMode::V2 | ProxyMode::Auto) {
        if buf.starts_with(V2_SIGNATURE) {
            return parse_v2(buf);
        }
        if could_be(V2_SIGNATURE) {
            return Ok(ProxyParse::NeedMore);
        }
    }
    Ok(ProxyParse::Absent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn source(p: ProxyParse) -> (Option<SocketAddr>, usize) {
        match p {
            ProxyParse::Header(h, n) => (h.source, n),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_tcp4_line_gives_the_client_address() {
        let buf = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        let (src, n) = source(parse_proxy(buf, ProxyMode::Auto).unwrap());
        assert_eq!(src, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(&buf[n..n + 3], b"GET");
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let (src, _) =
            source(parse_proxy(b"PROXY TCP6 2001:db8::1 ::1 1000 80\r\n", ProxyMode::V1).unwrap());
        assert_eq!(src, Some("[2001:db8::1]:1000".parse().unwrap()));
        let (src, n) = source(parse_proxy(b"PROXY UNKNOWN\r\n", ProxyMode::V1).unwrap());
        assert_eq!((src, n), (None, 15));
    }

    #[test]
    fn v1_is_incomplete_until_crlf_and_bounded() {
        assert_eq!(
            parse_proxy(b"PRO", ProxyMode::Auto).unwrap(),
            ProxyParse::NeedMore
        );
        assert_eq!(
            parse_proxy(b"PROXY TCP4 1.2.3.4", ProxyMode::Auto).unwrap(),
            ProxyParse::NeedMore
        );
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(parse_proxy(&long, ProxyMode::V1).is_err());
    }

    #[test]
    fn v1_malformed_lines_are_errors() {
        assert!(parse_proxy(b"PROXY TCP4 notanip 1.2.3.4 1 2\r\n", ProxyMode::V1).is_err());
        assert!(parse_proxy(b"PROXY TCP4 ::1 ::1 1 2\r\n", ProxyMode::V1).is_err());
        assert!(parse_proxy(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n", ProxyMode::V1).is_err());
        assert!(parse_proxy(b"PROXY SCTP x\r\n", ProxyMode::V1).is_err());
    }

    #[test]
    fn v2_tcp4_header() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 7, 10, 0, 0, 1, 0x1f, 0x90, 0, 80,
        ]);
        buf.extend_from_slice(b"GET /");
        let parsed = parse_proxy(&buf, ProxyMode::V2).unwrap();
        let ProxyParse::Header(header, _) = &parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(header.destination, Some("10.0.0.1:80".parse().unwrap()));
        let (src, n) = source(parsed);
        assert_eq!(src, Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(&buf[n..], b"GET /");
    }

    #[test]
    fn v1_and_v2_tcp6_carry_the_destination() {
        let v1 = parse_proxy(
            b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n",
            ProxyMode::V1,
        );
        let Ok(ProxyParse::Header(header, _)) = v1 else {
            panic!("{v1:?}")
        };
        assert_eq!(
            header.destination,
            Some("[2001:db8::1]:443".parse().unwrap())
        );
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x21, 0x21, 0, 36]);
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        buf.extend_from_slice(&src.octets());
        buf.extend_from_slice(&dst.octets());
        buf.extend_from_slice(&[0x15, 0xb3, 0x01, 0xbb]);
        let v2 = parse_proxy(&buf, ProxyMode::V2);
        let Ok(ProxyParse::Header(header, _)) = v2 else {
            panic!("{v2:?}")
        };
        assert_eq!(header.source, Some("[2001:db8::7]:5555".parse().unwrap()));
        assert_eq!(
            header.destination,
            Some("[2001:db8::1]:443".parse().unwrap())
        );
    }

    #[test]
    fn v2_local_and_partial() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse_proxy(&buf, ProxyMode::Auto).unwrap(),
            ProxyParse::Header(
                ProxyHeader {
                    protocol: "LOCAL",
                    source: None,
                    destination: None,
                },
                16
            )
        );
        assert_eq!(
            parse_proxy(&buf[..10], ProxyMode::Auto).unwrap(),
            ProxyParse::NeedMore
        );
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert!(parse_proxy(&bad, ProxyMode::V2).is_err());
    }

    #[test]
    fn plain_requests_pass_in_auto_and_off() {
        assert_eq!(
            parse_proxy(b"GET / HTTP/1.1\r\n", ProxyMode::Auto).unwrap(),
            ProxyParse::Absent
        );
        assert_eq!(
            parse_proxy(b"PROXY TCP4 ...", ProxyMode::Off).unwrap(),
            ProxyParse::Absent
        );
        assert_eq!(
            parse_proxy(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n", ProxyMode::V2).unwrap(),
            ProxyParse::Absent
        );
    }
}
