//! Chunked bodies: decoding everything at once and one byte at a time give the same body,
//! the same error and consume the same bytes; nothing panics; no byte past the body's end is
//! taken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgunicorn::http::body::BodyDecoder;

/// An error as the client sees it: its status (details such as the bytes of a bad size
/// line seen so far depend on how much had arrived; the corpus tests compare statuses too).
fn kind(e: &rgunicorn::http::error::ParseError) -> String {
    e.status().to_string()
}

/// Decodes `data` as a chunked body, offering at most `step` bytes per call; returns the
/// bytes consumed (or the error's kind) and the body.
fn decode(data: &[u8], step: usize) -> (Result<usize, String>, Vec<u8>) {
    let mut decoder = BodyDecoder::chunked();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() && !decoder.is_done() {
        let end = data.len().min(pos + step);
        match decoder.decode(&data[pos..end], &mut out, usize::MAX) {
            Ok(0) if end == data.len() => break,
            Ok(n) => pos += n,
            Err(e) => return (Err(kind(&e)), out),
        }
    }
    let result = if decoder.is_done() {
        Ok(pos)
    } else {
        decoder.check_eof().map(|()| pos).map_err(|e| kind(&e))
    };
    (result, out)
}

fuzz_target!(|data: &[u8]| {
    let (a, body_a) = decode(data, usize::MAX);
    let (b, body_b) = decode(data, 1);
    assert_eq!(a, b, "whole and byte-at-a-time disagree");
    if a.is_ok() {
        assert_eq!(body_a, body_b);
    }
    if let Ok(consumed) = a {
        assert!(consumed <= data.len());
        assert!(body_a.len() <= consumed);
    }
});
