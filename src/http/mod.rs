//! The HTTP/1.1 wire layer, pure: bytes in, values out; values in, bytes out.
//!
//! # Layout
//!
//! - [`request`]: request head parsing and the framing decision ([`parse_head`],
//!   [`RequestHead`], [`Limits`]).
//! - [`body`]: request body decoding, `Content-Length` and chunked ([`BodyDecoder`]).
//! - [`response`]: validating the application's status and headers and writing
//!   the response head ([`encode_head`], [`Framing`]), chunk framing helpers.
//! - [`error`]: [`ParseError`] (one variant per rule, mapped to its status in one
//!   place), [`ResponseError`], and Gunicorn's byte-exact [`error_page`].
//! - [`date`]: the cached IMF-fixdate for `Date`.
//! - [`text`]: short byte strings kept inline, for the parts of a request head.
//!
//! The rules are Gunicorn 27.0.1's (GUNICORN.md §6.2-6.5) with RFC 9112 citations.
//! Where we are stricter than Gunicorn, on purpose:
//!
//! - HTTP/1.1+ needs exactly one `Host`, and it must be `uri-host[:port]` (RFC 9110 §7.2);
//! - absolute-form needs a valid scheme and a non-empty valid host, CONNECT's
//!   authority-form a valid `host:port` (Gunicorn only looks for `://`);
//! - a chunk-size line may not end in whitespace without an extension (RFC 9112
//!   §7.1.1 grammar), is at most 4 KiB, and trailers at most 16 KiB;
//! - an `Expect` other than `100-continue` gets 417 on HTTP/1.0 too.
//!
//! Not here: sockets, timeouts, keep-alive loops (the worker), the PROXY
//! protocol, `header_map`/forwarded headers/`SCRIPT_NAME` and the WSGI environ
//! (the `wsgi` module), logging.

pub mod body;
pub mod date;
pub mod error;
pub mod files;
mod head;
pub mod proxy;
pub mod request;
mod request_line;
pub mod response;
mod syntax;
pub mod text;

#[cfg(test)]
mod corpus;

pub use body::BodyDecoder;
pub use error::{error_page, ParseError, ResponseError};
pub use request::{parse_head, BodyKind, Header, Leniency, Limits, RequestHead};
pub use response::{
    chunk_size_line, encode_head, is_hop_by_hop, validate_status, Framing, ResponsePlan,
    ResponseSpec, CHUNKED_TERMINATOR, CONTINUE_100,
};
