//! The access log: Gunicorn's `access_log_format` with its `%(atom)s` atoms, compiled once
//! and rendered in Rust for every response.

use std::fmt::Write as _;
use std::time::Duration;

use super::sink::Sink;
use crate::http::request::Header;

/// Gunicorn's default access log format.
pub const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// Everything an access-log line may mention about one request and its response.
pub struct AccessRecord<'a> {
    /// `REMOTE_ADDR` (empty for unix-socket peers).
    pub remote_addr: &'a str,
    pub method: &'a str,
    pub raw_uri: &'a str,
    pub protocol: &'a str,
    pub path_info: &'a str,
    pub query: &'a str,
    /// The status line's code as the app gave it (`200`).
    pub status: &'a str,
    pub body_bytes: u64,
    /// Request headers as received: name, value.
    pub request_headers: &'a [Header],
    /// Response headers as sent (after hop-by-hop removal).
    pub response_headers: &'a [(String, String)],
    pub duration: Duration,
    /// Looks up a WSGI environ key for `%({key}e)s`.
    pub environ: &'a dyn Fn(&str) -> Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Remote,
    Dash,
    User,
    Time,
    RequestLine,
    Method,
    Path,
    Query,
    Protocol,
    Status,
    BytesInt,
    Bytes,
    Referer,
    UserAgent,
    Seconds,
    Millis,
    Micros,
    DecimalSeconds,
    Pid,
    RequestHeader(String),
    ResponseHeader(String),
    Environ(String),
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    /// An atom with Python's `%` conversion flags: left-justify and minimum width.
    Atom {
        atom: Atom,
        left: bool,
        width: usize,
    },
}

/// A compiled access log format.
#[derive(Debug, Clone)]
pub struct AccessFormat {
    segments: Vec<Segment>,
}

impl AccessFormat {
    /// Compiles Python `%`-style text: `%(name)s`, `%%`, with optional `-` and width.
    pub fn compile(format: &str) -> AccessFormat {
        let mut segments = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(pos) = rest.find('%') {
            text.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('%') {
                text.push('%');
                rest = stripped;
                continue;
            }
            let Some(inner) = after.strip_prefix('(') else {
                text.push('%');
                rest = after;
                continue;
            };
            let Some(close) = inner.find(')') else {
                text.push('%');
                rest = after;
                continue;
            };
            let name = &inner[..close];
            let spec = &inner[close + 1..];
            let left = spec.starts_with('-');
            let spec_body = spec.trim_start_matches(['-', '+', ' ', '#', '0']);
            let digits: String = spec_body.chars().take_while(char::is_ascii_digit).collect();
            let after_width = &spec_body[digits.len()..];
            let Some(conv) = after_width.chars().next() else {
                text.push('%');
                rest = after;
                continue;
            };
            if !text.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut text)));
            }
            segments.push(Segment::Atom {
                atom: atom_named(name),
                left,
                width: digits.parse().unwrap_or(0),
            });
            rest = &after_width[conv.len_utf8()..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        AccessFormat { segments }
    }

    /// Every atom by name, as Gunicorn hands them to a `gunicorn.access` logger: the
    /// standard ones, `{header}i`, `{header}o`, and the `{key}e` the format mentions.
    pub fn atoms(&self, r: &AccessRecord<'_>) -> Vec<(String, String)> {
        let escape = |v: String| v.replace('"', "\\\"");
        let mut out: Vec<(String, String)> = [
            "h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T", "M", "D",
            "L", "p",
        ]
        .iter()
        .map(|name| (name.to_string(), escape(atom_value(&atom_named(name), r))))
        .collect();
        for h in r.request_headers {
            out.push((
                format!("{{{}}}i", h.name.to_ascii_lowercase()),
                escape(latin1(&h.value)),
            ));
        }
        for (name, value) in r.response_headers {
            out.push((
                format!("{{{}}}o", name.to_ascii_lowercase()),
                escape(value.clone()),
            ));
        }
        for seg in &self.segments {
            if let Segment::Atom {
                atom: Atom::Environ(key),
                ..
            } = seg
            {
                if let Some(v) = (r.environ)(key) {
                    out.push((format!("{{{}}}e", key.to_ascii_lowercase()), escape(v)));
                }
            }
        }
        out
    }

    /// Renders one line (with its trailing newline).
    pub fn render(&self, r: &AccessRecord<'_>) -> String {
        let mut out = String::with_capacity(160);
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Atom { atom, left, width } => {
                    let value = atom_value(atom, r);
                    let escaped = value.replace('"', "\\\"");
                    let pad = width.saturating_sub(escaped.chars().count());
                    if !left {
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                    out.push_str(&escaped);
                    if *left {
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        out.push('\n');
        out
    }
}

fn atom_named(name: &str) -> Atom {
    if let Some(inner) = name.strip_prefix('{') {
        if let Some((key, kind)) = inner.rsplit_once('}') {
            let key = key.to_ascii_lowercase();
            return match kind {
                "i" => Atom::RequestHeader(key),
                "o" => Atom::ResponseHeader(key),
                "e" => Atom::Environ(key.to_ascii_uppercase()),
                _ => Atom::Unknown,
            };
        }
    }
    match name {
        "h" => Atom::Remote,
        "l" => Atom::Dash,
        "u" => Atom::User,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "B" => Atom::BytesInt,
        "b" => Atom::Bytes,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        _ => Atom::Unknown,
    }
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_bytes())
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn atom_value(atom: &Atom, r: &AccessRecord<'_>) -> String {
    let or_dash = |v: Option<&[u8]>| v.map(latin1).unwrap_or_else(|| "-".to_string());
    match atom {
        Atom::Remote => r.remote_addr.to_string(),
        Atom::Dash | Atom::Unknown => "-".to_string(),
        Atom::User => basic_auth_user(header(r.request_headers, "authorization"))
            .unwrap_or_else(|| "-".to_string()),
        Atom::Time => super::time::access_time(),
        Atom::RequestLine => format!("{} {} {}", r.method, r.raw_uri, r.protocol),
        Atom::Method => r.method.to_string(),
        Atom::Path => r.path_info.to_string(),
        Atom::Query => r.query.to_string(),
        Atom::Protocol => r.protocol.to_string(),
        Atom::Status => r.status.to_string(),
        Atom::BytesInt | Atom::Bytes => r.body_bytes.to_string(),
        Atom::Referer => or_dash(header(r.request_headers, "referer")),
        Atom::UserAgent => or_dash(header(r.request_headers, "user-agent")),
        Atom::Seconds => r.duration.as_secs().to_string(),
        Atom::Millis => r.duration.as_millis().to_string(),
        Atom::Micros => r.duration.as_micros().to_string(),
        Atom::DecimalSeconds => {
            let mut s = String::new();
            let _ = write!(
                s,
                "{}.{:06}",
                r.duration.as_secs(),
                r.duration.subsec_micros()
            );
            s
        }
        Atom::Pid => format!("<{}>", std::process::id()),
        Atom::RequestHeader(name) => or_dash(header(r.request_headers, name)),
        Atom::ResponseHeader(name) => r
            .response_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "-".to_string()),
        Atom::Environ(key) => (r.environ)(key).unwrap_or_else(|| "-".to_string()),
    }
}

/// The user name of an `Authorization: Basic` header, as `%(u)s` shows it.
fn basic_auth_user(value: Option<&[u8]>) -> Option<String> {
    let value = value?;
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(token.trim())?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(user, _)| user.to_string())
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in bytes {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The access log of one process: a compiled format and where lines go.
pub struct AccessLog {
    pub format: AccessFormat,
    /// The format as configured, for a `gunicorn.access` Python logger.
    pub format_text: String,
    pub sink: Sink,
    /// False when the access log exists only for syslog (no --access-logfile).
    pub to_sink: bool,
    /// Lines lost since writing started failing (0 while writes succeed).
    pub failed_lines: u64,
}

impl AccessLog {
    pub fn write(&mut self, py: pyo3::Python<'_>, record: &AccessRecord<'_>) {
        if super::python::is_active() {
            let atoms = self.format.atoms(record);
            super::python::access(py, &self.format_text, &atoms);
            return;
        }
        let line = self.format.render(record);
        super::syslog::access(&line);
        if self.to_sink {
            match self.sink.write_line(line.as_bytes()) {
                Ok(()) => self.report_lost_lines(),
                Err(e) => {
                    // Said once when it starts, then counted: a full disk must not also
                    // flood the error log.
                    if self.failed_lines == 0 {
                        tracing::error!(
                            "Can't write the access log to {}: {e}; lines are dropped until \
                             writing works again",
                            self.sink.describe()
                        );
                    }
                    self.failed_lines += 1;
                }
            }
        }
    }

    /// After failed writes, says how many lines were lost (when writing works again, when
    /// the log is reopened, and when the worker exits).
    pub fn report_lost_lines(&mut self) {
        if self.failed_lines > 0 {
            tracing::error!(
                "Access log: {} lines could not be written to {}",
                self.failed_lines,
                self.sink.describe()
            );
            self.failed_lines = 0;
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.report_lost_lines();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hdr(name: &str, value: &[u8]) -> Header {
        Header {
            name: crate::http::text::HeadText::new(name),
            value: crate::http::text::HeadBytes::new(value),
        }
    }

    fn record<'a>(
        req: &'a [Header],
        resp: &'a [(String, String)],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> AccessRecord<'a> {
        AccessRecord {
            remote_addr: "127.0.0.1",
            method: "GET",
            raw_uri: "/hello?x=1",
            protocol: "HTTP/1.1",
            path_info: "/hello",
            query: "x=1",
            status: "200",
            body_bytes: 760,
            request_headers: req,
            response_headers: resp,
            duration: Duration::from_micros(1_234_567),
            environ: env,
        }
    }

    #[test]
    fn default_format_renders_like_gunicorn() {
        let req = vec![hdr("User-Agent", b"curl/7.88.1")];
        let env = |_: &str| None;
        let line = AccessFormat::compile(DEFAULT_FORMAT).render(&record(&req, &[], &env));
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "127.0.0.1 - -");
        let tail = tail.split_once("] ").unwrap().1;
        assert_eq!(
            tail,
            "\"GET /hello?x=1 HTTP/1.1\" 200 760 \"-\" \"curl/7.88.1\"\n"
        );
    }

    #[test]
    fn every_atom_renders() {
        let req = vec![
            hdr("Authorization", b"Basic dXNlcjpwYXNz"),
            hdr("X-Forwarded-For", b"1.2.3.4"),
            hdr("Referer", b"http://x/\"q\""),
        ];
        let resp = vec![("Content-Type".to_string(), "text/plain".to_string())];
        let env = |k: &str| (k == "REMOTE_PORT").then(|| "5555".to_string());
        let fmt = AccessFormat::compile(
            "%(u)s|%(m)s|%(U)s|%(q)s|%(H)s|%(B)s|%(T)s|%(M)s|%(D)s|%(L)s|%({x-forwarded-for}i)s|%({content-type}o)s|%({remote_port}e)s|%(f)s|%(zz)s|100%%",
        );
        let line = fmt.render(&record(&req, &resp, &env));
        assert_eq!(
            line,
            "user|GET|/hello|x=1|HTTP/1.1|760|1|1234|1234567|1.234567|1.2.3.4|text/plain|5555|http://x/\\\"q\\\"|-|100%\n"
        );
    }

    #[test]
    fn width_and_left_justify_follow_python() {
        let env = |_: &str| None;
        let line = AccessFormat::compile("[%(s)5s][%(m)-5s]").render(&record(&[], &[], &env));
        assert_eq!(line, "[  200][GET  ]\n");
    }

    #[test]
    fn pid_atom_is_in_angle_brackets() {
        let env = |_: &str| None;
        let line = AccessFormat::compile("%(p)s").render(&record(&[], &[], &env));
        assert_eq!(line, format!("<{}>\n", std::process::id()));
    }
}
