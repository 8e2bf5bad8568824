//! How a setting's text becomes its value: the parsers the settings table (`defs`) names,
//! one per kind of value Gunicorn validates, with Gunicorn's messages. The generic ones
//! (bool, int, choice, string) are in `setting`.

use std::path::Path;

use super::setting::{parse_choice, parse_int, parse_pos_int, Value};

/// Whether a `worker_class` value names the threaded worker.
pub fn is_gthread(worker_class: &str) -> bool {
    matches!(
        worker_class,
        "gthread" | "gunicorn.workers.gthread.ThreadWorker"
    )
}

/// `worker_class`, kept as written (stripped) as Gunicorn keeps it.
pub(super) fn parse_worker_class(text: &str) -> Result<Value, String> {
    // sync and gthread exist here; any other class would silently change behaviour.
    match text.trim() {
        name @ ("sync" | "gunicorn.workers.sync.SyncWorker" | "gunicorn.workers.SyncWorker") => {
            Ok(Value::Str(name.to_string()))
        }
        name if is_gthread(name) => Ok(Value::Str(name.to_string())),
        other => Err(format!(
            "worker class '{other}' is not supported by rgunicorn: 'sync' and 'gthread' are available"
        )),
    }
}

/// Gunicorn's `validate_user`: a uid, or a user name turned into its uid.
pub(super) fn parse_user(text: &str) -> Result<Value, String> {
    let uid = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().ok()
    } else {
        nix::unistd::User::from_name(text)
            .ok()
            .flatten()
            .map(|user| i64::from(user.uid.as_raw()))
    };
    uid.map(Value::Int)
        .ok_or_else(|| format!("No such user: '{text}'"))
}

/// Gunicorn's `validate_group`: a gid, or a group name turned into its gid.
pub(super) fn parse_group(text: &str) -> Result<Value, String> {
    let gid = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().ok()
    } else {
        nix::unistd::Group::from_name(text)
            .ok()
            .flatten()
            .map(|group| i64::from(group.gid.as_raw()))
    };
    gid.map(Value::Int)
        .ok_or_else(|| format!("No such group: '{text}'"))
}

pub(super) fn parse_threads(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(0) => Err("Value must be positive: 0".to_string()),
        v => Ok(v),
    }
}

pub(super) fn parse_workers(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(0) => Err("Value must be positive: 0".to_string()),
        v => Ok(v),
    }
}

/// Gunicorn's umask: `int(x, 0)`, plus a leading-zero string read as octal (`022`).
pub(super) fn parse_octal(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let digits = t
        .strip_prefix('0')
        .filter(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
    match digits {
        Some(octal) => i64::from_str_radix(octal, 8)
            .map(Value::Int)
            .map_err(|_| format!("Not a valid octal number: {text}")),
        None => parse_pos_int(t),
    }
}

/// One of the five levels in any case, kept as written (stripped), as Gunicorn keeps it.
pub(super) fn parse_loglevel(text: &str) -> Result<Value, String> {
    parse_choice(
        text,
        &["debug", "info", "warning", "error", "critical"],
        "log level",
    )?;
    Ok(Value::Str(text.trim().to_string()))
}

pub(super) fn parse_env_entry(text: &str) -> Result<Value, String> {
    if text.contains('=') {
        Ok(Value::Str(text.to_string()))
    } else {
        Err(format!("Invalid value for raw_env: {text}"))
    }
}

/// Gunicorn's `validate_string`: the text with surrounding whitespace removed.
pub(super) fn parse_stripped(text: &str) -> Result<Value, String> {
    Ok(Value::Str(text.trim().to_string()))
}

/// A hook named in text must be a dotted import path (`pkg.mod.func`), as Gunicorn's
/// `validate_callable` requires before importing it.
pub(super) fn parse_hook(text: &str) -> Result<Value, String> {
    match text.rsplit_once('.') {
        Some(_) => Ok(Value::Str(text.to_string())),
        None => Err(format!(
            "Value '{text}' is not import string. Format: module[.submodules...].object"
        )),
    }
}

/// Dict settings (`secure_scheme_headers`, `logconfig_dict`) come from a config file only;
/// text never is a dict (Gunicorn's `validate_dict` message, trailing space included).
pub(super) fn parse_dict(text: &str) -> Result<Value, String> {
    Err(format!("Value is not a dictionary: {text} "))
}

/// `reload_engine`: one of Gunicorn's reloader engines, compared exactly as Gunicorn does.
pub(super) fn parse_reload_engine(text: &str) -> Result<Value, String> {
    match text {
        "auto" | "poll" | "inotify" => Ok(Value::Str(text.to_string())),
        _ => Err(format!(
            "Invalid reload_engine: {}",
            Value::Str(text.to_string())
        )),
    }
}

/// `reload_extra_files`: a literal path must exist; a glob pattern (`*`, `?`, `[`) is kept
/// for the reloader to expand on every check (Gunicorn 26.1+).
pub(super) fn parse_reload_extra_file(text: &str) -> Result<Value, String> {
    let entry = text.trim();
    let is_glob = entry.contains(['*', '?', '[']);
    if is_glob || Path::new(entry).exists() {
        Ok(Value::Str(entry.to_string()))
    } else {
        Err(format!("File {entry} does not exists."))
    }
}

/// Whether `text` is what Python's `int(text)` accepts (base 10: sign, digits, underscores
/// between digits, surrounding whitespace).
pub(super) fn is_python_int(text: &str) -> bool {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
}

/// Python's `int(text)` (base 10), when it fits an i64.
pub(super) fn python_int(text: &str) -> Option<i64> {
    if !is_python_int(text) {
        return None;
    }
    let digits: String = text.trim().chars().filter(|&c| c != '_').collect();
    digits.parse().ok()
}

/// Python's `ipaddress.ip_network(text)` (strict): an IPv4/IPv6 address or network, with
/// no host bits set. IPv4 masks may be a prefix length, a netmask or a hostmask.
pub(super) fn check_ip_network(text: &str) -> Result<(), String> {
    let not_a_network = || format!("'{text}' does not appear to be an IPv4 or IPv6 network");
    let mut parts = text.split('/');
    let addr = parts.next().unwrap_or_default();
    let mask = parts.next();
    if parts.next().is_some() {
        return Err(not_a_network());
    }
    let prefix_len = |mask: &str, max: u32| -> Option<u32> {
        if mask.is_empty() || !mask.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        mask.parse::<u32>().ok().filter(|&p| p <= max)
    };
    if let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() {
        let prefix = match mask {
            None => 32,
            Some(m) => match prefix_len(m, 32) {
                Some(p) => p,
                None => {
                    let bits = u32::from(
                        m.parse::<std::net::Ipv4Addr>()
                            .map_err(|_| not_a_network())?,
                    );
                    if bits.leading_ones() + bits.trailing_zeros() == 32 {
                        bits.leading_ones()
                    } else if (!bits).leading_ones() + (!bits).trailing_zeros() == 32 {
                        (!bits).leading_ones()
                    } else {
                        return Err(not_a_network());
                    }
                }
            },
        };
        let host_bits = u32::MAX.checked_shr(prefix).unwrap_or(0);
        return if u32::from(ip) & host_bits == 0 {
            Ok(())
        } else {
            Err(format!("{ip}/{prefix} has host bits set"))
        };
    }
    // Python accepts a scope id on IPv6 addresses (`fe80::1%eth0`).
    let (bare, scope) = match addr.split_once('%') {
        Some((bare, scope)) if !scope.is_empty() => (bare, Some(scope)),
        Some(_) => return Err(not_a_network()),
        None => (addr, None),
    };
    let ip = bare
        .parse::<std::net::Ipv6Addr>()
        .map_err(|_| not_a_network())?;
    let prefix = match mask {
        None => 128,
        Some(m) => prefix_len(m, 128).ok_or_else(not_a_network)?,
    };
    let host_bits = u128::MAX.checked_shr(prefix).unwrap_or(0);
    if u128::from(ip) & host_bits == 0 {
        Ok(())
    } else {
        let scope = scope.map(|s| format!("%{s}")).unwrap_or_default();
        Err(format!("{ip}{scope}/{prefix} has host bits set"))
    }
}

/// Gunicorn's `validate_string_to_list`: comma-separated, each item stripped.
pub(super) fn split_comma_list(text: &str) -> Vec<String> {
    text.trim()
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| item.trim().to_string())
        .collect()
}

/// A comma-separated list (`forwarder_headers`), as the list Gunicorn keeps.
pub(super) fn parse_comma_list(text: &str) -> Result<Value, String> {
    Ok(Value::List(split_comma_list(text)))
}

/// Gunicorn's `validate_string_to_addr_list`: comma-separated IPs or CIDR networks, or `*`.
pub fn parse_addr_list(text: &str) -> Result<Value, String> {
    let items = split_comma_list(text);
    for item in items.iter().filter(|item| *item != "*") {
        check_ip_network(item)?;
    }
    Ok(Value::List(items))
}

/// `syslog_addr`: `unix://PATH[#dgram|#stream]`, `udp://HOST[:PORT]` or `tcp://HOST[:PORT]`.
/// Gunicorn checks this when it opens the syslog handler; we check it up front.
pub(super) fn parse_syslog_addr(text: &str) -> Result<Value, String> {
    let addr = text.trim();
    if addr.starts_with("unix://") {
        return Ok(Value::Str(addr.to_string()));
    }
    let Some(hostport) = addr
        .strip_prefix("udp://")
        .or_else(|| addr.strip_prefix("tcp://"))
    else {
        return Err("invalid syslog address".to_string());
    };
    let after_host = hostport.rsplit(']').next().unwrap_or_default();
    if let Some((_, port)) = after_host.split_once(':') {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{} is not a valid port number.",
                Value::Str(port.to_string())
            ));
        }
    }
    Ok(Value::Str(addr.to_string()))
}

/// Facility names Gunicorn's syslog handler knows (`glogging.SYSLOG_FACILITIES`).
const SYSLOG_FACILITIES: &[&str] = &[
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "security",
    "syslog", "user", "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
];

/// `syslog_facility`, matched case-insensitively (Gunicorn lowercases it when it opens the
/// syslog handler and fails there with "unknown facility name"; we check it up front).
pub(super) fn parse_syslog_facility(text: &str) -> Result<Value, String> {
    let name = text.trim();
    if SYSLOG_FACILITIES.contains(&name.to_ascii_lowercase().as_str()) {
        Ok(Value::Str(name.to_string()))
    } else {
        Err(format!("unknown facility name: {name}"))
    }
}

/// Gunicorn's `validate_statsd_address`: `HOST[:PORT]` (port 8125 by default),
/// `[V6]:PORT`, `tcp://...`, `unix:PATH`/`unix://PATH`, `fd://N`; kept parsed as Gunicorn
/// keeps it: `('host', port)` (host lower-cased), the socket's path, or the descriptor.
pub(super) fn parse_statsd_host(text: &str) -> Result<Value, String> {
    let addr = text.trim();
    let bad = || "Value must be one of ('host:port', 'unix://PATH')".to_string();
    if let Some(rest) = addr.strip_prefix("unix:") {
        // `unix:8125` is the host `unix` (a regression Gunicorn guards against).
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            let port = rest.parse::<i64>().map_err(|_| bad())?;
            return Ok(Value::Address("unix".to_string(), port));
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        return Ok(Value::Str(path.to_string()));
    }
    if let Some(fd) = addr.strip_prefix("fd://") {
        return python_int(fd).map(Value::Int).ok_or_else(bad);
    }
    let netloc = addr.strip_prefix("tcp://").unwrap_or(addr);
    let (host, port) = if netloc.contains('[') && netloc.contains(']') {
        let host = netloc.split(']').next().unwrap_or_default();
        let host = host.get(1..).unwrap_or_default();
        (host, netloc.split_once("]:").map(|(_, rest)| rest))
    } else if netloc.contains(':') {
        let mut parts = netloc.split(':');
        (parts.next().unwrap_or_default(), parts.next())
    } else if netloc.is_empty() {
        ("0.0.0.0", None)
    } else {
        (netloc, None)
    };
    let port = match port {
        None => 8125,
        Some(port) => python_int(port).ok_or_else(bad)?,
    };
    Ok(Value::Address(host.to_lowercase(), port))
}

/// `dogstatsd_tags` is appended verbatim to every datagram as `|#tags`, ASCII-encoded:
/// a `|`, a line break or a non-ASCII character would break every metric Gunicorn sends
/// (it drops them with a warning); we refuse such a value up front.
pub(super) fn parse_dogstatsd_tags(text: &str) -> Result<Value, String> {
    let tags = text.trim();
    if tags.is_ascii() && !tags.contains(['|', '\n', '\r']) {
        Ok(Value::Str(tags.to_string()))
    } else {
        Err(format!(
            "Invalid value for dogstatsd_tags: {tags} (must be ASCII, without '|' or line breaks)"
        ))
    }
}

/// `proxy_protocol`: `off`, `v1`, `v2` or `auto`, with Gunicorn's aliases
/// (`true`/`1` = `auto`, `false`/`0`/`none` = `off`).
pub(super) fn parse_proxy_protocol(text: &str) -> Result<Value, String> {
    let mode = match text.trim().to_lowercase().as_str() {
        "false" | "off" | "0" | "none" => "off",
        "true" | "auto" | "1" => "auto",
        "v1" => "v1",
        "v2" => "v2",
        _ => return Err("proxy_protocol must be: off, v1, v2, or auto".to_string()),
    };
    Ok(Value::Str(mode.to_string()))
}

/// `protocol`: `http` or `uwsgi`. (Gunicorn takes any string and treats everything but
/// `uwsgi` as HTTP; a misspelt `uwsgi` would then fail every request, so we refuse it.)
pub(super) fn parse_protocol(text: &str) -> Result<Value, String> {
    match text.trim() {
        p @ ("http" | "uwsgi") => Ok(Value::Str(p.to_string())),
        other => Err(format!(
            "Invalid value for protocol: {other} (expected http or uwsgi)"
        )),
    }
}

/// `cert_reqs`: `ssl.CERT_NONE` (0), `CERT_OPTIONAL` (1) or `CERT_REQUIRED` (2).
pub(super) fn parse_cert_reqs(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(n) if n > 2 => Err(format!(
            "Invalid value for cert_reqs: {n} (expected 0, 1 or 2)"
        )),
        v => Ok(v),
    }
}

/// `http_protocols`: a comma-separated preference list of `h1` and `h2`, no repeats;
/// empty means `h1`.
pub(super) fn parse_http_protocols(text: &str) -> Result<Value, String> {
    let protocols: Vec<String> = text
        .split(',')
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if protocols.is_empty() {
        return Ok(Value::List(vec!["h1".to_string()]));
    }
    for (i, proto) in protocols.iter().enumerate() {
        if proto != "h1" && proto != "h2" {
            return Err(format!(
                "Invalid protocol '{proto}'. Valid protocols: h1, h2"
            ));
        }
        if protocols[..i].contains(proto) {
            return Err("Duplicate protocols specified".to_string());
        }
    }
    Ok(Value::List(protocols))
}

/// `http2_cleartext`: `off`, `prior-knowledge`, `upgrade` or `both`.
pub(super) fn parse_http2_cleartext(text: &str) -> Result<Value, String> {
    let mode = text.trim().to_lowercase();
    match mode.as_str() {
        "off" | "prior-knowledge" | "upgrade" | "both" => Ok(Value::Str(mode)),
        _ => Err(format!("Invalid http2_cleartext: {mode}")),
    }
}

pub(super) fn parse_http2_max_concurrent_streams(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(n) if n < 1 => Err(format!(
            "HTTP/2 max concurrent streams must be at least 1: {n}"
        )),
        v => Ok(v),
    }
}

/// Flow-control windows are at most 2^31-1 (RFC 9113 section 6.9.1).
pub(super) fn parse_http2_initial_window_size(text: &str) -> Result<Value, String> {
    match parse_pos_int(text)? {
        Value::Int(n) if n > (1 << 31) - 1 => Err(format!(
            "HTTP/2 window size must be at most 2147483647: {n}"
        )),
        v => Ok(v),
    }
}

/// SETTINGS_MAX_FRAME_SIZE is 2^14..2^24-1 (RFC 9113 section 6.5.2).
pub(super) fn parse_http2_max_frame_size(text: &str) -> Result<Value, String> {
    match parse_int(text)? {
        Value::Int(n) if !(16_384..=16_777_215).contains(&n) => Err(format!(
            "http2_max_frame_size must be between 16384 and 16777215, got {n}"
        )),
        v => Ok(v),
    }
}

/// `header_map`: what to do with header names containing `_`: `drop`, `refuse`, `dangerous`.
pub(super) fn parse_header_map(text: &str) -> Result<Value, String> {
    parse_choice(
        text,
        &["drop", "refuse", "dangerous"],
        "header map behaviour",
    )
}

pub(super) fn parse_asgi_loop(text: &str) -> Result<Value, String> {
    let lower = text.trim().to_lowercase();
    match lower.as_str() {
        "auto" | "asyncio" | "uvloop" => Ok(Value::Str(lower)),
        _ => Err(format!("Invalid ASGI loop: {lower}")),
    }
}

pub(super) fn parse_asgi_lifespan(text: &str) -> Result<Value, String> {
    let lower = text.trim().to_lowercase();
    match lower.as_str() {
        "auto" | "on" | "off" => Ok(Value::Str(lower)),
        _ => Err(format!("Invalid ASGI lifespan: {lower}")),
    }
}

pub(super) fn parse_http_parser(text: &str) -> Result<Value, String> {
    let lower = text.trim().to_lowercase();
    match lower.as_str() {
        "auto" | "fast" | "python" => Ok(Value::Str(lower)),
        _ => Err("http_parser must be one of: auto, fast, python".to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::Str(text.to_string())
    }

    fn list(items: &[&str]) -> Value {
        Value::List(items.iter().map(|i| i.to_string()).collect())
    }

    #[test]
    fn worker_class_accepts_sync_and_gthread() {
        assert_eq!(
            parse_worker_class("sync").unwrap(),
            Value::Str("sync".into())
        );
        assert_eq!(
            parse_worker_class(" gunicorn.workers.gthread.ThreadWorker").unwrap(),
            Value::Str("gunicorn.workers.gthread.ThreadWorker".into())
        );
        assert!(is_gthread("gunicorn.workers.gthread.ThreadWorker"));
        assert!(!is_gthread("gunicorn.workers.sync.SyncWorker"));
        assert!(parse_worker_class("gevent").unwrap_err().contains("gevent"));
        assert!(parse_threads("0").is_err());
        assert_eq!(parse_threads("8").unwrap(), Value::Int(8));
    }

    #[test]
    fn user_and_group_become_ids() {
        assert_eq!(parse_user("root").unwrap(), Value::Int(0));
        assert_eq!(parse_user("1234").unwrap(), Value::Int(1234));
        assert_eq!(
            parse_user("no-such-user-here").unwrap_err(),
            "No such user: 'no-such-user-here'"
        );
        assert_eq!(parse_user(" 12").unwrap_err(), "No such user: ' 12'");
        assert_eq!(parse_group("root").unwrap(), Value::Int(0));
        assert_eq!(parse_group("99").unwrap(), Value::Int(99));
        assert_eq!(
            parse_group("no-such-group-here").unwrap_err(),
            "No such group: 'no-such-group-here'"
        );
    }

    #[test]
    fn workers_must_be_positive() {
        assert!(parse_workers("0").is_err());
        assert_eq!(parse_workers("4").unwrap(), Value::Int(4));
    }

    #[test]
    fn umask_accepts_gunicorn_spellings() {
        assert_eq!(parse_octal("0o22").unwrap(), Value::Int(0o22));
        assert_eq!(parse_octal("022").unwrap(), Value::Int(0o22));
        assert_eq!(parse_octal("0x12").unwrap(), Value::Int(0x12));
        assert_eq!(parse_octal("18").unwrap(), Value::Int(18));
        assert!(parse_octal("089").is_err());
    }

    #[test]
    fn log_level_is_a_choice() {
        assert_eq!(
            parse_loglevel(" DEBUG").unwrap(),
            Value::Str("DEBUG".into())
        );
        assert!(parse_loglevel("verbose").is_err());
    }

    #[test]
    fn control_socket_mode_accepts_octal_strings() {
        assert_eq!(parse_octal("0600").unwrap(), Value::Int(0o600));
        assert_eq!(parse_octal("0o660").unwrap(), Value::Int(0o660));
    }

    #[test]
    fn hooks_are_dotted_import_paths() {
        assert_eq!(parse_hook("hooks.on_exit").unwrap(), s("hooks.on_exit"));
        assert_eq!(
            parse_hook("on_exit").unwrap_err(),
            "Value 'on_exit' is not import string. Format: module[.submodules...].object"
        );
    }

    #[test]
    fn dicts_cannot_be_given_as_text() {
        assert_eq!(
            parse_dict("x").unwrap_err(),
            "Value is not a dictionary: x "
        );
    }

    #[test]
    fn reload_engine_is_one_of_the_engines() {
        assert_eq!(parse_reload_engine("inotify").unwrap(), s("inotify"));
        assert_eq!(
            parse_reload_engine("fsevents").unwrap_err(),
            "Invalid reload_engine: 'fsevents'"
        );
        assert!(parse_reload_engine("POLL").is_err());
    }

    #[test]
    fn reload_extra_files_must_exist_unless_globs() {
        assert_eq!(parse_reload_extra_file(" / ").unwrap(), s("/"));
        assert_eq!(
            parse_reload_extra_file("templates/*.html").unwrap(),
            s("templates/*.html")
        );
        assert_eq!(
            parse_reload_extra_file("/no/such/file.txt").unwrap_err(),
            "File /no/such/file.txt does not exists."
        );
    }

    #[test]
    fn ip_networks_follow_python_ipaddress() {
        for ok in [
            "10.0.0.1",
            "192.168.0.0/16",
            "10.0.0.0/255.0.0.0",
            "10.0.0.0/0.255.255.255",
            "0.0.0.0/0",
            "::1",
            "fd00::/8",
            "fe80::1%eth0",
        ] {
            assert_eq!(check_ip_network(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_ip_network("192.168.1.1/24").unwrap_err(),
            "192.168.1.1/24 has host bits set"
        );
        assert_eq!(
            check_ip_network("10.0.0.1/255.0.0.0").unwrap_err(),
            "10.0.0.1/8 has host bits set"
        );
        for bad in [
            "localhost",
            "10.0.0.0/33",
            "10.0.0.0/",
            "01.2.3.4",
            "::1/129",
            "1/2/3",
        ] {
            assert_eq!(
                check_ip_network(bad).unwrap_err(),
                format!("'{bad}' does not appear to be an IPv4 or IPv6 network"),
            );
        }
    }

    #[test]
    fn allow_lists_are_split_and_checked() {
        assert_eq!(
            parse_addr_list(" 10.0.0.0/8, ::1 ").unwrap(),
            list(&["10.0.0.0/8", "::1"])
        );
        assert_eq!(parse_addr_list("*").unwrap(), list(&["*"]));
        assert_eq!(parse_addr_list("").unwrap(), list(&[]));
        assert!(parse_addr_list("10.0.0.1, nope").is_err());
    }

    #[test]
    fn forwarder_headers_are_a_list() {
        assert_eq!(
            parse_comma_list("SCRIPT_NAME, PATH_INFO,REMOTE_USER").unwrap(),
            list(&["SCRIPT_NAME", "PATH_INFO", "REMOTE_USER"])
        );
    }

    #[test]
    fn syslog_addresses_have_a_scheme_and_a_numeric_port() {
        for ok in [
            "unix:///dev/log",
            "unix:///dev/log#dgram",
            "udp://localhost:514",
            "tcp://[::1]:601",
            "udp://logs",
        ] {
            assert_eq!(parse_syslog_addr(ok).unwrap(), s(ok));
        }
        assert_eq!(
            parse_syslog_addr("localhost:514").unwrap_err(),
            "invalid syslog address"
        );
        assert_eq!(
            parse_syslog_addr("udp://localhost:x").unwrap_err(),
            "'x' is not a valid port number."
        );
    }

    #[test]
    fn syslog_facility_is_a_known_name() {
        assert_eq!(parse_syslog_facility("LOCAL3").unwrap(), s("LOCAL3"));
        assert_eq!(
            parse_syslog_facility("local9").unwrap_err(),
            "unknown facility name: local9"
        );
    }

    #[test]
    fn statsd_host_is_host_port_or_unix() {
        let addr = |host: &str, port| Value::Address(host.to_string(), port);
        for (ok, parsed) in [
            ("localhost:8125", addr("localhost", 8125)),
            ("LocalHost", addr("localhost", 8125)),
            ("[::1]:8126", addr("::1", 8126)),
            ("tcp://statsd:9125", addr("statsd", 9125)),
            ("unix:///run/statsd.sock", s("/run/statsd.sock")),
            ("unix:/run/statsd.sock", s("/run/statsd.sock")),
            ("unix:8125", addr("unix", 8125)),
            ("fd://3", Value::Int(3)),
        ] {
            assert_eq!(parse_statsd_host(ok).unwrap(), parsed, "{ok}");
        }
        assert_eq!(addr("localhost", 8125).to_string(), "('localhost', 8125)");
        for bad in ["localhost:port", "host:", "fd://x", "[::1]:x"] {
            assert_eq!(
                parse_statsd_host(bad).unwrap_err(),
                "Value must be one of ('host:port', 'unix://PATH')",
                "{bad}"
            );
        }
    }

    #[test]
    fn python_ints_for_ports() {
        assert!(is_python_int(" 8125 "));
        assert!(is_python_int("-1"));
        assert!(is_python_int("8_125"));
        assert!(!is_python_int(""));
        assert!(!is_python_int("_1"));
        assert!(!is_python_int("1__0"));
    }

    #[test]
    fn dogstatsd_tags_cannot_break_the_datagram() {
        assert_eq!(
            parse_dogstatsd_tags("env:prod,team:web").unwrap(),
            s("env:prod,team:web")
        );
        assert!(parse_dogstatsd_tags("a|b").is_err());
        assert!(parse_dogstatsd_tags("café").is_err());
    }

    #[test]
    fn proxy_protocol_modes_and_aliases() {
        assert_eq!(parse_proxy_protocol("V2").unwrap(), s("v2"));
        assert_eq!(parse_proxy_protocol("true").unwrap(), s("auto"));
        assert_eq!(parse_proxy_protocol("false").unwrap(), s("off"));
        assert_eq!(parse_proxy_protocol("1").unwrap(), s("auto"));
        assert_eq!(
            parse_proxy_protocol("v3").unwrap_err(),
            "proxy_protocol must be: off, v1, v2, or auto"
        );
    }

    #[test]
    fn protocol_is_http_or_uwsgi() {
        assert_eq!(parse_protocol("uwsgi").unwrap(), s("uwsgi"));
        assert!(parse_protocol("fastcgi").is_err());
    }

    #[test]
    fn cert_reqs_is_an_ssl_verify_mode() {
        assert_eq!(parse_cert_reqs("2").unwrap(), Value::Int(2));
        assert!(parse_cert_reqs("3").is_err());
        assert!(parse_cert_reqs("-1").is_err());
    }

    #[test]
    fn http_protocols_is_a_preference_list() {
        assert_eq!(parse_http_protocols("H2, h1").unwrap(), list(&["h2", "h1"]));
        assert_eq!(parse_http_protocols(" ").unwrap(), list(&["h1"]));
        assert_eq!(
            parse_http_protocols("h1,h3").unwrap_err(),
            "Invalid protocol 'h3'. Valid protocols: h1, h2"
        );
        assert_eq!(
            parse_http_protocols("h1,h1").unwrap_err(),
            "Duplicate protocols specified"
        );
    }

    #[test]
    fn http2_cleartext_modes() {
        assert_eq!(
            parse_http2_cleartext("Prior-Knowledge").unwrap(),
            s("prior-knowledge")
        );
        assert_eq!(
            parse_http2_cleartext("True").unwrap_err(),
            "Invalid http2_cleartext: true"
        );
    }

    #[test]
    fn http2_limits_have_rfc_ranges() {
        assert!(parse_http2_max_concurrent_streams("0").is_err());
        assert_eq!(
            parse_http2_initial_window_size("2147483647").unwrap(),
            Value::Int(2_147_483_647)
        );
        assert_eq!(
            parse_http2_initial_window_size("2147483648").unwrap_err(),
            "HTTP/2 window size must be at most 2147483647: 2147483648"
        );
        assert_eq!(
            parse_http2_max_frame_size("16777215").unwrap(),
            Value::Int(16_777_215)
        );
        assert_eq!(
            parse_http2_max_frame_size("-1").unwrap_err(),
            "http2_max_frame_size must be between 16384 and 16777215, got -1"
        );
        assert!(parse_http2_max_frame_size("16383").is_err());
    }

    #[test]
    fn header_map_is_a_choice() {
        assert_eq!(parse_header_map(" Refuse").unwrap(), s("refuse"));
        assert_eq!(
            parse_header_map("map").unwrap_err(),
            "Invalid header map behaviour: map"
        );
    }

    #[test]
    fn asgi_and_parser_choices() {
        assert_eq!(parse_asgi_loop("UVLOOP").unwrap(), s("uvloop"));
        assert_eq!(
            parse_asgi_loop("Trio").unwrap_err(),
            "Invalid ASGI loop: trio"
        );
        assert_eq!(parse_asgi_lifespan("on").unwrap(), s("on"));
        assert!(parse_asgi_lifespan("maybe").is_err());
        assert_eq!(parse_http_parser("fast").unwrap(), s("fast"));
        assert_eq!(
            parse_http_parser("c").unwrap_err(),
            "http_parser must be one of: auto, fast, python"
        );
    }
}
