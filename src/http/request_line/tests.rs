#![allow(clippy::unwrap_used)]
//! The request line's rules, through the whole head parser (helpers are request's tests').

use crate::http::error::ParseError;
use crate::http::head::Leniency;
use crate::http::request::tests::{err, lenient, ok, parse};

#[test]
fn request_line_needs_single_spaces() {
    for raw in [&b"GET  / HTTP/1.1\r\n\r\n"[..], b"GET /  HTTP/1.1\r\n\r\n"] {
        assert!(parse(raw).is_err(), "{raw:?}");
    }
    assert!(matches!(
        err(b"GET /\r\n\r\n"),
        ParseError::MalformedRequestLine { .. }
    ));
    assert!(matches!(
        err(b"GET  / HTTP/1.1\r\n\r\n"),
        ParseError::EmptyTarget { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1 \r\n\r\n"),
        ParseError::InvalidVersion { .. }
    ));
    assert!(matches!(
        err(b"GET\t/ HTTP/1.1\r\n\r\n"),
        ParseError::MalformedRequestLine { .. }
    ));
}

#[test]
fn methods_must_be_uppercase_tokens_of_3_to_20_bytes() {
    assert_eq!(
        err(b"get / HTTP/1.1\r\n\r\n").to_string(),
        "Invalid HTTP method: 'get'"
    );
    for raw in [
        &b"GE / HTTP/1.1\r\n\r\n"[..],
        b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n\r\n",
        b"GE#T / HTTP/1.1\r\n\r\n",
        b"GE(T / HTTP/1.1\r\n\r\n",
        b"G\xc9T / HTTP/1.1\r\n\r\n",
    ] {
        assert!(
            matches!(err(raw), ParseError::InvalidMethod { .. }),
            "{raw:?}"
        );
    }
    assert_eq!(ok(b"M-SEARCH / HTTP/1.0\r\n\r\n").method, "M-SEARCH");
    let _ = ok(b"ABCDEFGHIJKLMNOPQRST / HTTP/1.0\r\n\r\n");
}

#[test]
fn target_bytes_must_be_visible_ascii() {
    for raw in [
        &b"GET /caf\xc3\xa9 HTTP/1.0\r\n\r\n"[..],
        b"GET /a\x7f HTTP/1.0\r\n\r\n",
        b"GET /a\x01 HTTP/1.0\r\n\r\n",
    ] {
        assert!(
            matches!(err(raw), ParseError::InvalidTargetByte { .. }),
            "{raw:?}"
        );
    }
}

#[test]
fn asterisk_form_is_only_for_options() {
    let head = ok(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((head.path.as_str(), head.target.as_str()), ("*", "*"));
    assert!(matches!(
        err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"),
        ParseError::AsteriskFormNotOptions { .. }
    ));
}

#[test]
fn authority_form_is_only_for_connect() {
    let head = ok(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(head.path, "example.com:443");
    assert_eq!(head.authority.as_deref(), Some("example.com:443"));
    assert!(head.must_close);
    let head = ok(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n");
    assert_eq!(head.authority.as_deref(), Some("[::1]:8443"));
    assert!(matches!(
        err(b"GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"),
        ParseError::AuthorityFormNotConnect { .. }
    ));
    assert!(matches!(
        err(b"CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n"),
        ParseError::InvalidTarget { .. }
    ));
    assert!(matches!(
        err(b"GET foo/bar HTTP/1.1\r\nHost: h\r\n\r\n"),
        ParseError::InvalidTarget { .. }
    ));
}

#[test]
fn absolute_form_authority_wins_over_host() {
    let head = ok(b"GET http://user:pw@example.com:8080?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(head.path, "/");
    assert_eq!(head.query, "q=1");
    assert_eq!(head.authority.as_deref(), Some("example.com:8080"));
    let head = ok(b"GET https://[2001:db8::1]/x/y#f HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((head.path.as_str(), head.fragment.as_str()), ("/x/y", "f"));
    assert_eq!(head.authority.as_deref(), Some("[2001:db8::1]"));
}

#[test]
fn absolute_form_needs_a_scheme_and_a_host() {
    for raw in [
        &b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"GET 1http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET ://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://h:port/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET http://a@b@c/ HTTP/1.1\r\nHost: h\r\n\r\n",
    ] {
        assert!(
            matches!(err(raw), ParseError::InvalidTarget { .. }),
            "{raw:?}"
        );
    }
}

#[test]
fn double_slash_paths_are_kept() {
    let head = ok(b"GET //a//b?c HTTP/1.0\r\n\r\n");
    assert_eq!((head.path.as_str(), head.query.as_str()), ("//a//b", "c"));
    let head = ok(b"GET /a#b?c HTTP/1.0\r\n\r\n");
    assert_eq!(
        (
            head.path.as_str(),
            head.query.as_str(),
            head.fragment.as_str()
        ),
        ("/a", "", "b?c")
    );
}

#[test]
fn versions_1_0_to_1_9_are_accepted_and_others_refused() {
    assert_eq!(ok(b"GET / HTTP/1.5\r\nHost: h\r\n\r\n").version, (1, 5));
    assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").version, (1, 0));
    assert_eq!(
        err(b"GET / HTTP/2.0\r\n\r\n"),
        ParseError::UnsupportedVersion { major: 2, minor: 0 }
    );
    assert_eq!(
        err(b"GET / HTTP/0.9\r\n\r\n"),
        ParseError::UnsupportedVersion { major: 0, minor: 9 }
    );
    for v in [
        &b"HTTP/1.10"[..],
        b"http/1.1",
        b"HTTP/1",
        b"HTTP/1.x",
        b"HTTP/11",
        b"HTTPS/1.1",
    ] {
        let mut raw = b"GET / ".to_vec();
        raw.extend_from_slice(v);
        raw.extend_from_slice(b"\r\n\r\n");
        assert!(
            matches!(err(&raw), ParseError::InvalidVersion { .. }),
            "{v:?}"
        );
    }
}

#[test]
fn unconventional_methods_and_casefolding_follow_gunicorn() {
    let unconventional = |l: &mut Leniency| l.unconventional_method = true;
    for method in ["get", "-blargh", "M#", "X", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] {
        let raw = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
        let head = lenient(raw.as_bytes(), 8190, unconventional)
            .unwrap()
            .unwrap();
        assert_eq!(head.method, method);
        assert!(matches!(
            err(raw.as_bytes()),
            ParseError::InvalidMethod { .. }
        ));
    }
    // Still a token.
    assert!(matches!(
        lenient(b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 8190, unconventional),
        Err(ParseError::InvalidMethod { .. })
    ));
    // Casefolding happens after the check, so alone it does not admit lowercase.
    let casefold = |l: &mut Leniency| l.casefold_method = true;
    assert!(matches!(
        lenient(b"get / HTTP/1.1\r\nHost: h\r\n\r\n", 8190, casefold),
        Err(ParseError::InvalidMethod { .. })
    ));
    let both = |l: &mut Leniency| {
        l.casefold_method = true;
        l.unconventional_method = true;
    };
    let head = lenient(b"-blargh / HTTP/1.1\r\nHost: h\r\n\r\n", 8190, both);
    assert_eq!(head.unwrap().unwrap().method, "-BLARGH");
    // The folded method is the one the target rules see.
    let head = lenient(b"options * HTTP/1.1\r\nHost: h\r\n\r\n", 8190, both);
    assert_eq!(head.unwrap().unwrap().method, "OPTIONS");
}

#[test]
fn unconventional_versions_are_any_single_digits() {
    let versions = |l: &mut Leniency| l.unconventional_version = true;
    let head = lenient(b"GET / HTTP/0.9\r\n\r\n", 8190, versions)
        .unwrap()
        .unwrap();
    assert_eq!(head.version, (0, 9));
    assert!(!head.keep_alive);
    let head = lenient(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 8190, versions);
    assert_eq!(head.unwrap().unwrap().version, (2, 0));
    assert!(matches!(
        lenient(b"GET / HTTP/10.0\r\n\r\n", 8190, versions),
        Err(ParseError::InvalidVersion { .. })
    ));
}
