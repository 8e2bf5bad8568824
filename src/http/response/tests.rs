#![allow(clippy::unwrap_used)]

use super::*;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn spec<'a>(status: &'a str, headers: &'a [(&'a str, &'a str)]) -> ResponseSpec<'a> {
    ResponseSpec {
        version: (1, 1),
        is_head: false,
        keep_alive: true,
        status,
        headers,
    }
}

fn encode(spec: &ResponseSpec<'_>) -> (String, ResponsePlan) {
    let mut out = Vec::new();
    let plan = encode_head(&mut out, spec, DATE).unwrap();
    (String::from_utf8_lossy(&out).into_owned(), plan)
}

#[test]
fn status_strings_are_validated() {
    assert_eq!(validate_status("200 OK").unwrap(), 200);
    assert_eq!(validate_status("200").unwrap(), 200);
    assert_eq!(validate_status("404 ").unwrap(), 404);
    assert_eq!(validate_status("599 Caf\u{e9}\tis  closed").unwrap(), 599);
    for bad in [
        "",
        "20",
        "2000 OK",
        "200OK",
        "abc OK",
        "099 Low",
        "200\tOK",
        "200 OK\r\nX: y",
        "200 \u{20ac}",
        "200 a\u{7f}",
    ] {
        assert!(validate_status(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn hop_by_hop_names_are_recognised_case_insensitively() {
    for name in [
        "Connection",
        "KEEP-ALIVE",
        "Proxy-Authenticate",
        "proxy-authorization",
        "TE",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
        "server",
        "Date",
    ] {
        assert!(is_hop_by_hop(name), "{name}");
    }
    assert!(!is_hop_by_hop("Content-Length"));
    assert!(!is_hop_by_hop("Trailer"));
}

#[test]
fn head_is_written_in_gunicorn_order() {
    let (text, plan) = encode(&spec(
        "200 OK",
        &[("Content-Type", " text/plain "), ("Content-Length", "5")],
    ));
    assert_eq!(
        text,
        "HTTP/1.1 200 OK\r\nServer: rgunicorn\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    );
    assert_eq!(
        plan,
        ResponsePlan {
            code: 200,
            framing: Framing::Length(5),
            keep_alive: true,
            content_length: Some(5),
            upgrade: false
        }
    );
}

#[test]
fn http_1_1_without_length_is_chunked() {
    let (text, plan) = encode(&spec("200", &[("X-A", "b")]));
    assert!(text.starts_with("HTTP/1.1 200\r\n"));
    assert!(text.contains("Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"));
    assert_eq!((plan.framing, plan.keep_alive), (Framing::Chunked, true));
}

#[test]
fn http_1_0_without_length_is_close_delimited() {
    let mut s = spec("200 OK", &[]);
    s.version = (1, 0);
    let (text, plan) = encode(&s);
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"));
    assert!(text.contains("Connection: close\r\n"));
    assert!(!text.contains("Transfer-Encoding"));
    assert_eq!(
        (plan.framing, plan.keep_alive),
        (Framing::CloseDelimited, false)
    );
}

#[test]
fn the_status_line_names_our_version_not_the_clients_minor() {
    let mut s = spec("200 OK", &[("Content-Length", "0")]);
    s.version = (1, 5);
    assert!(encode(&s).0.starts_with("HTTP/1.1 200 OK\r\n"));
    s.version = (1, 0);
    assert!(encode(&s).0.starts_with("HTTP/1.0 200 OK\r\n"));
    // Versions only permit_unconventional_http_version admits: 0.x as 1.0, 2.x as 1.1.
    s.version = (0, 9);
    assert!(encode(&s).0.starts_with("HTTP/1.0 200 OK\r\n"));
    s.version = (2, 0);
    assert!(encode(&s).0.starts_with("HTTP/1.1 200 OK\r\n"));
}

#[test]
fn server_not_willing_means_connection_close() {
    let mut s = spec("200 OK", &[("Content-Length", "2")]);
    s.keep_alive = false;
    let (text, plan) = encode(&s);
    assert!(text.contains("Connection: close\r\n"));
    assert!(!plan.keep_alive);
}

#[test]
fn hop_by_hop_headers_from_the_app_are_dropped() {
    let headers = [
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("TE", "trailers"),
        ("Trailers", "x"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Authorization", "x"),
        ("Upgrade", "h2c"),
        ("Server", "evil"),
        ("Date", "yesterday"),
        ("X-Kept", "1"),
    ];
    let (text, _) = encode(&spec("200 OK", &headers));
    assert_eq!(text.matches("Server:").count(), 1);
    assert_eq!(text.matches("Date:").count(), 1);
    for gone in [
        "Keep-Alive",
        "timeout",
        "TE:",
        "Trailers",
        "Proxy-",
        "Upgrade",
        "evil",
        "yesterday",
    ] {
        assert!(!text.contains(gone), "{gone} in {text}");
    }
    assert!(text.contains("X-Kept: 1\r\n"));
    assert_eq!(text.matches("Transfer-Encoding").count(), 1);
}

#[test]
fn websocket_upgrade_is_kept() {
    let (text, plan) = encode(&spec(
        "101 Switching Protocols",
        &[("Upgrade", "WebSocket"), ("Connection", "Upgrade")],
    ));
    assert!(text.contains("Connection: upgrade\r\n"));
    assert!(text.contains("Upgrade: WebSocket\r\n"));
    assert!(plan.upgrade && !plan.keep_alive);
    assert_eq!(plan.framing, Framing::NoBody);
}

#[test]
fn head_and_304_keep_content_length_without_body() {
    let mut s = spec("200 OK", &[("Content-Length", "42")]);
    s.is_head = true;
    let (text, plan) = encode(&s);
    assert!(text.contains("Content-Length: 42\r\n"));
    assert!(!text.contains("Transfer-Encoding"));
    assert_eq!(
        (plan.framing, plan.content_length, plan.keep_alive),
        (Framing::NoBody, Some(42), true)
    );

    let (text, plan) = encode(&spec("304 Not Modified", &[("Content-Length", "42")]));
    assert!(text.contains("Content-Length: 42\r\n"));
    assert_eq!(
        (plan.framing, plan.content_length),
        (Framing::NoBody, Some(42))
    );

    let mut s = spec("200 OK", &[]);
    s.is_head = true;
    let (text, plan) = encode(&s);
    assert!(!text.contains("Transfer-Encoding"));
    assert_eq!((plan.framing, plan.keep_alive), (Framing::NoBody, true));
}

#[test]
fn status_1xx_and_204_drop_content_length() {
    for status in ["204 No Content", "100 Continue", "199 Whatever"] {
        let (text, plan) = encode(&spec(status, &[("Content-Length", "3"), ("X", "y")]));
        assert!(!text.contains("Content-Length"), "{status}");
        assert!(!text.contains("Transfer-Encoding"), "{status}");
        assert_eq!((plan.framing, plan.content_length), (Framing::NoBody, None));
    }
}

#[test]
fn invalid_headers_are_refused_and_nothing_is_written() {
    for headers in [
        &[("Bad Name", "v")][..],
        &[("", "v")],
        &[("X", "a\r\nInjected: 1")],
        &[("X", "a\nb")],
        &[("X", "a\0b")],
        &[("X", "a\u{1}b")],
        &[("X", "\u{20ac}")],
        &[("Content-Length", "5x")],
        &[("Content-Length", "-1")],
        &[("Content-Length", "1"), ("Content-Length", "2")],
    ] {
        let mut out = b"keep".to_vec();
        let err = encode_head(&mut out, &spec("200 OK", headers), DATE);
        assert!(err.is_err(), "{headers:?}");
        assert_eq!(out, b"keep");
    }
    let mut out = Vec::new();
    let err = encode_head(&mut out, &spec("2OO OK", &[]), DATE).unwrap_err();
    assert!(err.to_string().contains("'2OO OK'"), "{err}");
}

#[test]
fn obs_text_values_are_written_as_latin1() {
    let mut out = Vec::new();
    encode_head(
        &mut out,
        &spec(
            "200 Caf\u{e9}",
            &[("X", "na\u{ef}ve"), ("Content-Length", "0")],
        ),
        DATE,
    )
    .unwrap();
    assert!(out.starts_with(b"HTTP/1.1 200 Caf\xe9\r\n"));
    assert!(out.windows(9).any(|w| w == b"X: na\xefve\r"));
}

#[test]
fn identical_duplicate_content_length_is_written_once() {
    let (text, plan) = encode(&spec(
        "200 OK",
        &[("Content-Length", "3"), ("content-length", "3")],
    ));
    assert_eq!(
        text.to_ascii_lowercase().matches("content-length").count(),
        1
    );
    assert_eq!(plan.framing, Framing::Length(3));
}

#[test]
fn early_hints_are_encoded() {
    let mut out = Vec::new();
    encode_early_hints(&mut out, &[("Link", "</s.css>; rel=preload")]).unwrap();
    assert_eq!(
        out,
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    );
    assert!(encode_early_hints(&mut Vec::new(), &[("Li nk", "x")]).is_err());
}

#[test]
fn chunk_size_lines_are_upper_hex() {
    let mut buf = [0u8; 20];
    assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
    assert_eq!(chunk_size_line(10, &mut buf), b"A\r\n");
    assert_eq!(chunk_size_line(255, &mut buf), b"FF\r\n");
    assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
    assert_eq!(
        chunk_size_line(usize::MAX, &mut buf),
        b"FFFFFFFFFFFFFFFF\r\n"
    );
}
