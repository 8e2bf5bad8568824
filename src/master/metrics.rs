//! The Prometheus exporter's socket (`--metrics`): a small HTTP/1.1 server in the master's
//! loop, answering `GET /metrics` (and `HEAD`) with the page `prometheus` writes. No
//! thread, no Python: a scrape is answered while every worker is busy, booting or wedged.
//!
//! It speaks just what a scraper needs: keep-alive, `Connection: close`, and a clear
//! 400/404/405/431 for anything else, after which the connection is closed. A request
//! body is not read: one announced gets a 400.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::prometheus::CONTENT_TYPE;
use super::service::{Limits, Service, Step};

/// The most bytes a request head may have.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Headers a request may have.
const MAX_HEADERS: usize = 32;
const LIMITS: Limits = Limits {
    clients: 64,
    // Prometheus keeps its connection between scrapes (every 15 s by default; 60 s is the
    // slowest common interval).
    idle: Duration::from_secs(90),
    name: "Metrics",
};

/// The exporter's listening socket and its clients.
pub struct MetricsServer {
    service: Service<TcpListener>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (port 0: any free port; see [`MetricsServer::addr`]).
    ///
    /// # Errors
    /// The bind failed (the port is taken, the address is not ours).
    pub fn bind(addr: SocketAddr) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(MetricsServer {
            service: Service::new(listener, LIMITS),
            addr,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the master's poll waits on.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, bool)> {
        self.service.poll_fds()
    }

    /// Whether a client has a whole request waiting that this turn did not answer.
    pub fn has_work(&self) -> bool {
        self.service.has_work(has_request)
    }

    /// Accepts, reads, answers and writes what can be done now; `page` writes the metrics.
    pub fn serve(&mut self, mut page: impl FnMut() -> String) {
        self.service.serve(&mut page, answer);
    }
}

/// Whether `inbox` holds what [`answer`] acts on now (a whole head, a malformed one, or
/// more bytes than a head may have): the same parse, so a client whose bytes only look
/// like a head (blank lines, which httparse skips) cannot keep the master from sleeping.
fn has_request(inbox: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(inbox) {
        Ok(httparse::Status::Partial) => inbox.len() > MAX_HEAD_BYTES,
        _ => true,
    }
}

/// Takes the next request off `inbox` and answers it.
fn answer<F: FnMut() -> String>(inbox: &mut Vec<u8>, page: &mut F) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(inbox);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if inbox.len() > MAX_HEAD_BYTES => {
            return error(431, "Request Header Fields Too Large");
        }
        Ok(httparse::Status::Partial) => return Step::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return error(431, "Request Header Fields Too Large")
        }
        Err(_) => return error(400, "Bad Request"),
    };
    if len > MAX_HEAD_BYTES {
        return error(431, "Request Header Fields Too Large");
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    let body_announced = !header("transfer-encoding").is_empty()
        || header("content-length").iter().any(|v| v != "0");
    let connection = header("connection").join(",");
    let close = match request.version {
        Some(1) => connection.split(',').any(|t| t.trim() == "close"),
        _ => !connection.split(',').any(|t| t.trim() == "keep-alive"),
    };
    let path = request.path.unwrap_or("").split('?').next().unwrap_or("");
    let method = request.method.unwrap_or("");
    if body_announced {
        return error(400, "Bad Request");
    }
    let mut reply = if path != "/metrics" {
        response(404, "Not Found", "", b"Not Found\n", close)
    } else if method != "GET" && method != "HEAD" {
        // Allow goes with a 405 (RFC 9110 15.5.6).
        return Step::Reply {
            bytes: response(405, "Method Not Allowed", "Allow: GET, HEAD\r\n", b"", true),
            close: true,
        };
    } else {
        let content_type = format!("Content-Type: {CONTENT_TYPE}\r\n");
        response(200, "OK", &content_type, page().as_bytes(), close)
    };
    if method == "HEAD" {
        // The head alone, its Content-Length that of the body a GET gets.
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            reply.truncate(end + 4);
        }
    }
    inbox.drain(..len);
    Step::Reply {
        bytes: reply,
        close,
    }
}

/// An error page; the connection closes after it.
fn error(code: u16, reason: &str) -> Step {
    let body = format!("{reason}\n");
    Step::Reply {
        bytes: response(code, reason, "", body.as_bytes(), true),
        close: true,
    }
}

/// A response with `headers` (whole lines) beside the usual ones; a plain-text body unless
/// `headers` says otherwise.
fn response(code: u16, reason: &str, headers: &str, body: &[u8], close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    let plain = if headers.contains("Content-Type") || body.is_empty() {
        ""
    } else {
        "Content-Type: text/plain; charset=utf-8\r\n"
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\n{plain}{headers}Content-Length: {}\r\n\
         Connection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reply(request: &[u8]) -> (String, bool, Vec<u8>) {
        let mut inbox = request.to_vec();
        let mut page = || "metric 1\n".to_string();
        match answer(&mut inbox, &mut page) {
            Step::Reply { bytes, close } => (String::from_utf8(bytes).unwrap(), close, inbox),
            Step::Incomplete => ("incomplete".to_string(), false, inbox),
            Step::Invalid(why) => (why.to_string(), true, inbox),
        }
    }

    #[test]
    fn a_scrape_gets_the_page_and_keeps_its_connection() {
        let (text, close, rest) =
            reply(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\n");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        assert!(text.contains("Content-Length: 9\r\nConnection: keep-alive\r\n\r\nmetric 1\n"));
        assert!(!close);
        assert_eq!(rest, b"GET /metrics HTTP/1.1\r\n", "the next request stays");
        let (text, ..) = reply(&rest);
        assert_eq!(text, "incomplete");
    }

    #[test]
    fn head_has_no_body_and_close_closes() {
        let (text, close, _) = reply(b"HEAD /metrics?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(text.ends_with("Connection: close\r\n\r\n"), "{text}");
        assert!(text.contains("Content-Length: 9\r\n"));
        assert!(close);
        let (_, close, _) = reply(b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(close, "HTTP/1.0 closes unless asked not to");
    }

    #[test]
    fn only_what_answer_acts_on_counts_as_a_request() {
        assert!(!has_request(b""));
        assert!(
            !has_request(b"\r\n\r\n"),
            "blank lines are skipped, not a request"
        );
        assert!(!has_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"));
        assert!(has_request(b"GET /metrics HTTP/1.1\r\n\r\n"));
        assert!(
            has_request(b"\x16\x03\x01 garbage\r\n"),
            "malformed: answered with a 400"
        );
        let (text, _, _) = reply(b"\r\n\r\n");
        assert_eq!(text, "incomplete");
        let (text, close, _) = reply(b"HEAD /other HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 404 ") && text.ends_with("\r\n\r\n") && !close);
        assert!(text.contains("Content-Length: 10\r\n"), "{text}");
    }

    #[test]
    fn anything_else_gets_a_clear_error() {
        let (text, close, _) = reply(b"GET / HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n") && !close);
        let (text, close, _) = reply(b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && close);
        assert!(
            text.contains("\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n"),
            "{text}"
        );
        let (text, close, _) = reply(b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n") && close);
        let (text, close, _) = reply(b"\x16\x03\x01 garbage\r\n\r\n");
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n") && close);
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 10, b'a');
        let (text, close, _) = reply(&huge);
        assert!(text.starts_with("HTTP/1.1 431 ") && close);
    }
}
