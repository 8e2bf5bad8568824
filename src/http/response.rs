//! Response heads: validating what the application gave `start_response` and
//! writing the status line and headers the server sends.
//!
//! Owns the status-string and header checks (Gunicorn 27: violations are a 500),
//! the hop-by-hop filter, and the framing choice (RFC 9112 §6.3: Content-Length,
//! chunked, close-delimited, or no body for HEAD/1xx/204/304). Does not own
//! writing to the socket, truncating the body to `Content-Length`, or the warning
//! for a body sent on a no-body response; [`ResponsePlan`] tells the caller what to do.

use super::error::{latin1, ResponseError};
use super::syntax::{is_token, parse_decimal, py_str_repr, trim_ows_str};

/// Our `Server` header value; like Gunicorn's `gunicorn`, without a version.
pub const SERVER: &str = "rgunicorn";

/// The interim response for `Expect: 100-continue` (Gunicorn always says HTTP/1.1).
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The last chunk and empty trailer section that end a chunked response.
pub const CHUNKED_TERMINATOR: &[u8] = b"0\r\n\r\n";

/// Checks the application's status string: three digits (100-999), optionally
/// followed by one SP and a reason of HTAB/SP/VCHAR/obs-text (RFC 9112 §4,
/// Gunicorn 27). A bare `"200"` is fine and is sent as is. Returns the code.
///
/// # Errors
///
/// The status string breaks the rule above.
pub fn validate_status(status: &str) -> Result<u16, ResponseError> {
    let bytes = status.as_bytes();
    let code = match bytes {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(invalid_status(status)),
    };
    match status.get(3..) {
        Some("") => Ok(code),
        Some(rest) if rest.starts_with(' ') && rest[1..].chars().all(is_text_char) => Ok(code),
        _ => Err(invalid_status(status)),
    }
}

fn invalid_status(status: &str) -> ResponseError {
    ResponseError::new(format!(
        "Invalid status {}: expected 3 digits, optionally followed by a space and a reason phrase",
        py_str_repr(&latin1(status))
    ))
}

/// True for a character allowed in a reason phrase or field value, seen as
/// latin-1: HTAB, SP, VCHAR, obs-text (U+0080-U+00FF).
fn is_text_char(c: char) -> bool {
    c == '\t' || (' '..='~').contains(&c) || ('\u{80}'..='\u{ff}').contains(&c)
}

/// True for the headers the server owns and drops from the application's list
/// (Gunicorn's `is_hoppish` plus `Server` and `Date`): Connection, Keep-Alive,
/// Proxy-Authenticate, Proxy-Authorization, TE, Trailers, Transfer-Encoding,
/// Upgrade, Server, Date. Case-insensitive. [`encode_head`] keeps `Upgrade:
/// websocket` and turns `Connection: upgrade` into our own `Connection: upgrade`.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "server",
        "date",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// What the server knows when the application starts its response.
#[derive(Debug, Clone, Copy)]
pub struct ResponseSpec<'a> {
    /// The request's version, echoed in the status line (`HTTP/1.0 200 OK`).
    pub version: (u8, u8),
    /// The request method was HEAD.
    pub is_head: bool,
    /// The server is willing to keep the connection and the client asked for it.
    pub keep_alive: bool,
    /// The application's status string, unvalidated.
    pub status: &'a str,
    /// The application's headers, unvalidated, in order.
    pub headers: &'a [(&'a str, &'a str)],
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many body bytes (the app's `Content-Length`); extra bytes are dropped.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1+ without `Content-Length`); skip empty
    /// writes, end with [`CHUNKED_TERMINATOR`].
    Chunked,
    /// Raw bytes ended by closing the connection (HTTP/1.0 without `Content-Length`).
    CloseDelimited,
    /// HEAD, 1xx, 204, 304: body bytes from the app are dropped.
    NoBody,
}

/// The outcome of [`encode_head`]: how to send the body and what to do after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePlan {
    /// The status code.
    pub code: u16,
    /// How to frame the body.
    pub framing: Framing,
    /// The connection may serve another request (we sent `Connection: keep-alive`).
    pub keep_alive: bool,
    /// The application's `Content-Length`, if it gave one (also for HEAD/304, where it was kept).
    pub content_length: Option<u64>,
    /// The application sent `Connection: upgrade`; we sent `Connection: upgrade`.
    pub upgrade: bool,
}

/// Validates the status and every header, drops hop-by-hop headers, chooses the
/// framing and appends the head to `out`:
///
/// `HTTP/<req version> <status>\r\nServer: rgunicorn\r\nDate: <date>\r\nConnection:
/// keep-alive|close|upgrade\r\n[Transfer-Encoding: chunked\r\n]<app headers>\r\n`
///
/// Header names must be tokens; values SP/HTAB/VCHAR/obs-text (no CR/LF/NUL),
/// trimmed of SP/HTAB, written as latin-1 like Gunicorn. `Content-Length` is
/// honoured; it is dropped for 1xx/204 (Gunicorn 26.1) and kept for HEAD/304
/// (Gunicorn 26.0). Without it: chunked on HTTP/1.1+, close-delimited on 1.0.
///
/// # Errors
///
/// Bad status string, header name or value, or an unusable/conflicting
/// `Content-Length`. Nothing is appended to `out` then.
pub fn encode_head(
    out: &mut Vec<u8>,
    spec: &ResponseSpec<'_>,
    date: &[u8],
) -> Result<ResponsePlan, ResponseError> {
    let code = validate_status(spec.status)?;

    // Validate first, write after, so an error leaves `out` untouched.
    let mut content_length: Option<u64> = None;
    let mut upgrade = false;
    for &(name, value) in spec.headers {
        if !is_token(name.as_bytes()) {
            return Err(ResponseError::new(format!(
                "Invalid response header name {}",
                py_str_repr(&latin1(name))
            )));
        }
        if !value.chars().all(is_text_char) {
            return Err(ResponseError::new(format!(
                "Invalid response header value {} for header {}",
                py_str_repr(&latin1(value)),
                py_str_repr(name.as_bytes())
            )));
        }
        let value = trim_ows_str(value);
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value.as_bytes()).ok_or_else(|| {
                ResponseError::new(format!(
                    "Invalid Content-Length {} in response",
                    py_str_repr(&latin1(value))
                ))
            })?;
            if content_length.is_some_and(|previous| previous != n) {
                return Err(ResponseError::new(
                    "Conflicting Content-Length headers in response".to_owned(),
                ));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }

    let no_body = spec.is_head || code < 200 || code == 204 || code == 304;
    let drop_length = code < 200 || code == 204;
    let framing = match content_length {
        _ if no_body => Framing::NoBody,
        Some(n) => Framing::Length(n),
        None if spec.version >= (1, 1) => Framing::Chunked,
        None => Framing::CloseDelimited,
    };
    let content_length = if drop_length { None } else { content_length };
    let keep_alive = spec.keep_alive && !upgrade && framing != Framing::CloseDelimited;

    out.reserve(
        128 + spec.status.len()
            + spec
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>(),
    );
    // Our own version for any 1.x above 1.0 (RFC 9110 §2.5: a server sends the highest
    // minor version it supports), HTTP/1.0 to 1.0 clients (and to 0.x ones, which only
    // permit_unconventional_http_version lets in; 2.x ones get 1.1, the message's format).
    out.extend_from_slice(if spec.version < (1, 1) {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    push_latin1(out, spec.status);
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nConnection: ");
    out.extend_from_slice(if upgrade {
        &b"upgrade"[..]
    } else if keep_alive {
        b"keep-alive"
    } else {
        b"close"
    });
    out.extend_from_slice(b"\r\n");
    if framing == Framing::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    let mut wrote_length = false;
    for &(name, value) in spec.headers {
        let value = trim_ows_str(value);
        if name.eq_ignore_ascii_case("content-length") {
            // One Content-Length at most, and none for 1xx/204.
            if drop_length || wrote_length {
                continue;
            }
            wrote_length = true;
        } else if is_hop_by_hop(name)
            && !(name.eq_ignore_ascii_case("upgrade") && value.eq_ignore_ascii_case("websocket"))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        push_latin1(out, value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    Ok(ResponsePlan {
        code,
        framing,
        keep_alive,
        content_length,
        upgrade,
    })
}

/// Appends a `103 Early Hints` interim response (`wsgi.early_hints`, Gunicorn
/// 25.0): always `HTTP/1.1`, names and values validated like [`encode_head`]'s.
///
/// # Errors
///
/// A header name that is not a token or a value with forbidden characters.
pub fn encode_early_hints(
    out: &mut Vec<u8>,
    headers: &[(&str, &str)],
) -> Result<(), ResponseError> {
    for &(name, value) in headers {
        if !is_token(name.as_bytes()) || !value.chars().all(is_text_char) {
            return Err(ResponseError::new(format!(
                "Invalid early hint header {}",
                py_str_repr(&latin1(name))
            )));
        }
    }
    out.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\n");
    for &(name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        push_latin1(out, trim_ows_str(value));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends text as latin-1 (validated text holds nothing above U+00FF).
fn push_latin1(out: &mut Vec<u8>, s: &str) {
    if s.is_ascii() {
        out.extend_from_slice(s.as_bytes());
    } else {
        out.extend(
            s.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
        );
    }
}

/// Writes the chunk-size line `{len:X}\r\n` into `out` and returns it. Upper-case
/// hex like Gunicorn's `write_chunk`; the chunk itself must be followed by CRLF.
pub fn chunk_size_line(len: usize, out: &mut [u8; 20]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = if len == 0 {
        1
    } else {
        (usize::BITS - len.leading_zeros()).div_ceil(4) as usize
    };
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    &out[..digits + 2]
}

#[cfg(test)]
mod tests;
