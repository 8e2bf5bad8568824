//! The control socket's commands, as Gunicorn 27's `gunicorn/ctl` answers them: a request
//! (`{"id", "command", "args"}`) becomes a reply (`{"id", "status": "ok", "data"}` or
//! `{"id", "status": "error", "error"}`), with the same words, fields and messages, so that
//! `gunicornc` and scripts written against Gunicorn work unchanged. The arbiter's side (what
//! the commands read and change) is the [`Arbiter`] trait the master implements.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::json::{object, Json};
use crate::config::setting::Value;
use crate::config::Config;
use crate::sock::{ListenAddr, Listener};
use crate::unix::os_error;

/// One worker as `show workers` lists it.
pub struct WorkerFacts {
    pub pid: i32,
    pub age: u64,
    pub aborted: bool,
    /// Seconds since its last heartbeat.
    pub last_heartbeat: Option<f64>,
}

/// The master's counters for `show stats`.
pub struct Counters {
    pub uptime_seconds: f64,
    pub spawned: u64,
    pub killed: u64,
    pub reloads: u64,
    /// rgunicorn's own: workers recycled, by cause.
    pub recycled: super::recycle::Recycled,
}

/// What the commands need from the master.
pub trait Arbiter {
    fn pid(&self) -> i32;
    /// The live workers, in any order.
    fn worker_facts(&self) -> Vec<WorkerFacts>;
    fn counters(&self) -> Counters;
    fn config(&self) -> &Config;
    fn listeners(&self) -> &[Listener];
    /// The target worker count.
    fn target(&self) -> usize;
    /// Changes the target worker count (as TTIN/TTOU do, `nworkers_changed` included); the
    /// loop's next pass spawns or trims.
    fn set_target(&mut self, workers: usize);
    /// The largest target the master accepts.
    fn max_target(&self) -> usize;
}

/// Answers one request (already parsed JSON); None if the request is not one (not an
/// object, a `command` that is not a string): Gunicorn then closes without a reply.
pub fn answer(request: &Json, arbiter: &mut dyn Arbiter) -> Option<Json> {
    if !matches!(request, Json::Object(_)) {
        return None;
    }
    let id = request.get("id").cloned().unwrap_or(Json::Int(0));
    let command = match request.get("command") {
        None => "",
        Some(Json::Str(text)) => text.trim(),
        Some(_) => return None,
    };
    let result = if command.is_empty() {
        Err(Failure::Plain("Empty command".to_string()))
    } else {
        split_command(command)
            .map_err(Failure::Invalid)
            .and_then(|mut parts| {
                extend_with_args(&mut parts, request.get("args"))?;
                run(&parts, arbiter)
            })
    };
    Some(match result {
        Ok(data) => object([("id", id), ("status", "ok".into()), ("data", data)]),
        Err(failure) => object([
            ("id", id),
            ("status", "error".into()),
            ("error", failure.message().into()),
        ]),
    })
}

/// Why a command failed, as Gunicorn words each kind.
enum Failure {
    /// `Empty command`.
    Plain(String),
    /// A ValueError: `Invalid argument: …`.
    Invalid(String),
    /// Anything else: `Command failed: …`.
    Failed(String),
}

impl Failure {
    fn message(&self) -> String {
        match self {
            Failure::Plain(m) => m.clone(),
            Failure::Invalid(m) => format!("Invalid argument: {m}"),
            Failure::Failed(m) => format!("Command failed: {m}"),
        }
    }
}

/// The most words any command reads (`worker kill PID`).
const MAX_WORDS: usize = 3;

/// Appends `args` to the command's words as Python's `parts.extend(str(a) for a in args)`
/// does (only when `args` is truthy).
fn extend_with_args(parts: &mut Vec<String>, args: Option<&Json>) -> Result<(), Failure> {
    match args {
        None | Some(Json::Null) | Some(Json::Bool(false)) | Some(Json::Int(0)) => Ok(()),
        Some(Json::Float(f)) if *f == 0.0 => Ok(()),
        // No command reads past its third word: the rest is not copied (a hostile 16 MiB
        // `args` string would otherwise become millions of words).
        Some(Json::Array(items)) => {
            let room = MAX_WORDS.saturating_sub(parts.len());
            parts.extend(items.iter().take(room).map(python_str));
            Ok(())
        }
        Some(Json::Str(s)) => {
            let room = MAX_WORDS.saturating_sub(parts.len());
            parts.extend(s.chars().take(room).map(String::from));
            Ok(())
        }
        Some(Json::Object(pairs)) => {
            let room = MAX_WORDS.saturating_sub(parts.len());
            parts.extend(pairs.iter().take(room).map(|(k, _)| k.clone()));
            Ok(())
        }
        Some(Json::Bool(true)) => Err(Failure::Failed("'bool' object is not iterable".into())),
        Some(Json::Int(_)) => Err(Failure::Failed("'int' object is not iterable".into())),
        Some(Json::Float(_)) => Err(Failure::Failed("'float' object is not iterable".into())),
    }
}

/// Python's `str()` of a JSON value (strings as they are).
fn python_str(value: &Json) -> String {
    match value {
        Json::Str(s) => s.clone(),
        Json::Null => "None".to_string(),
        Json::Bool(true) => "True".to_string(),
        Json::Bool(false) => "False".to_string(),
        other => other.to_python_json(),
    }
}

fn run(parts: &[String], arbiter: &mut dyn Arbiter) -> Result<Json, Failure> {
    let Some(first) = parts.first() else {
        return Err(Failure::Plain("Empty command".to_string()));
    };
    let word = |i: usize| parts.get(i).map(|w| w.to_lowercase());
    match first.to_lowercase().as_str() {
        "show" => match word(1).as_deref() {
            None => Err(invalid(
                "Missing show target (all|workers|dirty|config|stats|listeners)",
            )),
            Some("all") => Ok(show_all(arbiter)),
            Some("workers") => Ok(show_workers(arbiter)),
            Some("dirty") => Ok(show_dirty()),
            Some("config") => Ok(show_config(arbiter.config())),
            Some("stats") => Ok(show_stats(arbiter)),
            Some("listeners") => Ok(show_listeners(arbiter)),
            Some(other) => Err(invalid(&format!("Unknown show target: {other}"))),
        },
        "worker" => match word(1).as_deref() {
            None => Err(invalid("Missing worker action (add|remove|kill)")),
            Some("add") => add_workers(arbiter, count_arg(parts.get(2))?),
            Some("remove") => remove_workers(arbiter, count_arg(parts.get(2))?),
            Some("kill") => match parts.get(2) {
                None => Err(invalid("Missing PID for worker kill")),
                Some(text) => Ok(kill_worker(arbiter, python_int(text)?)),
            },
            Some(other) => Err(invalid(&format!("Unknown worker action: {other}"))),
        },
        "dirty" => match word(1).as_deref() {
            None => Err(invalid("Missing dirty action (add|remove)")),
            Some("add" | "remove") => {
                count_arg(parts.get(2))?;
                Ok(object([
                    ("success", false.into()),
                    ("error", "Dirty arbiter not running".into()),
                ]))
            }
            Some(other) => Err(invalid(&format!("Unknown dirty action: {other}"))),
        },
        "reload" => signal_master(Signal::SIGHUP, object([("status", "reloading".into())])),
        "reopen" => signal_master(Signal::SIGUSR1, object([("status", "reopening".into())])),
        "shutdown" => {
            let mode = parts
                .get(1)
                .cloned()
                .unwrap_or_else(|| "graceful".to_string());
            let sig = if mode == "quick" {
                Signal::SIGINT
            } else {
                Signal::SIGTERM
            };
            let reply = object([("status", "shutting_down".into()), ("mode", mode.into())]);
            signal_master(sig, reply)
        }
        "help" => Ok(help()),
        other => Err(invalid(&format!("Unknown command: {other}"))),
    }
}

fn invalid(message: &str) -> Failure {
    Failure::Invalid(message.to_string())
}

/// The master acts on these as on the signals themselves (its loop takes them next), so
/// the reply goes out first.
fn signal_master(sig: Signal, reply: Json) -> Result<Json, Failure> {
    kill(nix::unistd::getpid(), sig).map_err(|e| Failure::Failed(os_error(e)))?;
    Ok(reply)
}

/// `N` for `worker add|remove [N]`: 1 when absent, at least 1 (Gunicorn's `max(1, int(N))`).
fn count_arg(text: Option<&String>) -> Result<i64, Failure> {
    Ok(match text {
        None => 1,
        Some(text) => python_int(text)?.max(1),
    })
}

fn add_workers(arbiter: &mut dyn Arbiter, count: i64) -> Result<Json, Failure> {
    let previous = arbiter.target();
    let wanted = usize::try_from(count).unwrap_or(usize::MAX);
    // Bounded as TTIN is: a worker needs a heartbeat slot.
    let total = previous
        .saturating_add(wanted)
        .min(arbiter.max_target())
        .max(previous);
    arbiter.set_target(total);
    Ok(object([
        ("added", (total - previous).into()),
        ("previous", previous.into()),
        ("total", total.into()),
    ]))
}

fn remove_workers(arbiter: &mut dyn Arbiter, count: i64) -> Result<Json, Failure> {
    let previous = i64::try_from(arbiter.target()).unwrap_or(i64::MAX);
    let total = previous.saturating_sub(count).max(1);
    arbiter.set_target(usize::try_from(total).unwrap_or(1));
    Ok(object([
        ("removed", (previous - total).into()),
        ("previous", previous.into()),
        ("total", total.into()),
    ]))
}

/// SIGTERM to one of our workers (never to another process); the loop replaces it.
fn kill_worker(arbiter: &dyn Arbiter, pid: i64) -> Json {
    let ours = arbiter
        .worker_facts()
        .iter()
        .any(|w| i64::from(w.pid) == pid);
    let pid32 = i32::try_from(pid).ok().filter(|_| ours);
    let Some(pid32) = pid32 else {
        return object([
            ("success", false.into()),
            ("error", format!("Worker {pid} not found").into()),
        ]);
    };
    match kill(Pid::from_raw(pid32), Signal::SIGTERM) {
        Ok(()) => object([("success", true.into()), ("killed", pid.into())]),
        Err(e) => object([("success", false.into()), ("error", os_error(e).into())]),
    }
}

fn by_age(arbiter: &dyn Arbiter) -> Vec<WorkerFacts> {
    let mut workers = arbiter.worker_facts();
    workers.sort_by_key(|w| w.age);
    workers
}

fn show_workers(arbiter: &dyn Arbiter) -> Json {
    let workers: Vec<Json> = by_age(arbiter)
        .into_iter()
        .map(|w| {
            object([
                ("pid", w.pid.into()),
                ("age", w.age.into()),
                // Gunicorn 27's arbiter never sees its copy booted.
                ("booted", false.into()),
                ("aborted", w.aborted.into()),
                ("last_heartbeat", w.last_heartbeat.map(round2).into()),
            ])
        })
        .collect();
    let count = workers.len();
    object([("workers", workers.into()), ("count", count.into())])
}

fn show_all(arbiter: &dyn Arbiter) -> Json {
    let workers: Vec<Json> = by_age(arbiter)
        .into_iter()
        .map(|w| {
            object([
                ("pid", w.pid.into()),
                ("type", "web".into()),
                ("age", w.age.into()),
                ("booted", false.into()),
                ("last_heartbeat", w.last_heartbeat.map(round2).into()),
            ])
        })
        .collect();
    let count = workers.len();
    object([
        (
            "arbiter",
            object([
                ("pid", arbiter.pid().into()),
                ("type", "arbiter".into()),
                ("role", "master".into()),
            ]),
        ),
        ("web_workers", workers.into()),
        ("web_worker_count", count.into()),
        ("dirty_arbiter", Json::Null),
        ("dirty_workers", Json::Array(Vec::new())),
        ("dirty_worker_count", 0i64.into()),
    ])
}

/// rgunicorn has no dirty arbiter: Gunicorn's answer when none runs.
fn show_dirty() -> Json {
    object([
        ("enabled", false.into()),
        ("pid", Json::Null),
        ("workers", Json::Array(Vec::new())),
        ("apps", Json::Array(Vec::new())),
    ])
}

fn show_stats(arbiter: &dyn Arbiter) -> Json {
    let counters = arbiter.counters();
    object([
        ("uptime", round2(counters.uptime_seconds).into()),
        ("pid", arbiter.pid().into()),
        ("workers_current", arbiter.worker_facts().len().into()),
        ("workers_target", arbiter.target().into()),
        ("workers_spawned", counters.spawned.into()),
        ("workers_killed", counters.killed.into()),
        ("reloads", counters.reloads.into()),
        ("dirty_arbiter_pid", Json::Null),
        // rgunicorn's own, after all of Gunicorn's keys.
        (
            "workers_recycled",
            object([
                ("max_requests", counters.recycled.max_requests.into()),
                ("max_rss", counters.recycled.max_rss.into()),
                ("lifetime", counters.recycled.lifetime.into()),
            ]),
        ),
    ])
}

/// The settings Gunicorn 27's `show config` reports, in its order.
const SHOWN_SETTINGS: [&str; 20] = [
    "bind",
    "workers",
    "worker_class",
    "threads",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "max_requests",
    "max_requests_jitter",
    "worker_connections",
    "preload_app",
    "daemon",
    "pidfile",
    "proc_name",
    "reload",
    "dirty_workers",
    "dirty_apps",
    "dirty_timeout",
    "control_socket",
    "control_socket_disable",
];

fn show_config(config: &Config) -> Json {
    let pairs = SHOWN_SETTINGS
        .iter()
        .map(|&name| {
            let value = match name {
                // Gunicorn shows the worker class it loaded (`str()` of the class).
                "worker_class" if config.threaded => {
                    "<class 'gunicorn.workers.gthread.ThreadWorker'>".into()
                }
                "worker_class" => "<class 'gunicorn.workers.sync.SyncWorker'>".into(),
                // The effective name (`default_proc_name` when unset).
                "proc_name" => config.proc_name.clone().into(),
                _ => config.values.get(name).map_or(Json::Null, setting_json),
            };
            (name.to_string(), value)
        })
        .collect();
    Json::Object(pairs)
}

fn setting_json(value: &Value) -> Json {
    match value {
        Value::None => Json::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(n) => (*n).into(),
        Value::Str(s) => s.as_str().into(),
        Value::List(items) => Json::Array(items.iter().map(|i| i.as_str().into()).collect()),
        Value::Address(host, port) => Json::Array(vec![host.as_str().into(), (*port).into()]),
        Value::Dict(pairs) => Json::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect(),
        ),
    }
}

fn show_listeners(arbiter: &dyn Arbiter) -> Json {
    let tls = arbiter.config().tls.is_some();
    let listeners: Vec<Json> = arbiter
        .listeners()
        .iter()
        .map(|l| {
            let (address, kind) = match &l.addr {
                // Gunicorn says https for TLS on IPv4 only.
                ListenAddr::Tcp(a @ std::net::SocketAddr::V4(_)) if tls => {
                    (format!("https://{a}"), "tcp")
                }
                ListenAddr::Tcp(std::net::SocketAddr::V4(_)) => (l.addr.to_string(), "tcp"),
                ListenAddr::Tcp(std::net::SocketAddr::V6(_)) => (l.addr.to_string(), "tcp6"),
                ListenAddr::Unix(_) => (l.addr.to_string(), "unix"),
            };
            object([
                ("address", address.into()),
                ("fd", l.raw_fd().into()),
                ("type", kind.into()),
            ])
        })
        .collect();
    let count = listeners.len();
    object([("listeners", listeners.into()), ("count", count.into())])
}

/// Gunicorn 27's help table, word for word.
const HELP: [(&str, &str); 15] = [
    (
        "show all",
        "Show all processes (arbiter, web workers, dirty workers)",
    ),
    ("show workers", "List HTTP workers with their status"),
    ("show dirty", "List dirty workers and apps"),
    ("show config", "Show current effective configuration"),
    ("show stats", "Show server statistics"),
    ("show listeners", "Show bound sockets"),
    ("worker add [N]", "Spawn N workers (default 1)"),
    ("worker remove [N]", "Remove N workers (default 1)"),
    ("worker kill <PID>", "Gracefully terminate specific worker"),
    ("dirty add [N]", "Spawn N dirty workers (default 1)"),
    ("dirty remove [N]", "Remove N dirty workers (default 1)"),
    ("reload", "Graceful reload (HUP)"),
    ("reopen", "Reopen log files (USR1)"),
    ("shutdown [graceful|quick]", "Shutdown server (TERM/INT)"),
    ("help", "Show this help message"),
];

fn help() -> Json {
    let commands = HELP
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).into()))
        .collect();
    object([("commands", Json::Object(commands))])
}

/// Python's `round(x, 2)` for the small positive figures shown (seconds).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Python's `int(text)`: optional sign, decimal digits with single underscores between
/// them, surrounding whitespace; else Gunicorn's ValueError text.
fn python_int(text: &str) -> Result<i64, Failure> {
    let refuse = || {
        invalid(&format!(
            "invalid literal for int() with base 10: {}",
            py_repr(text)
        ))
    };
    let t = text.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let well_formed = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(refuse());
    }
    let value: i64 = digits.replace('_', "").parse().map_err(|_| refuse())?;
    Ok(if negative { -value } else { value })
}

/// Python's `repr()` of a string: single quotes unless it holds one and no double quote.
fn py_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// POSIX `shlex.split`: words split on whitespace; `'…'` literal; `"…"` with `\` escaping
/// `\ " $ `` ` and newline; an unquoted `\` escapes the next character.
fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("No closing quotation".to_string()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('\\' | '"' | '$' | '`' | '\n')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("No closing quotation".to_string()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("No closing quotation".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("No escaped character".to_string()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests;
