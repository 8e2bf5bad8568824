//! Request head parsing: bytes in, [`RequestHead`] or [`ParseError`] out.
//!
//! Owns the request line (RFC 9112 §3), the header section (RFC 9112 §5), the
//! size limits (`limit_request_line`, `limit_request_fields`,
//! `limit_request_field_size`) and the framing decision (RFC 9112 §6): which body
//! follows, whether the client wants keep-alive, whether framing forces a close.
//! Rules are Gunicorn 27.0.1's (GUNICORN.md §6.2) plus a mandatory, valid `Host`.
//!
//! Does not own: reading the socket, the PROXY protocol line, `header_map`
//! (dropping underscore headers), forwarded/scheme headers, `SCRIPT_NAME` or
//! percent-decoding: those belong to the worker and the WSGI environ.
//!
//! How: one pass finds the line ends (bare LF refused, limits checked, also on a
//! partial buffer so a client cannot make us buffer without bound), the request
//! line is checked by hand (httparse only knows HTTP/1.0 and 1.1, Gunicorn accepts
//! 1.2-1.9), and `httparse::parse_headers` validates the header lines in one SIMD
//! pass. Only when httparse refuses do we walk the lines again to name the culprit
//! the way Gunicorn does.
//!
//! The request line's own checks are in `request_line`; the parsed head, its limits and
//! leniency switches are in `head` (and re-exported here).

use super::error::{echo, ParseError};
use super::request_line::parse_request_line;
use super::syntax::{
    field_name_of, is_field_value_byte, is_host_port, is_ows, is_token, parse_decimal,
    split_field_line, trim_ows, FieldLineError,
};
use super::text::{HeadBytes, HeadText};

pub use super::head::{
    BodyKind, Header, Leniency, Limits, RequestHead, DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS,
    MAX_REQUEST_LINE,
};

/// Header counts up to this parse with a stack array; larger heads allocate one.
const STACK_HEADERS: usize = 32;

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Over-limit conditions are
/// detected on a partial buffer too: a request line with no CRLF within
/// `limit_request_line` (414), a header line or header section that can no
/// longer fit (431), more header lines than allowed (431).
///
/// # Errors
///
/// Any violated rule, as the matching [`ParseError`] variant.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, ParseError> {
    parse_head_resuming(buf, limits, &mut HeadScan::default())
}

/// Where the parse of an incomplete head stopped, so that the next attempt on the same
/// (grown) buffer resumes there: a large head trickled in small pieces then costs linear,
/// not quadratic, time. Reset it (`HeadScan::default()`) whenever the buffer's front is
/// consumed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadScan {
    /// Start of the first header line not checked yet (0: none checked).
    line: usize,
    /// Header lines checked so far.
    count: usize,
    /// Start of the last checked header line (named in the obs-fold error).
    prev_line: usize,
    /// Size of the field that line belongs to, CRLFs and continuation lines included.
    field_len: usize,
    /// Bytes already searched by [`HeadScan::head_complete_in`].
    searched: usize,
    /// The incomplete line at `line` has no LF before this offset.
    no_lf_until: usize,
}

impl HeadScan {
    /// Whether `buf` seems to hold the end of a head (an empty line) that the parser has not
    /// looked at yet: the reader stops reading ahead then. Searches only new bytes.
    pub fn head_complete_in(&mut self, buf: &[u8]) -> bool {
        let tail = &buf[self.searched.saturating_sub(2).min(buf.len())..];
        let found = tail
            .windows(2)
            .enumerate()
            .any(|(i, w)| w == b"\n\n" || (w == b"\n\r" && tail.get(i + 2) == Some(&b'\n')));
        if !found {
            self.searched = buf.len();
        }
        found
    }

    /// The parser found no complete head in `buf`: what is there now needs no new search.
    pub fn searched_all(&mut self, buf: &[u8]) {
        self.searched = buf.len();
    }
}

/// Like [`parse_head`], resuming from (and updating) `scan` while the head is incomplete.
///
/// # Errors
///
/// As [`parse_head`]; the same bytes give the same result, however they were split.
pub fn parse_head_resuming(
    buf: &[u8],
    limits: &Limits,
    scan: &mut HeadScan,
) -> Result<Option<RequestHead>, ParseError> {
    // Exactly one leading CRLF is tolerated (RFC 9112 §2.2 "SHOULD ignore at least
    // one"; Gunicorn 27 ignores exactly one and refuses more).
    let start = match buf {
        [] | [b'\r'] | [b'\r', b'\n'] => return Ok(None),
        [b'\r', b'\n', ..] => 2,
        _ => 0,
    };

    // ---- request line ----
    let rest = &buf[start..];
    let Some(lf) = find_lf(rest) else {
        return check_partial_request_line(rest, limits).map(|()| None);
    };
    // The length first, as while the line was arriving: the same bytes give the same
    // error however they were split (and Gunicorn, which looks for CRLF, says too long).
    let bare_lf = lf == 0 || rest[lf - 1] != b'\r';
    let content = partial_line_len(&rest[..lf]);
    if limits.request_line > 0 && content > limits.request_line {
        // A CR inside the line is refused while the line arrives as soon as the next byte
        // shows it is not a CRLF; when that happens before the line is too long, it wins.
        if let Some(cr) = rest[..content].iter().position(|&b| b == b'\r') {
            if cr < limits.request_line {
                return Err(ParseError::MalformedRequestLine {
                    line: echo(&rest[..content]),
                });
            }
        }
        return Err(ParseError::RequestLineTooLong {
            size: content,
            limit: limits.request_line,
        });
    }
    if bare_lf {
        return Err(ParseError::RequestLineBareLf {
            line: echo(&rest[..lf]),
        });
    }
    let line = &rest[..lf - 1];
    if line.is_empty() {
        return Err(ParseError::ExtraLeadingEmptyLine);
    }
    let request_line = parse_request_line(line, &limits.lenient)?;

    // ---- header section: find its end, checking line endings and limits ----
    let section_start = start + lf + 1;
    if scan.line < section_start {
        (scan.line, scan.count, scan.prev_line, scan.field_len) = (section_start, 0, 0, 0);
    }
    let Some((section_end, count)) = scan_header_section(buf, section_start, limits, scan)? else {
        return Ok(None);
    };
    let section = &buf[section_start..section_end];

    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let slots: &mut [httparse::Header<'_>] = if count <= STACK_HEADERS {
        &mut stack[..count]
    } else {
        heap = vec![httparse::EMPTY_HEADER; count];
        &mut heap
    };
    let lenient_fields;
    let parsed = if limits.lenient.relaxes_field_lines() {
        lenient_fields = parse_fields_leniently(section, &limits.lenient)?;
        for (slot, (name, value)) in slots.iter_mut().zip(&lenient_fields) {
            *slot = httparse::Header { name, value };
        }
        &slots[..lenient_fields.len()]
    } else {
        match httparse::parse_headers(section, slots) {
            Ok(httparse::Status::Complete((used, parsed))) if used == section.len() => parsed,
            _ => return Err(diagnose_header_section(section)),
        }
    };

    let mut head = RequestHead {
        method: request_line.method,
        target: request_line.target,
        path: request_line.path,
        query: request_line.query,
        fragment: request_line.fragment,
        version: request_line.version,
        headers: Vec::with_capacity(parsed.len()),
        body: BodyKind::Empty,
        keep_alive: false,
        must_close: false,
        expect_continue: false,
        authority: request_line.authority,
        head_len: section_end,
    };
    apply_header_semantics(&mut head, parsed)?;
    Ok(Some(head))
}

/// Position of the first LF.
#[inline]
fn find_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// Length of a partial line, not counting a trailing CR that may start its CRLF.
#[inline]
fn partial_line_len(s: &[u8]) -> usize {
    s.len() - usize::from(s.last() == Some(&b'\r'))
}

/// Refuses a request line that is not complete yet but already too long, or that
/// already holds a bare CR (which no later byte can make valid).
fn check_partial_request_line(rest: &[u8], limits: &Limits) -> Result<(), ParseError> {
    let size = partial_line_len(rest);
    // Whichever fault a byte-by-byte arrival shows first: a CR at `cr` is known bad once
    // the byte after it arrives, the length once it passes the limit.
    let cr = rest[..size].iter().position(|&b| b == b'\r');
    if cr.is_some_and(|cr| limits.request_line == 0 || cr < limits.request_line) {
        return Err(ParseError::MalformedRequestLine {
            line: echo(&rest[..size]),
        });
    }
    if limits.request_line > 0 && size > limits.request_line {
        return Err(ParseError::RequestLineTooLong {
            size,
            limit: limits.request_line,
        });
    }
    Ok(())
}

/// Walks the header lines from where `scan` stopped (at first `section_start`): refuses
/// bare LF, obs-fold, too many or too long lines, and (while incomplete) a section past
/// `max_header_section`. Returns the end of the head (after the empty line) and the number
/// of header lines, or `None` when the empty line has not arrived yet (`scan` then holds
/// the start of the incomplete line).
fn scan_header_section(
    buf: &[u8],
    section_start: usize,
    limits: &Limits,
    scan: &mut HeadScan,
) -> Result<Option<(usize, usize)>, ParseError> {
    let mut pos = scan.line;
    let mut count = scan.count;
    let mut prev_line = scan.prev_line;
    let mut field_len = scan.field_len;
    loop {
        if scan.line != pos {
            scan.no_lf_until = pos;
        }
        (scan.line, scan.count, scan.prev_line, scan.field_len) =
            (pos, count, prev_line, field_len);
        let rest = &buf[pos..];
        // A line starting with SP/HTAB after a field is a folded line: never a new field
        // (Gunicorn counts fields, and refuses the fold before measuring it). With
        // permit_obsolete_folding it continues the field, and its size adds to the field's.
        let folded = count > 0 && rest.first().is_some_and(|&b| is_ows(b));
        let continues = folded && limits.lenient.obsolete_folding;
        let measured = continues || !folded;
        let size_before = if continues { field_len } else { 0 };
        // The incomplete line was searched up to `no_lf_until` last time: only newer bytes.
        let known = scan.no_lf_until.clamp(pos, buf.len()) - pos;
        let Some(lf) = find_lf(&rest[known..]).map(|i| i + known) else {
            scan.no_lf_until = buf.len();
            let partial = partial_line_len(rest);
            if partial > 0 && !folded && count >= limits.fields {
                return Err(ParseError::TooManyHeaders);
            }
            if partial > 0 && measured && size_before + partial + 2 > limits.field_size {
                return Err(ParseError::HeaderFieldTooLarge);
            }
            if buf.len() - section_start > limits.max_header_section() {
                return Err(ParseError::HeaderSectionTooLarge);
            }
            return Ok(None);
        };
        // Gunicorn checks the count before each line, and a line's size with its CRLF;
        // both come before the line ending, as they did while the line was arriving.
        let content = partial_line_len(&rest[..lf]);
        if content > 0 && !folded && count >= limits.fields {
            return Err(ParseError::TooManyHeaders);
        }
        if content > 0 && measured && size_before + content + 2 > limits.field_size {
            return Err(ParseError::HeaderFieldTooLarge);
        }
        if lf == 0 || rest[lf - 1] != b'\r' {
            return Err(ParseError::HeaderBareLf {
                line: echo(&rest[..lf]),
            });
        }
        let line = &rest[..lf - 1];
        if line.is_empty() {
            return Ok(Some((pos + lf + 1, count)));
        }
        if continues {
            field_len += content + 2;
        } else if is_ows(line[0]) {
            // RFC 9112 §5.2: obs-fold is refused (Gunicorn: permit_obsolete_folding off).
            // Whitespace before the first header is RFC 9112 §2.2's "reject" case.
            return Err(if count == 0 {
                ParseError::InvalidHeaderName {
                    name: echo(field_name_of(line)),
                }
            } else {
                let prev = &buf[prev_line..];
                ParseError::ObsoleteFolding {
                    name: field_name_of(&prev[..find_lf(prev).unwrap_or(prev.len())])
                        .to_ascii_uppercase(),
                }
            });
        } else {
            count += 1;
            prev_line = pos;
            field_len = content + 2;
        }
        pos += lf + 1;
    }
}

/// Slow path after httparse refused the section: finds the first bad line and
/// reports it as Gunicorn would.
fn diagnose_header_section(section: &[u8]) -> ParseError {
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        match split_field_line(line) {
            Ok(_) => {}
            Err(FieldLineError::MissingColon) => {
                return ParseError::HeaderMissingColon { line: echo(line) }
            }
            Err(FieldLineError::InvalidName) => {
                return ParseError::InvalidHeaderName {
                    name: echo(field_name_of(line)),
                }
            }
            Err(FieldLineError::InvalidValue) => {
                return ParseError::InvalidHeaderValue {
                    name: echo(field_name_of(line)).to_ascii_uppercase(),
                }
            }
        }
    }
    // httparse and our grammar disagree; refuse rather than guess.
    ParseError::HeaderMissingColon {
        line: echo(section),
    }
}

/// The header section read field by field, for the leniency switches httparse does not
/// know, exactly as Gunicorn reads it: with `strip_header_spaces`, SP/HTAB before the
/// colon is dropped; with `permit_obsolete_folding`, a continuation line (already
/// admitted by [`scan_header_section`]) is trimmed and joined to the value with one space.
fn parse_fields_leniently(
    section: &[u8],
    lenient: &Leniency,
) -> Result<Vec<(String, Vec<u8>)>, ParseError> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    // Every line ends in CRLF (checked by the scan); the last one is the empty line.
    for line in section.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if is_ows(line[0]) {
            let Some((_, value)) = fields.last_mut() else {
                return Err(ParseError::InvalidHeaderName {
                    name: echo(field_name_of(line)),
                });
            };
            value.push(b' ');
            value.extend_from_slice(trim_ows(line));
            continue;
        }
        let colon = match line.iter().position(|&b| b == b':') {
            Some(0) | None => return Err(ParseError::HeaderMissingColon { line: echo(line) }),
            Some(i) => i,
        };
        let mut name = &line[..colon];
        if lenient.strip_header_spaces {
            while let [rest @ .., last] = name {
                if !is_ows(*last) {
                    break;
                }
                name = rest;
            }
        }
        if !is_token(name) {
            return Err(ParseError::InvalidHeaderName { name: echo(name) });
        }
        // A token is ASCII, so this is a plain copy.
        let name = String::from_utf8_lossy(name).into_owned();
        fields.push((name, trim_ows(&line[colon + 1..]).to_vec()));
    }
    // Checked on the joined value, as Gunicorn does (RFC 9110 §5.5).
    if let Some((name, _)) = fields
        .iter()
        .find(|(_, value)| !value.iter().all(|&b| is_field_value_byte(b)))
    {
        return Err(ParseError::InvalidHeaderValue {
            name: name.to_ascii_uppercase().into_bytes(),
        });
    }
    Ok(fields)
}

/// Copies the headers into `head` and applies the rules that depend on their
/// meaning: Host, duplicates, Content-Length, Transfer-Encoding, Connection, Expect.
fn apply_header_semantics(
    head: &mut RequestHead,
    parsed: &[httparse::Header<'_>],
) -> Result<(), ParseError> {
    let mut host: Option<&[u8]> = None;
    let mut content_type = false;
    let mut content_length: Option<&[u8]> = None;
    let mut te_seen = false;
    let mut chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;

    for h in parsed {
        let (name, value) = (h.name, h.value);
        match name.len() {
            4 if name.eq_ignore_ascii_case("host") => {
                if host.is_some() {
                    return Err(ParseError::DuplicateHeader { name: "HOST" });
                }
                if !is_host_port(value, false, false) {
                    return Err(ParseError::InvalidHost);
                }
                host = Some(value);
            }
            12 if name.eq_ignore_ascii_case("content-type") => {
                if content_type {
                    return Err(ParseError::DuplicateHeader {
                        name: "CONTENT-TYPE",
                    });
                }
                content_type = true;
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                if content_length.is_some() {
                    return Err(ParseError::DuplicateHeader {
                        name: "CONTENT-LENGTH",
                    });
                }
                content_length = Some(value);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                te_seen = true;
                for coding in value.split(|&b| b == b',').map(trim_ows) {
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        // Stacked chunking is never intended (CVE-2024-1135).
                        if chunked {
                            return Err(ParseError::ChunkedTwice);
                        }
                        chunked = true;
                    } else if coding.eq_ignore_ascii_case(b"identity") {
                        if chunked {
                            return Err(ParseError::CodingAfterChunked);
                        }
                    } else if coding.eq_ignore_ascii_case(b"gzip")
                        || coding.eq_ignore_ascii_case(b"deflate")
                        || coding.eq_ignore_ascii_case(b"compress")
                    {
                        if chunked {
                            return Err(ParseError::CodingAfterChunked);
                        }
                        // The body goes to the app still encoded; no reuse after it.
                        head.must_close = true;
                    } else {
                        // Includes the empty coding of "chunked,," (Gunicorn 22).
                        return Err(ParseError::UnsupportedTransferCoding { value: echo(value) });
                    }
                }
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in value.split(|&b| b == b',').map(trim_ows) {
                    conn_close |= token.eq_ignore_ascii_case(b"close");
                    conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            6 if name.eq_ignore_ascii_case("expect") => {
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(ParseError::ExpectationFailed { value: echo(value) });
                }
                head.expect_continue = head.version >= (1, 1);
            }
            _ => {}
        }
        head.headers.push(Header {
            name: HeadText::new(name),
            value: HeadBytes::new(value),
        });
    }

    // Framing (RFC 9112 §6.1, §6.3), in Gunicorn's order.
    if te_seen {
        if !chunked {
            // Gunicorn 27: a TE not ending in chunked would mean "read until close".
            return Err(ParseError::ChunkedNotLast);
        }
        if head.version < (1, 1) {
            return Err(ParseError::TransferEncodingOnHttp10);
        }
        if content_length.is_some() {
            return Err(ParseError::ContentLengthWithChunked);
        }
        head.body = BodyKind::Chunked;
    } else if let Some(cl) = content_length {
        let n = parse_decimal(cl).ok_or(ParseError::InvalidContentLength)?;
        head.body = BodyKind::Length(n);
    }

    // RFC 9112 §3.2: a client MUST send Host in HTTP/1.1; a server MUST answer 400 without it.
    if head.version >= (1, 1) && host.is_none() {
        return Err(ParseError::MissingHost);
    }
    if head.authority.is_none() {
        // A valid Host is ASCII, so this is a plain copy.
        head.authority = host.map(HeadText::from_ascii);
    }

    head.keep_alive = if head.version >= (1, 1) {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    // Gunicorn 27: CONNECT always closes after the response.
    head.must_close |= head.method == "CONNECT";
    Ok(())
}

#[cfg(test)]
pub(super) mod tests;
