//! The request line (RFC 9112 §3): `method SP request-target SP HTTP-version`, split and
//! checked in Gunicorn's order, and the request-target classified (RFC 9112 §3.2).

use super::error::{echo, ParseError};
use super::head::Leniency;
use super::syntax::{is_host_port, is_scheme, is_token, is_userinfo};
use super::text::HeadText;

/// The request line, split and checked.
pub(super) struct RequestLine {
    pub method: HeadText,
    pub target: HeadText,
    pub path: HeadText,
    pub query: HeadText,
    pub fragment: HeadText,
    pub version: (u8, u8),
    pub authority: Option<HeadText>,
}

/// Checks `method SP request-target SP HTTP-version` (RFC 9112 §3) in Gunicorn's
/// order: split, method, target, version.
pub(super) fn parse_request_line(
    line: &[u8],
    lenient: &Leniency,
) -> Result<RequestLine, ParseError> {
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

#[cfg(test)]
mod tests;
