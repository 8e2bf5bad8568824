//! Issue 4: drop-in configuration — gunicorn.conf.py, precedence, hooks, --print-config.

use std::time::Duration;

use crate::support::{run_to_exit_in, Server, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);

/// Writes `gunicorn.conf.py` (and the test app) into a fresh directory.
fn project(tag: &str, conf: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(dir.join("gunicorn.conf.py"), conf).unwrap();
    std::fs::copy(
        crate::support::apps_dir().join("app.py"),
        dir.join("app.py"),
    )
    .unwrap();
    dir
}

/// A config file the way deployments write them: workers from the CPU count, a bind list,
/// an access log, `wsgi_app`, and hooks that log. Every setting takes effect.
#[test]
fn deployment_style_config_file_takes_effect() {
    let port = crate::support::free_port();
    let dir = project(
        "conf-deploy",
        &format!(
            r#"
import multiprocessing
workers = min(2, multiprocessing.cpu_count())
bind = ["127.0.0.1:{port}"]
timeout = 45
accesslog = "-"
access_log_format = 'ACCESS %(m)s %(U)s %(s)s'
wsgi_app = "app:application"
raw_env = ["FROM_CONF=yes"]

def on_starting(server):
    server.log.info("HOOK on_starting workers=%s", server.cfg.workers)

def when_ready(server):
    server.log.info("HOOK when_ready %s", server.LISTENERS)

def post_fork(server, worker):
    server.log.info("HOOK post_fork pid=%s master=%s", worker.pid, server.pid)

def pre_request(worker, req):
    worker.log.info("HOOK pre_request %s %s", req.method, req.path)

def post_request(worker, req, environ, resp):
    worker.log.info("HOOK post_request %s %s", resp.status_code, environ["PATH_INFO"])

def on_exit(server):
    server.log.info("HOOK on_exit")
"#
        ),
    );
    let mut s = Server::builder("conf-deploy")
        .cwd(dir.path())
        .wait_port(port)
        .start();
    s.wait_workers(2, DEADLINE);
    let r = s.get("/os_environ?key=FROM_CONF");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body_str().contains("yes"),
        "raw_env from the file: {}",
        r.body_str()
    );
    s.wait_for_stdout("ACCESS GET /os_environ 200", DEADLINE);
    let log = s.wait_for_log("HOOK post_request 200 /os_environ", DEADLINE);
    for line in [
        "HOOK on_starting workers=2",
        &format!("HOOK when_ready ['http://127.0.0.1:{port}']"),
        "HOOK post_fork pid=",
        "HOOK pre_request GET /os_environ",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    s.send_signal("TERM");
    assert!(s.wait_exit(DEADLINE).success());
    assert!(s.stderr().contains("HOOK on_exit"), "{}", s.stderr());
}

/// Precedence: defaults < file < GUNICORN_CMD_ARGS < command line.
#[test]
fn command_line_beats_env_beats_file() {
    let dir = project(
        "conf-prec",
        "workers = 3\ntimeout = 11\nkeepalive = 7\nbacklog = 99\n",
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let done = run_to_exit_in(dir.path(), args, env, DEADLINE);
        assert_eq!(done.code(), Some(0), "{}", done.output());
        done.output()
    };
    let line = |out: &str, name: &str| {
        out.lines()
            .find(|l| l.split(" = ").next().map(str::trim) == Some(name))
            .map(|l| l.split(" = ").nth(1).unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let out = run(
        &["--print-config", "--keep-alive", "9", "app:application"],
        &[("GUNICORN_CMD_ARGS", "--timeout 22 --keep-alive 8")],
    );
    assert_eq!(line(&out, "workers"), "3", "file over default");
    assert_eq!(line(&out, "timeout"), "22", "env over file");
    assert_eq!(line(&out, "keepalive"), "9", "command line over env");
    assert_eq!(line(&out, "backlog"), "99");
}

/// `--print-config` prints every setting sorted as `name = value` (str() of the value),
/// then checks the app loads; exit 0.
#[test]
fn print_config_lists_every_setting() {
    let dir = project("conf-print", "loglevel = 'warning'\n");
    let done = run_to_exit_in(
        dir.path(),
        &["--print-config", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(done.code(), Some(0), "{}", done.output());
    let out = done.stdout.clone();
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(" = ").next())
        .map(str::trim)
        .collect();
    assert_eq!(
        names.len(),
        131,
        "all 120 of Gunicorn's settings and 11 of our own: {out}"
    );
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "sorted by name");
    assert!(
        out.lines()
            .any(|l| l.starts_with("loglevel ") && l.ends_with(" = warning")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("bind ") && l.ends_with(" = ['127.0.0.1:8000']")),
        "{out}"
    );
}

/// `--print-config` prints what Gunicorn 27.0.1 prints for the same settings (checked
/// line by line against it): `default_proc_name` is the command line's APP_MODULE, hooks
/// show as `<qualname()>` (Gunicorn's defaults as `<Class.hook()>`), address lists as
/// lists, `user`/`group` as ids, `statsd_host` parsed, `--no-sendfile` as False, and
/// `loglevel`/`worker_class` as written. The file may import a module next to it.
#[test]
fn print_config_shows_values_as_gunicorn_does() {
    let dir = project(
        "conf-print-gunicorn",
        "import helpers\n\ndef on_starting(server):\n    pass\n\npost_fork = helpers.my_post_fork\n",
    );
    std::fs::write(
        dir.join("helpers.py"),
        "def my_post_fork(server, worker):\n    pass\n",
    )
    .unwrap();
    let done = run_to_exit_in(
        dir.path(),
        &[
            "--print-config",
            "--forwarded-allow-ips",
            "10.0.0.0/8, 1.2.3.4",
            "--log-level",
            "DEBUG",
            "--no-sendfile",
            "--statsd-host",
            "LocalHost:9",
            "-k",
            "gunicorn.workers.sync.SyncWorker",
            "app:application",
        ],
        &[],
        DEADLINE,
    );
    assert_eq!(done.code(), Some(0), "{}", done.output());
    let value = |out: &str, name: &str| {
        out.lines()
            .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.trim() == name))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    let euid = nix::unistd::geteuid().to_string();
    let egid = nix::unistd::getegid().to_string();
    for (name, expected) in [
        ("default_proc_name", "app:application"),
        ("on_starting", "<on_starting()>"),
        ("post_fork", "<my_post_fork()>"),
        ("when_ready", "<WhenReady.when_ready()>"),
        ("pre_request", "<PreRequest.pre_request()>"),
        ("nworkers_changed", "<NumWorkersChanged.nworkers_changed()>"),
        ("ssl_context", "<NewSSLContext.ssl_context()>"),
        ("forwarded_allow_ips", "['10.0.0.0/8', '1.2.3.4']"),
        ("proxy_allow_ips", "['127.0.0.1', '::1']"),
        ("user", euid.as_str()),
        ("group", egid.as_str()),
        ("loglevel", "DEBUG"),
        ("sendfile", "False"),
        ("statsd_host", "('localhost', 9)"),
        ("worker_class", "gunicorn.workers.sync.SyncWorker"),
    ] {
        assert_eq!(
            value(&done.stdout, name),
            expected,
            "{name}:\n{}",
            done.stdout
        );
    }

    // The defaults: APP_MODULE from `wsgi_app` leaves `default_proc_name` alone, and
    // FORWARDED_ALLOW_IPS is split into the list.
    std::fs::write(dir.join("wsgi.py"), "wsgi_app = 'app:application'\n").unwrap();
    let done = run_to_exit_in(
        dir.path(),
        &["--print-config", "-c", "wsgi.py"],
        &[("FORWARDED_ALLOW_IPS", "192.168.0.0/16,*")],
        DEADLINE,
    );
    assert_eq!(done.code(), Some(0), "{}", done.output());
    for (name, expected) in [
        ("default_proc_name", "gunicorn"),
        ("on_starting", "<OnStarting.on_starting()>"),
        ("post_fork", "<Postfork.post_fork()>"),
        ("forwarded_allow_ips", "['192.168.0.0/16', '*']"),
        ("sendfile", "None"),
        ("statsd_host", "None"),
        ("worker_class", "sync"),
        ("loglevel", "info"),
    ] {
        assert_eq!(
            value(&done.stdout, name),
            expected,
            "{name}:\n{}",
            done.stdout
        );
    }

    // A bad FORWARDED_ALLOW_IPS is Gunicorn's error, exit 1.
    let bad = run_to_exit_in(
        dir.path(),
        &["--check-config", "-c", "wsgi.py"],
        &[("FORWARDED_ALLOW_IPS", "10.0.0.1/8")],
        DEADLINE,
    );
    assert_eq!(bad.code(), Some(1), "{}", bad.output());
    assert!(
        bad.stderr.contains("Error: 10.0.0.1/8 has host bits set"),
        "{}",
        bad.stderr
    );
}

/// Gunicorn's errors for a missing `-c` file, a file that raises, and a bad value.
#[test]
fn broken_config_files_give_gunicorns_errors() {
    let dir = project("conf-broken", "workers = 1\n");
    let missing = run_to_exit_in(
        dir.path(),
        &["-c", "nope.py", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(missing.code(), Some(1));
    assert!(
        missing.output().contains("Error: 'nope.py' doesn't exist"),
        "{}",
        missing.output()
    );

    std::fs::write(
        dir.join("raises.py"),
        "workers = 1\nraise RuntimeError('boom')\n",
    )
    .unwrap();
    let raises = run_to_exit_in(
        dir.path(),
        &["-c", "raises.py", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(raises.code(), Some(1));
    assert!(
        raises
            .output()
            .contains("Failed to read config file: raises.py"),
        "{}",
        raises.output()
    );
    assert!(
        raises.output().contains("RuntimeError: boom"),
        "{}",
        raises.output()
    );

    std::fs::write(dir.join("bad.py"), "workers = 'many'\n").unwrap();
    let bad = run_to_exit_in(
        dir.path(),
        &["-c", "bad.py", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(bad.code(), Some(1));
    assert!(
        bad.output()
            .contains("Invalid value for workers: many\n\n\nError: "),
        "{}",
        bad.output()
    );
    assert!(bad.output().contains("Error: "), "{}", bad.output());

    std::fs::write(dir.join("arity.py"), "def post_fork(server):\n    pass\n").unwrap();
    let arity = run_to_exit_in(
        dir.path(),
        &["-c", "arity.py", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(arity.code(), Some(1));
    assert!(
        arity.output().contains("Invalid value for post_fork"),
        "{}",
        arity.output()
    );
    assert!(arity.output().contains("arity"), "{}", arity.output());
}

/// `python:module` and `file:PATH` forms; a hook given as a dotted string.
#[test]
fn python_module_config_and_dotted_hooks() {
    let port = crate::support::free_port();
    let dir = project("conf-module", "");
    std::fs::remove_file(dir.join("gunicorn.conf.py")).unwrap();
    std::fs::write(
        dir.join("myhooks.py"),
        "def ready(server):\n    server.log.info('DOTTED when_ready')\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("settings_mod.py"),
        format!("bind = '127.0.0.1:{port}'\nworkers = 1\nwhen_ready = 'myhooks.ready'\n"),
    )
    .unwrap();
    let s = Server::builder("conf-module")
        .cwd(dir.path())
        .env("PYTHONPATH", dir.path().display().to_string())
        .args(["-c", "python:settings_mod", "app:application"])
        .wait_port(port)
        .start();
    s.wait_for_log("DOTTED when_ready", DEADLINE);
    assert_eq!(s.get("/pid").status, 200);
}

/// A Gunicorn setting rgunicorn does not implement is named in a warning; one whose
/// absence would change behaviour (TLS) is refused.
#[test]
fn unimplemented_settings_warn_or_refuse() {
    let dir = project("conf-niche", "http2_max_frame_size = 32768\n");
    let s = Server::builder("conf-niche")
        .cwd(dir.path())
        .args(["app:application"])
        .start();
    let log = s.wait_for_log("http2_max_frame_size", DEADLINE);
    assert!(log.contains("[WARNING]"), "{log}");
    std::fs::write(dir.join("tls.py"), "certfile = '/etc/ssl/cert.pem'\n").unwrap();
    let tls = run_to_exit_in(
        dir.path(),
        &["-c", "tls.py", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(tls.code(), Some(1), "{}", tls.output());
    assert!(tls.output().contains("certfile"), "{}", tls.output());
}

/// HUP re-reads the configuration file: a changed `access_log_format` applies to the new
/// workers.
#[test]
fn hup_rereads_the_config_file() {
    let dir = project(
        "conf-hup",
        "accesslog = '-'\naccess_log_format = 'BEFORE %(U)s'\n",
    );
    let mut s = Server::builder("conf-hup")
        .cwd(dir.path())
        .args(["-w", "1", "app:application"])
        .start();
    let first = s.wait_workers(1, DEADLINE);
    assert_eq!(s.get("/pid").status, 200);
    s.wait_for_stdout("BEFORE /pid", DEADLINE);
    std::fs::write(
        dir.join("gunicorn.conf.py"),
        "accesslog = '-'\naccess_log_format = 'AFTER %(U)s'\n",
    )
    .unwrap();
    s.send_signal("HUP");
    let replaced = crate::support::poll_until(DEADLINE, || {
        let now = s.worker_pids();
        (now.len() == 1 && now[0] != first[0]).then_some(())
    });
    assert!(replaced.is_some(), "{}", s.stderr());
    let seen = crate::support::poll_until(DEADLINE, || {
        assert_eq!(s.get("/pid?again").status, 200);
        s.stdout().contains("AFTER /pid").then_some(())
    });
    assert!(
        seen.is_some(),
        "the new format applies after HUP: {}",
        s.stdout()
    );
}

/// `--preload` imports the app once, in the master (before `Starting rgunicorn`); the
/// workers serve that same app.
#[test]
fn preload_imports_the_app_once_in_the_master() {
    let dir = project("preload", "");
    std::fs::write(
        dir.join("preapp.py"),
        "import os\nIMPORTED_IN = os.getpid()\nopen('imports.log', 'a').write('%d\\n' % IMPORTED_IN)\n\
def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [str(IMPORTED_IN).encode()]\n",
    )
    .unwrap();
    let mut s = Server::builder("preload")
        .cwd(dir.path())
        .args(["--preload", "-w", "2", "preapp:application"])
        .start();
    s.wait_workers(2, DEADLINE);
    let imports = std::fs::read_to_string(dir.join("imports.log")).unwrap();
    assert_eq!(
        imports.trim(),
        s.pid().to_string(),
        "imported once, by the master"
    );
    assert_eq!(
        s.get("/").body_str(),
        s.pid().to_string(),
        "workers serve the preloaded app"
    );
}

/// `--capture-output` sends the app's print() output to the error log file.
#[test]
fn capture_output_sends_prints_to_the_error_log() {
    let dir = project("capture", "");
    std::fs::write(
        dir.join("printer.py"),
        "def application(environ, start_response):\n    print('PRINTED BY THE APP', flush=True)\n    start_response('200 OK', [])\n    return [b'ok']\n",
    )
    .unwrap();
    let log = dir.join("error.log");
    let s = Server::builder("capture")
        .cwd(dir.path())
        .args([
            "--capture-output",
            "--error-logfile",
            &log.display().to_string(),
            "printer:application",
        ])
        .start();
    assert_eq!(s.get("/").status, 200);
    crate::support::wait_for_file(&log, "PRINTED BY THE APP", DEADLINE);
}

/// `--reload`: editing the app restarts the worker with the new code; a SyntaxError is
/// served as a 500 with its traceback until the file is fixed.
#[test]
fn reload_restarts_workers_on_code_changes() {
    let dir = project("reload", "");
    let app = dir.join("live.py");
    // A later modification time than the reloader saw, without waiting for the clock.
    let bump = std::cell::Cell::new(0u64);
    let write = |content: &str| {
        std::fs::write(&app, content).unwrap();
        bump.set(bump.get() + 10);
        let when = std::time::SystemTime::now() + Duration::from_secs(bump.get());
        std::fs::File::options()
            .write(true)
            .open(&app)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    let version = |v: &str| {
        format!("def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'{v}']\n")
    };
    std::fs::write(&app, version("one")).unwrap();
    let s = Server::builder("reload")
        .cwd(dir.path())
        .args(["--reload", "-w", "1", "live:application"])
        .start();
    assert_eq!(s.get("/").body_str(), "one");
    assert!(
        s.stderr()
            .contains("Reloader is on. Use in development only!"),
        "{}",
        s.stderr()
    );
    write(&version("two"));
    let two =
        crate::support::poll_until(DEADLINE, || (s.get("/").body_str() == "two").then_some(()));
    assert!(two.is_some(), "the new code is served: {}", s.stderr());
    assert!(s.stderr().contains("Worker reloading:"), "{}", s.stderr());
    write("def application(:\n");
    let broken = crate::support::poll_until(DEADLINE, || {
        let r = s.get("/");
        (r.status == 500 && r.body_str().contains("SyntaxError")).then_some(())
    });
    assert!(
        broken.is_some(),
        "a SyntaxError is served as a 500 with its traceback"
    );
    write(&version("three"));
    let fixed = crate::support::poll_until(DEADLINE, || {
        (s.get("/").body_str() == "three").then_some(())
    });
    assert!(
        fixed.is_some(),
        "fixing the file reloads again: {}",
        s.stderr()
    );
}

/// `--reload-engine inotify`: a change to the app file reloads the worker at once, even one
/// that leaves the modification time as it was (which polling cannot see); a file written
/// next to the app does not reload it.
#[cfg(target_os = "linux")]
#[test]
fn reload_engine_inotify_reloads_on_a_change_to_the_app_file() {
    let dir = project("reload-inotify", "");
    let app = dir.join("live.py");
    let version = |v: &str| {
        format!("def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'{v}']\n")
    };
    std::fs::write(&app, version("one")).unwrap();
    let mut s = Server::builder("reload-inotify")
        .cwd(dir.path())
        .args([
            "--reload",
            "--reload-engine",
            "inotify",
            "-w",
            "1",
            "live:application",
        ])
        .start();
    assert_eq!(s.get("/").body_str(), "one");
    let first = s.wait_workers(1, DEADLINE);

    std::fs::write(dir.join("unrelated.log"), "not code\n").unwrap();
    let before = std::fs::metadata(&app).unwrap().modified().unwrap();
    // A new size, so that Python does not take the cached bytecode (keyed by source mtime
    // and size) for the new source.
    std::fs::write(&app, version("second")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&app)
        .unwrap()
        .set_modified(before)
        .unwrap();
    let second = crate::support::poll_until(DEADLINE, || {
        (s.get("/").body_str() == "second").then_some(())
    });
    assert!(second.is_some(), "the new code is served: {}", s.stderr());
    let log = s.stderr();
    assert!(log.contains("live.py modified"), "{log}");
    assert!(!log.contains("unrelated.log"), "{log}");
    assert_eq!(
        log.matches("Worker reloading:").count(),
        1,
        "only the app file reloads: {log}"
    );
    assert_ne!(s.wait_workers(1, DEADLINE), first, "a new worker serves");
}

/// Behind proxies: custom `secure_scheme_headers` and `forwarder_headers` from a trusted
/// peer, and `header_map` for underscore headers (drop by default, refuse, dangerous).
#[test]
fn proxy_header_settings_shape_the_environ() {
    let dir = project(
        "proxy",
        "forwarded_allow_ips = '127.0.0.1'\nsecure_scheme_headers = {'X-SCHEME': 'https'}\nforwarder_headers = 'SCRIPT_NAME,REMOTE_USER'\n",
    );
    let s = Server::builder("proxy")
        .cwd(dir.path())
        .args(["app:application"])
        .start();
    let env = |raw: &str| {
        let r = s.request(raw);
        assert_eq!(r.status, 200, "{r:?}");
        r.body_str()
    };
    let https = env(
        "GET /environ HTTP/1.1\r\nHost: x\r\nX-Scheme: https\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    assert!(
        https.contains(r#""wsgi.url_scheme": "https""#),
        "custom scheme header: {https}"
    );
    let http = env("GET /environ HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert!(
        http.contains(r#""wsgi.url_scheme": "http""#),
        "the default headers no longer count: {http}"
    );
    let user = env("GET /environ HTTP/1.1\r\nHost: x\r\nREMOTE_USER: alice\r\nX_OTHER: 1\r\n\r\n");
    assert!(
        user.contains(r#""HTTP_REMOTE_USER": "alice""#),
        "a forwarder header passes: {user}"
    );
    assert!(
        !user.contains("HTTP_X_OTHER"),
        "other underscore headers are dropped: {user}"
    );

    std::fs::write(dir.join("refuse.py"), "header_map = 'refuse'\n").unwrap();
    let refuse = Server::builder("proxy-refuse")
        .cwd(dir.path())
        .args(["-c", "refuse.py", "app:application"])
        .start();
    let r = refuse.request("GET /environ HTTP/1.1\r\nHost: x\r\nX_Foo: 1\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");

    let dangerous = Server::builder("proxy-dangerous")
        .cwd(dir.path())
        .args([
            "-c",
            "refuse.py",
            "--header-map",
            "dangerous",
            "app:application",
        ])
        .start();
    let r = dangerous.request("GET /environ HTTP/1.1\r\nHost: x\r\nX_Foo: 1\r\n\r\n");
    assert!(r.body_str().contains(r#""HTTP_X_FOO": "1""#), "{r:?}");
}

/// StatsD: request counters, status, duration and the worker gauge reach a UDP listener,
/// with the prefix and dogstatsd tags.
#[test]
fn statsd_metrics_reach_a_udp_listener() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let host = udp.local_addr().unwrap().to_string();
    let s = Server::start(
        "statsd",
        &[
            "-w",
            "1",
            "--statsd-host",
            &host,
            "--statsd-prefix",
            "shop",
            "--dogstatsd-tags",
            "env:test",
            "app:application",
        ],
    );
    let mut seen = String::new();
    let complete = crate::support::poll_until(DEADLINE, || {
        assert_eq!(s.get("/pid").status, 200);
        let mut buf = [0u8; 512];
        while let Ok(n) = udp.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
            if seen.contains("request.duration") && seen.contains("workers") {
                break;
            }
        }
        (seen.contains("request.duration") && seen.contains("gunicorn.workers")).then_some(())
    });
    assert!(complete.is_some(), "metrics received: {seen}");
    for expected in [
        "shop.gunicorn.requests:1|c|@1.0|#env:test",
        "shop.gunicorn.request.status.200:1|c|@1.0|#env:test",
        "shop.gunicorn.workers:1|g|#env:test",
    ] {
        assert!(
            seen.lines().any(|l| l == expected),
            "missing {expected:?} in:\n{seen}"
        );
    }
    assert!(
        seen.lines()
            .any(|l| l.starts_with("shop.gunicorn.request.duration:")
                && l.ends_with("|ms|#env:test")),
        "{seen}"
    );
}

/// The StatsD metrics are Gunicorn 27.0.1's, name for name and type for type: both servers,
/// the same settings (`--enable-backlog-metric` included) and the same requests (a 200, a
/// 500 with its logged exception, a 404), each reporting to its own UDP listener.
#[test]
fn statsd_metric_names_and_types_are_gunicorn_27s() {
    use std::collections::BTreeSet;
    let listen = || {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        udp
    };
    // `name|type` of each datagram: the value and the tags dropped.
    let shapes = |udp: &std::net::UdpSocket, into: &mut BTreeSet<String>| {
        let mut buf = [0u8; 512];
        while let Ok(n) = udp.recv(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some((name, rest)) = line.split_once(':') {
                let kind = rest.split_once('|').map_or("", |(_, k)| k);
                into.insert(format!("{name}|{kind}"));
            }
        }
    };
    let send_requests = |port: u16| {
        for path in ["/pid", "/error", "/nowhere"] {
            let mut c = crate::support::Conn::tcp(port);
            c.send(format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ));
            c.read_response();
        }
    };
    let expected_names = [
        "gunicorn.backlog",
        "gunicorn.request.status.500",
        "gunicorn.log.exception",
    ];
    let complete = |seen: &BTreeSet<String>| {
        expected_names
            .iter()
            .all(|n| seen.iter().any(|s| s.starts_with(&format!("{n}|"))))
    };

    let ours_udp = listen();
    let host = ours_udp.local_addr().unwrap().to_string();
    let s = Server::start(
        "statsd-names",
        &[
            "-w",
            "1",
            "--statsd-host",
            &host,
            "--enable-backlog-metric",
            "app:application",
        ],
    );
    let mut ours = BTreeSet::new();
    crate::support::poll_until(DEADLINE, || {
        send_requests(s.port);
        shapes(&ours_udp, &mut ours);
        complete(&ours).then_some(())
    })
    .unwrap_or_else(|| panic!("rgunicorn's metrics: {ours:?}\n{}", s.stderr()));
    drop(s);

    let theirs_udp = listen();
    let host = theirs_udp.local_addr().unwrap().to_string();
    let port = crate::support::free_port();
    let mut gunicorn = std::process::Command::new(crate::support::venv().join("bin/gunicorn"))
        .args([
            "-w",
            "1",
            "-b",
            &format!("127.0.0.1:{port}"),
            "--statsd-host",
            &host,
        ])
        .args([
            "--enable-backlog-metric",
            "--no-control-socket",
            "app:application",
        ])
        .current_dir(crate::support::apps_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gunicorn from the test venv");
    let mut theirs = BTreeSet::new();
    let done = crate::support::poll_until(DEADLINE, || {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            send_requests(port);
        }
        shapes(&theirs_udp, &mut theirs);
        complete(&theirs).then_some(())
    });
    crate::support::send_signal_to(gunicorn.id(), "TERM");
    let _ = crate::support::poll_until(DEADLINE, || gunicorn.try_wait().ok().flatten());
    let _ = gunicorn.kill();
    assert!(done.is_some(), "gunicorn's metrics: {theirs:?}");
    assert_eq!(
        ours, theirs,
        "rgunicorn's metrics (left) against Gunicorn 27.0.1's (right)"
    );
}

/// `logconfig_dict` with a custom JSON formatter: our error log and access log go through
/// Python logging, and the access record carries Gunicorn's atoms in `record.args`.
#[test]
fn logconfig_dict_routes_logs_through_python_logging() {
    let dir = project(
        "logdict",
        r#"
import json, logging

class JsonFormatter(logging.Formatter):
    def format(self, record):
        data = {"level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.name == "gunicorn.access":
            data["status"] = record.args["s"]
            data["path"] = record.args["U"]
            data["xff"] = record.args["{x-forwarded-for}i"]
        return json.dumps(data)

logconfig_dict = {
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["out"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["out"], "propagate": False},
    },
}
"#,
    );
    let s = Server::builder("logdict")
        .cwd(dir.path())
        .args(["-w", "1", "app:application"])
        .start();
    let r = s.request("GET /pid HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n");
    assert_eq!(r.status, 200);
    let out = s.wait_for_stdout(r#""logger": "gunicorn.access""#, DEADLINE);
    let access = out.lines().find(|l| l.contains("gunicorn.access")).unwrap();
    assert!(
        access.contains(r#""status": "200""#) && access.contains(r#""path": "/pid""#),
        "{access}"
    );
    assert!(access.contains(r#""xff": "10.1.2.3""#), "{access}");
    assert!(
        out.contains(
            r#"{"level": "INFO", "logger": "gunicorn.error", "msg": "Booting worker with pid: "#
        ),
        "{out}"
    );
}

/// `--log-config-json FILE` and `--log-config FILE` (INI, fileConfig) configure logging too.
#[test]
fn logconfig_json_and_ini_files_apply() {
    let dir = project("logfiles", "");
    std::fs::write(
        dir.join("log.json"),
        r#"{"formatters": {"tagged": {"format": "JSONCFG %(levelname)s %(message)s"}},
            "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "tagged", "stream": "ext://sys.stderr"}},
            "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["err"], "propagate": false}}}"#,
    )
    .unwrap();
    let json = Server::builder("logjson")
        .cwd(dir.path())
        .args(["--log-config-json", "log.json", "app:application"])
        .start();
    json.wait_for_log("JSONCFG INFO Booting worker with pid:", DEADLINE);
    drop(json);
    std::fs::write(
        dir.join("log.ini"),
        "[loggers]\nkeys=root,error\n[handlers]\nkeys=err\n[formatters]\nkeys=tagged\n\
[logger_root]\nlevel=INFO\nhandlers=err\n\
[logger_error]\nlevel=INFO\nhandlers=err\npropagate=0\nqualname=gunicorn.error\n\
[handler_err]\nclass=StreamHandler\nformatter=tagged\nargs=(sys.stderr,)\n\
[formatter_tagged]\nformat=INICFG %(levelname)s %(message)s\n",
    )
    .unwrap();
    let ini = Server::builder("logini")
        .cwd(dir.path())
        .args(["--log-config", "log.ini", "app:application"])
        .start();
    ini.wait_for_log("INICFG INFO Booting worker with pid:", DEADLINE);
    let missing = run_to_exit_in(
        dir.path(),
        &["--log-config", "nope.ini", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(missing.code(), Some(1), "{}", missing.output());
    assert!(
        missing.output().contains("log config 'nope.ini' not found"),
        "{}",
        missing.output()
    );
}

/// PROXY protocol v1 and v2: the client address from the header becomes REMOTE_ADDR/PORT,
/// the address it reached on the proxy PROXY_ADDR/PORT; a peer outside `--proxy-allow-from` gets 403; plain requests still
/// work in auto mode.
#[test]
fn proxy_protocol_v1_and_v2() {
    let s = Server::start("proxyproto", &["app:application", "--proxy-protocol"]);
    let field = |body: &str, key: &str| {
        let needle = format!("\"{key}\": \"");
        body.split(&needle)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let v1 = s.request(
        "PROXY TCP4 203.0.113.7 192.168.0.11 5555 443\r\nGET /environ HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(v1.status, 200, "{v1:?}");
    let body = v1.body_str();
    assert_eq!(field(&body, "REMOTE_ADDR"), "203.0.113.7", "{body}");
    assert_eq!(field(&body, "REMOTE_PORT"), "5555");
    assert_eq!(field(&body, "PROXY_PROTOCOL"), "TCP4");
    // The address the client reached on the proxy, as Gunicorn's proxy_addr/proxy_port.
    assert_eq!(field(&body, "PROXY_ADDR"), "192.168.0.11");
    assert_eq!(field(&body, "PROXY_PORT"), "443");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 9, 127, 0, 0, 1, 0x1f, 0x90, 0, 80,
    ]);
    v2.extend_from_slice(b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = s.request(&v2);
    assert_eq!(field(&r.body_str(), "REMOTE_ADDR"), "198.51.100.9", "{r:?}");
    assert_eq!(field(&r.body_str(), "REMOTE_PORT"), "8080");
    assert_eq!(field(&r.body_str(), "PROXY_ADDR"), "127.0.0.1");
    assert_eq!(field(&r.body_str(), "PROXY_PORT"), "80");

    let plain = s.request("GET /environ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(field(&plain.body_str(), "REMOTE_ADDR"), "127.0.0.1");

    let bad = s.request("PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(bad.status, 400, "{bad:?}");

    let strict = Server::start(
        "proxyproto-deny",
        &[
            "--proxy-protocol",
            "v1",
            "--proxy-allow-from",
            "10.9.9.9",
            "app:application",
        ],
    );
    let denied = strict
        .request("PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(denied.status, 403, "{denied:?}");
}

/// `--log-syslog`: error and access lines reach the syslog address with Gunicorn's
/// `<PRI>gunicorn.<prefix>.<error|access>: [pid] message` shape and the facility.
#[test]
fn syslog_receives_error_and_access_lines() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = format!("udp://{}", udp.local_addr().unwrap());
    let s = Server::start(
        "syslog",
        &[
            "-w",
            "1",
            "--log-syslog",
            "--log-syslog-to",
            &to,
            "--log-syslog-prefix",
            "shop",
            "--log-syslog-facility",
            "local0",
            "app:application",
        ],
    );
    let mut seen = String::new();
    let complete = crate::support::poll_until(DEADLINE, || {
        assert_eq!(s.get("/pid").status, 200);
        let mut buf = [0u8; 1024];
        while let Ok(n) = udp.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]).replace('\0', "\n"));
            if seen.contains("gunicorn.shop.access") {
                break;
            }
        }
        (seen.contains("Booting worker") && seen.contains("gunicorn.shop.access")).then_some(())
    });
    assert!(complete.is_some(), "syslog lines: {seen}");
    // local0 (16) * 8 + info (6) = 134.
    assert!(
        seen.lines()
            .any(|l| l.starts_with("<134>gunicorn.shop.error: [")
                && l.contains("] Booting worker with pid: ")),
        "{seen}"
    );
    assert!(
        seen.lines()
            .any(|l| l.starts_with("<134>gunicorn.shop.access: [")
                && l.contains("\"GET /pid HTTP/1.1\" 200")),
        "{seen}"
    );
}

/// TLS with `--certfile`/`--keyfile`: requests over TLS (keep-alive and pipelined) are
/// served with `wsgi.url_scheme = https`, and the listener is logged as `https://`. The
/// client is Python's ssl module, verifying the test certificate.
#[test]
fn tls_serves_https() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let cert = certs.join("cert.pem").display().to_string();
    let key = certs.join("key.pem").display().to_string();
    let s = Server::start(
        "tls",
        &["--certfile", &cert, "--keyfile", &key, "app:application"],
    );
    assert!(
        s.stderr()
            .contains(&format!("Listening at: https://127.0.0.1:{}", s.port)),
        "{}",
        s.stderr()
    );
    let client = format!(
        r#"
import ssl, socket
ctx = ssl.create_default_context(cafile={cert:?})
with socket.create_connection(("127.0.0.1", {port})) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /environ HTTP/1.1\r\nHost: localhost\r\n\r\nGET /pid HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
print(data.count(b"HTTP/1.1 200 OK"), b'"wsgi.url_scheme": "https"' in data)
"#,
        port = s.port
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&client)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "2 True",
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A certificate that cannot be read is a start-up error.
    let bad = run_to_exit_in(
        &certs,
        &["--certfile", "missing.pem", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(bad.code(), Some(1), "{}", bad.output());
    assert!(bad.output().contains("missing.pem"), "{}", bad.output());
}

/// One HTTPS request with Python's ssl module, presenting `client` (cert, key) if given:
/// `200`, or `refused <error>` when the TLS handshake (or its post-handshake alert) fails.
fn https_status(port: u16, client: Option<(&str, &str)>) -> String {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let load = match client {
        Some((cert, key)) => format!(
            "ctx.load_cert_chain({:?}, {:?})",
            certs.join(cert).display().to_string(),
            certs.join(key).display().to_string()
        ),
        None => String::new(),
    };
    let script = format!(
        r#"
import ssl, socket
ctx = ssl.create_default_context(cafile={cafile:?})
{load}
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed")
            print(data.split()[1].decode())
except (ssl.SSLError, OSError) as e:
    print("refused", type(e).__name__)
"#,
        cafile = certs.join("cert.pem").display().to_string(),
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Client certificates: `--cert-reqs 2` (CERT_REQUIRED) serves only clients presenting a
/// certificate from `--ca-certs`; `--cert-reqs 1` (CERT_OPTIONAL) also serves clients that
/// present none, but never one that presents an untrusted certificate.
#[test]
fn tls_client_certificates_are_checked() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let path = |name: &str| certs.join(name).display().to_string();
    for (reqs, without) in [("2", false), ("1", true)] {
        let s = Server::start(
            "tls-client",
            &[
                "--certfile",
                &path("cert.pem"),
                "--keyfile",
                &path("key.pem"),
                "--ca-certs",
                &path("ca.pem"),
                "--cert-reqs",
                reqs,
                "app:application",
            ],
        );
        let valid = https_status(s.port, Some(("client.pem", "client-key.pem")));
        assert_eq!(valid, "200", "cert_reqs {reqs}, a valid certificate");
        let untrusted = https_status(s.port, Some(("untrusted.pem", "untrusted-key.pem")));
        assert!(
            untrusted.starts_with("refused"),
            "cert_reqs {reqs}, an untrusted certificate: {untrusted}"
        );
        let none = https_status(s.port, None);
        if without {
            assert_eq!(none, "200", "cert_reqs {reqs}, no certificate");
        } else {
            assert!(
                none.starts_with("refused"),
                "cert_reqs {reqs}, no certificate: {none}"
            );
        }
    }
}

/// TLS fails closed: a TLS setting rustls cannot honour exactly is a start-up error, never
/// a warning with a weaker server behind it.
#[test]
fn tls_settings_that_cannot_be_honoured_are_refused() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let base = ["--certfile", "cert.pem", "--keyfile", "key.pem"];
    for (extra, says) in [
        (&["--cert-reqs", "2"][..], "set ca_certs"),
        (
            &["--ciphers", "ECDHE+AESGCM"][..],
            "ciphers = 'ECDHE+AESGCM' can't be applied",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.push("app:application");
        let done = run_to_exit_in(&certs, &args, &[], DEADLINE);
        assert_eq!(done.code(), Some(1), "{}", done.output());
        assert!(
            done.output().contains("Error:") && done.output().contains(says),
            "{}",
            done.output()
        );
    }
    let tmp = TempDir::new("tls-context");
    let conf = tmp.join("conf.py");
    std::fs::write(
        &conf,
        "def ssl_context(conf, default):\n    return default()\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let hook = run_to_exit_in(&certs, &["-c", &conf, "app:application"], &[], DEADLINE);
    assert_eq!(hook.code(), Some(1), "{}", hook.output());
    assert!(hook.output().contains("ssl_context"), "{}", hook.output());
}
