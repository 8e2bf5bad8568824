//! Command line (GUNICORN.md §1, §2; issue 2 point 2 and 3): flags, exit codes, env-derived
//! defaults, `GUNICORN_CMD_ARGS`, app spec forms and app-load failures.

use std::time::Duration;

use crate::support::{
    describe, free_port, json_str_list, run_to_exit, run_to_exit_in, Conn, Server, TempDir,
    LOG_DEADLINE,
};

/// Deadline for a command that should exit by itself (Python start-up included).
const EXIT_DEADLINE: Duration = Duration::from_secs(30);

/// `--version` names rgunicorn (with its version) and the embedded Python.
#[test]
fn version_names_rgunicorn_and_python() {
    for flag in ["--version", "-v"] {
        let out = run_to_exit(&[flag], &[], EXIT_DEADLINE);
        assert_eq!(out.code(), Some(0), "{flag}: {}", out.output());
        let text = out.output();
        assert!(
            text.contains(&format!(
                "rgunicorn (version {})",
                env!("CARGO_PKG_VERSION")
            )),
            "{flag} output: {text}"
        );
        assert!(
            text.contains("Python 3."),
            "{flag} should name the Python in use: {text}"
        );
    }
}

/// No APP_MODULE: Gunicorn's message and exit 1.
#[test]
fn no_app_module_exits_1_with_message() {
    let out = run_to_exit(&["-w", "1"], &[], EXIT_DEADLINE);
    assert_eq!(out.code(), Some(1), "{}", out.output());
    assert!(
        out.stderr
            .contains("Error: No application module specified."),
        "stderr: {}",
        out.stderr
    );
}

/// An unknown flag is a usage error: exit 2.
#[test]
fn unknown_flag_exits_2() {
    let out = run_to_exit(&["--no-such-flag", "app"], &[], EXIT_DEADLINE);
    assert_eq!(out.code(), Some(2), "{}", out.output());
    assert!(
        out.stderr.contains("--no-such-flag"),
        "stderr: {}",
        out.stderr
    );
}

/// A non-integer `-w` is a usage error: exit 2.
#[test]
fn non_integer_workers_exits_2() {
    let out = run_to_exit(&["-w", "abc", "app"], &[], EXIT_DEADLINE);
    assert_eq!(out.code(), Some(2), "{}", out.output());
    assert!(
        out.stderr.contains("abc"),
        "stderr names the bad value: {}",
        out.stderr
    );
}

/// A negative timeout is a setting-validation error: `Error: ...` and exit 1
/// (argparse takes `-1` as the option's value; the validator refuses negatives).
#[test]
fn negative_timeout_is_a_config_error_exit_1() {
    for args in [&["-t", "-1", "app"][..], &["--timeout=-1", "app"][..]] {
        let out = run_to_exit(args, &[], EXIT_DEADLINE);
        assert_eq!(out.code(), Some(1), "{args:?}: {}", out.output());
        assert!(
            out.stderr.contains("Error:"),
            "{args:?} stderr: {}",
            out.stderr
        );
    }
}

/// `WEB_CONCURRENCY` sets the default worker count; `-w` wins over it.
#[test]
fn web_concurrency_sets_default_workers() {
    let mut s = Server::builder("webconc")
        .env("WEB_CONCURRENCY", "3")
        .arg("app")
        .start();
    s.wait_for_log_count("Booting worker with pid", 3, LOG_DEADLINE);
    s.wait_workers(3, LOG_DEADLINE);

    let mut s = Server::builder("webconc-cli")
        .env("WEB_CONCURRENCY", "3")
        .args(["-w", "1", "app"])
        .start();
    s.wait_for_log("Booting worker with pid", LOG_DEADLINE);
    let workers = s.wait_workers(1, LOG_DEADLINE);
    assert_eq!(workers.len(), 1);
}

/// `PORT` makes the default bind `0.0.0.0:$PORT`.
#[test]
fn port_env_binds_all_interfaces() {
    let port = free_port();
    let s = Server::builder("port-env")
        .env("PORT", port.to_string())
        .wait_port(port)
        .arg("app")
        .start();
    let log = s.wait_for_log("Listening at:", LOG_DEADLINE);
    assert!(
        log.contains(&format!("Listening at: http://0.0.0.0:{port} ")),
        "PORT should bind 0.0.0.0:{port}: {log}"
    );
    let r = s.get("/port");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello /port");
}

/// `GUNICORN_CMD_ARGS` applies, and the command line wins over it.
#[test]
fn gunicorn_cmd_args_apply_and_cli_wins() {
    let a = free_port();
    // Only the env var binds: the server listens there.
    let mut s = Server::builder("cmdargs")
        .env(
            "GUNICORN_CMD_ARGS",
            format!("--bind 127.0.0.1:{a} --workers 2"),
        )
        .wait_port(a)
        .arg("app")
        .start();
    s.wait_workers(2, LOG_DEADLINE);
    assert_eq!(s.get("/x").status, 200);
    drop(s);

    // CLI -w 1 beats --workers 3 from the env; -b from the CLI replaces the env's bind.
    let b = free_port();
    let unused = free_port();
    let mut s = Server::builder("cmdargs-cli")
        .env(
            "GUNICORN_CMD_ARGS",
            format!("--workers 3 --bind 127.0.0.1:{unused}"),
        )
        .args(["-w", "1", "-b", &format!("127.0.0.1:{b}"), "app"])
        .wait_port(b)
        .start();
    s.wait_for_log("Booting worker with pid", LOG_DEADLINE);
    s.wait_workers(1, LOG_DEADLINE);
    let log = s.stderr();
    assert!(
        !log.contains(&format!(":{unused}")),
        "the CLI -b replaces GUNICORN_CMD_ARGS' bind: {log}"
    );
}

/// `GUNICORN_CMD_ARGS` is split by Python's own `shlex.split`, as Gunicorn splits it:
/// inside double quotes a backslash before `$` stays, and an unclosed quote is an error.
#[test]
fn gunicorn_cmd_args_are_split_like_python_shlex() {
    let done = crate::support::run_to_exit(
        &["--print-config", "app:application"],
        &[("GUNICORN_CMD_ARGS", r#"--name "a\$b c" --workers 3"#)],
        LOG_DEADLINE,
    );
    assert_eq!(done.code(), Some(0), "{}", done.output());
    assert!(
        done.stdout.lines().any(|l| l
            .split_once(" = ")
            .is_some_and(|(k, v)| k.trim() == "proc_name" && v == r"a\$b c")),
        "{}",
        done.stdout
    );
    let bad = crate::support::run_to_exit(
        &["app:application"],
        &[("GUNICORN_CMD_ARGS", r#"--name "unclosed"#)],
        LOG_DEADLINE,
    );
    assert_eq!(bad.code(), Some(1), "{}", bad.output());
    assert!(
        bad.output().contains("No closing quotation"),
        "{}",
        bad.output()
    );
}

/// `-b` is repeatable: a TCP port and a unix socket both serve.
#[test]
fn bind_is_repeatable_tcp_and_unix() {
    let dir = TempDir::new("bind-unix");
    let sock = dir.join("s.sock");
    let s = Server::builder("bind-two")
        .also_bind(format!("unix:{}", sock.display()))
        .arg("app")
        .start();
    let log = s.wait_for_log("Listening at:", LOG_DEADLINE);
    assert!(log.contains(&format!("unix:{}", sock.display())), "{log}");
    assert!(
        log.contains(&format!("http://127.0.0.1:{}", s.port)),
        "{log}"
    );
    assert_eq!(s.get("/tcp").body_str(), "hello /tcp");
    let mut c = Conn::unix(&sock);
    c.send("GET /unix HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "hello /unix");
}

/// `--chdir` makes the app importable from that directory (run from elsewhere).
#[test]
fn chdir_loads_app_from_directory() {
    let elsewhere = TempDir::new("chdir-cwd");
    let apps = crate::support::apps_dir();
    let s = Server::builder("chdir")
        .cwd(elsewhere.path())
        .args(["--chdir", &apps.to_string_lossy(), "app:application"])
        .start();
    assert_eq!(s.get("/chdir").body_str(), "hello /chdir");
    // --chdir is the first entry of sys.path.
    let r = s.get("/os_environ?sys_path=1");
    let path = json_str_list(&r.body_str());
    assert_eq!(
        path.first().map(String::as_str),
        Some(&*apps.to_string_lossy()),
        "{path:?}"
    );
}

/// `--pythonpath` puts directories on sys.path before the app is imported.
#[test]
fn pythonpath_makes_module_importable() {
    let pathdir = crate::support::apps_dir().join("pathdir");
    let s = Server::start(
        "pythonpath",
        &["--pythonpath", &pathdir.to_string_lossy(), "pathapp"],
    );
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "pathapp");
}

/// `-e KEY=VALUE` (repeatable) is visible in the app's os.environ.
#[test]
fn env_flag_sets_os_environ() {
    let s = Server::start(
        "env-flag",
        &[
            "-e",
            "RGUNICORN_T1=one",
            "--env",
            "RGUNICORN_T2=two=2",
            "app",
        ],
    );
    assert_eq!(s.get("/os_environ?key=RGUNICORN_T1").body_str(), "one");
    assert_eq!(s.get("/os_environ?key=RGUNICORN_T2").body_str(), "two=2");
}

/// `--check-config` imports the app and exits 0 without serving.
#[test]
fn check_config_good_app_exits_0() {
    let port = free_port();
    let out = run_to_exit(
        &[
            "--check-config",
            "-b",
            &format!("127.0.0.1:{port}"),
            "app:application",
        ],
        &[],
        EXIT_DEADLINE,
    );
    assert_eq!(out.code(), Some(0), "{}", out.output());
    assert!(
        !out.stderr.contains("Booting worker"),
        "check-config must not serve: {}",
        out.stderr
    );
}

/// `--check-config` with an app that fails to import exits 1.
#[test]
fn check_config_bad_app_exits_1() {
    for app in ["importerror", "notcallable", "app:missing_attribute"] {
        let out = run_to_exit(&["--check-config", app], &[], EXIT_DEADLINE);
        assert_eq!(out.code(), Some(1), "{app}: {}", out.output());
    }
}

/// APP_MODULE forms: `module`, `module:name`, `module:factory()`, `module:factory('x', k=1)`.
#[test]
fn app_spec_forms() {
    let cases = [
        ("app", "/form", "hello /form"),
        ("factory:named", "/", "named"),
        ("factory:create()", "/", "factory name=default k=0"),
        ("factory:create('x', k=1)", "/", "factory name=x k=1"),
    ];
    for (spec, path, body) in cases {
        let s = Server::start("appspec", &[spec]);
        let r = s.get(path);
        assert_eq!(r.status, 200, "{spec}");
        assert_eq!(r.body_str(), body, "{spec}");
    }
}

/// A module that raises while importing: exit 3, traceback logged, no restart loop.
#[test]
fn missing_module_exits_3_with_traceback_and_no_restart_loop() {
    let out = run_to_exit(&["-w", "2", "importerror"], &[], EXIT_DEADLINE);
    out.expect_code(3);
    let log = out.stderr;
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    assert!(
        log.contains("rgunicorn_test_module_that_does_not_exist"),
        "{log}"
    );
    assert!(log.contains("Reason: Worker failed to boot."), "{log}");
    assert!(log.contains("Shutting down: Master"), "{log}");
    // No restart loop: at most the initially forked workers booted.
    let boots = log.matches("Booting worker with pid").count();
    assert!(boots <= 2, "workers were respawned {boots} times: {log}");
}

/// A module that does not exist at all also exits 3 (ModuleNotFoundError).
#[test]
fn nonexistent_module_exits_3() {
    let out = run_to_exit(&["rgunicorn_no_such_module_xyz"], &[], EXIT_DEADLINE);
    out.expect_code(3);
    assert!(
        out.stderr.contains("rgunicorn_no_such_module_xyz"),
        "{}",
        out.stderr
    );
}

/// A missing attribute: exit 4 and Gunicorn's message.
#[test]
fn missing_attribute_exits_4() {
    let out = run_to_exit(&["app:nothere"], &[], EXIT_DEADLINE);
    out.expect_code(4);
    assert!(
        out.output()
            .contains("Failed to find attribute 'nothere' in 'app'."),
        "{}",
        out.output()
    );
    assert!(
        out.stderr.contains("Reason: App failed to load."),
        "{}",
        out.stderr
    );
}

/// A non-callable application object: exit 4 and Gunicorn's message.
#[test]
fn non_callable_app_exits_4() {
    let out = run_to_exit(&["notcallable"], &[], EXIT_DEADLINE);
    out.expect_code(4);
    assert!(
        out.output()
            .contains("Application object must be callable."),
        "{}",
        out.output()
    );
}

/// `-n NAME` is accepted (process naming; the server runs normally).
#[test]
fn name_flag_is_accepted() {
    let s = Server::start("name", &["-n", "my-test-server", "app"]);
    assert_eq!(s.get("/n").status, 200);
    let s = Server::start("name-long", &["--name", "other", "app"]);
    assert_eq!(s.get("/n").status, 200);
}

/// `--check-config` run from another directory with `--chdir` works too (cwd is applied
/// before the import).
#[test]
fn check_config_honours_chdir() {
    let elsewhere = TempDir::new("cc-chdir");
    let apps = crate::support::apps_dir();
    let out = run_to_exit_in(
        elsewhere.path(),
        &["--check-config", "--chdir", &apps.to_string_lossy(), "app"],
        &[],
        EXIT_DEADLINE,
    );
    assert_eq!(out.code(), Some(0), "{}", out.output());
}

/// A virtualenv of another Python version is refused with a clear message (issue 2
/// point 3), before anything is served.
#[test]
fn venv_of_other_python_version_is_refused() {
    let dir = TempDir::new("fake-venv");
    let venv = dir.join("venv");
    std::fs::create_dir_all(venv.join("lib/python3.9/site-packages")).expect("venv dirs");
    std::fs::create_dir_all(venv.join("bin")).expect("venv bin");
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /usr/bin\nversion = 3.9.18\n",
    )
    .expect("cfg");
    let port = free_port();
    let out = run_to_exit(
        &["-b", &format!("127.0.0.1:{port}"), "app"],
        &[("VIRTUAL_ENV", &venv.to_string_lossy())],
        EXIT_DEADLINE,
    );
    assert_ne!(out.code(), Some(0), "{}", out.output());
    let text = out.output();
    assert!(
        text.contains("3.9"),
        "the message names the venv's Python: {text}"
    );
    assert!(
        !text.contains("Booting worker"),
        "nothing is served: {text}"
    );
}

/// Factory arguments must be literals: anything else is refused (exit 4) and never run.
#[test]
fn factory_with_non_literal_arguments_exits_4() {
    let dir = TempDir::new("factory-literal");
    let flag = dir.join("executed");
    let spec = format!("factory:create(open('{}', 'w'))", flag.display());
    let out = run_to_exit(&[&spec], &[], EXIT_DEADLINE);
    out.expect_code(4);
    assert!(!flag.exists(), "the argument expression was executed");
    assert!(
        out.stderr.contains("Reason: App failed to load."),
        "{}",
        out.stderr
    );
}

/// Passing a file name (`app.py`) suggests the module form, as Gunicorn does.
#[test]
fn py_file_name_suggests_module_spec() {
    let out = run_to_exit(&["app.py"], &[], EXIT_DEADLINE);
    assert_ne!(out.code(), Some(0), "{}", out.output());
    assert!(
        out.output().contains("did you mean 'app:application'?"),
        "{}",
        out.output()
    );
}

/// A port already in use: `Connection in use` is logged, retried, then exit 1.
#[test]
fn bind_conflict_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = run_to_exit(
        &["-b", &format!("127.0.0.1:{port}"), "app"],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(1), "{}", out.output());
    assert!(out.stderr.contains("Connection in use"), "{}", out.stderr);
    // The OS error as Gunicorn (Python) words it, on each of the 5 attempts.
    let failed =
        format!("connection to ('127.0.0.1', {port}) failed: [Errno 98] Address already in use");
    assert_eq!(out.stderr.matches(&failed).count(), 5, "{}", out.stderr);
    assert!(
        !out.stderr.contains("Retrying in 1 second"),
        "debug only: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("Booting worker"), "{}", out.stderr);
    drop(taken);
}

/// `-b [::1]:PORT` serves over IPv6 and is logged as `http://[::1]:PORT`.
#[test]
fn bind_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let port = free_port();
    let s = Server::builder("ipv6")
        .args(["-b", &format!("[::1]:{port}"), "app"])
        .no_wait()
        .start();
    let ready = crate::support::poll_until(crate::support::START_DEADLINE, || {
        std::net::TcpStream::connect(("::1", port)).ok()
    });
    let mut stream = ready.unwrap_or_else(|| panic!("no IPv6 listener\n{}", s.stderr()));
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /environ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("\"REMOTE_ADDR\": \"::1\""), "{out}");
    assert!(
        s.stderr()
            .contains(&format!("Listening at: http://[::1]:{port} (")),
        "{}",
        s.stderr()
    );
}

/// Without `--chdir`, the working directory is first on sys.path, and `--pythonpath`
/// entries come right after it (issue 2 point 3: both go first).
#[test]
fn cwd_and_pythonpath_lead_sys_path() {
    let apps = crate::support::apps_dir();
    let pathdir = apps.join("pathdir");
    let s = Server::start(
        "sys-path",
        &["--pythonpath", &pathdir.to_string_lossy(), "app"],
    );
    let path = json_str_list(&s.get("/os_environ?sys_path=1").body_str());
    let first_two: Vec<&str> = path.iter().take(2).map(String::as_str).collect();
    assert!(
        first_two.contains(&&*apps.to_string_lossy()),
        "cwd first: {path:?}"
    );
    assert!(
        first_two.contains(&&*pathdir.to_string_lossy()),
        "pythonpath first: {path:?}"
    );
}

/// A unix socket is removed when the master stops, and a stale socket file left behind
/// by a previous run does not prevent starting.
#[test]
fn unix_socket_file_lifecycle() {
    let dir = TempDir::new("unix-life");
    let sock = dir.join("life.sock");
    // A stale socket file (bound, then abandoned).
    let stale = std::os::unix::net::UnixListener::bind(&sock).expect("stale socket");
    drop(stale);
    assert!(sock.exists());
    let mut s = Server::builder("unix-life")
        .args(["-b", &format!("unix:{}", sock.display()), "app"])
        .wait_unix(&sock)
        .start();
    let mut c = Conn::unix(&sock);
    c.send("GET /u HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_response().body_str(), "hello /u");
    s.send_signal("TERM");
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", describe(&status));
    assert!(!sock.exists(), "socket file left behind after TERM");
}

/// The remaining issue-2 flags are accepted together and the server serves.
#[test]
fn remaining_flags_are_accepted() {
    let s = Server::start(
        "misc-flags",
        &[
            "--backlog",
            "64",
            "--graceful-timeout",
            "5",
            "--keep-alive",
            "5",
            "--timeout",
            "60",
            "--max-requests",
            "1000",
            "--max-requests-jitter",
            "10",
            "--log-level",
            "info",
            "app",
        ],
    );
    assert_eq!(s.get("/flags").body_str(), "hello /flags");
}

/// An app whose import misses a module, with no virtualenv active, gets one more line
/// saying so and how rgunicorn finds the app's packages; with a virtualenv active, not.
#[test]
fn a_missing_module_without_a_virtualenv_says_so() {
    let dir = TempDir::new("forgotten-venv");
    std::fs::write(dir.join("needs.py"), "import no_such_module_xyz\n").unwrap();
    let bare = crate::support::run_to_exit_in(
        dir.path(),
        &["-b", "127.0.0.1:0", "needs:application"],
        &[],
        LOG_DEADLINE,
    );
    bare.expect_code(3);
    assert!(
        bare.output().contains("No virtualenv is active"),
        "{}",
        bare.output()
    );
    let venv = crate::support::venv().display().to_string();
    let with_venv = crate::support::run_to_exit_in(
        dir.path(),
        &["-b", "127.0.0.1:0", "needs:application"],
        &[("VIRTUAL_ENV", venv.as_str())],
        LOG_DEADLINE,
    );
    with_venv.expect_code(3);
    assert!(
        !with_venv.output().contains("No virtualenv is active"),
        "{}",
        with_venv.output()
    );
}

/// An unknown option reads as Gunicorn's (argparse's) error, with a suggestion, exit 2.
#[test]
fn an_unknown_option_reads_like_gunicorns() {
    let done =
        crate::support::run_to_exit(&["app:application", "--wokers", "3"], &[], LOG_DEADLINE);
    assert_eq!(done.code(), Some(2), "{}", done.output());
    assert_eq!(
        done.stderr.trim_end(),
        "usage: rgunicorn [OPTIONS] [APP_MODULE]\n\
         rgunicorn: error: unrecognized arguments: --wokers 3\n\
         did you mean --workers?"
    );
    // A missing value, and a value given to a switch, as argparse words them.
    for (args, error) in [
        (
            &["app:application", "-w"][..],
            "argument -w/--workers: expected one argument",
        ),
        (
            &["app:application", "--reload=3"][..],
            "argument --reload: ignored explicit argument '3'",
        ),
    ] {
        let done = crate::support::run_to_exit(args, &[], LOG_DEADLINE);
        assert_eq!(done.code(), Some(2), "{}", done.output());
        assert_eq!(
            done.stderr.trim_end(),
            format!("usage: rgunicorn [OPTIONS] [APP_MODULE]\nrgunicorn: error: {error}")
        );
    }
}

/// `--help` comes from the settings table: every option with Gunicorn's description and
/// default, `APP_MODULE` described, and the options rgunicorn ignores or refuses marked.
#[test]
fn help_shows_defaults_app_module_and_what_is_ignored() {
    let help = run_to_exit(&["--help"], &[], EXIT_DEADLINE);
    help.expect_code(0);
    let text = help.output();
    let line_after = |flag: &str| {
        let mut lines = text.lines().skip_while(|l| !l.contains(flag));
        lines.next();
        lines.next().unwrap_or_default().to_string()
    };
    assert!(
        text.starts_with("usage: rgunicorn [OPTIONS] [APP_MODULE]\n"),
        "{text}"
    );
    assert!(
        text.contains("[APP_MODULE]  The WSGI application: MODULE[:VARIABLE]"),
        "{text}"
    );
    assert!(line_after("--timeout <INT>").ends_with("[30]"), "{text}");
    assert!(
        line_after("--bind <ADDRESS>").ends_with("[['127.0.0.1:8000']]"),
        "{text}"
    );
    assert!(line_after("--preload").ends_with("[False]"), "{text}");
    assert!(
        line_after("--spew").contains("(Ignored by rgunicorn: "),
        "{text}"
    );
    assert!(
        line_after("--paste <STRING>").contains("(Only the default is accepted by rgunicorn: "),
        "{text}"
    );
    assert!(
        !line_after("--workers <INT>").contains("rgunicorn:"),
        "{text}"
    );
}

/// Long options may be shortened to a unique prefix, as argparse allows (`--timeo 5`,
/// `--bin=ADDR`), on the command line and in `GUNICORN_CMD_ARGS`; an ambiguous prefix is
/// argparse's usage error, exit 2.
#[test]
fn long_options_may_be_abbreviated_to_a_unique_prefix() {
    let done = run_to_exit(
        &[
            "--print-config",
            "--timeo",
            "5",
            "--bin=127.0.0.1:8001",
            "--threa",
            "2",
            "app:application",
        ],
        &[("GUNICORN_CMD_ARGS", "--keep 7 --max-requests-j=3")],
        EXIT_DEADLINE,
    );
    done.expect_code(0);
    let value = |name: &str| {
        done.stdout
            .lines()
            .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.trim() == name))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    assert_eq!(value("timeout"), "5", "{}", done.stdout);
    assert_eq!(value("bind"), "['127.0.0.1:8001']", "{}", done.stdout);
    assert_eq!(value("threads"), "2", "{}", done.stdout);
    assert_eq!(value("keepalive"), "7", "{}", done.stdout);
    assert_eq!(value("max_requests_jitter"), "3", "{}", done.stdout);

    let matches = "--workers, --worker-class, --worker-connections, --worker-tmp-dir, \
         --workers-max-rss, --workers-lifetime";
    for (args, env, word) in [
        (&["--wor", "3", "app:application"][..], "", "--wor"),
        (&["app:application"][..], "--wor=3", "--wor=3"),
    ] {
        let done = run_to_exit(args, &[("GUNICORN_CMD_ARGS", env)], EXIT_DEADLINE);
        assert_eq!(done.code(), Some(2), "{args:?} {env}: {}", done.output());
        assert_eq!(
            done.stderr.trim_end(),
            format!(
                "usage: rgunicorn [OPTIONS] [APP_MODULE]\n\
                 rgunicorn: error: ambiguous option: {word} could match {matches}"
            )
        );
    }
}
