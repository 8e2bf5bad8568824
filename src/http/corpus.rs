//! The data-driven request corpus (`tests/requests/{valid,invalid}`), in the style
//! of Gunicorn's `tests/requests`. See `tests/requests/README.md` for the format.
//!
//! Each case runs twice: with the whole file in one buffer, and fed one byte at a
//! time (head and body), which must give the same result.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use super::body::BodyDecoder;
use super::error::ParseError;
use super::request::{parse_head, parse_head_resuming, HeadScan, Limits, RequestHead};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/requests");

/// What happened to one request: the head and decoded body, or an error.
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // test-only, one value at a time
enum Outcome {
    Parsed {
        head: RequestHead,
        body: Vec<u8>,
        rest: usize,
    },
    Failed(ParseError),
    /// The input ended inside the head.
    Incomplete,
}

/// Parses with the whole input available at once.
fn run_whole(data: &[u8], limits: &Limits) -> Outcome {
    let head = match parse_head(data, limits) {
        Ok(Some(head)) => head,
        Ok(None) => return Outcome::Incomplete,
        Err(e) => return Outcome::Failed(e),
    };
    let mut decoder = BodyDecoder::new(&head.body, limits.lenient);
    let mut body = Vec::new();
    let mut pos = head.head_len;
    loop {
        match decoder.decode(&data[pos..], &mut body, usize::MAX) {
            Ok(0) => break,
            Ok(n) => pos += n,
            Err(e) => return Outcome::Failed(e),
        }
    }
    if let Err(e) = decoder.check_eof() {
        return Outcome::Failed(e);
    }
    Outcome::Parsed {
        head,
        body,
        rest: data.len() - pos,
    }
}

/// Parses with the input arriving one byte at a time, resuming where the last attempt
/// stopped, as the worker does.
fn run_bytewise(data: &[u8], limits: &Limits) -> Outcome {
    let mut end = 0;
    let mut scan = HeadScan::default();
    let head = loop {
        match parse_head_resuming(&data[..end], limits, &mut scan) {
            Ok(Some(head)) => break head,
            Ok(None) if end < data.len() => end += 1,
            Ok(None) => return Outcome::Incomplete,
            Err(e) => return Outcome::Failed(e),
        }
    };
    assert_eq!(
        end, head.head_len,
        "head completed before its last byte arrived"
    );
    let mut decoder = BodyDecoder::new(&head.body, limits.lenient);
    let mut body = Vec::new();
    let mut pos = head.head_len;
    while pos < data.len() && !decoder.is_done() {
        match decoder.decode(&data[pos..pos + 1], &mut body, usize::MAX) {
            Ok(n) => {
                assert_eq!(n, 1, "one byte offered inside the body, {n} consumed");
                pos += n;
            }
            Err(e) => return Outcome::Failed(e),
        }
    }
    if let Err(e) = decoder.check_eof() {
        return Outcome::Failed(e);
    }
    Outcome::Parsed {
        head,
        body,
        rest: data.len() - pos,
    }
}

/// Undoes the `\r`, `\n`, `\t`, `\\`, `\xNN` escapes of an expectation value.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                    i += 2;
                }
                other => panic!("unknown escape \\{}", char::from(other)),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The `.expect` lines as (key, value) pairs, comments and blanks skipped.
fn expectations(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(' ') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.to_owned(), String::new()),
        })
        .collect()
}

fn limits_of(expect: &[(String, String)]) -> Limits {
    match expect.iter().find(|(k, _)| k == "limits") {
        Some((_, v)) => {
            let n: Vec<i64> = v.split_whitespace().map(|x| x.parse().unwrap()).collect();
            Limits::from_settings(n[0], n[1], n[2])
        }
        None => Limits::default(),
    }
}

fn cases(dir: &str) -> Vec<(PathBuf, PathBuf)> {
    let mut cases: Vec<_> = fs::read_dir(Path::new(ROOT).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "http"))
        .map(|p| {
            let expect = p.with_extension("expect");
            assert!(expect.exists(), "{} has no .expect", p.display());
            (p, expect)
        })
        .collect();
    cases.sort();
    cases
}

fn check_valid(http: &Path, expect: &[(String, String)]) {
    let data = fs::read(http).unwrap();
    let limits = limits_of(expect);
    let whole = run_whole(&data, &limits);
    assert_eq!(
        run_bytewise(&data, &limits),
        whole,
        "byte-at-a-time differs"
    );
    let Outcome::Parsed { head, body, rest } = whole else {
        panic!("expected success, got {whole:?}");
    };
    let mut headers = Vec::new();
    let mut rest_expected = 0;
    for (key, value) in expect {
        let bool_of = |v: &str| v.parse::<bool>().unwrap();
        match key.as_str() {
            "limits" => {}
            "method" => assert_eq!(&head.method, value, "method"),
            "target" => assert_eq!(&head.target, value, "target"),
            "path" => assert_eq!(&head.path, value, "path"),
            "query" => assert_eq!(&head.query, value, "query"),
            "fragment" => assert_eq!(&head.fragment, value, "fragment"),
            "version" => assert_eq!(format!("{}.{}", head.version.0, head.version.1), *value),
            "header" => {
                let (name, v) = value.split_once(':').unwrap();
                headers.push((name.to_owned(), unescape(v.trim_start_matches(' '))));
            }
            "body" => assert_eq!(body, unescape(value), "body"),
            "body_kind" => assert_eq!(format!("{:?}", head.body), *value, "body kind"),
            "keep_alive" => assert_eq!(head.keep_alive, bool_of(value), "keep_alive"),
            "must_close" => assert_eq!(head.must_close, bool_of(value), "must_close"),
            "expect_continue" => {
                assert_eq!(head.expect_continue, bool_of(value), "expect_continue");
            }
            "authority" => {
                let want = (value != "-").then_some(value.as_str());
                assert_eq!(head.authority.as_deref(), want, "authority");
            }
            "rest" => rest_expected = value.parse().unwrap(),
            other => panic!("unknown expectation key {other:?}"),
        }
    }
    if !headers.is_empty() {
        let got: Vec<_> = head
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect();
        assert_eq!(got, headers, "headers");
    }
    assert_eq!(rest, rest_expected, "bytes left after the request");
}

fn check_invalid(http: &Path, expect: &[(String, String)]) {
    let data = fs::read(http).unwrap();
    let limits = limits_of(expect);
    let whole = run_whole(&data, &limits);
    let Outcome::Failed(err) = &whole else {
        panic!("expected an error, got {whole:?}");
    };
    let Outcome::Failed(bytewise) = run_bytewise(&data, &limits) else {
        panic!("byte-at-a-time parse succeeded");
    };
    assert_eq!(bytewise.status(), err.status(), "byte-at-a-time status");
    for (key, value) in expect {
        match key.as_str() {
            "limits" => {}
            "status" => assert_eq!(err.status().to_string(), *value, "status of {err:?}"),
            "error" => assert_eq!(err.to_string(), *value, "error text"),
            "page" => assert_eq!(err.page_message(), *value, "page message"),
            other => panic!("unknown expectation key {other:?}"),
        }
    }
}

/// A tiny deterministic PRNG (xorshift64*), so the mutation test needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_corpus_requests_never_panic_and_parse_the_same_byte_by_byte() {
    const INTERESTING: &[u8] = b"\r\n :;,\t\x00\x7f\xff0aF\"=";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let limits = [Limits::default(), Limits::from_settings(24, 3, 24)];
    for (http, _) in cases("valid").into_iter().chain(cases("invalid")) {
        let original = fs::read(&http).unwrap();
        for round in 0..40 {
            let mut data = original.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(data.len() + 1);
                let byte = INTERESTING[rng.below(INTERESTING.len())];
                match rng.below(3) {
                    0 if at < data.len() => data[at] = byte,
                    1 if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.insert(at, byte),
                }
            }
            let limits = &limits[round % 2];
            let whole = run_whole(&data, limits);
            let bytewise = run_bytewise(&data, limits);
            let same = match (&whole, &bytewise) {
                (Outcome::Failed(_), Outcome::Failed(_)) => true,
                _ => whole == bytewise,
            };
            assert!(
                same,
                "{}: {data:?}\nwhole: {whole:?}\nbytewise: {bytewise:?}",
                http.display()
            );
        }
    }
}

#[test]
fn valid_requests_in_the_corpus_parse_as_expected() {
    let cases = cases("valid");
    assert!(cases.len() >= 25, "only {} valid cases", cases.len());
    for (http, expect) in cases {
        let expect = expectations(&expect);
        let result = std::panic::catch_unwind(|| check_valid(&http, &expect));
        assert!(result.is_ok(), "valid case {} failed", http.display());
    }
}

#[test]
fn invalid_requests_in_the_corpus_are_refused_with_their_status() {
    let cases = cases("invalid");
    assert!(cases.len() >= 40, "only {} invalid cases", cases.len());
    for (http, expect) in cases {
        let expect = expectations(&expect);
        assert!(
            expect.iter().any(|(k, _)| k == "status"),
            "{} has no status line",
            http.display()
        );
        let result = std::panic::catch_unwind(|| check_invalid(&http, &expect));
        assert!(result.is_ok(), "invalid case {} failed", http.display());
    }
}
