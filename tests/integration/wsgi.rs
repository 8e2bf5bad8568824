//! WSGI (PEP 3333; GUNICORN.md §6.4–6.5; issue 2 point 6): the environ, `wsgi.input`,
//! `start_response` (`write()`, `exc_info`), response framing and validation, `close()`,
//! `wsgi.file_wrapper`, app exceptions.

use std::fs;
use std::time::Duration;

use crate::support::{
    json_has, json_str, json_str_list, proc_status_kib, Conn, Server, TempDir, LOG_DEADLINE,
    READ_TIMEOUT,
};

/// Asserts `json[key] == want`, with the whole environ in the message.
fn assert_key(json: &str, key: &str, want: &str) {
    assert_eq!(
        json_str(json, key).as_deref(),
        Some(want),
        "environ[{key:?}] in {json}"
    );
}

/// The connection's own keys (REMOTE_*, SERVER_*, `gunicorn.socket`) come from a template
/// made at its first request: every request of a keep-alive connection has them, and what
/// an app changes in its environ does not reach the next request.
#[test]
fn keep_alive_requests_get_fresh_environs_with_the_connections_keys() {
    let s = Server::start("environ", &["-w", "1", "app"]);
    let mut c = s.connect();
    let client_port = c.local_port().to_string();
    let server_port = s.port.to_string();
    for path in [
        "/environ",
        "/mutate_environ",
        "/environ",
        "/mutate_environ",
        "/environ",
    ] {
        c.send(format!(
            "GET {path} HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
        ));
        let r = c.read_response();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        if path == "/environ" {
            let env = r.body_str();
            assert_key(&env, "REMOTE_ADDR", "127.0.0.1");
            assert_key(&env, "REMOTE_PORT", &client_port);
            assert_key(&env, "SERVER_NAME", "127.0.0.1");
            assert_key(&env, "SERVER_PORT", &server_port);
            assert_key(&env, "gunicorn.socket", "<ConnectionSocket>");
            assert!(!json_has(&env, "HTTP_X_LEAK"), "{env}");
        }
    }
}

/// Repeated headers are joined in arrival order wherever they come in a long header list,
/// and in any case (`x-early` and `X-Early` are one key). The environ remembers the first
/// headers it set without asking the dict, so this crosses that bound.
#[test]
fn repeated_headers_are_joined_anywhere_in_a_long_list() {
    let s = Server::start("environ", &["-w", "1", "app"]);
    let mut c = s.connect();
    let mut req = String::from("GET /environ HTTP/1.1\r\nHost: h\r\nX-Early: 1\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    req.push_str("x-early: 2\r\nX-Filler-35: again\r\nX-Late: a\r\nX-Late: b\r\n");
    req.push_str("X-Early: 3\r\nConnection: close\r\n\r\n");
    c.send(&req);
    let env = c.read_response().body_str();
    assert_key(&env, "HTTP_X_EARLY", "1,2,3");
    assert_key(&env, "HTTP_X_FILLER_35", "35,again");
    assert_key(&env, "HTTP_X_LATE", "a,b");
    assert_key(&env, "HTTP_X_FILLER_39", "39");
}

/// Every key of §6.4 over TCP, for one request with a body, a query, and repeated and
/// underscore headers.
#[test]
fn environ_has_gunicorns_keys_over_tcp() {
    let s = Server::start("environ", &["-w", "1", "app"]);
    let mut c = s.connect();
    let client_port = c.local_port();
    c.send(
        "POST /environ?x=1&y=%20 HTTP/1.1\r\n\
         Host: example.com:8080\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 4\r\n\
         X-Repeat: a\r\n\
         X-Dash-Name: dash\r\n\
         X-Repeat: b\r\n\
         X_Underscore: dropped\r\n\
         Connection: close\r\n\r\ndata",
    );
    let env = c.read_response().body_str();
    assert_key(&env, "REQUEST_METHOD", "POST");
    assert_key(&env, "SCRIPT_NAME", "");
    assert_key(&env, "PATH_INFO", "/environ");
    assert_key(&env, "RAW_URI", "/environ?x=1&y=%20");
    assert_key(&env, "QUERY_STRING", "x=1&y=%20");
    assert_key(&env, "SERVER_PROTOCOL", "HTTP/1.1");
    assert_key(&env, "SERVER_NAME", "127.0.0.1");
    assert_key(&env, "SERVER_PORT", &s.port.to_string());
    assert_key(&env, "REMOTE_ADDR", "127.0.0.1");
    assert_key(&env, "REMOTE_PORT", &client_port.to_string());
    assert_key(&env, "CONTENT_TYPE", "text/plain");
    assert_key(&env, "CONTENT_LENGTH", "4");
    assert!(
        !json_has(&env, "HTTP_CONTENT_TYPE"),
        "no HTTP_ duplicate: {env}"
    );
    assert!(
        !json_has(&env, "HTTP_CONTENT_LENGTH"),
        "no HTTP_ duplicate: {env}"
    );
    assert_key(&env, "HTTP_HOST", "example.com:8080");
    assert_key(&env, "HTTP_X_REPEAT", "a,b");
    assert_key(&env, "HTTP_X_DASH_NAME", "dash");
    assert_key(&env, "HTTP_CONNECTION", "close");
    assert!(
        !env.contains("UNDERSCORE"),
        "underscore headers are dropped: {env}"
    );
    assert!(
        !env.contains("dropped"),
        "underscore headers are dropped: {env}"
    );
    assert_key(&env, "wsgi.version", "(1, 0)");
    assert_key(&env, "wsgi.url_scheme", "http");
    assert_key(&env, "wsgi.multithread", "False");
    assert_key(&env, "wsgi.multiprocess", "False");
    assert_key(&env, "wsgi.run_once", "False");
    assert_key(&env, "wsgi.input_terminated", "True");
    assert!(
        json_has(&env, "wsgi.input") && json_has(&env, "wsgi.errors"),
        "{env}"
    );
    assert!(json_has(&env, "gunicorn.socket"), "{env}");
    assert_key(&env, "__has_read__", "true");
    assert_key(&env, "__has_write__", "true");
    assert_key(&env, "__has_flush__", "true");
    assert_key(&env, "__file_wrapper_callable__", "true");
    assert_key(&env, "__body__", "data");
    let software = json_str(&env, "SERVER_SOFTWARE").unwrap_or_default();
    assert_eq!(
        software,
        format!("rgunicorn/{}", env!("CARGO_PKG_VERSION")),
        "{env}"
    );
}

/// PATH_INFO is percent-decoded (including %2F), RAW_URI is the target as received.
#[test]
fn path_info_is_percent_decoded() {
    let s = Server::start("path-info", &["app"]);
    let r = s.get("/a%20b/c%2Fd/caf%C3%A9?q=%41");
    // The catch-all route echoes PATH_INFO; é arrives as latin-1 decoded UTF-8 bytes.
    assert_eq!(r.body, "hello /a b/c/d/caf\u{c3}\u{a9}".as_bytes());
}

/// Bodyless requests have no CONTENT_TYPE/CONTENT_LENGTH, and `read()` gives b"".
#[test]
fn environ_without_body_headers() {
    let s = Server::start("environ-nobody", &["app"]);
    let env = s.get("/environ").body_str();
    assert!(!json_has(&env, "CONTENT_TYPE"), "{env}");
    assert!(!json_has(&env, "CONTENT_LENGTH"), "{env}");
    assert_key(&env, "QUERY_STRING", "");
    assert_key(&env, "__body__", "");
}

/// `wsgi.multiprocess` is True with more than one worker.
#[test]
fn multiprocess_is_true_with_two_workers() {
    let s = Server::start("multiproc", &["-w", "2", "app"]);
    assert_key(&s.get("/environ").body_str(), "wsgi.multiprocess", "True");
}

/// SCRIPT_NAME comes from the process environment and is stripped from PATH_INFO; a path
/// outside it is a 500 (Gunicorn's configuration-problem error).
#[test]
fn script_name_from_environment() {
    let s = Server::builder("script-name")
        .env("SCRIPT_NAME", "/mount")
        .arg("app")
        .start();
    let env = s.get("/mount/environ").body_str();
    assert_key(&env, "SCRIPT_NAME", "/mount");
    assert_key(&env, "PATH_INFO", "/environ");
    assert_key(&env, "RAW_URI", "/mount/environ");
    let r = s.get("/elsewhere");
    assert_eq!(r.status, 500, "path outside SCRIPT_NAME: {r:?}");
}

/// Trusted proxies (127.0.0.1 by default) set the scheme with X-Forwarded-Proto; the
/// X-Forwarded-For header never changes REMOTE_ADDR.
#[test]
fn forwarded_headers_from_trusted_peer() {
    let s = Server::start("forwarded", &["app"]);
    let r = s.request(
        "GET /environ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: 10.1.2.3\r\nConnection: close\r\n\r\n",
    );
    let env = r.body_str();
    assert_key(&env, "wsgi.url_scheme", "https");
    assert_key(&env, "REMOTE_ADDR", "127.0.0.1");
    assert_key(&env, "HTTP_X_FORWARDED_FOR", "10.1.2.3");
}

/// Beyond Gunicorn (issue 2 point 5): an absolute-form target's authority wins over Host.
#[test]
fn absolute_form_authority_wins_over_host() {
    let s = Server::start("absolute-form", &["app"]);
    let r = s.request(
        "GET http://authority.example:9000/environ?q=1 HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let env = r.body_str();
    assert_key(&env, "PATH_INFO", "/environ");
    assert_key(&env, "QUERY_STRING", "q=1");
    assert_key(&env, "RAW_URI", "http://authority.example:9000/environ?q=1");
    assert_key(&env, "HTTP_HOST", "authority.example:9000");
}

/// On a unix socket: REMOTE_ADDR is empty, there is no REMOTE_PORT, and SERVER_NAME /
/// SERVER_PORT come from the Host header (port 80 by default).
#[test]
fn environ_on_unix_socket() {
    let dir = TempDir::new("unix-environ");
    let sock = dir.join("w.sock");
    let s = Server::builder("unix-environ")
        .args(["-b", &format!("unix:{}", sock.display()), "app"])
        .wait_unix(&sock)
        .start();
    let ask = |host: &str| {
        let mut c = Conn::unix(&sock);
        c.send(format!(
            "GET /environ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        c.read_response().body_str()
    };
    let env = ask("myhost:8081");
    assert_key(&env, "REMOTE_ADDR", "");
    assert!(!json_has(&env, "REMOTE_PORT"), "{env}");
    assert_key(&env, "SERVER_NAME", "myhost");
    assert_key(&env, "SERVER_PORT", "8081");
    let env = ask("plainhost");
    assert_key(&env, "SERVER_NAME", "plainhost");
    assert_key(&env, "SERVER_PORT", "80");
    drop(s);
}

/// Sends `body` to `/input?mode=...` with Content-Length and as a chunked body split at
/// awkward places; both must give `want`.
fn check_input_mode(s: &Server, mode: &str, body: &str, want: &[&str]) {
    let path = format!("/input?mode={mode}&n=4");
    let r = s.request(crate::support::post(&path, body.as_bytes(), ""));
    assert_eq!(
        json_str_list(&r.body_str()),
        want,
        "{mode} with Content-Length"
    );

    let mut chunked = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for piece in body.as_bytes().chunks(3) {
        chunked.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            String::from_utf8_lossy(piece)
        ));
    }
    chunked.push_str("0\r\n\r\n");
    let r = s.request(chunked);
    assert_eq!(
        json_str_list(&r.body_str()),
        want,
        "{mode} with a chunked body"
    );
}

/// `wsgi.input` read(n), readline(), readline(n), readlines(), iteration, and reads past
/// the end, on Content-Length and chunked bodies.
#[test]
fn wsgi_input_reading_modes() {
    let s = Server::start("input", &["app"]);
    let body = "line1\nline2\nlast";
    check_input_mode(&s, "read_n", body, &["line", "1\nli", "ne2\n", "last"]);
    check_input_mode(&s, "readline", body, &["line1\n", "line2\n", "last"]);
    check_input_mode(
        &s,
        "readline_n",
        body,
        &["line", "1\n", "line", "2\n", "last"],
    );
    check_input_mode(&s, "readlines", body, &["line1\n", "line2\n", "last"]);
    check_input_mode(&s, "iter", body, &["line1\n", "line2\n", "last"]);
    check_input_mode(&s, "read_all_then", body, &[body, "", ""]);
}

/// `wsgi.input` never reads past the body: the next pipelined request is intact.
#[test]
fn wsgi_input_stops_at_body_end() {
    let s = Server::start("input-end", &["app"]);
    let mut c = s.connect();
    c.send(
        "POST /input?mode=read_all_then HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
         GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        json_str_list(&c.read_response().body_str()),
        ["abc", "", ""]
    );
    assert_eq!(c.read_response().body_str(), "hello /next");
}

/// An unread request body does not desync the connection: the server discards it (up to
/// 1 MiB) and the connection carries the next request, whether that request is sent after
/// the response or pipelined right behind the unread body. Every step must succeed: a
/// reset, an early close, or the body's bytes read as the start of the next request
/// (`REQUEST_METHOD` "0123456789GET") each fail the test.
#[test]
fn unread_body_does_not_desync_keep_alive() {
    /// The next request's method and query, as the app saw them.
    fn seen(r: &crate::support::Response) -> (Option<String>, Option<String>) {
        assert_eq!(r.status_line, "HTTP/1.1 200 OK", "{r:?}");
        let body = r.body_str();
        (
            json_str(&body, "REQUEST_METHOD"),
            json_str(&body, "QUERY_STRING"),
        )
    }
    let get = |n: &str| (Some("GET".to_owned()), Some(n.to_owned()));
    let s = Server::start("unread", &["-w", "1", "app"]);
    let mut c = s.connect();
    c.send("POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789");
    let first = c.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        !first.says_close(),
        "a small unread body is drained, not a reason to close: {}",
        first.raw_head
    );
    c.send("GET /environ?n=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    let second = c.read_response();
    assert_eq!(seen(&second), get("n=2"));
    assert!(!second.says_close(), "{}", second.raw_head);
    // The body's bytes and the next request in one write.
    c.send(
        "POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789\
         GET /environ?n=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let unread = c.read_response();
    assert_eq!(unread.status, 200, "{unread:?}");
    assert_eq!(
        unread.body_str(),
        first.body_str(),
        "the POST's own response"
    );
    let fourth = c.read_response();
    assert_eq!(seen(&fourth), get("n=4"));
    assert!(fourth.says_close(), "{}", fourth.raw_head);
    assert!(
        c.closed_within(Duration::from_secs(1)),
        "nothing follows the last response: {:?}",
        String::from_utf8_lossy(c.leftover())
    );
}

/// Uploads `total` bytes to /upload (Content-Length or chunked) in 64 KiB writes and
/// returns (bytes the app counted, worker pid).
fn upload(s: &Server, total: usize, chunked: bool) -> (u64, u32) {
    let mut c = s.connect();
    if chunked {
        c.send("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    } else {
        c.send(format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
        ));
    }
    let piece = vec![b'u'; 65536];
    let mut sent = 0;
    while sent < total {
        let n = piece.len().min(total - sent);
        if chunked {
            c.send(format!("{n:x}\r\n"));
            c.send(&piece[..n]);
            c.send("\r\n");
        } else {
            c.send(&piece[..n]);
        }
        sent += n;
    }
    if chunked {
        c.send("0\r\n\r\n");
    }
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body_str();
    let bytes = crate::support::json_str(&body, "bytes")
        .and_then(|v| v.parse().ok())
        .expect("bytes");
    let pid = crate::support::json_str(&body, "pid")
        .and_then(|v| v.parse().ok())
        .expect("pid");
    (bytes, pid)
}

/// A 20 MiB upload is streamed: the app sees every byte and the worker's peak RSS grows
/// by far less than the body size.
#[test]
fn large_upload_is_streamed_with_bounded_memory() {
    const TOTAL: usize = 20 * 1024 * 1024;
    const SLACK_KIB: u64 = 8 * 1024;
    let s = Server::start("upload", &["-w", "1", "app"]);
    // Warm up the worker (imports, buffers) before taking the baseline.
    let (_, worker) = upload(&s, 256 * 1024, false);
    let hwm_before = proc_status_kib(worker, "VmHWM").expect("VmHWM");
    let rss_before = proc_status_kib(worker, "VmRSS").expect("VmRSS");

    let (bytes, pid) = upload(&s, TOTAL, false);
    assert_eq!(pid, worker, "same worker");
    assert_eq!(bytes, TOTAL as u64, "Content-Length upload fully read");
    let (bytes, _) = upload(&s, TOTAL, true);
    assert_eq!(bytes, TOTAL as u64, "chunked upload fully read");

    let hwm_after = proc_status_kib(worker, "VmHWM").expect("VmHWM");
    let rss_after = proc_status_kib(worker, "VmRSS").expect("VmRSS");
    assert!(
        hwm_after < hwm_before + SLACK_KIB,
        "peak RSS grew from {hwm_before} KiB to {hwm_after} KiB for a 20 MiB upload"
    );
    assert!(
        rss_after < rss_before + SLACK_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

/// The `write()` callable from start_response streams body bytes before the iterable's.
#[test]
fn write_callable_streams_body() {
    let s = Server::start("write", &["app"]);
    let r = s.get("/write");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "one,two,three");
    assert!(
        r.chunked,
        "no Content-Length on HTTP/1.1 → chunked: {}",
        r.raw_head
    );
}

/// start_response with exc_info before anything was sent replaces the status.
#[test]
fn exc_info_before_headers_replaces_response() {
    let s = Server::start("exc-info", &["app"]);
    let r = s.get("/exc_info");
    assert_eq!(r.status_line, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(r.body_str(), "replaced");
}

/// start_response with exc_info after the headers went out re-raises: the response is
/// cut off (never a complete chunked body) and the error is logged.
#[test]
fn exc_info_after_headers_reraises() {
    let s = Server::start("exc-info-after", &["-w", "1", "app"]);
    let mut c = s.connect();
    c.send("GET /exc_info?after=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw:?}");
    assert!(raw.contains("partial"), "{raw:?}");
    assert!(!raw.contains("replaced"), "{raw:?}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "a failed response is not terminated: {raw:?}"
    );
    s.wait_for_log("ValueError: handled by the app", LOG_DEADLINE);
    assert_eq!(s.get("/ok").status, 200, "the worker serves on");
}

/// Content-Length from the app is honoured and truncates a longer body; the connection
/// stays usable.
#[test]
fn content_length_is_honoured_and_truncates() {
    let s = Server::start("cl-trunc", &["app"]);
    let mut c = s.connect();
    c.send("GET /framing?cl=7&body=hello&chunks=3 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("content-length"), Some("7"));
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body_str(), "hellohe");
    c.send("GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let next = c.read_response();
    assert_eq!(
        next.status_line, "HTTP/1.1 200 OK",
        "no leftover body bytes"
    );
    assert_eq!(next.body_str(), "hello /next");
}

/// A body shorter than the app's Content-Length can't be kept alive: the server closes.
#[test]
fn content_length_longer_than_body_closes_connection() {
    let s = Server::start("cl-short", &["app"]);
    let mut c = s.connect();
    c.send("GET /framing?cl=100&body=short HTTP/1.1\r\nHost: x\r\n\r\n");
    let raw = c.read_to_end();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:?}");
    assert!(text.ends_with("short"), "{text:?}");
}

/// Without Content-Length, HTTP/1.1 gets a chunked body; empty writes don't end it.
#[test]
fn chunked_response_without_content_length() {
    let s = Server::start("chunked-resp", &["app"]);
    let mut c = s.connect();
    c.send("GET /framing?body=ab&chunks=2&empty=1&tail=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert!(r.chunked, "{}", r.raw_head);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body_str(), "ababend");
    c.send("GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_response().body_str(), "hello /next");
}

/// Without Content-Length, HTTP/1.0 gets the raw body delimited by the close.
#[test]
fn close_delimited_response_on_http10() {
    let s = Server::start("http10-body", &["app"]);
    let mut c = s.connect();
    c.send("GET /framing?body=xy&chunks=3 HTTP/1.0\r\n\r\n");
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw:?}");
    assert!(
        !raw.to_ascii_lowercase().contains("transfer-encoding"),
        "{raw:?}"
    );
    assert!(raw.ends_with("\r\n\r\nxyxyxy"), "{raw:?}");
}

/// HEAD, 204 and 304 responses carry no body (and no chunking); the connection stays in
/// sync.
#[test]
fn no_body_responses() {
    let s = Server::start("no-body", &["app"]);
    let mut c = s.connect();
    c.send("HEAD /framing?body=abc HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert!(
        r.header("transfer-encoding").is_none(),
        "HEAD is not chunked: {}",
        r.raw_head
    );
    for status in ["204%20No%20Content", "304%20Not%20Modified"] {
        c.send(format!(
            "GET /framing?status={status}&body=abc HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        let r = c.read_response();
        assert!(r.status == 204 || r.status == 304, "{r:?}");
        assert!(r.header("transfer-encoding").is_none(), "{}", r.raw_head);
    }
    c.send("GET /framing?status=204%20No%20Content&cl=3&body=abc HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 204);
    assert!(
        r.header("content-length").is_none(),
        "204 strips Content-Length: {}",
        r.raw_head
    );
    c.send("GET /final HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let last = c.read_response();
    assert_eq!(
        last.status_line, "HTTP/1.1 200 OK",
        "no stray body bytes were sent"
    );
    assert_eq!(last.body_str(), "hello /final");
}

/// Hop-by-hop headers (and Server/Date) from the app are dropped; others are kept.
#[test]
fn hop_by_hop_headers_are_dropped() {
    let s = Server::start("hop", &["app"]);
    let r = s.get("/hop");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hop");
    let head = r.raw_head.to_ascii_lowercase();
    for gone in [
        "close-me-not",
        "keep-alive: timeout",
        "proxy-authenticate",
        "\r\nte:",
        "trailers:",
        "upgrade:",
        "app-server",
        "1970",
    ] {
        assert!(
            !head.contains(gone),
            "{gone:?} should be dropped: {}",
            r.raw_head
        );
    }
    assert_eq!(r.headers_named("server"), ["rgunicorn"]);
    assert_eq!(r.headers_named("date").len(), 1);
    assert_eq!(r.header("x-kept"), Some("yes"));
}

/// An invalid status string from the app gives a 500; a bare `200` is allowed.
#[test]
fn invalid_status_gives_500() {
    let s = Server::start("bad-status", &["app"]);
    for bad in [
        "twohundred%20OK",
        "2000%20OK",
        "20%20OK",
        "200%20OK%0D%0AX-Evil:%201",
        "200OK",
    ] {
        let r = s.get(&format!("/bad_status?s={bad}"));
        assert_eq!(r.status, 500, "status {bad:?}: {r:?}");
        assert!(!r.body_str().contains("should not be sent"));
        assert!(r.header("x-evil").is_none());
    }
    let r = s.get("/bad_status?s=200");
    assert_eq!(
        r.status_line, "HTTP/1.1 200",
        "a bare code is copied verbatim"
    );
}

/// A header value with CR/LF gives a 500 and nothing of the bad header reaches the wire.
#[test]
fn header_with_crlf_gives_500_and_is_never_emitted() {
    let s = Server::start("bad-header", &["app"]);
    let mut c = s.connect();
    c.send("GET /bad_header HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(raw.starts_with("HTTP/1.1 500"), "{raw:?}");
    assert!(!raw.contains("X-Injected"), "{raw:?}");
    assert!(!raw.contains("X-Bad"), "{raw:?}");
    assert!(!raw.contains("should not be sent"), "{raw:?}");
}

/// A str (not bytes) body chunk before anything was sent gives 500 (issue 2 point 6).
#[test]
fn str_body_chunk_gives_500() {
    let s = Server::start("str-body", &["app"]);
    let r = s.get("/str_body");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(!r.body_str().contains("not bytes"));
}

/// Number of `closed` lines in a close() marker file.
fn close_count(path: &std::path::Path) -> usize {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "closed")
        .count()
}

/// close() is called exactly once after a normal response.
#[test]
fn close_called_once_after_normal_response() {
    let s = Server::start("close-normal", &["-w", "1", "app"]);
    let marker = s.dir.join("close-normal");
    let r = s.get(&format!("/close?marker={}", marker.display()));
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "x".repeat(15));
    // The next request on the single worker runs after the first one was finished.
    assert_eq!(s.get("/sync").status, 200);
    assert_eq!(close_count(&marker), 1);
}

/// close() is called exactly once when the app raises mid-iteration (after headers), and
/// when it raises on the first chunk (then the client gets a 500).
#[test]
fn close_called_once_when_app_raises_mid_iteration() {
    let s = Server::start("close-raise", &["-w", "1", "app"]);
    let marker = s.dir.join("close-raise");
    let mut c = s.connect();
    c.send(format!(
        "GET /close?marker={}&raise_at=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        marker.display()
    ));
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "cut-off response must not look complete: {raw:?}"
    );
    s.wait_for_log("RuntimeError: raised mid-iteration", LOG_DEADLINE);
    assert_eq!(s.get("/sync").status, 200);
    assert_eq!(close_count(&marker), 1);

    let marker0 = s.dir.join("close-raise-0");
    let r = s.get(&format!("/close?marker={}&raise_at=0", marker0.display()));
    assert_eq!(r.status, 500);
    assert_eq!(s.get("/sync").status, 200);
    assert_eq!(close_count(&marker0), 1);
}

/// close() is called exactly once when the client disconnects mid-stream.
#[test]
fn close_called_once_when_client_disconnects() {
    let s = Server::start("close-disconnect", &["-w", "1", "app"]);
    let marker = s.dir.join("close-disconnect");
    {
        let mut c = s.connect();
        c.send(format!(
            "GET /close?marker={}&chunks=400&size=65536&delay=0.005 HTTP/1.1\r\nHost: x\r\n\r\n",
            marker.display()
        ));
        // Read the head and a little of the body, then vanish.
        let r = c.read_head_response();
        assert_eq!(r.status, 200);
    }
    // At once, not when the 2 s generator would have ended on its own.
    crate::support::wait_for_file(&marker, "closed", Duration::from_secs(1));
    assert_eq!(s.get("/sync").status, 200);
    assert_eq!(close_count(&marker), 1);
}

/// `wsgi.file_wrapper` over a real file sends exactly the file's bytes.
#[test]
fn file_wrapper_sends_file_bytes() {
    let s = Server::start("file-wrapper", &["app"]);
    let path = s.dir.join("payload.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &data).expect("write payload");
    let mut c = s.connect();
    c.send(format!(
        "GET /file?path={} HTTP/1.1\r\nHost: x\r\n\r\n",
        path.display()
    ));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert!(
        r.body == data,
        "file bytes differ ({} bytes received)",
        r.body.len()
    );
    c.send("GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_response().body_str(), "hello /next");
    // And with sendfile disabled.
    let s2 = Server::start("file-wrapper-nosendfile", &["--no-sendfile", "app"]);
    let r = s2.get(&format!("/file?path={}", path.display()));
    assert!(r.body == data, "file bytes differ without sendfile");
}

/// An app exception gives a 500, `Error handling request` with the traceback in the log,
/// and the worker serves the next request.
#[test]
fn app_exception_gives_500_and_worker_serves_on() {
    let mut s = Server::start("app-error", &["-w", "1", "app"]);
    let worker = s.wait_workers(1, LOG_DEADLINE)[0];
    let r = s.get("/error");
    assert_eq!(r.status, 500);
    let log = s.wait_for_log("RuntimeError: boom from the test app", LOG_DEADLINE);
    let line = log
        .lines()
        .find(|l| l.contains("Error handling request"))
        .unwrap_or_else(|| panic!("no `Error handling request` line: {log}"));
    assert!(line.contains("/error"), "{line}");
    assert!(line.contains("[ERROR]"), "{line}");
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    let r = s.get("/pid");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body_str(),
        worker.to_string(),
        "the same worker serves on"
    );
}

/// Text written to `wsgi.errors` reaches the error log.
#[test]
fn wsgi_errors_reaches_error_log() {
    let s = Server::start("wsgi-errors", &["app"]);
    assert_eq!(
        s.get("/errors_write?msg=errors-stream-marker-42").status,
        200
    );
    s.wait_for_log("errors-stream-marker-42", LOG_DEADLINE);
}

/// `wsgi.input` with `Expect: 100-continue` reads the body sent after the interim reply.
#[test]
fn input_after_100_continue_on_keep_alive() {
    let s = Server::start("continue-ka", &["app"]);
    let mut c = s.connect();
    for word in ["first", "second"] {
        c.send(format!(
            "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            word.len()
        ));
        assert_eq!(c.read_response().status, 100);
        c.send(word);
        assert_eq!(c.read_response().body_str(), word);
    }
}

/// Breaking the WSGI protocol gives a 500 with nothing of the app's response on the wire,
/// the error is logged, and the worker serves on.
#[test]
fn wsgi_protocol_errors_give_500() {
    let s = Server::start("proto", &["-w", "1", "app"]);
    for case in [
        "none",
        "no_start_response",
        "start_twice",
        "bad_name",
        "int_value",
        "bytearray",
    ] {
        let mut c = s.connect();
        c.send(format!(
            "GET /proto?case={case} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
        assert!(raw.starts_with("HTTP/1.1 500 "), "{case}: {raw:?}");
        for leaked in [
            "without start_response",
            "twice",
            "bad name",
            "Bad Name",
            "X-Int",
            "int value",
            "bytearray",
        ] {
            assert!(
                !raw.contains(leaked),
                "{case}: {leaked:?} on the wire: {raw:?}"
            );
        }
        s.wait_for_log(&format!("/proto?case={case}"), LOG_DEADLINE);
    }
    let log = s.stderr();
    assert_eq!(log.matches("Error handling request").count(), 6, "{log}");
    assert_eq!(s.get("/after").status, 200);
}

/// `wsgi.early_hints` (§6.4, Gunicorn 25.0+) sends a `103 Early Hints` interim response
/// before the final one.
#[test]
fn early_hints_sends_103() {
    let s = Server::start("early-hints", &["app"]);
    let mut c = s.connect();
    c.send("GET /early_hints HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let first = c.read_response();
    assert_eq!(
        first.status_line,
        "HTTP/1.1 103 Early Hints",
        "{first:?}\n{}",
        s.stderr()
    );
    assert_eq!(
        first.header("link"),
        Some("</style.css>; rel=preload; as=style")
    );
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "after hints");
}

/// A body on a 204 is dropped with Gunicorn's bare warning line naming the method.
#[test]
fn body_on_204_is_dropped_with_warning() {
    let s = Server::start("204-warning", &["app"]);
    let r = s.get("/framing?status=204%20No%20Content&body=abc");
    assert_eq!(r.status, 204);
    s.wait_for_log(
        "WSGI app sent body bytes on a no-body response (method=GET status=204); dropping per RFC 9110.",
        LOG_DEADLINE,
    );
}

/// A request's objects die with the request: a `write` callable, `start_response` or
/// `wsgi.input` kept past it raises when used later, and nothing it would have written
/// reaches the next response on the connection (before: the bytes led that response).
#[test]
fn objects_kept_past_their_request_refuse_to_act() {
    let s = Server::start("stale", &["-w", "1", "app:application"]);
    let mut c = s.connect();
    c.send("GET /stash HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    c.send("GET /stale HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body_str();
    assert!(
        !r.raw_head.contains("INJECTED") && !body.contains("INJECTED"),
        "{r:?}"
    );
    for key in ["write", "start_response", "input"] {
        assert_eq!(
            crate::support::json_str(&body, key).as_deref(),
            Some("ValueError"),
            "{key}: {body}"
        );
    }
}

/// The worker reuses a request's `start_response` and `wsgi.input` for the next request
/// when nothing kept them. Keeping any one of the objects tied to them (`start_response`,
/// its `write`, the environ's `wsgi.early_hints`, the environ, `wsgi.input`) keeps the old
/// one finished: using it later raises, and nothing reaches the next response.
#[test]
fn one_kept_object_keeps_its_request_objects_out_of_reuse() {
    let s = Server::start("kept", &["-w", "1", "app:application"]);
    let mut c = s.connect();
    for what in ["early_hints", "start_response", "write", "environ", "input"] {
        c.send(format!("GET /keep_one?{what} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(c.read_response().body_str(), format!("kept {what}"));
        c.send(format!("GET /use_kept?{what} HTTP/1.1\r\nHost: x\r\n\r\n"));
        let r = c.read_response();
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "ValueError"),
            "{what}: {r:?}"
        );
        assert!(!r.raw_head.contains("stale"), "{what}: {r:?}");
        // Nothing stale is left on the connection either.
        c.send("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().body_str(), "hello /plain", "{what}");
    }
}

/// `wsgi.input`, `start_response` and `write()` work from threads the app starts (before:
/// pyo3's "sent to another thread" panic aborted the worker); eight threads writing at once
/// may see some calls refused with an exception, and the worker serves on.
#[test]
fn request_objects_work_from_the_apps_threads() {
    // The sync worker, and the threaded one (whose threads also run the loop, keeping the
    // GIL while they can).
    for args in [&["-w", "1"][..], &["-w", "1", "--threads", "4"][..]] {
        apps_threads_use_request_objects(args);
    }
}

fn apps_threads_use_request_objects(args: &[&str]) {
    let s = Server::builder("threads")
        .args(args)
        .arg("app:application")
        .start();
    let pid = s.get("/pid").body_str();
    let r = s.request(crate::support::post("/threaded", b"hello", ""));
    assert_eq!(r.status, 200, "{}", s.stderr());
    assert_eq!(r.body_str(), "from-thread:hello[0][1][2][3]");
    let race = s.get("/threads_race");
    assert_eq!(race.status, 200, "{}", s.stderr());
    let body = race.body_str();
    let (digits, refused) = body.split_once("|refused:").unwrap();
    let refused_count: usize = refused.split(':').next().unwrap().parse().unwrap();
    assert_eq!(
        digits.len() + refused_count,
        400,
        "every write sent or refused: {body}"
    );
    assert_eq!(s.get("/pid").body_str(), pid, "the same worker serves on");
    assert!(!s.stderr().contains("was sent SIG"), "{}", s.stderr());
}

/// TCP segments `stream` has received so far (`TCP_INFO`): the server sends with
/// `TCP_NODELAY`, so on loopback each of its writes arrives as its own segment (or two, past
/// the 64 KiB MSS). Counted at the client because the server writes with `send(2)`, which
/// `/proc/PID/io` does not count.
fn segments_received(stream: &std::net::TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers; getsockopt writes at most `len` bytes into it.
    let mut info: nix::libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<nix::libc::tcp_info>() as nix::libc::socklen_t;
    // SAFETY: a valid socket, buffer and length.
    let rc = unsafe {
        nix::libc::getsockopt(
            stream.as_raw_fd(),
            nix::libc::IPPROTO_TCP,
            nix::libc::TCP_INFO,
            (&mut info as *mut nix::libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO");
    info.tcpi_segs_in
}

/// Bytes waiting, unread, in `stream`'s receive queue.
fn unread_bytes(stream: &std::net::TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { nix::libc::ioctl(stream.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n
}

/// A generator's many small chunks leave together: 100 x 1 KiB costs a few writes, not
/// one per chunk (and the body arrives whole and in order).
#[test]
fn a_fast_generator_is_written_in_a_few_system_calls() {
    use std::io::{Read, Write};
    let s = Server::start("coalesce", &["-w", "1", "app"]);
    let mut segments = Vec::new();
    for _ in 0..20 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        c.write_all(b"GET /ticks?n=100&size=1024 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).expect("read");
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let stamps = raw[head_end..].split(|&b| b == b'T').count() - 1;
        assert_eq!(stamps, 100, "every chunk, in order");
        // Less the handshake's and the close's segments.
        segments.push(segments_received(&c).saturating_sub(2));
    }
    segments.sort_unstable();
    let median = segments[segments.len() / 2];
    // One write per chunk would be at least 100 segments per response.
    assert!(median <= 10, "segments per response: {segments:?}");
}

/// CLOCK_MONOTONIC in seconds, the clock of Python's `time.monotonic()`.
fn monotonic_now() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// Streams one `/ticks` response of `n` chunks 100 ms apart; returns how long each chunk
/// took from its `yield` to the client, in order.
fn tick_delays(port: u16, n: usize) -> Vec<f64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    write!(
        c,
        "GET /ticks?n={n}&every=0.1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let (mut seen, mut delays) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 4096];
    loop {
        let got = c.read(&mut buf).expect("read");
        let arrived = monotonic_now();
        if got == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..got]);
        // Every complete "T=<stamp>;" not yet counted.
        let text = String::from_utf8_lossy(&seen).into_owned();
        for stamp in text.split("T=").skip(1 + delays.len()) {
            if let Some((value, _)) = stamp.split_once(';') {
                delays.push(arrived - value.parse::<f64>().expect("a stamp"));
            }
        }
    }
    assert!(
        seen.ends_with(b"0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    delays
}

/// A slow generator (server-sent events, a progress report) is not held back by the
/// coalescing of fast ones: each chunk is on the wire within 5 ms of its `yield`, in the
/// sync worker and in a thread of the threaded one.
#[test]
fn a_slow_generator_reaches_the_client_chunk_by_chunk() {
    for args in [
        &["-w", "1", "app"][..],
        &["-w", "1", "--threads", "2", "app"],
    ] {
        let s = Server::start("ticks", args);
        // A loaded machine can stall any process for a few ms now and then; a server that
        // held chunks back would miss every time (by about 100 ms, the generator's pause).
        let mut attempts = Vec::new();
        while attempts.len() < 3 {
            let delays = tick_delays(s.port, 8);
            assert_eq!(delays.len(), 8, "every chunk arrives");
            if delays.iter().all(|&d| d < 0.005) {
                break;
            }
            attempts.push(delays);
        }
        assert!(
            attempts.len() < 3,
            "{args:?}: a chunk waited 5 ms or more in each attempt (seconds): {attempts:?}"
        );
    }
}

/// A streamed response to a client that stopped reading costs the worker nothing while it
/// waits: the flusher does not poll a connection whose socket is full.
#[test]
fn a_stream_to_a_client_that_stopped_reading_costs_no_cpu() {
    use std::io::Write;
    let mut s = Server::start("stream-stalled", &["-w", "1", "app"]);
    let worker = s.wait_workers(1, LOG_DEADLINE)[0];
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    c.write_all(b"GET /ticks?n=100000&size=4000&every=0.001 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    // The client reads nothing: once the socket and the outbox are full, nothing more
    // reaches it.
    // The client reads nothing: its receive queue fills, then the worker's outbox (the
    // generator runs on until it is full), then the worker waits.
    let mut last = (unread_bytes(&c), crate::support::cpu_ticks(worker));
    crate::support::poll_until(LOG_DEADLINE, || {
        std::thread::sleep(Duration::from_millis(500)); // a pause to compare across
        let now = (unread_bytes(&c), crate::support::cpu_ticks(worker));
        let still = now == last && now.0 > 0;
        last = now;
        still.then_some(())
    })
    .expect("the worker's writes stop");
    let before = crate::support::cpu_ticks(worker);
    std::thread::sleep(Duration::from_secs(3)); // the window measured
    let used = crate::support::cpu_ticks(worker) - before;
    // Polling the stalled stream every 0.5 ms cost about 15 ticks in those 3 s; an idle
    // worker uses none or one.
    assert!(used < 6, "the worker used {used} ticks in 3 s");
    drop(c);
}
