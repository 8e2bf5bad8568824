//! Errors of the HTTP layer and Gunicorn's canned error page.
//!
//! Owns [`ParseError`] (one variant per request/body rule, each mapped to its status
//! in one place, [`ParseError::status`]), [`ResponseError`] (the application broke a
//! response rule), and [`error_page`], the byte-exact page Gunicorn writes for a
//! refused request. Does not own logging: callers log `Invalid request from
//! ip=<ip>: <Display>` at WARNING as Gunicorn 27 does.
//!
//! Two texts exist per error, as in Gunicorn: [`Display`](std::fmt::Display) is
//! `str(exc)` (what the log line shows), [`ParseError::page_message`] is the
//! `mesg` that goes into the HTML page (for some rules it wraps `str(exc)`, e.g.
//! `Invalid Method 'Invalid HTTP method: 'get''`).

use std::fmt;

use super::syntax::{py_bytes_repr, py_str_repr};

/// A request the server refuses. Each variant is one rule; the field holds the
/// offending bytes as received (already truncated to [`MAX_ECHO_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    // ---- request line (RFC 9112 §3) ----
    /// More than one empty line before the request line (Gunicorn 27 tolerates one CRLF).
    ExtraLeadingEmptyLine,
    /// An LF not preceded by CR in or before the request line (RFC 9112 §2.2, Gunicorn 27).
    RequestLineBareLf {
        /// The request line up to the LF.
        line: Vec<u8>,
    },
    /// The request line is longer than `limit_request_line` → 414.
    RequestLineTooLong {
        /// Bytes seen so far (without CRLF).
        size: usize,
        /// The effective limit.
        limit: usize,
    },
    /// Not `method SP request-target SP HTTP-version` with single spaces.
    MalformedRequestLine {
        /// The whole request line.
        line: Vec<u8>,
    },
    /// Method not a token, has lowercase or `#`, or is not 3-20 bytes long (Gunicorn default).
    InvalidMethod {
        /// The method as received.
        method: Vec<u8>,
    },
    /// The request-target is empty.
    EmptyTarget {
        /// The whole request line.
        line: Vec<u8>,
    },
    /// The request-target holds a byte outside 0x21-0x7E (Gunicorn 27, #3371).
    InvalidTargetByte {
        /// The whole request line.
        line: Vec<u8>,
    },
    /// `*` with a method other than OPTIONS (RFC 9112 §3.2.4).
    AsteriskFormNotOptions {
        /// The whole request line.
        line: Vec<u8>,
    },
    /// authority-form with a method other than CONNECT (RFC 9112 §3.2.3).
    AuthorityFormNotConnect {
        /// The whole request line.
        line: Vec<u8>,
    },
    /// A target that is none of the four forms: a relative reference, a bad scheme
    /// or authority in absolute-form, a bad `host:port` for CONNECT.
    InvalidTarget {
        /// The whole request line.
        line: Vec<u8>,
    },
    /// The version is not exactly `HTTP/<digit>.<digit>`.
    InvalidVersion {
        /// The version field as received.
        version: Vec<u8>,
    },
    /// A well-formed version outside 1.0-1.9.
    UnsupportedVersion {
        /// Major digit.
        major: u8,
        /// Minor digit.
        minor: u8,
    },

    // ---- header section (RFC 9112 §5, RFC 9110 §5) ----
    /// More than `limit_request_fields` header lines → 431.
    TooManyHeaders,
    /// A header line (name, colon, value, CRLF) longer than `limit_request_field_size` → 431.
    HeaderFieldTooLarge,
    /// The header section outgrew `fields × (field_size + 2) + 4` bytes → 431.
    HeaderSectionTooLarge,
    /// An LF not preceded by CR in the header section.
    HeaderBareLf {
        /// The header line up to the LF.
        line: Vec<u8>,
    },
    /// A header line without `:` or with nothing before it.
    HeaderMissingColon {
        /// The header line.
        line: Vec<u8>,
    },
    /// A header name that is not a token (incl. whitespace before the colon, RFC 9112 §5.1).
    InvalidHeaderName {
        /// The name as received.
        name: Vec<u8>,
    },
    /// A header value holding NUL, CR, LF, another control or DEL (RFC 9110 §5.5).
    InvalidHeaderValue {
        /// The header name, upper-cased as Gunicorn reports it.
        name: Vec<u8>,
    },
    /// A continuation line starting with SP/HTAB (RFC 9112 §5.2: obs-fold refused).
    ObsoleteFolding {
        /// Upper-cased name of the header being continued.
        name: Vec<u8>,
    },
    /// A second `Host`, `Content-Type` or `Content-Length` (Gunicorn 26.1).
    DuplicateHeader {
        /// Upper-cased header name.
        name: &'static str,
    },
    /// `Content-Length` that is not `1*DIGIT` (lists, signs, spaces) or overflows.
    InvalidContentLength,
    /// `Transfer-Encoding: chunked` together with `Content-Length` (RFC 9112 §6.3: smuggling).
    ContentLengthWithChunked,
    /// A transfer coding other than chunked/identity/gzip/deflate/compress → 501.
    UnsupportedTransferCoding {
        /// The whole `Transfer-Encoding` value.
        value: Vec<u8>,
    },
    /// `chunked` applied twice (RFC 9112 §6.1).
    ChunkedTwice,
    /// A coding listed after `chunked` (RFC 9112 §6.1: chunked must be last).
    CodingAfterChunked,
    /// A `Transfer-Encoding` whose last coding is not `chunked` (RFC 9112 §6.3, Gunicorn 27).
    ChunkedNotLast,
    /// `Transfer-Encoding` on an HTTP/1.0 request (RFC 9112 §6.1).
    TransferEncodingOnHttp10,
    /// HTTP/1.1 request without `Host` (RFC 9112 §3.2; beyond Gunicorn).
    MissingHost,
    /// `Host` that is not `uri-host[:port]` (RFC 9110 §7.2; beyond Gunicorn).
    InvalidHost,
    /// An `Expect` other than `100-continue` → 417 (RFC 9110 §10.1.1).
    ExpectationFailed {
        /// The `Expect` value.
        value: Vec<u8>,
    },

    // ---- chunked body (RFC 9112 §7.1) ----
    /// A chunk size that is not `1*HEXDIG` (empty, sign, space, underscore...).
    InvalidChunkSize {
        /// The size line.
        line: Vec<u8>,
    },
    /// A chunk size that does not fit in 64 bits.
    ChunkSizeOverflow {
        /// The size line.
        line: Vec<u8>,
    },
    /// A chunk-size line longer than the decoder allows.
    ChunkSizeLineTooLong {
        /// The longest size line allowed, in bytes.
        limit: usize,
    },
    /// A chunk extension outside the `;name[=token|quoted-string]` grammar, or with a bare CR/LF.
    InvalidChunkExtension {
        /// The size line.
        line: Vec<u8>,
    },
    /// Chunk data not followed by CRLF.
    ChunkMissingTerminator {
        /// The bytes found instead of CRLF.
        found: Vec<u8>,
    },
    /// A trailer line that is not a valid field line (or ends in a bare LF).
    InvalidTrailer {
        /// The trailer line.
        line: Vec<u8>,
    },
    /// A trailer field that must not be sent as a trailer (RFC 9110 §6.5.1; Gunicorn 26.0).
    ForbiddenTrailer {
        /// Upper-cased trailer name.
        name: Vec<u8>,
    },
    /// The trailer section outgrew what the decoder allows.
    TrailerSectionTooLarge {
        /// The largest trailer section allowed, in bytes.
        limit: usize,
    },
    /// The connection ended inside the body: a chunked one (Gunicorn 26.1 refuses it too),
    /// or one shorter than its `Content-Length` (RFC 9112 §8; Gunicorn passes it on short).
    BodyTruncated,
}

/// Longest slice of client data an error keeps, so an unlimited request line
/// cannot make an error message as big as the request.
pub const MAX_ECHO_BYTES: usize = 8190;

/// Copies client bytes into an error, bounded by [`MAX_ECHO_BYTES`].
pub(crate) fn echo(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(MAX_ECHO_BYTES)].to_vec()
}

impl ParseError {
    /// The status code of the error response (the single rule → status mapping).
    pub fn status(&self) -> u16 {
        use ParseError::*;
        match self {
            RequestLineTooLong { .. } => 414,
            TooManyHeaders | HeaderFieldTooLarge | HeaderSectionTooLarge => 431,
            UnsupportedTransferCoding { .. } => 501,
            ExpectationFailed { .. } => 417,
            _ => 400,
        }
    }

    /// The reason phrase Gunicorn puts in the status line and the page title.
    /// 501 keeps `Bad Request`: Gunicorn sets the code but never updates the reason.
    pub fn reason(&self) -> &'static str {
        match self.status() {
            414 => "URI Too Long",
            417 => "Expectation Failed",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        }
    }

    /// The text Gunicorn's `handle_error` puts in the page (`mesg`): some rules
    /// wrap `str(exc)` once more, e.g. `Invalid Method 'Invalid HTTP method: 'get''`.
    pub fn page_message(&self) -> String {
        use ParseError::*;
        match self {
            ExtraLeadingEmptyLine
            | RequestLineBareLf { .. }
            | MalformedRequestLine { .. }
            | EmptyTarget { .. }
            | InvalidTargetByte { .. }
            | AsteriskFormNotOptions { .. }
            | AuthorityFormNotConnect { .. }
            | InvalidTarget { .. } => format!("Invalid Request Line '{self}'"),
            InvalidMethod { .. } => format!("Invalid Method '{self}'"),
            InvalidVersion { .. } | UnsupportedVersion { .. } => {
                format!("Invalid HTTP Version '{self}'")
            }
            TooManyHeaders | HeaderFieldTooLarge | HeaderSectionTooLarge => {
                format!("Error parsing headers: '{self}'")
            }
            _ => self.to_string(),
        }
    }

    /// The full error response for this error (see [`error_page`]).
    pub fn to_error_page(&self) -> Vec<u8> {
        error_page(self.status(), self.reason(), &self.page_message())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ParseError::*;
        match self {
            ExtraLeadingEmptyLine => write!(f, "Invalid HTTP request line: ''"),
            RequestLineBareLf { line }
            | MalformedRequestLine { line }
            | EmptyTarget { line }
            | InvalidTargetByte { line }
            | AsteriskFormNotOptions { line }
            | AuthorityFormNotConnect { line }
            | InvalidTarget { line } => {
                write!(f, "Invalid HTTP request line: {}", py_str_repr(line))
            }
            RequestLineTooLong { size, limit } => {
                write!(f, "Request Line is too large ({size} > {limit})")
            }
            InvalidMethod { method } => write!(f, "Invalid HTTP method: {}", py_str_repr(method)),
            InvalidVersion { version } => {
                write!(f, "Invalid HTTP Version: {}", py_str_repr(version))
            }
            // Gunicorn raises InvalidHTTPVersion(self.version), a tuple.
            UnsupportedVersion { major, minor } => {
                write!(f, "Invalid HTTP Version: ({major}, {minor})")
            }
            TooManyHeaders => f.write_str("limit request headers fields"),
            HeaderFieldTooLarge => f.write_str("limit request headers fields size"),
            HeaderSectionTooLarge => f.write_str("max buffer headers"),
            HeaderBareLf { line } | HeaderMissingColon { line } => {
                write!(f, "Invalid HTTP Header: {}", py_str_repr(line))
            }
            InvalidHeaderName { name } => {
                write!(f, "Invalid HTTP header name: {}", py_str_repr(name))
            }
            InvalidHeaderValue { name } => write!(f, "Invalid HTTP Header: {}", py_str_repr(name)),
            ObsoleteFolding { name } => {
                write!(
                    f,
                    "Obsolete line folding is unacceptable: {}",
                    py_str_repr(name)
                )
            }
            DuplicateHeader { name } => write!(f, "Invalid HTTP Header: '{name}'"),
            InvalidContentLength | ContentLengthWithChunked => {
                f.write_str("Invalid HTTP Header: 'CONTENT-LENGTH'")
            }
            UnsupportedTransferCoding { value } => {
                write!(f, "Unsupported transfer coding: {}", py_str_repr(value))
            }
            ChunkedTwice | CodingAfterChunked | ChunkedNotLast | TransferEncodingOnHttp10 => {
                f.write_str("Invalid HTTP Header: 'TRANSFER-ENCODING'")
            }
            MissingHost | InvalidHost => f.write_str("Invalid HTTP Header: 'HOST'"),
            ExpectationFailed { value } => {
                write!(
                    f,
                    "Unable to comply with expectation: {}",
                    py_str_repr(value)
                )
            }
            InvalidChunkSize { line } | ChunkSizeOverflow { line } => {
                write!(f, "Invalid chunk size: {}", py_bytes_repr(line))
            }
            ChunkSizeLineTooLong { limit } => {
                write!(f, "Chunk size line is too large (> {limit})")
            }
            InvalidChunkExtension { line } => {
                write!(f, "Invalid chunk extension: {}", py_bytes_repr(line))
            }
            ChunkMissingTerminator { found } => write!(
                f,
                "Invalid chunk terminator is not '\\r\\n': {}",
                py_bytes_repr(found)
            ),
            InvalidTrailer { line } => write!(f, "Invalid HTTP Header: {}", py_str_repr(line)),
            ForbiddenTrailer { name } => write!(f, "Invalid HTTP Header: {}", py_str_repr(name)),
            TrailerSectionTooLarge { limit } => {
                write!(f, "Trailer section is too large (> {limit})")
            }
            BodyTruncated => f.write_str("No more data after: b''"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The application broke a response rule (bad status string, bad header name or
/// value, unusable `Content-Length`). Gunicorn 27 answers these with a 500 and
/// logs the exception; the Display text says what the app did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError(pub(crate) String);

impl ResponseError {
    pub(crate) fn new(message: String) -> ResponseError {
        ResponseError(message)
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResponseError {}

/// Gunicorn's error response, byte for byte (`gunicorn.util.write_error`):
///
/// ```text
/// HTTP/1.1 <status> <reason>\r\nConnection: close\r\nContent-Type: text/html\r\n
/// Content-Length: <n>\r\n\r\n<html>\n  <head>\n    <title><reason></title>\n ...
/// ```
///
/// No `Server`/`Date`, always `HTTP/1.1`. The message is HTML-escaped like
/// Python's `html.escape` and the page is latin-1 encoded (characters above U+00FF
/// become `?`, so `Content-Length` still counts characters as Gunicorn does).
pub fn error_page(status: u16, reason: &str, message: &str) -> Vec<u8> {
    let mut html = String::with_capacity(160 + 2 * reason.len() + message.len());
    html.push_str("<html>\n  <head>\n    <title>");
    html.push_str(reason);
    html.push_str("</title>\n  </head>\n  <body>\n    <h1><p>");
    html.push_str(reason);
    html.push_str("</p></h1>\n    ");
    for c in message.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#x27;"),
            _ => html.push(c),
        }
    }
    html.push_str("\n  </body>\n</html>\n");
    let body = latin1(&html);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Encodes text as latin-1, `?` for characters it cannot hold.
pub(crate) fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn error_page_is_byte_compatible_with_gunicorn() {
        let page = error_page(400, "Bad Request", "Invalid HTTP Header: 'HOST'");
        let expected_body = "<html>\n  <head>\n    <title>Bad Request</title>\n  </head>\n  <body>\n    <h1><p>Bad Request</p></h1>\n    Invalid HTTP Header: &#x27;HOST&#x27;\n  </body>\n</html>\n";
        let expected = format!(
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{}",
            expected_body.len(),
            expected_body
        );
        assert_eq!(String::from_utf8(page).unwrap(), expected);
    }

    #[test]
    fn error_page_escapes_html_and_encodes_latin1() {
        let page = error_page(400, "Bad Request", "<a href=\"x\">&\u{e9}\u{20ac}");
        let text: Vec<u8> = page;
        let body_start = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let body = &text[body_start..];
        assert!(body
            .windows(34)
            .any(|w| w == b"&lt;a href=&quot;x&quot;&gt;&amp;\xe9"));
        assert!(body.contains(&b'?'));
        let head = String::from_utf8_lossy(&text[..body_start]);
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn statuses_follow_gunicorn() {
        assert_eq!(
            ParseError::RequestLineTooLong { size: 9, limit: 4 }.status(),
            414
        );
        assert_eq!(ParseError::TooManyHeaders.status(), 431);
        assert_eq!(
            ParseError::HeaderFieldTooLarge.reason(),
            "Request Header Fields Too Large"
        );
        let te = ParseError::UnsupportedTransferCoding {
            value: b"foo".to_vec(),
        };
        assert_eq!(te.status(), 501);
        assert_eq!(te.reason(), "Bad Request");
        assert_eq!(te.to_string(), "Unsupported transfer coding: 'foo'");
        let expect = ParseError::ExpectationFailed {
            value: b"x".to_vec(),
        };
        assert_eq!(
            (expect.status(), expect.reason()),
            (417, "Expectation Failed")
        );
        assert_eq!(ParseError::MissingHost.status(), 400);
    }

    #[test]
    fn page_messages_wrap_like_handle_error() {
        let e = ParseError::InvalidMethod {
            method: b"get".to_vec(),
        };
        assert_eq!(e.to_string(), "Invalid HTTP method: 'get'");
        assert_eq!(
            e.page_message(),
            "Invalid Method 'Invalid HTTP method: 'get''"
        );
        let e = ParseError::UnsupportedVersion { major: 2, minor: 0 };
        assert_eq!(
            e.page_message(),
            "Invalid HTTP Version 'Invalid HTTP Version: (2, 0)'"
        );
        let e = ParseError::InvalidVersion {
            version: b"HTTP/1.10".to_vec(),
        };
        assert_eq!(e.to_string(), "Invalid HTTP Version: 'HTTP/1.10'");
        let e = ParseError::HeaderFieldTooLarge;
        assert_eq!(
            e.page_message(),
            "Error parsing headers: 'limit request headers fields size'"
        );
        let e = ParseError::RequestLineTooLong {
            size: 5000,
            limit: 4094,
        };
        assert_eq!(e.page_message(), "Request Line is too large (5000 > 4094)");
        let e = ParseError::ChunkMissingTerminator {
            found: b"xy".to_vec(),
        };
        assert_eq!(
            e.to_string(),
            "Invalid chunk terminator is not '\\r\\n': b'xy'"
        );
    }

    #[test]
    fn error_pages_are_built_from_the_error() {
        let page = ParseError::DuplicateHeader { name: "HOST" }.to_error_page();
        assert!(page.starts_with(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"));
        let page = ParseError::UnsupportedTransferCoding {
            value: b"foo".to_vec(),
        }
        .to_error_page();
        assert!(page.starts_with(b"HTTP/1.1 501 Bad Request\r\n"));
    }
}
