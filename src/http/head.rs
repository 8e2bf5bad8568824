//! A parsed request head ([`RequestHead`]: request line, headers, the framing decision)
//! and the limits and leniency it is parsed under.

use super::text::{HeadBytes, HeadText};

/// Gunicorn's hard cap on `limit_request_line` (`MAX_REQUEST_LINE`).
pub const MAX_REQUEST_LINE: usize = 8190;
/// Gunicorn's cap on `limit_request_fields` (`MAX_HEADERS`).
pub const MAX_HEADERS: usize = 32768;
/// Gunicorn's `limit_request_field_size` when configured as 0 or less (`DEFAULT_MAX_HEADERFIELD_SIZE`).
pub const DEFAULT_MAX_HEADERFIELD_SIZE: usize = 8190;

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
    pub(super) fn relaxes_field_lines(&self) -> bool {
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
