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

use super::error::{echo, ParseError};
use super::syntax::{
    field_name_of, is_field_value_byte, is_host_port, is_ows, is_scheme, is_token, is_userinfo,
    parse_decimal, split_field_line, trim_ows, FieldLineError,
};
use super::text::{HeadBytes, HeadText};

/// Gunicorn's hard cap on `limit_request_line` (`MAX_REQUEST_LINE`).
pub const MAX_REQUEST_LINE: usize = 8190;
/// Gunicorn's cap on `limit_request_fields` (`MAX_HEADERS`).
pub const MAX_HEADERS: usize = 32768;
/// Gunicorn's `limit_request_field_size` when configured as 0 or less (`DEFAULT_MAX_HEADERFIELD_SIZE`).
pub const DEFAULT_MAX_HEADERFIELD_SIZE: usize = 8190;

/// Header counts up to this parse with a stack array; larger heads allocate one.
const STACK_HEADERS: usize = 32;

/// Effective request size limits, after Gunicorn's clamping, and the leniency switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line in bytes, CRLF excluded; 0 = unlimited.
    pub request_line: usize,
    /// Most header lines accepted.
    pub fields: usize,
    /// Longest header line in bytes, CRLF included (with its continuation lines, when
    /// obsolete folding is permitted).
    pub field_size: usize,
    /// What the parser tolerates beyond RFC 9112 (all off by default).
    pub lenient: Leniency,
}

/// Gunicorn's switches for legacy clients, each relaxing one rule exactly as Gunicorn
/// 27 does with it on. They exist for clients an operator cannot change; none is safe
/// behind a proxy that reads the request differently.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Leniency {
    /// `permit_obsolete_folding`: a line starting with SP/HTAB continues the previous
    /// header's value (joined with one space) instead of earning a 400.
    pub obsolete_folding: bool,
    /// `strip_header_spaces`: `Name : value` is read as `Name: value`.
    pub strip_header_spaces: bool,
    /// `permit_unconventional_http_method`: any token is a method (lowercase, `#`, any
    /// length), not only upper-case tokens of 3-20 bytes.
    pub unconventional_method: bool,
    /// `permit_unconventional_http_version`: any `HTTP/<digit>.<digit>`, not only 1.x.
    pub unconventional_version: bool,
    /// `casefold_http_method`: the method is upper-cased after it is checked.
    pub casefold_method: bool,
}

impl Leniency {
    /// Whether the header section needs the field-by-field parse instead of httparse.
    fn relaxes_field_lines(&self) -> bool {
        self.obsolete_folding || self.strip_header_spaces
    }
}

impl Limits {
    /// Applies Gunicorn's clamping to the three settings:
    /// `limit_request_line` 0 = unlimited, negative or >= 8190 → 8190;
    /// `limit_request_fields` <= 0 or > 32768 → 32768;
    /// `limit_request_field_size` <= 0 → 8190 (not unlimited, despite the docs).
    pub fn from_settings(request_line: i64, fields: i64, field_size: i64) -> Limits {
        let request_line = match usize::try_from(request_line) {
            Ok(0) => 0,
            Ok(n) if n < MAX_REQUEST_LINE => n,
            _ => MAX_REQUEST_LINE,
        };
        let fields = match usize::try_from(fields) {
            Ok(n) if (1..=MAX_HEADERS).contains(&n) => n,
            _ => MAX_HEADERS,
        };
        let field_size = match usize::try_from(field_size) {
            Ok(n) if n > 0 => n,
            _ => DEFAULT_MAX_HEADERFIELD_SIZE,
        };
        Limits {
            request_line,
            fields,
            field_size,
            lenient: Leniency::default(),
        }
    }

    /// Gunicorn's `max_buffer_headers`: `fields × (field_size + 2) + 4` bytes of
    /// header section (after the request line) before giving up with 431.
    pub fn max_header_section(&self) -> usize {
        self.fields
            .saturating_mul(self.field_size.saturating_add(2))
            .saturating_add(4)
    }
}

impl Default for Limits {
    /// Gunicorn's defaults: 4094, 100, 8190.
    fn default() -> Limits {
        Limits::from_settings(4094, 100, 8190)
    }
}

/// One request header as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name with its original case (always a token, so ASCII).
    pub name: HeadText,
    /// The value with surrounding SP/HTAB removed; may hold obs-text (0x80-0xFF).
    pub value: HeadBytes,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body (requests are never read to EOF).
    Empty,
    /// `Content-Length: n` (n may be 0).
    Length(u64),
    /// `Transfer-Encoding: ..., chunked`.
    Chunked,
}

/// A parsed and validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, case preserved (a token, so ASCII).
    pub method: HeadText,
    /// The request-target exactly as received (`RAW_URI`).
    pub target: HeadText,
    /// Still percent-encoded path: origin-form part before `?`/`#`; absolute-form
    /// path (`/` if empty); `*` for asterisk-form; the authority for CONNECT's
    /// authority-form (Gunicorn's `PATH_INFO` quirk for CONNECT is the environ's business).
    pub path: HeadText,
    /// The query without `?`, `""` if none.
    pub query: HeadText,
    /// The fragment without `#`, `""` if none (clients should not send one; Gunicorn keeps it).
    pub fragment: HeadText,
    /// `(1, 0)` ..= `(1, 9)`.
    pub version: (u8, u8),
    /// All headers in arrival order, duplicates kept.
    pub headers: Vec<Header>,
    /// How the body is framed.
    pub body: BodyKind,
    /// What the client asked: HTTP/1.1+ unless `Connection: close`; HTTP/1.0 only
    /// with `Connection: keep-alive`. The server may still refuse.
    pub keep_alive: bool,
    /// Framing forces a close after this request: gzip/deflate/compress before
    /// chunked (Gunicorn passes the body through still encoded), or CONNECT (Gunicorn 27).
    pub must_close: bool,
    /// `Expect: 100-continue` on HTTP/1.1+ (ignored on HTTP/1.0, RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// The authority of an absolute-form or authority-form target (wins), else the `Host` value.
    pub authority: Option<HeadText>,
    /// Bytes of the buffer this head used, including one tolerated leading CRLF;
    /// the body (or the next request) starts here.
    pub head_len: usize,
}

impl RequestHead {
    /// The value of the first header with this name (give it in lower case; the
    /// comparison is ASCII case-insensitive anyway).
    pub fn header(&self, lowercase_name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(lowercase_name))
            .map(|h| h.value.as_bytes())
    }

    /// The body length when it is known up front (`Content-Length`, or 0 when there is no body).
    pub fn content_length(&self) -> Option<u64> {
        match self.body {
            BodyKind::Empty => Some(0),
            BodyKind::Length(n) => Some(n),
            BodyKind::Chunked => None,
        }
    }
}

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

/// The request line, split and checked.
struct RequestLine {
    method: HeadText,
    target: HeadText,
    path: HeadText,
    query: HeadText,
    fragment: HeadText,
    version: (u8, u8),
    authority: Option<HeadText>,
}

/// Checks `method SP request-target SP HTTP-version` (RFC 9112 §3) in Gunicorn's
/// order: split, method, target, version.
fn parse_request_line(line: &[u8], lenient: &Leniency) -> Result<RequestLine, ParseError> {
    // Like Python's `line.split(b" ", 2)`: a doubled space yields an empty target,
    // trailing garbage ends up in the version field.
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::MalformedRequestLine { line: echo(line) });
    };

    // A token (RFC 9110 §9.1); unless permit_unconventional_http_method, also Gunicorn's
    // convention: no lowercase, no '#', 3-20 bytes.
    let unconventional = || {
        method.iter().any(|&b| b.is_ascii_lowercase() || b == b'#')
            || !(3..=20).contains(&method.len())
    };
    if !is_token(method) || (!lenient.unconventional_method && unconventional()) {
        return Err(ParseError::InvalidMethod {
            method: echo(method),
        });
    }
    // casefold_http_method: upper-cased once checked, before the target rules that
    // look at the method (OPTIONS, CONNECT), as Gunicorn does.
    let folded;
    let method = if lenient.casefold_method {
        folded = method.to_ascii_uppercase();
        &folded[..]
    } else {
        method
    };

    let form = parse_target(method, target, line)?;

    let version = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            (major - b'0', minor - b'0')
        }
        _ => {
            return Err(ParseError::InvalidVersion {
                version: echo(version),
            })
        }
    };
    if version.0 != 1 && !lenient.unconventional_version {
        return Err(ParseError::UnsupportedVersion {
            major: version.0,
            minor: version.1,
        });
    }

    // Method and target were checked to be ASCII above, so this is a plain copy.
    let ascii = HeadText::from_ascii;
    Ok(RequestLine {
        method: ascii(method),
        target: ascii(target),
        path: ascii(form.path),
        query: ascii(form.query),
        fragment: ascii(form.fragment),
        version,
        authority: form.authority.map(ascii),
    })
}

/// The parts of a request-target, borrowed from the request line.
struct TargetParts<'a> {
    path: &'a [u8],
    query: &'a [u8],
    fragment: &'a [u8],
    authority: Option<&'a [u8]>,
}

/// Classifies and checks the request-target (RFC 9112 §3.2).
fn parse_target<'a>(
    method: &[u8],
    target: &'a [u8],
    line: &[u8],
) -> Result<TargetParts<'a>, ParseError> {
    let bad = |make: fn(Vec<u8>) -> ParseError| Err(make(echo(line)));
    if target.is_empty() {
        return bad(|line| ParseError::EmptyTarget { line });
    }
    // Gunicorn 27 (#3371): controls, space and non-ASCII are refused in the target.
    if !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return bad(|line| ParseError::InvalidTargetByte { line });
    }
    if target == b"*" {
        if method != b"OPTIONS" {
            return bad(|line| ParseError::AsteriskFormNotOptions { line });
        }
        return Ok(TargetParts {
            path: target,
            query: b"",
            fragment: b"",
            authority: None,
        });
    }
    if target[0] == b'/' {
        // origin-form; a leading "//" stays part of the path (Gunicorn #297).
        let (path, query, fragment) = split_path_query_fragment(target);
        return Ok(TargetParts {
            path,
            query,
            fragment,
            authority: None,
        });
    }
    if let Some(sep) = target.windows(3).position(|w| w == b"://") {
        // absolute-form: scheme "://" [userinfo "@"] host [":" port] path-abempty ["?" query]
        let (scheme, rest) = (&target[..sep], &target[sep + 3..]);
        let auth_end = rest
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        // Gunicorn accepts userinfo (its corpus has `http://user:pass@host/`); we keep
        // it out of the reported authority.
        let host_port = match authority.iter().rposition(|&b| b == b'@') {
            Some(at) if is_userinfo(&authority[..at]) => &authority[at + 1..],
            Some(_) => return bad(|line| ParseError::InvalidTarget { line }),
            None => authority,
        };
        if !is_scheme(scheme) || !is_host_port(host_port, true, false) {
            return bad(|line| ParseError::InvalidTarget { line });
        }
        let (path, query, fragment) = split_path_query_fragment(tail);
        return Ok(TargetParts {
            path: if path.is_empty() { b"/" } else { path },
            query,
            fragment,
            authority: Some(host_port),
        });
    }
    if method != b"CONNECT" {
        // Something that looks like host:port is authority-form; anything else is a
        // relative reference, which no request-target form allows.
        if target.contains(&b':') {
            return bad(|line| ParseError::AuthorityFormNotConnect { line });
        }
        return bad(|line| ParseError::InvalidTarget { line });
    }
    // authority-form = uri-host ":" port (RFC 9112 §3.2.3).
    if !is_host_port(target, true, true) {
        return bad(|line| ParseError::InvalidTarget { line });
    }
    Ok(TargetParts {
        path: target,
        query: b"",
        fragment: b"",
        authority: Some(target),
    })
}

/// Splits like Python's `urlsplit`: fragment at the first `#`, then query at the first `?`.
fn split_path_query_fragment(s: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (before, fragment) = match s.iter().position(|&b| b == b'#') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &b""[..]),
    };
    match before.iter().position(|&b| b == b'?') {
        Some(i) => (&before[..i], &before[i + 1..], fragment),
        None => (before, &b""[..], fragment),
    }
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<RequestHead>, ParseError> {
        parse_head(raw, &Limits::default())
    }

    fn ok(raw: &[u8]) -> RequestHead {
        parse(raw).unwrap().unwrap()
    }

    fn err(raw: &[u8]) -> ParseError {
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
    fn lenient(
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
        let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(err(raw), ParseError::ContentLengthWithChunked);
        let raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
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
}
