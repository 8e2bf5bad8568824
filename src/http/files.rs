//! Static files as HTTP sees them (no I/O): the path under a route, content types,
//! validators (`ETag`, `Last-Modified`) and conditional requests, one byte range,
//! precompressed siblings by `Accept-Encoding`, and `Cache-Control`. The worker opens the
//! files (`worker::statics`); this decides what a request gets.

use super::head::RequestHead;

/// Why a path under a static route is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or hostile: bad percent-encoding, an encoded `/` or `\`, NUL, a `..`
    /// segment (400).
    BadPath,
}

/// The file path under a mount, as bytes: the part of the request path after the route,
/// percent-decoded segment by segment. Empty segments and `.` are dropped (as `//` and
/// `/./` resolve); `..`, NUL, and a `/` or `\` that was percent-encoded are refused, so
/// the result never leaves the mount by its text (symlinks are the opener's business).
pub fn relative_path(rest: &str) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::with_capacity(rest.len());
    for segment in rest.split('/') {
        let decoded = percent_decode(segment.as_bytes()).ok_or(Refusal::BadPath)?;
        if decoded.contains(&0) || decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(Refusal::BadPath);
        }
        match decoded.as_slice() {
            b"" | b"." => {}
            b".." => return Err(Refusal::BadPath),
            name => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name);
            }
        }
    }
    Ok(out)
}

fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(value);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `Content-Type` for a file name, by its extension; text types in UTF-8.
pub fn content_type(name: &[u8]) -> &'static str {
    let ext = name
        .rsplit(|&b| b == b'.')
        .next()
        .filter(|e| e.len() < name.len())
        .map(<[u8]>::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_slice() {
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" => "text/javascript; charset=utf-8",
        b"html" | b"htm" => "text/html; charset=utf-8",
        b"txt" => "text/plain; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"xml" => "text/xml; charset=utf-8",
        b"md" => "text/markdown; charset=utf-8",
        b"json" | b"map" => "application/json",
        b"webmanifest" => "application/manifest+json",
        b"wasm" => "application/wasm",
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"svg" => "image/svg+xml",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"ico" => "image/vnd.microsoft.icon",
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"mp4" => "video/mp4",
        b"webm" => "video/webm",
        b"mp3" => "audio/mpeg",
        b"ogg" => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// A precompressed sibling (`NAME.br`, `NAME.gz`) served in place of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    /// The sibling's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` value.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// Whether `Accept-Encoding` accepts `coding` (by name or `*`, with a q above 0).
pub fn accepts(accept_encoding: &[u8], coding: &str) -> bool {
    let text = String::from_utf8_lossy(accept_encoding);
    let mut star = None;
    for item in text.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

/// The validators of one representation: its `ETag` and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    pub etag: String,
    pub modified: u64,
}

impl Validators {
    /// nginx's form (`"<mtime hex>-<size hex>"`), with the encoding of a precompressed
    /// sibling, so each representation has its own tag.
    pub fn new(modified: u64, len: u64, encoding: Option<Encoding>) -> Validators {
        let suffix = encoding.map_or(String::new(), |e| format!("-{}", e.token()));
        Validators {
            etag: format!("\"{modified:x}-{len:x}{suffix}\""),
            modified,
        }
    }

    /// Whether the client's copy is current (304): `If-None-Match` (weak comparison, `*`)
    /// decides when present, else `If-Modified-Since` (RFC 9110 §13.2.2).
    pub fn not_modified(&self, head: &RequestHead) -> bool {
        if let Some(tags) = head.header("if-none-match") {
            return etag_listed(tags, &self.etag);
        }
        head.header("if-modified-since")
            .and_then(super::date::parse_imf_fixdate)
            .is_some_and(|since| self.modified <= since)
    }

    /// Whether an `If-Range` lets the range apply: it names this representation's
    /// strong ETag or its exact `Last-Modified` (RFC 9110 §13.1.5); no header, yes.
    fn range_applies(&self, head: &RequestHead) -> bool {
        match head.header("if-range") {
            None => true,
            Some(v) if v.starts_with(b"\"") => trim(v) == self.etag.as_bytes(),
            Some(v) => super::date::parse_imf_fixdate(v) == Some(self.modified),
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether `etag` is in an `If-None-Match` list (weak comparison: `W/` ignored).
fn etag_listed(list: &[u8], etag: &str) -> bool {
    let ours = etag.as_bytes();
    list.split(|&b| b == b',')
        .map(trim)
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == ours)
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// The whole of it (no range, one that does not apply, or several: a server may
    /// answer those with the whole, RFC 9110 §14.2).
    Whole,
    /// Bytes `start..=end` (206).
    Part { start: u64, end: u64 },
    /// No byte of it (416).
    Unsatisfiable,
}

/// One byte range at most (`bytes=a-b`, `a-`, `-n`); many, or another unit, get the
/// whole representation.
pub fn byte_range(head: &RequestHead, len: u64, validators: &Validators) -> Ranged {
    let Some(value) = head.header("range") else {
        return Ranged::Whole;
    };
    if !validators.range_applies(head) {
        return Ranged::Whole;
    }
    let value = String::from_utf8_lossy(trim(value)).into_owned();
    let Some(spec) = value.strip_prefix("bytes=") else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last)) {
        // The last n bytes.
        (None, Some(n)) if first.trim().is_empty() => {
            if n == 0 || len == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if start >= len {
                return Ranged::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            if end < start {
                // An invalid range-spec: the field is ignored (RFC 9110 §14.1.1).
                return Ranged::Whole;
            }
            Ranged::Part { start, end }
        }
        _ => Ranged::Whole,
    }
}

/// `Cache-Control` for `--static-path-expires` seconds (none for 0): `public, max-age`,
/// and `immutable` for a name that carries a content hash (`app.3f2a9c1be4.css`, as
/// Django's ManifestStaticFilesStorage and bundlers name them).
pub fn cache_control(expires: u64, name: &[u8]) -> Option<String> {
    if expires == 0 {
        return None;
    }
    let immutable = if looks_hashed(name) {
        ", immutable"
    } else {
        ""
    };
    Some(format!("public, max-age={expires}{immutable}"))
}

/// A dot- or dash-separated part of the name of 8 to 64 hex digits with at least one
/// letter and one digit, or Django's 12 hex digits.
fn looks_hashed(name: &[u8]) -> bool {
    let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    base.split(|&b| b == b'.' || b == b'-').skip(1).any(|part| {
        (8..=64).contains(&part.len())
            && part.iter().all(u8::is_ascii_hexdigit)
            && part.iter().any(u8::is_ascii_digit)
            && part.iter().any(u8::is_ascii_alphabetic)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::request::{parse_head, Limits};

    fn head(extra: &str) -> RequestHead {
        let raw = format!("GET /static/a.css HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        match parse_head(raw.as_bytes(), &Limits::default()) {
            Ok(Some(head)) => head,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_are_decoded_and_never_climb_out() {
        assert_eq!(relative_path("css/app.css").unwrap(), b"css/app.css");
        assert_eq!(relative_path("/a//b/./c%20d.txt").unwrap(), b"a/b/c d.txt");
        assert_eq!(
            relative_path("caf%C3%A9.txt").unwrap(),
            "café.txt".as_bytes()
        );
        for bad in [
            "../secret",
            "a/../../secret",
            "%2e%2e/secret",
            "%2E%2E/secret",
            "a%2Fb",
            "a%2fb",
            "a%5cb",
            "a%00b",
            "a%zzb",
            "a%2",
            ".%2e/x",
        ] {
            assert_eq!(relative_path(bad), Err(Refusal::BadPath), "{bad}");
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type(b"a/app.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type(b"logo.svg"), "image/svg+xml");
        assert_eq!(content_type(b"Makefile"), "application/octet-stream");
        assert_eq!(content_type(b"archive.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn accept_encoding_with_q_values_and_star() {
        assert!(accepts(b"gzip, deflate, br", "br"));
        assert!(accepts(b"gzip;q=0.5, br;q=0", "gzip"));
        assert!(!accepts(b"gzip;q=0.5, br;q=0", "br"));
        assert!(accepts(b"*", "br"));
        assert!(!accepts(b"identity", "gzip"));
        assert!(!accepts(b"*;q=0", "gzip"));
    }

    #[test]
    fn conditional_requests_follow_rfc_9110() {
        let v = Validators::new(1_700_000_000, 100, None);
        assert_eq!(v.etag, "\"6553f100-64\"");
        assert!(Validators::new(1, 2, Some(Encoding::Gzip))
            .etag
            .ends_with("-gzip\""));
        assert!(!v.not_modified(&head("")));
        assert!(v.not_modified(&head(&format!("If-None-Match: \"x\", W/{}\r\n", v.etag))));
        assert!(v.not_modified(&head("If-None-Match: *\r\n")));
        assert!(!v.not_modified(&head("If-None-Match: \"other\"\r\n")));
        let at = std::str::from_utf8(&crate::http::date::imf_fixdate(1_700_000_000))
            .unwrap()
            .to_string();
        assert!(v.not_modified(&head(&format!("If-Modified-Since: {at}\r\n"))));
        let before = std::str::from_utf8(&crate::http::date::imf_fixdate(1_699_999_999))
            .unwrap()
            .to_string();
        assert!(!v.not_modified(&head(&format!("If-Modified-Since: {before}\r\n"))));
        // If-None-Match wins over If-Modified-Since.
        assert!(!v.not_modified(&head(&format!(
            "If-None-Match: \"other\"\r\nIf-Modified-Since: {at}\r\n"
        ))));
    }

    #[test]
    fn one_byte_range_at_most() {
        let v = Validators::new(5, 100, None);
        let r = |h: &str| byte_range(&head(h), 100, &v);
        assert_eq!(r(""), Ranged::Whole);
        assert_eq!(
            r("Range: bytes=10-19\r\n"),
            Ranged::Part { start: 10, end: 19 }
        );
        assert_eq!(
            r("Range: bytes=90-\r\n"),
            Ranged::Part { start: 90, end: 99 }
        );
        assert_eq!(
            r("Range: bytes=90-500\r\n"),
            Ranged::Part { start: 90, end: 99 }
        );
        assert_eq!(
            r("Range: bytes=-5\r\n"),
            Ranged::Part { start: 95, end: 99 }
        );
        assert_eq!(
            r("Range: bytes=-500\r\n"),
            Ranged::Part { start: 0, end: 99 }
        );
        assert_eq!(r("Range: bytes=100-\r\n"), Ranged::Unsatisfiable);
        assert_eq!(r("Range: bytes=-0\r\n"), Ranged::Unsatisfiable);
        assert_eq!(r("Range: bytes=0-1,5-6\r\n"), Ranged::Whole);
        assert_eq!(r("Range: bytes=9-3\r\n"), Ranged::Whole);
        assert_eq!(r("Range: items=0-1\r\n"), Ranged::Whole);
        assert_eq!(r("Range: bytes=x-1\r\n"), Ranged::Whole);
        let tag = format!("Range: bytes=0-1\r\nIf-Range: {}\r\n", v.etag);
        assert_eq!(r(&tag), Ranged::Part { start: 0, end: 1 });
        assert_eq!(
            r("Range: bytes=0-1\r\nIf-Range: \"stale\"\r\n"),
            Ranged::Whole
        );
    }

    #[test]
    fn cache_control_marks_hashed_names_immutable() {
        assert_eq!(cache_control(0, b"a.css"), None);
        assert_eq!(cache_control(60, b"a.css").unwrap(), "public, max-age=60");
        assert_eq!(
            cache_control(60, b"css/app.3f2a9c1be4d1.css").unwrap(),
            "public, max-age=60, immutable"
        );
        assert!(cache_control(60, b"main-5d41402abc4b2a76.js")
            .unwrap()
            .ends_with("immutable"));
        assert!(!cache_control(60, b"deadbeef.css")
            .unwrap()
            .ends_with("immutable"));
        assert!(!cache_control(60, b"jquery.min.js")
            .unwrap()
            .ends_with("immutable"));
    }
}
