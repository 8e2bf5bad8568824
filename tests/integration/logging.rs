//! Logs (GUNICORN.md §5; issue 2 point 7): the error-log line format and start-up
//! sequence, `--error-logfile`, `--log-level`, the access log (default format, file or
//! stdout, custom formats with every atom), and the app's `gunicorn.error` logger.

use crate::support::{
    log_lines_with, parse_log_line, poll_until, wait_for_file, Server, LOG_DEADLINE,
};

/// The fields of a default-format access line:
/// `h l u [t] "r" s b "f" "a"` → (h, l, u, t, r, s, b, f, a).
#[derive(Debug, PartialEq)]
struct AccessLine {
    h: String,
    l: String,
    u: String,
    t: String,
    r: String,
    s: String,
    b: String,
    f: String,
    a: String,
}

/// Splits off a `"..."` field (with `\"` escapes) at the start of `rest`.
fn quoted(rest: &str) -> Option<(String, &str)> {
    let body = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, n) = chars.next()?;
                if n != '"' {
                    out.push('\\');
                }
                out.push(n);
            }
            '"' => return Some((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Whether `t` looks like `[21/Nov/2026:01:13:09 +0000]` without the brackets.
fn is_access_time(t: &str) -> bool {
    let b = t.as_bytes();
    let d = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 26
        && d(0..2)
        && b[2] == b'/'
        && b[3..6].iter().all(u8::is_ascii_alphabetic)
        && b[6] == b'/'
        && d(7..11)
        && b[11] == b':'
        && d(12..14)
        && b[14] == b':'
        && d(15..17)
        && b[17] == b':'
        && d(18..20)
        && b[20] == b' '
        && (b[21] == b'+' || b[21] == b'-')
        && d(22..26)
}

/// Parses a line in Gunicorn's default access-log format, strictly.
fn parse_access_line(line: &str) -> Option<AccessLine> {
    let (h, rest) = line.split_once(' ')?;
    let (l, rest) = rest.split_once(' ')?;
    let (u, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('[')?;
    let (t, rest) = rest.split_once("] ")?;
    if !is_access_time(t) {
        return None;
    }
    let (r, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (s, rest) = rest.split_once(' ')?;
    let (b, rest) = rest.split_once(' ')?;
    let (f, rest) = quoted(rest)?;
    let rest = rest.strip_prefix(' ')?;
    let (a, rest) = quoted(rest)?;
    if !rest.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) || s.len() != 3 {
        return None;
    }
    Some(AccessLine {
        h: h.into(),
        l: l.into(),
        u: u.into(),
        t: t.into(),
        r,
        s: s.into(),
        b: b.into(),
        f,
        a,
    })
}

/// Every line of the error log has Gunicorn's shape, and the start-up sequence is §5.1's
/// (with rgunicorn's name and version), master lines under the master's pid.
#[test]
fn error_log_format_and_startup_sequence() {
    let mut s = Server::start("startup", &["-w", "2", "app"]);
    s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
    let control = format!(
        "Control socket listening at {}/gunicorn.ctl",
        s.dir.path().display()
    );
    let log = s.wait_for_log(&control, LOG_DEADLINE);
    let workers = s.wait_workers(2, LOG_DEADLINE);
    let master = s.pid();
    let lines: Vec<(u32, String, String)> = log
        .lines()
        .map(|l| parse_log_line(l).unwrap_or_else(|| panic!("malformed log line {l:?}\n{log}")))
        .collect();
    let expect_master = [
        format!("Starting rgunicorn {}", env!("CARGO_PKG_VERSION")),
        format!("Listening at: http://127.0.0.1:{} ({master})", s.port),
        "Using worker: sync".to_owned(),
    ];
    for (i, want) in expect_master.iter().enumerate() {
        let (pid, level, msg) = &lines[i];
        assert_eq!(
            (pid, level.as_str(), msg),
            (&master, "INFO", want),
            "line {i}\n{log}"
        );
    }
    // The control socket opens once the first workers are forked (as in Gunicorn 27): its
    // line may come before, between or after their boot lines.
    let (control_lines, rest): (Vec<_>, Vec<_>) =
        lines[3..].iter().partition(|(_, _, msg)| *msg == control);
    assert_eq!(control_lines.len(), 1, "{log}");
    assert_eq!(control_lines[0].0, master, "{log}");
    let boots: Vec<&(u32, String, String)> = rest[..2].to_vec();
    for (pid, level, msg) in boots {
        assert_eq!(level, "INFO");
        assert_eq!(msg, &format!("Booting worker with pid: {pid}"), "{log}");
        assert!(workers.contains(pid), "{pid} is a worker {workers:?}");
    }
}

/// `--error-logfile FILE` (and its alias `--log-file`) sends the error log to FILE.
#[test]
fn error_logfile_writes_to_file() {
    for flag in ["--error-logfile", "--log-file"] {
        let holder = crate::support::TempDir::new("errfile");
        let path = holder.join("error.log");
        let s = Server::start("errfile", &[flag, &path.to_string_lossy(), "app"]);
        let text = wait_for_file(&path, "Booting worker with pid: ", LOG_DEADLINE);
        assert!(text.contains("Starting rgunicorn"), "{text}");
        for line in text.lines() {
            assert!(parse_log_line(line).is_some(), "malformed line {line:?}");
        }
        assert!(
            !s.stderr().contains("Starting rgunicorn"),
            "{flag}: stderr {}",
            s.stderr()
        );
        assert_eq!(s.get("/error").status, 500);
        wait_for_file(&path, "Error handling request", LOG_DEADLINE);
    }
}

/// `--log-level warning` hides INFO lines (start-up) but keeps warnings.
#[test]
fn log_level_warning_hides_info() {
    let s = Server::start("level-warning", &["--log-level", "warning", "app"]);
    let r = s.request("get / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    let log = s.wait_for_log("Invalid request from ip=127.0.0.1", LOG_DEADLINE);
    assert!(!log.contains("[INFO]"), "{log}");
    assert!(!log.contains("Starting rgunicorn"), "{log}");
}

/// `--log-level debug` shows DEBUG lines; Gunicorn logs one `METHOD PATH` per request at
/// DEBUG (the default pre_request hook) and `Arbiter booted` at start-up (§5.1).
#[test]
fn log_level_debug_shows_debug_lines() {
    let s = Server::start("level-debug", &["--log-level", "debug", "app"]);
    assert_eq!(s.get("/debug-path-marker").status, 200);
    let log = s.wait_for_log("[DEBUG]", LOG_DEADLINE);
    let found = poll_until(LOG_DEADLINE, || {
        let log = s.stderr();
        log.lines()
            .any(|l| l.contains("[DEBUG] GET /debug-path-marker"))
            .then_some(())
    });
    assert!(
        found.is_some(),
        "no DEBUG `GET /debug-path-marker` line:\n{}",
        s.stderr()
    );
    assert!(log.contains("[DEBUG] Arbiter booted"), "{log}");
}

/// `--access-logfile -` writes the default format to stdout; one line per request.
#[test]
fn access_log_default_format_on_stdout() {
    let s = Server::start("access-stdout", &["--access-logfile", "-", "app"]);
    let r = s.request(
        "GET /status?code=201&body=abcd HTTP/1.1\r\nHost: x\r\nReferer: http://ref.example/p\r\n\
         User-Agent: test-agent/1.0 \"quoted\"\r\nAuthorization: Basic dXNlcjpwYXNz\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 201);
    let out = s.wait_for_stdout("/status?code=201", LOG_DEADLINE);
    let line = out
        .lines()
        .find(|l| l.contains("/status?code=201"))
        .expect("line");
    let a = parse_access_line(line).unwrap_or_else(|| panic!("not the default format: {line:?}"));
    assert_eq!(a.h, "127.0.0.1");
    assert_eq!(a.l, "-");
    assert_eq!(a.u, "user", "user from Basic auth");
    assert_eq!(a.r, "GET /status?code=201&body=abcd HTTP/1.1");
    assert_eq!(a.s, "201");
    assert_eq!(a.b, "4");
    assert_eq!(a.f, "http://ref.example/p");
    assert_eq!(a.a, "test-agent/1.0 \"quoted\"");
    assert!(
        line.contains("\\\"quoted\\\""),
        "quotes are escaped as \\\": {line}"
    );
    // Missing referer / UA / user render as `-`.
    assert_eq!(s.get("/plain").status, 200);
    let out = s.wait_for_stdout("GET /plain", LOG_DEADLINE);
    let line = out
        .lines()
        .find(|l| l.contains("GET /plain"))
        .expect("line");
    let a = parse_access_line(line).unwrap_or_else(|| panic!("not the default format: {line:?}"));
    assert_eq!(
        (a.u.as_str(), a.f.as_str(), a.a.as_str()),
        ("-", "-", "-"),
        "{line}"
    );
    assert_eq!(a.b, "12");
    // The error log is not mixed into stdout.
    assert!(!out.contains("[INFO]"), "{out}");
}

/// `--access-logfile FILE` writes the default format to FILE, including 500s.
#[test]
fn access_log_to_file() {
    let holder = crate::support::TempDir::new("access-file");
    let path = holder.join("access.log");
    let s = Server::start(
        "access-file",
        &["--access-logfile", &path.to_string_lossy(), "app"],
    );
    assert_eq!(s.get("/one").status, 200);
    assert_eq!(s.get("/error").status, 500);
    let text = wait_for_file(&path, "GET /error", LOG_DEADLINE);
    let lines: Vec<AccessLine> = text
        .lines()
        .map(|l| parse_access_line(l).unwrap_or_else(|| panic!("bad access line {l:?}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        (lines[0].r.as_str(), lines[0].s.as_str()),
        ("GET /one HTTP/1.1", "200")
    );
    assert_eq!(
        (lines[1].r.as_str(), lines[1].s.as_str()),
        ("GET /error HTTP/1.1", "500")
    );
    assert!(!s.stdout().contains("GET /one"), "file only, not stdout");
}

/// A custom `--access-logformat` with every atom of §5.2.
#[test]
fn access_log_custom_format_atoms() {
    let format = "h=%(h)s|l=%(l)s|u=%(u)s|m=%(m)s|U=%(U)s|q=%(q)s|H=%(H)s|s=%(s)s|B=%(B)s|b=%(b)s\
                  |f=%(f)s|a=%(a)s|T=%(T)s|M=%(M)s|D=%(D)s|L=%(L)s|p=%(p)s|xff=%({x-forwarded-for}i)s\
                  |out=%({x-resp}o)s|env=%({remote_port}e)s|none=%(nonexistent)s|miss=%({x-missing}i)s|t=%(t)s|r=%(r)s";
    let mut s = Server::start(
        "access-custom",
        &[
            "-w",
            "1",
            "--access-logfile",
            "-",
            "--access-logformat",
            format,
            "app",
        ],
    );
    let worker = s.wait_workers(1, LOG_DEADLINE)[0];
    let mut c = s.connect();
    let client_port = c.local_port();
    c.send(
        "GET /status?code=202&body=xyz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.9.8.7, 10.0.0.1\r\n\
         User-Agent: ua\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(c.read_response().status, 202);
    let out = s.wait_for_stdout("m=GET", LOG_DEADLINE);
    let line = out
        .lines()
        .find(|l| l.contains("m=GET"))
        .expect("access line");
    let fields: std::collections::HashMap<&str, &str> = line
        .split('|')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let get = |k: &str| *fields.get(k).unwrap_or_else(|| panic!("no {k} in {line}"));
    assert_eq!(get("h"), "127.0.0.1");
    assert_eq!(get("l"), "-");
    assert_eq!(get("u"), "-");
    assert_eq!(get("U"), "/status");
    assert_eq!(get("q"), "code=202&body=xyz");
    assert_eq!(get("H"), "HTTP/1.1");
    assert_eq!(get("s"), "202");
    assert_eq!(get("B"), "3");
    assert_eq!(get("b"), "3");
    assert_eq!(get("f"), "-");
    assert_eq!(get("a"), "ua");
    assert!(get("T").parse::<u64>().is_ok(), "{line}");
    assert!(get("M").parse::<u64>().is_ok(), "{line}");
    assert!(
        get("D").parse::<u64>().is_ok_and(|d| d > 0),
        "microseconds: {line}"
    );
    let l = get("L");
    let (secs, frac) = l.split_once('.').unwrap_or_else(|| panic!("L = {l:?}"));
    assert!(secs.parse::<u64>().is_ok() && frac.len() == 6, "L = {l:?}");
    assert_eq!(get("p"), format!("<{worker}>"));
    assert_eq!(get("xff"), "10.9.8.7, 10.0.0.1");
    assert_eq!(get("out"), "resp-value");
    assert_eq!(get("env"), client_port.to_string());
    assert_eq!(get("none"), "-");
    assert_eq!(get("miss"), "-");
    let t = get("t");
    assert!(
        t.starts_with('[') && t.ends_with(']') && is_access_time(&t[1..t.len() - 1]),
        "t = {t:?}"
    );
    assert_eq!(get("r"), "GET /status?code=202&body=xyz HTTP/1.1");
}

/// The app's `logging.getLogger("gunicorn.error")` writes to our error log, in our
/// format, under the worker's pid, filtered by `--log-level`.
#[test]
fn app_gunicorn_error_logger_goes_to_error_log() {
    let mut s = Server::start("app-logger", &["-w", "1", "app"]);
    let worker = s.wait_workers(1, LOG_DEADLINE)[0];
    assert_eq!(s.get("/log?msg=app-marker-77").status, 200);
    let log = s.wait_for_log("warning app-marker-77", LOG_DEADLINE);
    let info = log_lines_with(&log, "info app-marker-77");
    assert_eq!(
        info,
        [(worker, "INFO".to_owned(), "info app-marker-77".to_owned())],
        "{log}"
    );
    let warn = log_lines_with(&log, "warning app-marker-77");
    assert_eq!(
        warn,
        [(
            worker,
            "WARNING".to_owned(),
            "warning app-marker-77".to_owned()
        )],
        "{log}"
    );

    let holder = crate::support::TempDir::new("app-logger-file");
    let path = holder.join("err.log");
    let s = Server::start(
        "app-logger-warning",
        &[
            "--log-level",
            "warning",
            "--error-logfile",
            &path.to_string_lossy(),
            "app",
        ],
    );
    assert_eq!(s.get("/log?msg=app-marker-78").status, 200);
    let text = wait_for_file(&path, "warning app-marker-78", LOG_DEADLINE);
    assert!(
        !text.contains("info app-marker-78"),
        "INFO filtered at warning level: {text}"
    );
}

/// A TERM shutdown leaves nothing but well-formed log lines on stderr: no Python
/// "Exception ignored ..." noise from worker teardown. The TERM goes to the master and to
/// every worker, as systemd (KillMode=control-group), `timeout` or Ctrl-C (INT to the
/// process group) do. Several rounds, as it is a race.
#[test]
fn shutdown_leaves_only_log_lines() {
    for round in 0..8 {
        let mut s = Server::start("clean-shutdown", &["-w", "2", "app"]);
        s.wait_for_log_count("Booting worker with pid: ", 2, LOG_DEADLINE);
        assert_eq!(s.get("/x").status, 200);
        let workers = s.wait_workers(2, LOG_DEADLINE);
        s.send_signal("TERM");
        for w in workers {
            crate::support::send_signal_to(w, "TERM");
        }
        let status = s.wait_exit(std::time::Duration::from_secs(30));
        assert!(status.success());
        let log = s.stderr();
        for line in log.lines() {
            assert!(
                parse_log_line(line).is_some(),
                "round {round}: stray line {line:?}\n{log}"
            );
        }
    }
}

/// An access log that cannot be written (a full disk) is said once at ERROR, then counted
/// and reported when the worker exits, instead of failing silently or flooding.
#[test]
fn access_log_write_failures_are_reported_once_with_a_count() {
    let mut s = Server::start(
        "access-full",
        &[
            "-w",
            "1",
            "--access-logfile",
            "/dev/full",
            "app:application",
        ],
    );
    for _ in 0..5 {
        assert_eq!(s.get("/pid").status, 200);
    }
    s.wait_for_log("Can't write the access log to /dev/full", LOG_DEADLINE);
    s.send_signal("TERM");
    assert!(s.wait_exit(LOG_DEADLINE).success());
    let log = s.stderr();
    assert_eq!(
        log.matches("Can't write the access log").count(),
        1,
        "said once: {log}"
    );
    assert!(
        log.contains("Access log: 5 lines could not be written to /dev/full"),
        "{log}"
    );
}
