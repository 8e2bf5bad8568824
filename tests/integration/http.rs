//! HTTP/1.x over raw bytes (GUNICORN.md §6.1–6.3; issue 2 point 5): keep-alive,
//! pipelining, HTTP/1.0, `Expect: 100-continue`, chunked bodies, the §6.2 error table,
//! request limits, the keep-alive idle timeout and slow clients.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::{Response, Server, LOG_DEADLINE};

/// How long the server may take to close a connection it should close.
/// How soon a connection the server means to close must end: right after the response,
/// and well before the default 2 s keep-alive would close it anyway.
const CLOSE_DEADLINE: Duration = Duration::from_secs(1);

fn get_keepalive(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

/// Sends `raw` on a fresh connection and checks Gunicorn's error response: `status` (and
/// the status line), `Connection: close`, an HTML page with Content-Length, no
/// `Server`/`Date`, the connection closed after it, and one more
/// `Invalid request from ip=127.0.0.1` warning in the log.
fn expect_rejected(s: &Server, raw: &[u8], status: u16) -> Response {
    let before = s
        .stderr()
        .matches("Invalid request from ip=127.0.0.1")
        .count();
    let mut c = s.connect();
    // The server may close before reading all of it; that's fine.
    let _ = c.try_send(raw);
    let r = c.try_read_response().unwrap_or_else(|| {
        panic!(
            "no response to {:?} (expected {status})\n{}",
            String::from_utf8_lossy(raw),
            s.stderr()
        )
    });
    let what = String::from_utf8_lossy(raw).into_owned();
    assert_eq!(r.status, status, "{what:?} → {}", r.status_line);
    assert_eq!(
        r.version, "HTTP/1.1",
        "error pages always say HTTP/1.1: {what:?}"
    );
    assert!(
        r.says_close(),
        "{what:?}: no Connection: close in {:?}",
        r.raw_head
    );
    assert_eq!(r.header("content-type"), Some("text/html"), "{what:?}");
    assert!(r.header("content-length").is_some(), "{what:?}");
    assert!(
        r.header("server").is_none(),
        "error pages carry no Server header: {what:?}"
    );
    assert!(
        r.header("date").is_none(),
        "error pages carry no Date header: {what:?}"
    );
    assert!(
        r.body_str().contains("<html>"),
        "{what:?}: {}",
        r.body_str()
    );
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "{what:?}: connection not closed after the error"
    );
    s.wait_for_log_count(
        "Invalid request from ip=127.0.0.1",
        before + 1,
        LOG_DEADLINE,
    );
    r
}

/// Two requests on one connection: the first response keeps the connection open.
#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let s = Server::start("keepalive", &["app"]);
    let mut c = s.connect();
    c.send(get_keepalive("/one"));
    let r1 = c.read_response();
    assert_eq!(r1.status, 200);
    assert_eq!(r1.body_str(), "hello /one");
    assert!(
        !r1.says_close(),
        "HTTP/1.1 is kept alive by default: {}",
        r1.raw_head
    );
    c.send(get_keepalive("/two"));
    let r2 = c.read_response();
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body_str(), "hello /two");
    // Connection: close on the last request ends the connection after the response.
    c.send("GET /three HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let r3 = c.read_response();
    assert_eq!(r3.body_str(), "hello /three");
    assert!(r3.says_close(), "{}", r3.raw_head);
    assert!(c.closed_within(CLOSE_DEADLINE));
}

/// Pipelined requests (one write) are answered in order, bodies included.
#[test]
fn pipelined_requests_answered_in_order() {
    let s = Server::start("pipeline", &["app"]);
    let mut c = s.connect();
    let mut batch = String::new();
    batch.push_str(&get_keepalive("/a"));
    batch.push_str("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    batch.push_str(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    batch.push_str(&get_keepalive("/b"));
    batch.push_str("GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.send(batch);
    let bodies: Vec<String> = (0..5).map(|_| c.read_response().body_str()).collect();
    assert_eq!(bodies, ["hello /a", "hello", "abc", "hello /b", "hello /c"]);
    assert!(c.closed_within(CLOSE_DEADLINE));
}

/// HTTP/1.0: closed by default, status line `HTTP/1.0`.
#[test]
fn http10_closes_by_default() {
    let s = Server::start("http10", &["app"]);
    let mut c = s.connect();
    c.send("GET /old HTTP/1.0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.body_str(), "hello /old");
    assert!(
        c.closed_within(CLOSE_DEADLINE),
        "HTTP/1.0 without keep-alive closes"
    );
}

/// HTTP/1.0 with `Connection: keep-alive` is kept alive.
#[test]
fn http10_keep_alive_on_request() {
    let s = Server::start("http10-ka", &["app"]);
    let mut c = s.connect();
    c.send("GET /k1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("keep-alive")
    );
    c.send("GET /k2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.body_str(), "hello /k2");
}

/// `Expect: 100-continue` gets `HTTP/1.1 100 Continue` before the body is sent.
#[test]
fn expect_100_continue_gets_interim_response() {
    let s = Server::start("expect", &["app"]);
    let mut c = s.connect();
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    );
    let interim = c.read_response();
    assert_eq!(interim.status_line, "HTTP/1.1 100 Continue");
    assert!(interim.headers.is_empty(), "{:?}", interim.raw_head);
    c.send("hello world");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello world");
}

/// `Expect: 100-continue` on HTTP/1.0 is ignored (no interim response).
#[test]
fn expect_100_continue_ignored_on_http10() {
    let s = Server::start("expect10", &["app"]);
    let mut c = s.connect();
    c.send("POST /echo HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi");
    let r = c.read_response();
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.body_str(), "hi");
}

/// A chunked request body with chunk extensions and trailers is decoded, and the
/// connection stays in sync for the next request.
#[test]
fn chunked_body_with_extensions_and_trailers() {
    let s = Server::start("chunked", &["app"]);
    let mut c = s.connect();
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value\r\nhello\r\n\
         6;quoted=\"a b\";flag\r\n world\r\n\
         A\r\n0123456789\r\n\
         0;last\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "hello world0123456789");
    assert_eq!(r.header("x-body-length"), Some("21"));
    c.send(get_keepalive("/after-chunked"));
    assert_eq!(c.read_response().body_str(), "hello /after-chunked");
}

/// A chunked body sent in small pieces over time is still read completely.
#[test]
fn chunked_body_sent_in_pieces() {
    let s = Server::start("chunked-pieces", &["app"]);
    let mut c = s.connect();
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for piece in ["4\r\n", "wi", "ki\r\n", "5\r\npedia\r\n", "0\r\n", "\r\n"] {
        thread::sleep(Duration::from_millis(50));
        c.send(piece);
    }
    let r = c.read_response();
    assert_eq!(r.body_str(), "wikipedia");
}

/// The §6.2 table, request-line rules: 400 for a bad method, version or target.
#[test]
fn bad_request_lines_get_400() {
    let s = Server::start("bad-line", &["app"]);
    let cases: &[&[u8]] = &[
        b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.10\r\nHost: x\r\n\r\n",
        b"GET / http/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/0.9\r\nHost: x\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET relative HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for raw in cases {
        expect_rejected(&s, raw, 400);
    }
    let r = expect_rejected(&s, b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");
    assert!(
        r.body_str().contains("Invalid HTTP method"),
        "{}",
        r.body_str()
    );
    let log = s.stderr();
    assert!(
        log.contains("Invalid request from ip=127.0.0.1: Invalid HTTP method: 'get'"),
        "{log}"
    );
}

/// One leading CRLF before the request line is tolerated (27.0).
#[test]
fn one_leading_crlf_is_tolerated() {
    let s = Server::start("leading-crlf", &["app"]);
    let r = s.request("\r\nGET /lead HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello /lead");
}

/// The §6.2 table, header rules: obs-fold, bare LF, bad names and values → 400.
#[test]
fn bad_headers_get_400() {
    let s = Server::start("bad-headers", &["app"]);
    let cases: &[&[u8]] = &[
        // obs-fold
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
        // bare LF
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        // no colon, empty name, space before colon
        b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n: empty\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
        // control characters in a value
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n",
        // bare CR
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    ];
    for raw in cases {
        expect_rejected(&s, raw, 400);
    }
    // HTAB and obs-text in a value are fine.
    let r = s
        .request(&b"GET /ok HTTP/1.1\r\nHost: x\r\nX-A: a\tb\xe9\r\nConnection: close\r\n\r\n"[..]);
    assert_eq!(r.status, 200);
}

/// The §6.2 table, framing: duplicate or malformed Content-Length, CL + TE, TE not ending
/// in chunked, chunked on HTTP/1.0, duplicate Host/Content-Type → 400.
#[test]
fn ambiguous_framing_gets_400() {
    let s = Server::start("framing", &["app"]);
    let cases: &[&[u8]] = &[
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: a/b\r\nContent-Length: 0\r\n\r\n",
    ];
    for raw in cases {
        expect_rejected(&s, raw, 400);
    }
}

/// An unknown transfer coding gets 501, sent as `501 Bad Request` (Gunicorn quirk).
#[test]
fn unknown_transfer_coding_gets_501_bad_request() {
    let s = Server::start("te-501", &["app"]);
    let r = expect_rejected(
        &s,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
    assert_eq!(r.status_line, "HTTP/1.1 501 Bad Request");
    // Gunicorn quotes the whole header value.
    assert!(
        s.stderr()
            .contains("Unsupported transfer coding: 'foo, chunked'"),
        "{}",
        s.stderr()
    );
}

/// gzip before chunked is accepted (the body passes through still encoded), and the
/// connection is closed after the response.
#[test]
fn gzip_then_chunked_is_accepted_and_closes() {
    let s = Server::start("te-gzip", &["app"]);
    let mut c = s.connect();
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nzzz\r\n0\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "zzz");
    assert!(c.closed_within(CLOSE_DEADLINE), "gzip+chunked forces close");
}

/// Bad chunked bodies are refused with 400 when the app reads them.
#[test]
fn bad_chunked_bodies_get_400() {
    let s = Server::start("bad-chunks", &["app"]);
    let cases: &[&[u8]] = &[
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a\rb\r\nabc\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
    ];
    for raw in cases {
        expect_rejected(&s, raw, 400);
    }
}

/// A body cut short by the client's half-close (chunked, or shorter than its
/// Content-Length) is an incomplete message (RFC 9112 §8): the app's read raises and the
/// client, which can still read, gets a 400; never a 200 for a truncated body.
#[test]
fn truncated_bodies_are_refused_with_400() {
    let s = Server::start("trunc-bodies", &["app"]);
    for raw in [
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    ] {
        let mut c = s.connect();
        c.send(raw);
        c.shutdown_write();
        let r = c.read_response();
        assert_eq!(r.status, 400, "{raw:?}: {r:?}");
    }
}

/// A request line longer than the default 4094 bytes gets 414.
#[test]
fn long_request_line_gets_414() {
    let s = Server::start("414", &["app"]);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    let r = expect_rejected(&s, long.as_bytes(), 414);
    assert_eq!(r.status_line, "HTTP/1.1 414 URI Too Long");
    // Just under the limit is fine.
    let ok = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(4000)
    );
    assert_eq!(s.request(ok).status, 200);
}

/// More than 100 headers, or one header over 8190 bytes, gets 431.
#[test]
fn too_many_or_too_large_headers_get_431() {
    let s = Server::start("431", &["app"]);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = expect_rejected(&s, many.as_bytes(), 431);
    assert_eq!(
        r.status_line,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    expect_rejected(&s, big.as_bytes(), 431);
    // 100 headers in total (Host included) is still fine.
    let mut hundred = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..98 {
        hundred.push_str(&format!("X-H{i}: v\r\n"));
    }
    hundred.push_str("\r\n");
    assert_eq!(s.request(hundred).status, 200);
}

/// An `Expect` other than 100-continue gets 417.
#[test]
fn unknown_expectation_gets_417() {
    let s = Server::start("417", &["app"]);
    let r = expect_rejected(
        &s,
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n",
        417,
    );
    assert_eq!(r.status_line, "HTTP/1.1 417 Expectation Failed");
    // Case-insensitive 100-continue is fine.
    let mut c = s.connect();
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-CONTINUE\r\nContent-Length: 1\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_response().status, 100);
    c.send("z");
    assert_eq!(c.read_response().body_str(), "z");
}

/// Beyond Gunicorn (issue 2 point 5): HTTP/1.1 without Host, or with an invalid Host → 400.
#[test]
fn missing_or_invalid_host_gets_400() {
    let s = Server::start("host", &["app"]);
    expect_rejected(&s, b"GET / HTTP/1.1\r\n\r\n", 400);
    expect_rejected(&s, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    expect_rejected(&s, b"GET / HTTP/1.1\r\nHost: exa/mple\r\n\r\n", 400);
    expect_rejected(&s, b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400);
    // HTTP/1.0 needs no Host.
    let r = s.request("GET /nohost HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
}

/// `--limit-request-line N` moves the 414 threshold; 0 means unlimited; values over 8190
/// clamp to 8190.
#[test]
fn limit_request_line_setting() {
    let s = Server::start("lrl", &["--limit-request-line", "100", "app"]);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(120));
    expect_rejected(&s, long.as_bytes(), 414);
    let ok = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(60)
    );
    assert_eq!(s.request(ok).status, 200);
    drop(s);

    let s = Server::start("lrl-0", &["--limit-request-line", "0", "app"]);
    let huge = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(10000)
    );
    assert_eq!(s.request(huge).status, 200, "0 = unlimited");
    drop(s);

    let s = Server::start("lrl-clamp", &["--limit-request-line", "20000", "app"]);
    let over = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    expect_rejected(&s, over.as_bytes(), 414);
    let under = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(8000)
    );
    assert_eq!(s.request(under).status, 200, "clamped to 8190, not lower");
}

/// `--limit-request-fields N` moves the 431 threshold; 0 means 32768.
#[test]
fn limit_request_fields_setting() {
    let headers = |n: usize| {
        let mut r = String::from("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..n.saturating_sub(2) {
            r.push_str(&format!("X-H{i}: v\r\n"));
        }
        r.push_str("\r\n");
        r
    };
    let s = Server::start("lrf", &["--limit-request-fields", "5", "app"]);
    assert_eq!(s.request(headers(5)).status, 200);
    expect_rejected(&s, headers(6).as_bytes(), 431);
    drop(s);

    let s = Server::start("lrf-0", &["--limit-request-fields", "0", "app"]);
    assert_eq!(s.request(headers(300)).status, 200, "0 = 32768 headers");
}

/// `--limit-request-field_size N` moves the 431 threshold; 0 means 8190 (not unlimited).
#[test]
fn limit_request_field_size_setting() {
    let line = |value_len: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-V: {}\r\n\r\n",
            "v".repeat(value_len)
        )
    };
    let s = Server::start("lrfs", &["--limit-request-field_size", "50", "app"]);
    assert_eq!(s.request(line(20)).status, 200);
    expect_rejected(&s, line(80).as_bytes(), 431);
    drop(s);

    let s = Server::start("lrfs-0", &["--limit-request-field_size", "0", "app"]);
    assert_eq!(s.request(line(8000)).status, 200);
    expect_rejected(&s, line(9000).as_bytes(), 431);
}

/// `--keep-alive 1`: the server closes an idle keep-alive connection within seconds.
#[test]
fn keep_alive_idle_timeout_closes_connection() {
    let s = Server::start("ka-idle", &["--keep-alive", "1", "app"]);
    let mut c = s.connect();
    c.send(get_keepalive("/idle"));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let idle = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(3)),
        "idle connection left open {:?} (--keep-alive 1)",
        idle.elapsed()
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(500),
        "closed before the idle timeout"
    );
}

/// `--keep-alive 0` disables keep-alive: `Connection: close` and the connection ends.
#[test]
fn keep_alive_zero_disables_keep_alive() {
    let s = Server::start("ka-zero", &["--keep-alive", "0", "app"]);
    let mut c = s.connect();
    c.send(get_keepalive("/z"));
    let r = c.read_response();
    assert!(r.says_close(), "{}", r.raw_head);
    assert!(c.closed_within(CLOSE_DEADLINE));
}

/// A client that never finishes its head does not block another client (`-w 1`).
#[test]
fn slowloris_does_not_block_other_clients() {
    let s = Server::start("slowloris", &["-w", "1", "app"]);
    assert_eq!(s.get("/booted").status, 200);
    let mut slow = s.connect();
    slow.send("GET /slow HTTP/1.1\r\nHost: x\r\nX-Dribble: ");
    let mut idle = s.connect(); // connects and sends nothing at all
    let started = Instant::now();
    let r = s.get("/fast");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello /fast");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "blocked for {:?}",
        started.elapsed()
    );
    slow.send("a");
    let _ = idle.try_send(b"");
}

/// A client that goes away mid-head leaves no response and no crash; the worker serves on.
#[test]
fn client_closing_mid_head_is_silent() {
    let s = Server::start("mid-head", &["-w", "1", "app"]);
    {
        let mut c = s.connect();
        c.send("GET /partial HTTP/1.1\r\nHost:");
    }
    let r = s.get("/after");
    assert_eq!(r.status, 200);
    assert!(!s.stderr().contains("Invalid request"), "{}", s.stderr());
}

/// HEAD gets the headers of GET and no body, and the connection stays usable.
#[test]
fn head_response_has_no_body() {
    let s = Server::start("head", &["app"]);
    let mut c = s.connect();
    c.send("HEAD /head_body HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some("13"),
        "HEAD keeps Content-Length"
    );
    c.send(get_keepalive("/next"));
    let next = c.read_response();
    assert_eq!(
        next.status_line, "HTTP/1.1 200 OK",
        "no stray body bytes before the next response"
    );
    assert_eq!(next.body_str(), "hello /next");
}

/// Normal responses carry `Server: rgunicorn` (no version) and an IMF-fixdate `Date`.
#[test]
fn normal_responses_carry_server_and_date() {
    let s = Server::start("server-hdr", &["app"]);
    let r = s.get("/");
    assert_eq!(r.header("server"), Some("rgunicorn"));
    let date = r.header("date").expect("Date header");
    assert!(
        date.ends_with(" GMT") && date.len() == 29,
        "IMF-fixdate: {date:?}"
    );
    // Order: Server, Date, Connection first, then the app's headers.
    let names: Vec<String> = r
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    assert_eq!(
        &names[..3],
        ["server", "date", "connection"],
        "{:?}",
        r.raw_head
    );
}

/// Large responses arrive intact, with Content-Length or chunked, also to a client that
/// reads slowly (the server meets a full socket buffer many times).
#[test]
fn large_responses_arrive_intact_to_slow_reader() {
    let s = Server::start("big-resp", &["app"]);
    let want = |n: usize| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    for (query, chunked) in [
        ("size=3000000&chunk=100000&cl=1", false),
        ("size=3000000&chunk=70001", true),
    ] {
        let mut c = s.connect();
        c.send(format!("GET /big?{query} HTTP/1.1\r\nHost: x\r\n\r\n"));
        // Let the server fill the socket buffers before we start reading.
        thread::sleep(Duration::from_millis(300));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.chunked, chunked, "{}", r.raw_head);
        assert!(
            r.body == want(3_000_000),
            "body differs for {query} ({} bytes)",
            r.body.len()
        );
        c.send("GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(c.read_response().body_str(), "hello /after");
    }
}

/// Many requests on one keep-alive connection.
#[test]
fn hundred_requests_on_one_connection() {
    let s = Server::start("ka-100", &["app"]);
    let mut c = s.connect();
    for i in 0..100 {
        c.send(get_keepalive(&format!("/n{i}")));
        let r = c.read_response();
        assert_eq!(r.body_str(), format!("hello /n{i}"));
    }
}

/// HTTP/1.0 keep-alive with a response of unknown length: no chunking on 1.0, so the body
/// is close-delimited and the connection closes.
#[test]
fn http10_keep_alive_with_unknown_length_closes() {
    let s = Server::start("http10-ka-stream", &["app"]);
    let mut c = s.connect();
    c.send("GET /write HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw:?}");
    assert!(
        !raw.to_ascii_lowercase().contains("transfer-encoding"),
        "{raw:?}"
    );
    assert!(raw.ends_with("\r\n\r\none,two,three"), "{raw:?}");
}

/// A client speaking HTTP/1.x above 1.1 is answered in our version (RFC 9110 §2.5), not
/// its own.
#[test]
fn the_status_line_says_http_1_1_to_a_later_minor_version() {
    let s = Server::start("version-15", &["app:application"]);
    let r = s.request("GET /pid HTTP/1.5\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status_line.split(' ').next(), Some("HTTP/1.1"), "{r:?}");
}
