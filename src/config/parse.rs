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

/// A duration as Granian reads one: plain seconds (`90`), or days, hours, minutes and
/// seconds in that order, each optional (`30s`, `5m`, `1h30m`, `2d`). None if it is neither.
fn duration_seconds(text: &str) -> Option<i64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let mut total: i64 = 0;
    let mut rest = t;
    let mut units = "dhms";
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit = rest[digits..].chars().next()?;
        let n: i64 = rest[..digits].parse().ok()?;
        // Each unit at most once, in order: `5m30s`, not `30s5m`.
        let at = units.find(unit)?;
        units = &units[at + 1..];
        let scale = match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            _ => 1,
        };
        total = total.checked_add(n.checked_mul(scale)?)?;
        rest = &rest[digits + 1..];
    }
    (!t.is_empty()).then_some(total)
}

/// A duration in `min..=max` seconds for `flag`, as seconds.
fn parse_duration_in(text: &str, flag: &str, min: i64, max: Option<i64>) -> Result<Value, String> {
    let seconds = duration_seconds(text).ok_or_else(|| {
        format!("{flag}: '{text}' is not a valid duration (seconds, or as 1h30m, 5m, 30s)")
    })?;
    if seconds < min {
        return Err(format!(
            "{flag}: '{text}' is less than the minimum allowed value of {min} seconds"
        ));
    }
    if let Some(max) = max.filter(|&max| seconds > max) {
        return Err(format!(
            "{flag}: '{text}' is greater than the maximum allowed value of {max} seconds"
        ));
    }
    Ok(Value::Int(seconds))
}

/// An integer of at least 1 for `flag`.
fn parse_at_least_one(text: &str, flag: &str) -> Result<Value, String> {
    match parse_int(text)? {
        Value::Int(n) if n < 1 => Err(format!("{flag}: {n} is not in the range x>=1")),
        value => Ok(value),
    }
}

/// `--workers-max-rss` (Granian's): MiB, at least 1.
pub(super) fn parse_workers_max_rss(text: &str) -> Result<Value, String> {
    parse_at_least_one(text, "--workers-max-rss")
}

/// `--rss-samples` (Granian's): consecutive samples over the limit, at least 1.
pub(super) fn parse_rss_samples(text: &str) -> Result<Value, String> {
    parse_at_least_one(text, "--rss-samples")
}

/// `--rss-sample-interval` (Granian's): 1 to 300 seconds.
pub(super) fn parse_rss_sample_interval(text: &str) -> Result<Value, String> {
    parse_duration_in(text, "--rss-sample-interval", 1, Some(300))
}

/// `--workers-lifetime` (Granian's): at least 60 seconds.
pub(super) fn parse_workers_lifetime(text: &str) -> Result<Value, String> {
    parse_duration_in(text, "--workers-lifetime", 60, None)
}

/// `--static-path-route` (Granian's): an absolute URL path, kept without a trailing `/`.
pub(super) fn parse_static_route(text: &str) -> Result<Value, String> {
    let t = text.trim();
    if !t.starts_with('/') || t.contains(['?', '#', '%']) || t.chars().any(char::is_whitespace) {
        return Err(format!(
            "--static-path-route: '{t}' is not an absolute path such as /static"
        ));
    }
    let route = t.trim_end_matches('/');
    Ok(Value::Str(
        if route.is_empty() { "/" } else { route }.to_string(),
    ))
}

/// `--static-path-expires` (Granian's): 0 or more seconds.
pub(super) fn parse_static_expires(text: &str) -> Result<Value, String> {
    parse_duration_in(text, "--static-path-expires", 0, None)
}

/// `--metrics-address` (Granian's): an IP address to bind the exporter to.
pub(super) fn parse_metrics_address(text: &str) -> Result<Value, String> {
    let t = text.trim();
    t.parse::<std::net::IpAddr>()
        .map(|_| Value::Str(t.to_string()))
        .map_err(|_| format!("--metrics-address: '{t}' is not an IP address"))
}

/// `--metrics-port` (Granian's): 0 (any free port, logged) to 65535.
pub(super) fn parse_metrics_port(text: &str) -> Result<Value, String> {
    match parse_int(text)? {
        Value::Int(n) if !(0..=65535).contains(&n) => Err(format!(
            "--metrics-port: {n} is not in the range 0<=x<=65535"
        )),
        value => Ok(value),
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
mod tests;
