#![allow(clippy::unwrap_used)]

use super::*;

fn chunked(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ParseError> {
    let mut d = BodyDecoder::chunked();
    let (out, used) = decode_all(&mut d, input)?;
    Ok((out, used, d.is_done()))
}

fn chunked_err(input: &[u8]) -> ParseError {
    chunked(input).unwrap_err()
}

#[test]
fn length_body_stops_at_its_end() {
    let mut d = BodyDecoder::new(&BodyKind::Length(5), Leniency::default());
    assert_eq!(d.remaining_len(), Some(5));
    let mut out = Vec::new();
    assert_eq!(d.decode(b"hel", &mut out, 100).unwrap(), 3);
    assert_eq!(d.remaining_len(), Some(2));
    assert_eq!(d.decode(b"loGET /", &mut out, 100).unwrap(), 2);
    assert_eq!(out, b"hello");
    assert!(d.is_done());
    assert_eq!(d.decode(b"GET /", &mut out, 100).unwrap(), 0);
}

#[test]
fn length_body_respects_max() {
    let mut d = BodyDecoder::length(10);
    let mut out = Vec::new();
    assert_eq!(d.decode(b"0123456789", &mut out, 4).unwrap(), 4);
    assert_eq!(out, b"0123");
    assert!(!d.is_done());
}

#[test]
fn empty_body_is_done_at_once() {
    let mut d = BodyDecoder::new(&BodyKind::Empty, Leniency::default());
    assert!(d.is_done());
    assert_eq!(d.decode(b"xyz", &mut Vec::new(), 10).unwrap(), 0);
    assert_eq!(d.remaining_len(), Some(0));
    assert!(BodyDecoder::new(&BodyKind::Length(0), Leniency::default()).is_done());
}

#[test]
fn chunked_body_is_decoded_and_nothing_after_it_consumed() {
    let input = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\n\r\nNEXT";
    let (out, used, done) = chunked(input).unwrap();
    assert_eq!(out, b"hello world");
    assert_eq!(used, input.len() - 4);
    assert!(done);
}

#[test]
fn chunked_body_fed_one_byte_at_a_time_gives_the_same_result() {
    let input = b"4;a=\"q\\\"x\"\r\nWiki\r\n00005\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: ok\r\n\r\n";
    let mut d = BodyDecoder::chunked();
    let mut out = Vec::new();
    for (i, b) in input.iter().enumerate() {
        assert!(!d.is_done(), "done early at {i}");
        assert_eq!(
            d.decode(std::slice::from_ref(b), &mut out, usize::MAX)
                .unwrap(),
            1
        );
    }
    assert!(d.is_done());
    assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
    assert_eq!(d.remaining_len(), None);
}

#[test]
fn chunked_max_limits_appended_bytes_and_resumes() {
    let input = b"A\r\n0123456789\r\n0\r\n\r\n";
    let mut d = BodyDecoder::chunked();
    let mut out = Vec::new();
    let used = d.decode(input, &mut out, 4).unwrap();
    assert_eq!((used, out.as_slice()), (7, &b"0123"[..]));
    let used2 = d.decode(&input[used..], &mut out, 100).unwrap();
    assert_eq!(used + used2, input.len());
    assert_eq!(out, b"0123456789");
    assert!(d.is_done());
}

#[test]
fn chunked_size_must_be_plain_hex() {
    for bad in [
        &b"\r\n"[..],
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5_0\r\n",
        b"0x5\r\n",
        b"g\r\n",
    ] {
        assert!(
            matches!(chunked_err(bad), ParseError::InvalidChunkSize { .. }),
            "{bad:?}"
        );
    }
    assert_eq!(
        chunked(b"0000000000000000000000005\r\nhello\r\n0\r\n\r\n")
            .unwrap()
            .0,
        b"hello"
    );
    assert_eq!(
        chunked(b"a\r\n0123456789\r\n0\r\n\r\n").unwrap().0,
        b"0123456789"
    );
}

#[test]
fn chunked_size_overflow_is_rejected() {
    assert!(matches!(
        chunked_err(b"10000000000000000\r\n"),
        ParseError::ChunkSizeOverflow { .. }
    ));
    let mut d = BodyDecoder::chunked();
    let used = d
        .decode(b"FFFFFFFFFFFFFFFF\r\nab", &mut Vec::new(), 10)
        .unwrap();
    assert_eq!(used, 20);
}

#[test]
fn chunk_extensions_follow_the_grammar() {
    for good in [
        &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
        b"5 ; a = b\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"b c\";d\r\nhello\r\n0;z=1\r\n\r\n",
        b"5;a=\"\\\"\"\r\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(chunked(good).unwrap().0, b"hello", "{good:?}");
    }
    for bad in [
        &b"5;\r\n"[..],
        b"5;=b\r\n",
        b"5;a=\r\n",
        b"5;a=\"b\r\n",
        b"5;a=b c\r\n",
        b"5;a=(b)\r\n",
        b"5 \r\n",
        b"5;a\rb\r\n",
    ] {
        assert!(
            matches!(chunked_err(bad), ParseError::InvalidChunkExtension { .. }),
            "{bad:?}"
        );
    }
}

#[test]
fn bare_cr_in_chunk_extension_is_rejected_before_the_line_ends() {
    let mut d = BodyDecoder::chunked();
    let e = d.decode(b"5;a\rb", &mut Vec::new(), 10).unwrap_err();
    assert!(matches!(e, ParseError::InvalidChunkExtension { .. }));
    let mut d = BodyDecoder::chunked();
    assert_eq!(d.decode(b"5;a\r", &mut Vec::new(), 10).unwrap(), 4);
    assert!(d.decode(b"x", &mut Vec::new(), 10).is_err());
}

#[test]
fn bare_lf_in_chunked_framing_is_rejected() {
    assert!(matches!(
        chunked_err(b"5\nhello\r\n0\r\n\r\n"),
        ParseError::InvalidChunkSize { .. }
    ));
    assert!(matches!(
        chunked_err(b"5\r\nhello\n0\r\n\r\n"),
        ParseError::ChunkMissingTerminator { .. }
    ));
    assert!(matches!(
        chunked_err(b"0\r\nA: b\n\r\n"),
        ParseError::InvalidTrailer { .. }
    ));
    assert!(matches!(
        chunked_err(b"0\r\n\n"),
        ParseError::InvalidTrailer { .. }
    ));
}

#[test]
fn chunk_data_must_be_followed_by_crlf() {
    let e = chunked_err(b"5\r\nhelloXX0\r\n\r\n");
    assert_eq!(
        e,
        ParseError::ChunkMissingTerminator {
            found: b"XX".to_vec()
        }
    );
    assert_eq!(
        e.to_string(),
        "Invalid chunk terminator is not '\\r\\n': b'XX'"
    );
    assert!(matches!(
        chunked_err(b"5\r\nhello\rX"),
        ParseError::ChunkMissingTerminator { .. }
    ));
}

#[test]
fn size_line_length_is_bounded() {
    let mut line = b"5;a=".to_vec();
    line.extend(std::iter::repeat_n(b'b', MAX_CHUNK_SIZE_LINE_BYTES));
    assert_eq!(
        chunked_err(&line),
        ParseError::ChunkSizeLineTooLong {
            limit: MAX_CHUNK_SIZE_LINE_BYTES
        }
    );
}

#[test]
fn trailer_section_is_bounded() {
    let mut body = b"0\r\n".to_vec();
    for i in 0..2000 {
        body.extend_from_slice(format!("X-T{i}: value\r\n").as_bytes());
    }
    assert_eq!(
        chunked_err(&body),
        ParseError::TrailerSectionTooLarge {
            limit: MAX_TRAILER_SECTION_BYTES
        }
    );
}

#[test]
fn trailers_follow_the_folding_and_space_switches() {
    let decode = |body: &[u8], lenient: Leniency| {
        decode_all(&mut BodyDecoder::chunked_with(lenient), body).map(|(out, _)| out)
    };
    let folding = Leniency {
        obsolete_folding: true,
        ..Leniency::default()
    };
    let strip = Leniency {
        strip_header_spaces: true,
        ..Leniency::default()
    };
    let folded = &b"1\r\na\r\n0\r\nX: a\r\n b\r\n\r\n"[..];
    let spaced = &b"1\r\na\r\n0\r\nX : a\r\n\r\n"[..];
    assert_eq!(decode(folded, folding), Ok(b"a".to_vec()));
    assert_eq!(decode(spaced, strip), Ok(b"a".to_vec()));
    for (body, lenient) in [(folded, strip), (spaced, folding)] {
        assert!(matches!(
            decode(body, lenient),
            Err(ParseError::InvalidTrailer { .. })
        ));
    }
    // A fold needs a field to continue; a folded value is still checked.
    for body in [&b"0\r\n x: a\r\n\r\n"[..], b"0\r\nX: a\r\n \x01\r\n\r\n"] {
        assert!(matches!(
            decode(body, folding),
            Err(ParseError::InvalidTrailer { .. })
        ));
    }
}

#[test]
fn trailers_are_kept_for_the_hooks() {
    let input = b"3\r\nabc\r\n0\r\nX-Checksum:  1 \r\nx-b:\r\nX-Fold: a\r\n\t b \r\n\r\nGET";
    let lenient = Leniency {
        obsolete_folding: true,
        ..Leniency::default()
    };
    // Whole, and one byte at a time: the same fields.
    let mut whole = BodyDecoder::chunked_with(lenient);
    let (out, used) = decode_all(&mut whole, input).unwrap();
    assert_eq!((out.as_slice(), used), (&b"abc"[..], input.len() - 3));
    let mut bytewise = BodyDecoder::chunked_with(lenient);
    let mut out = Vec::new();
    for b in &input[..input.len() - 3] {
        assert_eq!(
            bytewise
                .decode(std::slice::from_ref(b), &mut out, 100)
                .unwrap(),
            1
        );
    }
    let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"X-CHECKSUM".to_vec(), b"1".to_vec()),
        (b"X-B".to_vec(), b"".to_vec()),
        (b"X-FOLD".to_vec(), b"a b".to_vec()),
    ];
    assert_eq!(whole.take_trailers(), expected);
    assert_eq!(bytewise.take_trailers(), expected);
    // Only once the body is done; none for other framings.
    let mut unfinished = BodyDecoder::chunked();
    decode_all(&mut unfinished, b"0\r\nX: 1\r\n").unwrap();
    assert!(unfinished.take_trailers().is_empty());
    assert!(BodyDecoder::length(0).take_trailers().is_empty());
}

#[test]
fn trailers_are_checked_but_not_exposed() {
    let (out, _, done) = chunked(b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-B:\r\n\r\n").unwrap();
    assert_eq!((out.as_slice(), done), (&b"abc"[..], true));
    for name in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "TRAILER",
        "Authorization",
        "te",
    ] {
        let body = format!("0\r\n{name}: x\r\n\r\n");
        assert_eq!(
            chunked_err(body.as_bytes()),
            ParseError::ForbiddenTrailer {
                name: name.to_ascii_uppercase().into_bytes()
            },
        );
    }
    for bad in [
        &b"0\r\nNoColon\r\n\r\n"[..],
        b"0\r\nA B: c\r\n\r\n",
        b"0\r\nA: \x01\r\n\r\n",
        b"0\r\nA: b\r\n c\r\n\r\n",
    ] {
        assert!(
            matches!(chunked_err(bad), ParseError::InvalidTrailer { .. }),
            "{bad:?}"
        );
    }
}

#[test]
fn truncated_chunked_body_is_an_error_at_eof() {
    let mut d = BodyDecoder::chunked();
    let (out, _) = decode_all(&mut d, b"5\r\nhello\r\n0\r\n").unwrap();
    assert_eq!(out, b"hello");
    assert!(!d.is_done());
    assert_eq!(d.check_eof(), Err(ParseError::BodyTruncated));
    assert_eq!(BodyDecoder::length(5).check_eof(), Ok(()));
}
