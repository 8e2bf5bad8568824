//! Request body decoding over bytes already read: `Content-Length` and chunked.
//!
//! Owns [`BodyDecoder`], a state machine fed with whatever the socket produced; it
//! strips chunk framing (RFC 9112 §7.1), checks the chunk grammar and the trailer
//! section, and never consumes a byte past the end of the body, so what follows
//! (a pipelined request) stays in the caller's buffer. Trailers are validated and
//! kept for the hooks' `req.trailers` (the environ does not show them, as in Gunicorn).
//!
//! Does not own reading, timeouts, or the `wsgi.input` buffering policy. A
//! request without `Content-Length`/`Transfer-Encoding` has no body (RFC 9112
//! §6.3 rule 7), and a short `Content-Length` body at EOF is the caller's call
//! (Gunicorn hands the app what arrived).

use super::error::{echo, ParseError};
use super::head::{BodyKind, Leniency};
use super::syntax::{is_field_value_byte, is_ows, is_tchar, split_field_line, trim_ows};

/// Longest chunk-size line (size, extensions and CRLF) accepted; Gunicorn 26.2
/// bounds it too, so a client cannot stream an endless extension.
pub const MAX_CHUNK_SIZE_LINE_BYTES: usize = 4096;

/// Largest trailer section (all trailer lines with their CRLFs) accepted.
pub const MAX_TRAILER_SECTION_BYTES: usize = 16384;

/// Trailer fields a client must not send (RFC 9110 §6.5.1; Gunicorn 26.0's list).
const FORBIDDEN_TRAILERS: [&[u8]; 6] = [
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"trailer",
    b"authorization",
    b"te",
];

/// A trailer field: its upper-cased name and its value.
pub type Trailer = (Vec<u8>, Vec<u8>);

/// Decodes one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyDecoder {
    /// No body at all.
    Empty,
    /// `Content-Length` framing: this many bytes are still to come.
    Length(u64),
    /// Chunked framing.
    Chunked(ChunkedDecoder),
}

/// State of a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// The size line or trailer line being collected (they may span reads).
    line: Vec<u8>,
    /// Trailer bytes seen so far, for [`MAX_TRAILER_SECTION_BYTES`].
    trailer_bytes: usize,
    /// Trailer fields seen so far, upper-cased name and value (a folded line continues
    /// the last one), bounded by [`MAX_TRAILER_SECTION_BYTES`]. Boxed: a request body is
    /// moved a few times per request and has trailers only as an exception, so the
    /// decoder stays the size it was without them.
    #[allow(clippy::box_collection)]
    trailers: Option<Box<Vec<Trailer>>>,
    /// Gunicorn reads trailers with its header parser: the same switches apply.
    lenient: Leniency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Collecting `chunk-size [chunk-ext] CRLF`.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Collecting trailer lines until the empty one.
    Trailer,
    /// The whole body, trailers included, has been consumed.
    Done,
}

impl BodyDecoder {
    /// The decoder for a body framed as `kind`.
    pub fn new(kind: &BodyKind, lenient: Leniency) -> BodyDecoder {
        match *kind {
            BodyKind::Empty => BodyDecoder::Empty,
            BodyKind::Length(n) => BodyDecoder::length(n),
            BodyKind::Chunked => BodyDecoder::chunked_with(lenient),
        }
    }

    /// A decoder for exactly `n` bytes.
    pub fn length(n: u64) -> BodyDecoder {
        BodyDecoder::Length(n)
    }

    /// A decoder for a chunked body.
    pub fn chunked() -> BodyDecoder {
        BodyDecoder::chunked_with(Leniency::default())
    }

    /// A decoder for a chunked body whose trailers follow the leniency switches.
    pub fn chunked_with(lenient: Leniency) -> BodyDecoder {
        BodyDecoder::Chunked(ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
            trailer_bytes: 0,
            trailers: None,
            lenient,
        })
    }

    /// Decodes from `input`, appending at most `max` body bytes to `out`, and
    /// returns how many bytes of `input` were consumed. Framing is consumed as far
    /// as it goes even once `max` bytes were appended, so `is_done` turns true as
    /// soon as the last chunk and trailers are in. Returns `Ok(0)` with nothing
    /// appended only when more input is needed, the body is done, or `max` is 0
    /// inside data.
    ///
    /// # Errors
    ///
    /// A chunked-framing violation; the connection must not be reused after it.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, ParseError> {
        match self {
            BodyDecoder::Empty => Ok(0),
            BodyDecoder::Length(remaining) => {
                let n = take(*remaining, input.len(), max);
                out.extend_from_slice(&input[..n]);
                *remaining -= n as u64;
                Ok(n)
            }
            BodyDecoder::Chunked(chunked) => chunked.decode(input, out, max),
        }
    }

    /// The trailer fields of a chunked body read to its end (upper-cased names, values
    /// without surrounding whitespace, in order); empty otherwise.
    pub fn take_trailers(&mut self) -> Vec<Trailer> {
        match self {
            BodyDecoder::Chunked(c) if c.state == ChunkState::Done => {
                c.trailers.take().map(|t| *t).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// True once the whole body (and for chunked, the trailer section) was consumed.
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Empty => true,
            BodyDecoder::Length(remaining) => *remaining == 0,
            BodyDecoder::Chunked(chunked) => chunked.state == ChunkState::Done,
        }
    }

    /// For known-length bodies, the bytes still to come (lets the caller read
    /// straight into the application's buffer); `None` for chunked.
    pub fn remaining_len(&self) -> Option<u64> {
        match self {
            BodyDecoder::Empty => Some(0),
            BodyDecoder::Length(remaining) => Some(*remaining),
            BodyDecoder::Chunked(_) => None,
        }
    }

    /// What end-of-stream means here: an error for an unfinished chunked body
    /// (Gunicorn 26.1 refuses a truncated chunked body); `Ok` otherwise, a short
    /// `Content-Length` body being passed to the app as is, as Gunicorn does.
    ///
    /// # Errors
    ///
    /// [`ParseError::BodyTruncated`] when chunked and not done.
    pub fn check_eof(&self) -> Result<(), ParseError> {
        match self {
            BodyDecoder::Chunked(chunked) if chunked.state != ChunkState::Done => {
                Err(ParseError::BodyTruncated)
            }
            _ => Ok(()),
        }
    }
}

/// How many body bytes to move now: bounded by what is left, what arrived and what fits.
fn take(remaining: u64, available: usize, max: usize) -> usize {
    let n = available.min(max);
    usize::try_from(remaining).map_or(n, |r| r.min(n))
}

impl ChunkedDecoder {
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<usize, ParseError> {
        let mut pos = 0;
        let mut budget = max;
        loop {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(0) => self.state = ChunkState::DataCr,
                ChunkState::Data(remaining) => {
                    let n = take(remaining, input.len() - pos, budget);
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&input[pos..pos + n]);
                    pos += n;
                    budget -= n;
                    self.state = ChunkState::Data(remaining - n as u64);
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let Some(&b) = input.get(pos) else { break };
                    let expected = if self.state == ChunkState::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if b != expected {
                        // Report the two bytes found where CRLF belonged, as Gunicorn does.
                        let found = if expected == b'\r' {
                            input[pos..input.len().min(pos + 2)].to_vec()
                        } else {
                            vec![b'\r', b]
                        };
                        return Err(ParseError::ChunkMissingTerminator { found });
                    }
                    pos += 1;
                    self.state = if expected == b'\r' {
                        ChunkState::DataLf
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Size | ChunkState::Trailer => {
                    if pos == input.len() {
                        break;
                    }
                    let (used, complete) = self.collect_line(&input[pos..])?;
                    pos += used;
                    if complete {
                        self.finish_line()?;
                    }
                }
            }
        }
        Ok(pos)
    }

    /// Appends input to the current line up to and including its LF. Returns the
    /// bytes used and whether the line is complete. Bounds the line and refuses a
    /// bare CR as soon as it is seen.
    fn collect_line(&mut self, input: &[u8]) -> Result<(usize, bool), ParseError> {
        let (used, complete) = match input.iter().position(|&b| b == b'\n') {
            Some(lf) => (lf + 1, true),
            None => (input.len(), false),
        };
        // Bound before copying, so one big read cannot grow the line buffer.
        let start = self.line.len();
        if self.state == ChunkState::Size {
            if start + used > MAX_CHUNK_SIZE_LINE_BYTES {
                return Err(ParseError::ChunkSizeLineTooLong {
                    limit: MAX_CHUNK_SIZE_LINE_BYTES,
                });
            }
        } else {
            self.trailer_bytes += used;
            if self.trailer_bytes > MAX_TRAILER_SECTION_BYTES {
                return Err(ParseError::TrailerSectionTooLarge {
                    limit: MAX_TRAILER_SECTION_BYTES,
                });
            }
        }
        self.line.extend_from_slice(&input[..used]);
        // A CR anywhere but right before the LF is bare (RFC 9112 §2.2); check only new bytes
        // (and the byte before them, which may have been a CR awaiting its LF).
        let check_from = start.saturating_sub(1);
        let content_end = self.line.len().saturating_sub(if complete { 2 } else { 1 });
        let bare_cr = self
            .line
            .get(check_from..content_end.max(check_from))
            .is_some_and(|s| s.contains(&b'\r'));
        let bare_lf = complete && (self.line.len() < 2 || self.line[self.line.len() - 2] != b'\r');
        if bare_cr || bare_lf {
            return Err(self.line_error());
        }
        Ok((used, complete))
    }

    /// The error for a malformed current line, by state.
    fn line_error(&self) -> ParseError {
        // Drop a proper CRLF; keep a bare LF visible in the message.
        let line = self.line.strip_suffix(b"\r\n").unwrap_or(&self.line);
        if self.state == ChunkState::Trailer {
            return ParseError::InvalidTrailer { line: echo(line) };
        }
        // Blame the size when the damage is in the hex digits, else the extension.
        let hex_end = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        if hex_end == 0 || !matches!(line.get(hex_end), Some(b';' | b' ' | b'\t')) {
            ParseError::InvalidChunkSize { line: echo(line) }
        } else {
            ParseError::InvalidChunkExtension { line: echo(line) }
        }
    }

    /// Handles a complete line (ending in CRLF) in the Size or Trailer state.
    fn finish_line(&mut self) -> Result<(), ParseError> {
        let content = &self.line[..self.line.len() - 2];
        if self.state == ChunkState::Size {
            let size = parse_chunk_size_line(content)?;
            self.state = if size == 0 {
                ChunkState::Trailer
            } else {
                ChunkState::Data(size)
            };
        } else if content.is_empty() {
            self.state = ChunkState::Done;
        } else {
            match check_trailer_line(content, &self.lenient, self.trailers.is_some())? {
                Some(field) => self.trailers.get_or_insert_default().push(field),
                None => {
                    // obs-fold: joined to the previous value with one space, as Gunicorn.
                    if let Some((_, value)) = self.trailers.as_mut().and_then(|t| t.last_mut()) {
                        value.push(b' ');
                        value.extend_from_slice(trim_ows(content));
                    }
                }
            }
        }
        self.line.clear();
        Ok(())
    }
}

/// Parses `chunk-size [ chunk-ext ]` (no CRLF):
/// `chunk-size = 1*HEXDIG`,
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`,
/// `chunk-ext-val = token / quoted-string` (RFC 9112 §7.1.1). Leading zeros are fine.
fn parse_chunk_size_line(line: &[u8]) -> Result<u64, ParseError> {
    let hex_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let ext = &line[hex_end..];
    if hex_end == 0 || !(ext.is_empty() || matches!(ext[0], b';' | b' ' | b'\t')) {
        return Err(ParseError::InvalidChunkSize { line: echo(line) });
    }
    let mut size: u64 = 0;
    for &b in &line[..hex_end] {
        let digit = char::from(b).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or_else(|| ParseError::ChunkSizeOverflow { line: echo(line) })?;
    }
    if !is_valid_chunk_ext(ext) {
        return Err(ParseError::InvalidChunkExtension { line: echo(line) });
    }
    Ok(size)
}

/// Checks `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn is_valid_chunk_ext(mut s: &[u8]) -> bool {
    let skip_bws = |s: &[u8]| -> usize { s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len()) };
    let token_len = |s: &[u8]| -> usize { s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len()) };
    loop {
        // Whitespace is only allowed before a ';' (BWS ";"), never at the end.
        let ws = skip_bws(s);
        match s.get(ws) {
            None => return ws == 0,
            Some(b';') => s = &s[ws + 1..],
            Some(_) => return false,
        }
        s = &s[skip_bws(s)..];
        let name = token_len(s);
        if name == 0 {
            return false;
        }
        s = &s[name..];
        let after_ws = skip_bws(s);
        if s.get(after_ws) != Some(&b'=') {
            continue;
        }
        s = &s[after_ws + 1..];
        s = &s[skip_bws(s)..];
        let value = if s.first() == Some(&b'"') {
            quoted_string_len(s)
        } else {
            Some(token_len(s)).filter(|&n| n > 0)
        };
        let Some(value) = value else { return false };
        s = &s[value..];
    }
}

/// Length of the `quoted-string` at the start of `s` (RFC 9110 §5.6.4), if valid:
/// `DQUOTE *( qdtext / quoted-pair ) DQUOTE`, qdtext being HTAB/SP/VCHAR except
/// `"` and `\`, or obs-text.
fn quoted_string_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return Some(i + 1),
            b'\\' => {
                let escaped = *s.get(i + 1)?;
                if !is_field_value_byte(escaped) {
                    return None;
                }
                i += 2;
            }
            _ if is_field_value_byte(b) => i += 1,
            _ => return None,
        }
    }
    None
}

/// Checks one trailer line (no CRLF): field-line grammar, not a forbidden name, no obs-fold
/// unless `permit_obsolete_folding` (then it continues the previous field), no space before
/// the colon unless `strip_header_spaces`. Returns a new field (upper-cased name, value),
/// or None for a continuation line.
fn check_trailer_line(
    line: &[u8],
    lenient: &Leniency,
    after_field: bool,
) -> Result<Option<Trailer>, ParseError> {
    if is_ows(line[0]) {
        if lenient.obsolete_folding && after_field && line.iter().all(|&b| is_field_value_byte(b)) {
            return Ok(None);
        }
        return Err(ParseError::InvalidTrailer { line: echo(line) });
    }
    let stripped;
    let line = match line.iter().position(|&b| b == b':') {
        Some(colon) if lenient.strip_header_spaces => {
            let mut name = &line[..colon];
            while let [rest @ .., last] = name {
                if !is_ows(*last) {
                    break;
                }
                name = rest;
            }
            stripped = [name, &line[colon..]].concat();
            &stripped[..]
        }
        _ => line,
    };
    match split_field_line(line) {
        Ok((name, value)) => {
            if FORBIDDEN_TRAILERS
                .iter()
                .any(|forbidden| name.eq_ignore_ascii_case(forbidden))
            {
                return Err(ParseError::ForbiddenTrailer {
                    name: name.to_ascii_uppercase(),
                });
            }
            Ok(Some((name.to_ascii_uppercase(), value.to_vec())))
        }
        Err(_) => Err(ParseError::InvalidTrailer { line: echo(line) }),
    }
}

/// Decodes a whole chunked body at once: for tests.
#[cfg(test)]
pub(crate) fn decode_all(
    decoder: &mut BodyDecoder,
    input: &[u8],
) -> Result<(Vec<u8>, usize), ParseError> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let used = decoder.decode(&input[pos..], &mut out, usize::MAX)?;
        pos += used;
        if used == 0 {
            return Ok((out, pos));
        }
    }
}

#[cfg(test)]
mod tests;
