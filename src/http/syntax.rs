//! Character classes and small grammar checks from RFC 9110, RFC 9112 and RFC 3986.
//!
//! Owns the byte-level predicates shared by the request parser, the chunked body
//! decoder and the response encoder (tokens, field values, `uri-host[:port]`,
//! quoted strings), plus the Python-`repr()` formatting that Gunicorn's error
//! messages use. Does not own any rule about *which* header may appear where;
//! that lives in `request.rs` and `body.rs`.

use std::fmt::Write as _;
use std::net::Ipv6Addr;

/// A 256-entry table of the bytes `b` for which `$pred` holds, built at compile time.
macro_rules! byte_table {
    (|$b:ident| $pred:expr) => {{
        let mut table = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $b = i as u8;
            table[i] = $pred;
            i += 1;
        }
        table
    }};
}

/// `tchar` lookup table (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = byte_table!(|b| {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
});

/// True for a `tchar` (RFC 9110 §5.6.2).
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// True for a non-empty `token` (RFC 9110 §5.6.2).
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// True for a byte allowed inside a field value: HTAB, SP, VCHAR or obs-text
/// (RFC 9110 §5.5). Everything else (NUL, CR, LF, other controls, DEL) is refused,
/// which is exactly Gunicorn's `RFC9110_5_5_INVALID_AND_DANGEROUS` rule.
#[inline]
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// True for SP or HTAB, the only optional whitespace HTTP knows (RFC 9110 §5.6.3).
#[inline]
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// [`trim_ows`] for text: SP and HTAB are ASCII, so the cuts fall on character boundaries.
pub(crate) fn trim_ows_str(s: &str) -> &str {
    let trimmed = trim_ows(s.as_bytes());
    let start = trimmed.as_ptr() as usize - s.as_ptr() as usize;
    s.get(start..start + trimmed.len()).unwrap_or(s)
}

/// Strips SP/HTAB on both sides, and nothing else (Gunicorn #3364: `str.strip()`
/// also removed `\x0b`, `\x0c`, `\x1c`–`\x1f`, `\x85`, `\xa0`, which let
/// `\x0bchunked` mean chunked).
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Parses `1*DIGIT` as a `u64`; `None` when empty, not all ASCII digits, or too big.
/// No sign, no spaces, no underscores: RFC 9110 §8.6 `Content-Length = 1*DIGIT`.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Why a `field-line` (RFC 9112 §5) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldLineError {
    /// No `:` or nothing before it.
    MissingColon,
    /// The name is not a token (this includes whitespace before the colon,
    /// RFC 9112 §5.1, and a line starting with SP/HTAB).
    InvalidName,
    /// The value holds a control character, DEL, or a bare CR.
    InvalidValue,
}

/// Splits one field line (without its CRLF) into name and OWS-trimmed value,
/// checking the RFC 9112 §5 grammar.
pub(crate) fn split_field_line(line: &[u8]) -> Result<(&[u8], &[u8]), FieldLineError> {
    let colon = match line.iter().position(|&b| b == b':') {
        Some(0) | None => return Err(FieldLineError::MissingColon),
        Some(i) => i,
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !is_token(name) {
        return Err(FieldLineError::InvalidName);
    }
    if !value.iter().all(|&b| is_field_value_byte(b)) {
        return Err(FieldLineError::InvalidValue);
    }
    Ok((name, trim_ows(value)))
}

/// The part of a field line before the first `:` (the whole line if none);
/// used to name the culprit in error messages.
pub(crate) fn field_name_of(line: &[u8]) -> &[u8] {
    match line.iter().position(|&b| b == b':') {
        Some(i) => &line[..i],
        None => line,
    }
}

/// RFC 3986 `unreserved` / `sub-delims`, the characters of a `reg-name` besides
/// pct-encoded triplets (`userinfo` adds `:`).
#[inline]
fn is_unreserved_or_sub_delim(b: u8) -> bool {
    UNRESERVED_OR_SUB_DELIM[usize::from(b)]
}

/// [`is_unreserved_or_sub_delim`] as a table: every `Host` of every request is checked
/// byte by byte.
const UNRESERVED_OR_SUB_DELIM: [bool; 256] = byte_table!(|b| {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
});

/// Checks `*( unreserved / pct-encoded / sub-delims / extra )` (RFC 3986 §2).
fn is_uri_chars(s: &[u8], extra: u8) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            match s.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if is_unreserved_or_sub_delim(b) || b == extra {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 §3.2.1 `userinfo = *( unreserved / pct-encoded / sub-delims / ":" )`.
pub(crate) fn is_userinfo(s: &[u8]) -> bool {
    is_uri_chars(s, b':')
}

/// RFC 3986 §3.2.2 `IP-literal = "[" ( IPv6address / IPvFuture ) "]"` (brackets included).
fn is_ip_literal(s: &[u8]) -> bool {
    let inner = match s {
        [b'[', inner @ .., b']'] => inner,
        _ => return false,
    };
    match inner {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        [b'v' | b'V', rest @ ..] => {
            let Some(dot) = rest.iter().position(|&b| b == b'.') else {
                return false;
            };
            let (hex, tail) = (&rest[..dot], &rest[dot + 1..]);
            !hex.is_empty()
                && hex.iter().all(u8::is_ascii_hexdigit)
                && !tail.is_empty()
                && tail
                    .iter()
                    .all(|&b| is_unreserved_or_sub_delim(b) || b == b':')
        }
        _ => std::str::from_utf8(inner)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
            .is_some(),
    }
}

/// Checks `uri-host [ ":" port ]` (RFC 3986 §3.2.2-3.2.3, as used by RFC 9110 §7.2
/// for `Host` and RFC 9112 §3.2.3 for authority-form).
///
/// `host_required`: refuse an empty host (authority-form, absolute-form); an empty
/// `Host` value is legal (RFC 9110 §7.2). `port_required`: authority-form needs
/// `:port`. A present port must be 1-5 digits and at most 65535; an empty port
/// after `:` is accepted only when the port is optional (RFC 3986 `port = *DIGIT`).
pub(crate) fn is_host_port(s: &[u8], host_required: bool, port_required: bool) -> bool {
    let (host, port) = if s.first() == Some(&b'[') {
        let Some(close) = s.iter().position(|&b| b == b']') else {
            return false;
        };
        let (host, rest) = s.split_at(close + 1);
        match rest {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return false,
        }
    } else {
        // reg-name and IPv4address cannot contain ':', so the first one starts the port.
        match s.iter().position(|&b| b == b':') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    let host_ok = if host.first() == Some(&b'[') {
        is_ip_literal(host)
    } else {
        // IPv4address is a subset of reg-name, so one check covers both.
        (!host_required || !host.is_empty()) && is_uri_chars(host, 0)
    };
    let port_ok = match port {
        None => !port_required,
        Some([]) => !port_required,
        Some(p) => p.len() <= 5 && parse_decimal(p).is_some_and(|n| n <= 65535),
    };
    host_ok && port_ok
}

/// RFC 3986 §3.1 `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
pub(crate) fn is_scheme(s: &[u8]) -> bool {
    match s {
        [first, rest @ ..] => {
            first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        }
        [] => false,
    }
}

/// Python 3's `repr()` of `bytes.decode("latin-1")`, the way Gunicorn's `%r`
/// formats request data in its error messages (`Invalid HTTP method: 'get'`).
pub(crate) fn py_str_repr(bytes: &[u8]) -> String {
    py_repr(bytes, false)
}

/// Python 3's `repr()` of a `bytes` object (`b'zz'`), used by Gunicorn's
/// chunked-body error messages.
pub(crate) fn py_bytes_repr(bytes: &[u8]) -> String {
    py_repr(bytes, true)
}

fn py_repr(bytes: &[u8], is_bytes: bool) -> String {
    // Python picks double quotes only when the text has a single quote and no double quote.
    let quote = if bytes.contains(&b'\'') && !bytes.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(bytes.len() + 3);
    if is_bytes {
        out.push('b');
    }
    out.push(char::from(quote));
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if b == quote => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            // str.isprintable() is false for U+0080-U+00A0 and U+00AD (soft hyphen).
            0xa1..=0xff if !is_bytes && b != 0xad => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push(char::from(quote));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refuse_separators_and_controls() {
        assert!(is_token(b"X-Custom_Header!"));
        for bad in [&b""[..], b"a b", b"a:b", b"a\x00", b"(x)", b"caf\xe9"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn trimming_removes_only_space_and_tab() {
        assert_eq!(trim_ows(b" \t chunked\t "), b"chunked");
        assert_eq!(trim_ows(b"\x0bchunked"), b"\x0bchunked");
        assert_eq!(trim_ows(b"   "), b"");
    }

    #[test]
    fn decimals_refuse_signs_spaces_and_overflow() {
        assert_eq!(parse_decimal(b"0042"), Some(42));
        for bad in [
            &b""[..],
            b"+5",
            b"-1",
            b"5 ",
            b"5,5",
            b"1_0",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn field_lines_are_split_and_trimmed() {
        assert_eq!(
            split_field_line(b"Name: \t v a \t"),
            Ok((&b"Name"[..], &b"v a"[..]))
        );
        assert_eq!(split_field_line(b"Name:"), Ok((&b"Name"[..], &b""[..])));
        assert_eq!(
            split_field_line(b"NoColon"),
            Err(FieldLineError::MissingColon)
        );
        assert_eq!(split_field_line(b": v"), Err(FieldLineError::MissingColon));
        assert_eq!(
            split_field_line(b"Name : v"),
            Err(FieldLineError::InvalidName)
        );
        assert_eq!(
            split_field_line(b"N: a\x7fb"),
            Err(FieldLineError::InvalidValue)
        );
        assert_eq!(
            split_field_line(b"N: a\rb"),
            Err(FieldLineError::InvalidValue)
        );
        assert!(split_field_line(b"N: caf\xe9").is_ok());
    }

    #[test]
    fn hosts_follow_rfc_3986() {
        for good in [
            &b"example.com"[..],
            b"example.com:8080",
            b"127.0.0.1:80",
            b"[::1]",
            b"[::1]:443",
            b"[v1.fe80::a+en1]",
            b"my_host.local",
            b"ex%41mple",
            b"",
            b"example.com:",
        ] {
            assert!(is_host_port(good, false, false), "{good:?}");
        }
        for bad in [
            &b"exa mple"[..],
            b"example.com:80:80",
            b"example.com:http",
            b"example.com:65536",
            b"[::1",
            b"[::1]x",
            b"[zz::1]",
            b"a@b",
            b"a/b",
            b"ex%4",
            b"ex%zz",
        ] {
            assert!(!is_host_port(bad, false, false), "{bad:?}");
        }
        assert!(!is_host_port(b"", true, false));
        assert!(!is_host_port(b"example.com", true, true));
        assert!(!is_host_port(b"example.com:", true, true));
        assert!(is_host_port(b"example.com:443", true, true));
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(py_str_repr(b"get"), "'get'");
        assert_eq!(py_str_repr(b"it's"), "\"it's\"");
        assert_eq!(py_str_repr(b"a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_str_repr(b"a\r\n\t\\\x0b"), "'a\\r\\n\\t\\\\\\x0b'");
        assert_eq!(py_str_repr(b"\xe9\xa0\xad\x85"), "'\u{e9}\\xa0\\xad\\x85'");
        assert_eq!(py_bytes_repr(b"zz\xe9"), "b'zz\\xe9'");
        assert_eq!(py_bytes_repr(b""), "b''");
    }
}
