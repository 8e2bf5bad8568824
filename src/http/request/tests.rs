#![allow(clippy::unwrap_used)]

use super::*;

pub(in crate::http) fn parse(raw: &[u8]) -> Result<Option<RequestHead>, ParseError> {
    parse_head(raw, &Limits::default())
}

pub(in crate::http) fn ok(raw: &[u8]) -> RequestHead {
    parse(raw).unwrap().unwrap()
}

pub(in crate::http) fn err(raw: &[u8]) -> ParseError {
    parse(raw).unwrap_err()
}

#[test]
fn simple_get_is_parsed() {
    let raw = b"GET /a/b?x=1&y=2#frag HTTP/1.1\r\nHost: example.com\r\nX-A:  v \t\r\n\r\nBODY";
    let head = ok(raw);
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/a/b?x=1&y=2#frag");
    assert_eq!(head.path, "/a/b");
    assert_eq!(head.query, "x=1&y=2");
    assert_eq!(head.fragment, "frag");
    assert_eq!(head.version, (1, 1));
    assert_eq!(head.header("x-a"), Some(&b"v"[..]));
    assert_eq!(head.header("X-A"), Some(&b"v"[..]));
    assert_eq!(head.headers.len(), 2);
    assert_eq!(head.body, BodyKind::Empty);
    assert!(head.keep_alive && !head.must_close && !head.expect_continue);
    assert_eq!(head.authority.as_deref(), Some("example.com"));
    assert_eq!(head.head_len, raw.len() - 4);
}

#[test]
fn request_fed_one_byte_at_a_time_completes_only_at_the_end() {
    let raw = b"\r\nPOST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    for n in 0..raw.len() {
        assert_eq!(parse(&raw[..n]), Ok(None), "prefix of {n} bytes");
    }
    let head = ok(raw);
    assert_eq!(head.head_len, raw.len());
    assert_eq!(head.body, BodyKind::Length(3));
}

#[test]
fn one_leading_crlf_is_tolerated_but_not_two() {
    assert_eq!(ok(b"\r\nGET / HTTP/1.0\r\n\r\n").head_len, 20);
    assert_eq!(
        err(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n"),
        ParseError::ExtraLeadingEmptyLine
    );
    assert!(matches!(
        err(b"\nGET / HTTP/1.0\r\n\r\n"),
        ParseError::RequestLineBareLf { .. }
    ));
}

#[test]
fn bare_lf_anywhere_in_the_head_is_rejected() {
    assert!(matches!(
        err(b"GET / HTTP/1.1\nHost: h\r\n\r\n"),
        ParseError::RequestLineBareLf { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\n\r\n"),
        ParseError::HeaderBareLf { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\n\n"),
        ParseError::HeaderBareLf { .. }
    ));
}

#[test]
fn bare_cr_anywhere_in_the_head_is_rejected() {
    assert!(matches!(
        err(b"GET /\rx HTTP/1.1\r\n"),
        ParseError::InvalidTargetByte { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\rX"),
        ParseError::MalformedRequestLine { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nA: b\rc\r\n\r\n"),
        ParseError::InvalidHeaderValue { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nA\r: b\r\n\r\n"),
        ParseError::InvalidHeaderName { .. }
    ));
}

#[test]
fn header_names_must_be_tokens() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n"),
        ParseError::InvalidHeaderName {
            name: b"Bad Name".to_vec()
        }
    );
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"),
        ParseError::InvalidHeaderName { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nX\xe9: v\r\n\r\n"),
        ParseError::InvalidHeaderName { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n"),
        ParseError::HeaderMissingColon { .. }
    ));
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n"),
        ParseError::HeaderMissingColon { .. }
    ));
}

#[test]
fn header_value_controls_are_rejected_but_obs_text_kept() {
    for ctl in [0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1f, 0x7f] {
        let mut raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a".to_vec();
        raw.push(ctl);
        raw.extend_from_slice(b"b\r\n\r\n");
        assert_eq!(
            err(&raw),
            ParseError::InvalidHeaderValue {
                name: b"X-A".to_vec()
            },
            "{ctl:#x}"
        );
    }
    let head = ok(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: caf\xe9\tok\r\n\r\n");
    assert_eq!(head.header("x-a"), Some(&b"caf\xe9\tok"[..]));
}

#[test]
fn obsolete_line_folding_is_rejected() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: a\r\n b\r\n\r\n"),
        ParseError::ObsoleteFolding {
            name: b"X-LONG".to_vec()
        }
    );
    assert!(matches!(
        err(b"GET / HTTP/1.1\r\n\tHost: h\r\n\r\n"),
        ParseError::InvalidHeaderName { .. }
    ));
}

/// Parses with one leniency switch set by `switch`, whole and byte by byte (the
/// resuming parse must agree).
pub(in crate::http) fn lenient(
    raw: &[u8],
    field_size: i64,
    switch: fn(&mut Leniency),
) -> Result<Option<RequestHead>, ParseError> {
    let mut limits = Limits::from_settings(4094, 100, field_size);
    switch(&mut limits.lenient);
    let whole = parse_head(raw, &limits);
    let mut scan = HeadScan::default();
    let mut last = Ok(None);
    for end in 1..=raw.len() {
        last = parse_head_resuming(&raw[..end], &limits, &mut scan);
        if !matches!(last, Ok(None)) {
            break;
        }
    }
    assert_eq!(
        whole
            .as_ref()
            .map(|h| h.as_ref().map(|h| h.headers.clone())),
        last.as_ref().map(|h| h.as_ref().map(|h| h.headers.clone())),
        "byte-by-byte parse disagrees"
    );
    whole
}

fn folding(l: &mut Leniency) {
    l.obsolete_folding = true;
}

#[test]
fn permit_obsolete_folding_joins_continuations_with_one_space() {
    let head = lenient(
        b"GET / HTTP/1.1\r\nHost: h\r\nLong: one\r\n  two \r\n\tthree\r\nX: y\r\n\r\n",
        8190,
        folding,
    )
    .unwrap()
    .unwrap();
    assert_eq!(head.header("long"), Some(&b"one two three"[..]));
    assert_eq!(head.header("x"), Some(&b"y"[..]));
    assert_eq!(head.headers.len(), 3);
    // Before the first field it is still refused; a folded value is still checked.
    assert!(matches!(
        lenient(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 8190, folding),
        Err(ParseError::InvalidHeaderName { .. })
    ));
    assert!(matches!(
        lenient(
            b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n c\x7f\r\n\r\n",
            8190,
            folding
        ),
        Err(ParseError::InvalidHeaderValue { .. })
    ));
}

#[test]
fn folded_lines_count_toward_their_field_size_not_the_field_count() {
    // "A: b" + CRLF = 6, each " c" + CRLF = 4: 14 in all, each line far below 13.
    let raw = b"GET / HTTP/1.0\r\nA: b\r\n c\r\n c\r\n\r\n";
    assert_eq!(
        lenient(raw, 13, folding),
        Err(ParseError::HeaderFieldTooLarge)
    );
    assert!(lenient(raw, 14, folding).unwrap().is_some());
    let mut limits = Limits::from_settings(4094, 1, 8190);
    limits.lenient.obsolete_folding = true;
    let head = parse_head(b"GET / HTTP/1.0\r\nA: b\r\n c\r\n\r\n", &limits);
    assert_eq!(head.unwrap().unwrap().header("a"), Some(&b"b c"[..]));
}

#[test]
fn a_refused_fold_is_an_obsolete_folding_error_even_at_the_limits() {
    // Gunicorn refuses the fold before it counts fields or measures the line.
    let fold = ParseError::ObsoleteFolding {
        name: b"A".to_vec(),
    };
    let limits = Limits::from_settings(4094, 1, 8190);
    assert_eq!(
        parse_head(b"GET / HTTP/1.0\r\nA: b\r\n c\r\n\r\n", &limits),
        Err(fold.clone())
    );
    let long = format!("GET / HTTP/1.0\r\nA: b\r\n {}\r\n\r\n", "c".repeat(40));
    assert_eq!(
        parse_head(long.as_bytes(), &Limits::from_settings(4094, 100, 20)),
        Err(fold)
    );
}

#[test]
fn strip_header_spaces_drops_whitespace_before_the_colon() {
    let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length \t: 3\r\n\r\nabc";
    let strip = |l: &mut Leniency| l.strip_header_spaces = true;
    let head = lenient(raw, 8190, strip).unwrap().unwrap();
    assert_eq!(head.body, BodyKind::Length(3));
    assert_eq!(head.headers[1].name, "Content-Length");
    assert!(matches!(err(raw), ParseError::InvalidHeaderName { .. }));
    // Only before the colon: a name with inner space is still no token.
    assert!(matches!(
        lenient(b"GET / HTTP/1.1\r\nHost: h\r\nA B: c\r\n\r\n", 8190, strip),
        Err(ParseError::InvalidHeaderName { .. })
    ));
}

#[test]
fn duplicate_host_content_type_and_length_are_rejected() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        ParseError::DuplicateHeader { name: "HOST" }
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\ncontent-type: a\r\n\r\n"),
        ParseError::DuplicateHeader {
            name: "CONTENT-TYPE"
        }
    );
    assert_eq!(
        err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
        ParseError::DuplicateHeader {
            name: "CONTENT-LENGTH"
        }
    );
    assert_eq!(
        err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").to_string(),
        "Invalid HTTP Header: 'HOST'"
    );
}

#[test]
fn content_length_must_be_digits_only() {
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n").body,
        BodyKind::Length(7)
    );
    assert_eq!(
        ok(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:  5 \r\n\r\n").body,
        BodyKind::Length(5)
    );
    for v in [
        &b"5, 5"[..],
        b"+5",
        b"-1",
        b"5 5",
        b"0x5",
        b"",
        b"99999999999999999999",
    ] {
        let mut raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ".to_vec();
        raw.extend_from_slice(v);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err(&raw), ParseError::InvalidContentLength, "{v:?}");
    }
}

fn te(value: &[u8], version: &[u8]) -> Result<Option<RequestHead>, ParseError> {
    let mut raw = b"POST / ".to_vec();
    raw.extend_from_slice(version);
    raw.extend_from_slice(b"\r\nHost: h\r\nTransfer-Encoding: ");
    raw.extend_from_slice(value);
    raw.extend_from_slice(b"\r\n\r\n");
    parse(&raw)
}

#[test]
fn transfer_encoding_rules_follow_gunicorn_27() {
    let head = te(b"chunked", b"HTTP/1.1").unwrap().unwrap();
    assert_eq!((head.body, head.must_close), (BodyKind::Chunked, false));
    let head = te(b"gzip, chunked", b"HTTP/1.1").unwrap().unwrap();
    assert_eq!((head.body, head.must_close), (BodyKind::Chunked, true));
    let head = te(b"identity,\tChunked ", b"HTTP/1.1").unwrap().unwrap();
    assert_eq!((head.body, head.must_close), (BodyKind::Chunked, false));

    assert!(matches!(
        te(b"foo", b"HTTP/1.1"),
        Err(ParseError::UnsupportedTransferCoding { .. })
    ));
    assert!(matches!(
        te(b"chunked, foo", b"HTTP/1.1"),
        Err(ParseError::UnsupportedTransferCoding { .. })
    ));
    assert!(matches!(
        te(b"chunked,", b"HTTP/1.1"),
        Err(ParseError::UnsupportedTransferCoding { .. })
    ));
    // A control byte never reaches the coding check: it is an invalid value (#3364).
    assert!(matches!(
        te(b"\x0bchunked", b"HTTP/1.1"),
        Err(ParseError::InvalidHeaderValue { .. })
    ));
    assert_eq!(
        te(b"chunked, chunked", b"HTTP/1.1"),
        Err(ParseError::ChunkedTwice)
    );
    assert_eq!(
        te(b"chunked, gzip", b"HTTP/1.1"),
        Err(ParseError::CodingAfterChunked)
    );
    assert_eq!(
        te(b"chunked, identity", b"HTTP/1.1"),
        Err(ParseError::CodingAfterChunked)
    );
    assert_eq!(
        te(b"identity", b"HTTP/1.1"),
        Err(ParseError::ChunkedNotLast)
    );
    assert_eq!(te(b"gzip", b"HTTP/1.1"), Err(ParseError::ChunkedNotLast));
    assert_eq!(
        te(b"chunked", b"HTTP/1.0"),
        Err(ParseError::TransferEncodingOnHttp10)
    );
    assert_eq!(
        te(b"foo", b"HTTP/1.1").unwrap_err().to_string(),
        "Unsupported transfer coding: 'foo'"
    );
}

#[test]
fn transfer_encoding_split_over_two_headers_counts_as_one_list() {
    let raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(ok(raw).body, BodyKind::Chunked);
    let raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(err(raw), ParseError::ChunkedTwice);
}

#[test]
fn content_length_with_chunked_is_rejected() {
    let raw =
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(err(raw), ParseError::ContentLengthWithChunked);
    let raw =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(err(raw), ParseError::ContentLengthWithChunked);
}

#[test]
fn expect_other_than_100_continue_gets_417() {
    let head =
        ok(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
    assert!(head.expect_continue);
    let head = ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    assert!(!head.expect_continue);
    let e = err(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: fly\r\n\r\n");
    assert_eq!(
        (e.status(), e.to_string().as_str()),
        (417, "Unable to comply with expectation: 'fly'")
    );
}

#[test]
fn http_1_1_without_host_is_rejected() {
    assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), ParseError::MissingHost);
    assert_eq!(
        err(b"GET http://h/ HTTP/1.1\r\n\r\n"),
        ParseError::MissingHost
    );
    assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").authority, None);
    assert_eq!(
        ok(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").authority.as_deref(),
        Some("")
    );
}

#[test]
fn invalid_host_values_are_rejected() {
    for v in [
        &b"a b"[..],
        b"a/b",
        b"h:99999",
        b"h:x",
        b"[::1",
        b"u@h",
        b"h:1:2",
    ] {
        let mut raw = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        raw.extend_from_slice(v);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(err(&raw), ParseError::InvalidHost, "{v:?}");
    }
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(ok(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!ok(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn limits_are_clamped_like_gunicorn() {
    assert_eq!(
        Limits::from_settings(0, 0, 0),
        Limits {
            request_line: 0,
            fields: 32768,
            field_size: 8190,
            lenient: Leniency::default(),
        }
    );
    assert_eq!(
        Limits::from_settings(9000, 40000, 20000),
        Limits {
            request_line: 8190,
            fields: 32768,
            field_size: 20000,
            lenient: Leniency::default(),
        }
    );
    assert_eq!(
        Limits::from_settings(8190, 1, -5),
        Limits {
            request_line: 8190,
            fields: 1,
            field_size: 8190,
            lenient: Leniency::default(),
        }
    );
    assert_eq!(
        Limits::from_settings(-1, -1, 1),
        Limits {
            request_line: 8190,
            fields: 32768,
            field_size: 1,
            lenient: Leniency::default(),
        }
    );
    assert_eq!(
        Limits::default(),
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
            lenient: Leniency::default(),
        }
    );
    assert_eq!(Limits::default().max_header_section(), 100 * 8192 + 4);
}

#[test]
fn long_request_line_gets_414_even_before_its_crlf() {
    let limits = Limits::from_settings(10, 100, 8190);
    assert_eq!(
        parse_head(b"GET /12345 HTTP/1.1", &limits)
            .unwrap_err()
            .status(),
        414
    );
    assert_eq!(
        parse_head(b"GET /12345 HTTP/1.1\r\n", &limits),
        Err(ParseError::RequestLineTooLong {
            size: 19,
            limit: 10
        })
    );
    assert_eq!(parse_head(b"GET /12345", &limits), Ok(None));
    assert_eq!(parse_head(b"GET /12345\r", &limits), Ok(None));
    assert!(parse_head(
        b"GET /1234 HTTP/1.0\r\n\r\n",
        &Limits::from_settings(18, 100, 8190)
    )
    .is_ok());
}

#[test]
fn unlimited_request_line_accepts_long_targets() {
    let limits = Limits::from_settings(0, 100, 8190);
    let mut raw = b"GET /".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 20_000));
    raw.extend_from_slice(b" HTTP/1.0\r\n\r\n");
    assert_eq!(
        parse_head(&raw, &limits).unwrap().unwrap().path.len(),
        20_001
    );
}

#[test]
fn too_many_headers_get_431() {
    let limits = Limits::from_settings(4094, 2, 8190);
    assert!(parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n", &limits).is_ok());
    let e = parse_head(
        b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n",
        &limits,
    )
    .unwrap_err();
    assert_eq!(
        (e.status(), e.to_string().as_str()),
        (431, "limit request headers fields")
    );
    // Detected while the third header is still arriving.
    assert_eq!(
        parse_head(b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB", &limits),
        Err(ParseError::TooManyHeaders)
    );
}

#[test]
fn long_header_line_gets_431_even_before_its_crlf() {
    let limits = Limits::from_settings(4094, 100, 10);
    assert!(parse_head(b"GET / HTTP/1.0\r\nA: 12345\r\n\r\n", &limits).is_ok());
    assert_eq!(
        parse_head(b"GET / HTTP/1.0\r\nA: 123456\r\n\r\n", &limits),
        Err(ParseError::HeaderFieldTooLarge)
    );
    assert_eq!(
        parse_head(b"GET / HTTP/1.0\r\nA: 123456", &limits),
        Err(ParseError::HeaderFieldTooLarge)
    );
    assert_eq!(
        parse_head(b"GET / HTTP/1.0\r\nA: 12345\r", &limits),
        Ok(None)
    );
}

#[test]
fn huge_header_counts_use_the_heap_path() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..99 {
        raw.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let head = ok(&raw);
    assert_eq!(head.headers.len(), 100);
    assert_eq!(head.header("x-98"), Some(&b"98"[..]));
}

#[test]
fn error_texts_quote_the_request_line() {
    assert_eq!(
        err(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n").page_message(),
        "Invalid Request Line 'Invalid HTTP request line: 'GET * HTTP/1.1''"
    );
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nHost: h\r\nA\x01: b\r\n\r\n").to_string(),
        "Invalid HTTP header name: 'A\\x01'"
    );
}

#[test]
fn pipelined_bytes_are_not_consumed() {
    let raw = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    let head = ok(raw);
    assert_eq!(head.path, "/1");
    assert_eq!(ok(&raw[head.head_len..]).path, "/2");
}
