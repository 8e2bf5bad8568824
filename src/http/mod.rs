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
//!
//! The rules are Gunicorn 27.0.1's (GUNICORN.md §6.2-6.5) with RFC 9112 citations;
//! where we are stricter (mandatory valid `Host`, chunk-extension whitespace) the
//! item says so.
//!
//! Not here: sockets, timeouts, keep-alive loops (the worker), the PROXY
//! protocol, `header_map`/forwarded headers/`SCRIPT_NAME` and the WSGI environ
//! (the `wsgi` module), logging.

pub mod body;
pub mod date;
pub mod error;
pub mod request;
pub mod response;
mod syntax;

#[cfg(test)]
mod corpus;

pub use body::BodyDecoder;
pub use error::{error_page, ParseError, ResponseError};
pub use request::{parse_head, BodyKind, Header, Limits, RequestHead};
pub use response::{
    chunk_size_line, encode_head, is_hop_by_hop, validate_status, Framing, ResponsePlan,
    ResponseSpec,
};
