//! Issue 3: the master and workers as a process manager — stop, drain, signals.

use std::time::Duration;

use crate::support::load::{KeepAliveLoad, SteadyLoad};
use crate::support::{wait_for_file, Conn, Server, TempDir};

const DEADLINE: Duration = Duration::from_secs(30);

/// Beyond Gunicorn (its #3397): connections queued in the listen backlog when TERM
/// arrives are accepted and answered before the worker exits, not reset.
#[test]
fn term_drains_fifty_queued_connections() {
    let mut s = Server::start(
        "drain",
        &["-w", "1", "--graceful-timeout", "60", "app:application"],
    );
    // Keep the only worker inside the app so new connections stay in the backlog.
    let mut busy = s.slow_request(2);
    let mut queued: Vec<Conn> = (0..50)
        .map(|i| {
            let mut c = Conn::tcp(s.port);
            c.send(format!("GET /pid?n={i} HTTP/1.1\r\nHost: x\r\n\r\n"));
            c
        })
        .collect();
    s.send_signal("TERM");
    assert_eq!(
        busy.read_response().status,
        200,
        "the in-flight request finishes"
    );
    for (i, c) in queued.iter_mut().enumerate() {
        let r = c.read_response();
        assert_eq!(r.status, 200, "queued connection {i} was answered: {r:?}");
        assert!(
            r.says_close(),
            "answers during the drain close the connection: {r:?}"
        );
    }
    let status = s.wait_exit(DEADLINE);
    assert!(
        status.success(),
        "master exits 0 after the drain: {status:?}"
    );
}

/// Idle keep-alive connections do not hold a stopping worker: they are closed at once.
#[test]
fn term_closes_idle_keepalive_connections_at_once() {
    let mut s = Server::start(
        "idle",
        &[
            "-w",
            "1",
            "--keep-alive",
            "60",
            "--graceful-timeout",
            "60",
            "app:application",
        ],
    );
    let mut idle = Conn::tcp(s.port);
    idle.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);
    let sent = std::time::Instant::now();
    s.send_signal("TERM");
    let status = s.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    // At most the idle connection's 2 s last call, not its 60 s keep-alive.
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the stop took {:?}",
        sent.elapsed()
    );
    assert!(
        idle.closed_within(Duration::from_secs(1)),
        "the idle connection was closed"
    );
}

/// A timed-out worker says which request hung and where the app was (every thread's
/// Python stack), before answering 500 — what Gunicorn users ask for in #185/#2284.
#[test]
fn timeout_report_names_the_request_and_the_python_stack() {
    let s = Server::start("abort-report", &["-w", "1", "-t", "2", "app:application"]);
    let r = s.get("/sleep?s=30");
    assert_eq!(r.status, 500, "{r:?}");
    let log = s.wait_for_log("Python stacks:", DEADLINE);
    assert!(
        log.contains("handling GET /sleep?s=30 from 127.0.0.1 after"),
        "the report names the request: {log}"
    );
    assert!(log.contains("Thread MainThread"), "{log}");
    assert!(
        log.contains("in sleep_route"),
        "the app's frame is in the stack: {log}"
    );
}

/// `-p` writes the master's pid atomically, refuses a file naming a live process, and
/// removes the file on exit.
#[test]
fn pidfile_is_written_guarded_and_removed() {
    let tmp = TempDir::new("pidfile");
    let pidfile = tmp.join("app.pid");
    let pid_arg = pidfile.display().to_string();
    let mut s = Server::start("pidfile", &["-p", &pid_arg, "app:application"]);
    let text = std::fs::read_to_string(&pidfile).expect("pid file written");
    assert_eq!(text, format!("{}\n", s.pid()));
    let second = crate::support::run_to_exit(
        &["-b", "127.0.0.1:1", "-p", &pid_arg, "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(second.code(), Some(1), "{}", second.output());
    assert!(
        second
            .output()
            .contains(&format!("Already running on PID {}", s.pid())),
        "{}",
        second.output()
    );
    s.send_signal("TERM");
    assert!(s.wait_exit(DEADLINE).success());
    assert!(!pidfile.exists(), "the pid file is removed on exit");
}

/// `--umask` applies to the unix socket file rgunicorn creates.
#[test]
fn umask_sets_the_unix_socket_mode() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("umask");
    let sock = tmp.join("app.sock");
    let bind = format!("unix:{}", sock.display());
    let _s = Server::builder("umask")
        .args(["-m", "0o077", "app:application"])
        .also_bind(&bind)
        .start();
    let mode = std::fs::metadata(&sock)
        .expect("socket exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "mode {mode:o}");
}

/// sd_notify: READY=1 once listening, RELOADING=1 (+MONOTONIC_USEC) and READY=1 around a
/// HUP, STOPPING=1 on stop.
#[test]
fn sd_notify_reports_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let tmp = TempDir::new("notify");
    let path = tmp.join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut s = Server::builder("notify")
        .env("NOTIFY_SOCKET", path.display().to_string())
        .args(["app:application"])
        .start();
    let recv = || {
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(recv().starts_with("READY=1"), "first message is READY=1");
    s.send_signal("HUP");
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(recv(), "READY=1");
    s.send_signal("TERM");
    assert_eq!(recv(), "STOPPING=1");
    assert!(s.wait_exit(DEADLINE).success());
}

/// Socket activation: a launcher (as systemd does) passes a listening socket as fd 3 with
/// LISTEN_FDS=1 and LISTEN_PID=<rgunicorn's pid>; rgunicorn serves on it and ignores `-b`.
#[test]
fn socket_activation_serves_the_passed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // `exec` keeps the shell's pid, so $$ is the pid rgunicorn will have.
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
        .arg(crate::support::binary())
        .args(["-b", "127.0.0.1:1", "app:application"])
        .current_dir(crate::support::apps_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; the child only rearranges its descriptors.
    unsafe {
        cmd.pre_exec(move || {
            // dup2(3, 3) is a no-op that keeps close-on-exec, so clear the flag explicitly.
            if fd == 3 {
                if nix::libc::fcntl(3, nix::libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn the launcher");
    drop(listener);
    // The socket listens already, so a connect proves nothing: wait for an answer.
    let answered = crate::support::poll_until(DEADLINE, || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        c.read_to_string(&mut out).ok()?;
        out.starts_with("HTTP/1.1 200").then_some(out)
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        answered.is_some(),
        "the passed socket serves requests: {err}"
    );
    assert!(status.success(), "{err}");
    assert!(
        err.contains(&format!("Listening at: http://127.0.0.1:{port}")),
        "{err}"
    );
}

/// `-n NAME` names the processes as `ps` shows them.
#[test]
fn process_titles_name_master_and_workers() {
    let mut s = Server::start("titles", &["-w", "1", "-n", "shop", "app:application"]);
    let worker = s.wait_workers(1, DEADLINE)[0];
    let title = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default()
    };
    let master_title = crate::support::poll_until(DEADLINE, || {
        Some(title(s.pid())).filter(|t| t.starts_with("rgunicorn: master"))
    });
    assert_eq!(
        master_title.as_deref().map(|t| t.trim_end_matches('\0')),
        Some("rgunicorn: master [shop]")
    );
    let worker_title = crate::support::poll_until(DEADLINE, || {
        Some(title(worker)).filter(|t| t.starts_with("rgunicorn: worker"))
    });
    assert_eq!(worker_title.as_deref(), Some("rgunicorn: worker [shop]"));
}

/// HUP under load, fresh connections and 50 keep-alive clients POSTing back to back: new
/// workers replace the old ones and no request fails or is lost.
#[test]
fn hup_under_load_loses_no_request() {
    hup_under_load(&["-w", "2", "app:application"]);
}

/// The same with the threaded worker (`--threads 4`).
#[test]
fn hup_under_load_loses_no_request_with_threads() {
    hup_under_load(&["-w", "2", "--threads", "4", "app:application"]);
}

fn hup_under_load(args: &[&str]) {
    let mut s = Server::start("hup-load", args);
    let before = s.wait_workers(2, DEADLINE);
    let load = SteadyLoad::start(s.port);
    let keepalive = KeepAliveLoad::start(s.port, 50);
    load.wait_for_more(5);
    keepalive.wait_for_more(200);
    s.send_signal("HUP");
    s.wait_for_log("Hang up: Master", DEADLINE);
    let replaced = crate::support::poll_until(DEADLINE, || {
        let now = s.worker_pids();
        (now.len() == 2 && now.iter().all(|p| !before.contains(p))).then_some(now)
    });
    load.wait_for_more(5);
    keepalive.wait_for_more(200);
    let (ok, failed) = load.finish();
    let (kept, lost) = keepalive.finish();
    assert!(
        replaced.is_some(),
        "the old workers were replaced: {}",
        s.stderr()
    );
    crate::lifecycle::assert_none_lost(kept, &lost, &s);
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// USR1 reopens the log files (logrotate moves them away, then signals).
#[test]
fn usr1_reopens_error_and_access_logs() {
    let tmp = TempDir::new("usr1");
    let error_log = tmp.join("error.log");
    let access_log = tmp.join("access.log");
    let s = Server::start(
        "usr1",
        &[
            "-w",
            "1",
            "--error-logfile",
            &error_log.display().to_string(),
            "--access-logfile",
            &access_log.display().to_string(),
            "app:application",
        ],
    );
    assert_eq!(s.get("/pid").status, 200);
    wait_for_file(&access_log, "GET /pid", DEADLINE);
    std::fs::rename(&error_log, tmp.join("error.log.1")).unwrap();
    std::fs::rename(&access_log, tmp.join("access.log.1")).unwrap();
    s.send_signal("USR1");
    // `Handling signal: usr1` is logged before the reopen (as in Gunicorn), so it lands in the
    // rotated file; the next master line must land in the new one.
    wait_for_file(&tmp.join("error.log.1"), "Handling signal: usr1", DEADLINE);
    crate::support::poll_until(DEADLINE, || error_log.exists().then_some(()));
    s.send_signal("TTIN");
    wait_for_file(&error_log, "Handling signal: ttin", DEADLINE);
    let seen = crate::support::poll_until(DEADLINE, || {
        assert_eq!(s.get("/pid?after").status, 200);
        std::fs::read_to_string(&access_log)
            .ok()
            .filter(|t| t.contains("GET /pid?after"))
    });
    assert!(
        seen.is_some(),
        "the worker writes its access log to the new file"
    );
}

/// USR1 with the threaded worker recreates the access log at once, before any request
/// (log shippers wait for the new file), and the threads write to it from then on.
#[test]
fn usr1_recreates_the_access_log_at_once_with_threads() {
    let tmp = TempDir::new("usr1-threads");
    let access_log = tmp.join("access.log");
    let s = Server::start(
        "usr1-threads",
        &[
            "-w",
            "1",
            "--threads",
            "2",
            "--access-logfile",
            &access_log.display().to_string(),
            "app:application",
        ],
    );
    assert_eq!(s.get("/pid").status, 200);
    wait_for_file(&access_log, "GET /pid", DEADLINE);
    std::fs::rename(&access_log, tmp.join("access.log.1")).unwrap();
    s.send_signal("USR1");
    let recreated =
        crate::support::poll_until(Duration::from_secs(2), || access_log.exists().then_some(()));
    assert!(recreated.is_some(), "USR1 did not recreate the access log");
    assert_eq!(s.get("/pid?after").status, 200);
    wait_for_file(&access_log, "GET /pid?after", DEADLINE);
}

/// Ends a process by pid when dropped (the new master a USR2 test started).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::support::send_signal_to(pid, "TERM");
            let gone = crate::support::poll_until(Duration::from_secs(10), || {
                (!crate::support::is_alive(pid)).then_some(())
            });
            if gone.is_none() {
                crate::support::send_signal_to(pid, "KILL");
            }
        }
    }
}

/// USR2 + TERM of the old master under load (fresh and keep-alive connections): the new
/// binary takes over the sockets, is promoted (pidfile `.2` renamed), and no request fails.
#[test]
fn usr2_upgrade_under_load_loses_no_request() {
    let tmp = TempDir::new("usr2");
    let pidfile = tmp.join("app.pid");
    let pid2 = tmp.join("app.pid.2");
    let mut s = Server::start(
        "usr2",
        &[
            "-w",
            "2",
            "-p",
            &pidfile.display().to_string(),
            "app:application",
        ],
    );
    s.wait_workers(2, DEADLINE);
    let load = SteadyLoad::start(s.port);
    let keepalive = KeepAliveLoad::start(s.port, 50);
    load.wait_for_more(5);
    keepalive.wait_for_more(200);
    s.send_signal("USR2");
    let new_master: u32 = crate::support::poll_until(DEADLINE, || {
        std::fs::read_to_string(&pid2).ok()?.trim().parse().ok()
    })
    .expect("the new master writes <pidfile>.2");
    let mut guard = KillOnDrop(Some(new_master));
    let booted = crate::support::poll_until(DEADLINE, || {
        (crate::support::children_of(new_master).len() == 2).then_some(())
    });
    assert!(booted.is_some(), "the new master boots its workers");
    s.send_signal("TERM");
    assert!(
        s.wait_exit(DEADLINE).success(),
        "the old master stops cleanly"
    );
    let promoted = crate::support::poll_until(DEADLINE, || {
        let text = std::fs::read_to_string(&pidfile).ok()?;
        (text.trim() == new_master.to_string() && !pid2.exists()).then_some(())
    });
    load.wait_for_more(5);
    keepalive.wait_for_more(200);
    let (ok, failed) = load.finish();
    let (kept, lost) = keepalive.finish();
    crate::lifecycle::assert_none_lost(kept, &lost, &s);
    assert!(
        promoted.is_some(),
        "the new master was promoted: {}",
        s.stderr()
    );
    assert!(
        s.stderr().contains("Master has been promoted."),
        "{}",
        s.stderr()
    );
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The promoted master serves and stops like any other.
    crate::support::send_signal_to(new_master, "TERM");
    let gone = crate::support::poll_until(DEADLINE, || {
        (!crate::support::is_alive(new_master)).then_some(())
    });
    assert!(gone.is_some(), "the new master stops on TERM");
    guard.0 = None;
    assert!(
        !pidfile.exists(),
        "the promoted master removes its pid file"
    );
}

/// TTIN adds a worker, TTOU removes one, never going below one.
#[test]
fn ttin_and_ttou_adjust_the_worker_count() {
    let mut s = Server::start("ttin", &["-w", "1", "app:application"]);
    s.wait_workers(1, DEADLINE);
    s.send_signal("TTIN");
    s.wait_workers(2, DEADLINE);
    s.send_signal("TTOU");
    s.wait_workers(1, DEADLINE);
    s.send_signal("TTOU");
    s.wait_for_log_count("Handling signal: ttou", 2, DEADLINE);
    // Polled: the count must stay at one.
    let held = crate::support::poll_until(Duration::from_secs(3), || {
        (s.worker_pids().len() != 1).then_some(())
    });
    assert!(held.is_none(), "TTOU never goes below one worker");
    assert_eq!(s.get("/pid").status, 200);
}

/// A second INT/QUIT during a graceful stop escalates to a quick stop.
#[test]
fn int_during_graceful_stop_escalates() {
    let mut s = Server::start(
        "escalate",
        &["-w", "1", "--graceful-timeout", "60", "app:application"],
    );
    let _busy = s.slow_request(50);
    s.send_signal("TERM");
    s.wait_for_log("Handling signal: term", DEADLINE);
    let sent = std::time::Instant::now();
    s.send_signal("INT");
    s.wait_for_log("Quick shutdown requested", DEADLINE);
    let status = s.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    // Quick: not the 50 s request, nor the 60 s graceful timeout.
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "the escalated stop took {:?}",
        sent.elapsed()
    );
}

/// `-D` detaches: the command returns at once, the daemon (in its own session) serves,
/// writes its pid file, stops its workers on WINCH and exits on TERM.
#[test]
fn daemon_detaches_and_winch_stops_the_workers() {
    let tmp = TempDir::new("daemon");
    let pidfile = tmp.join("d.pid");
    let port = crate::support::free_port();
    let bind = format!("127.0.0.1:{port}");
    let log = tmp.join("error.log");
    let done = crate::support::run_to_exit(
        &[
            "-D",
            "-w",
            "2",
            "-b",
            &bind,
            "-p",
            &pidfile.display().to_string(),
            "--error-logfile",
            &log.display().to_string(),
            "app:application",
        ],
        &[],
        DEADLINE,
    );
    assert_eq!(done.code(), Some(0), "{}", done.output());
    let daemon: u32 = crate::support::poll_until(DEADLINE, || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .expect("the daemon writes its pid file");
    let _guard = KillOnDrop(Some(daemon));
    // /proc/<pid>/stat after the command name: state ppid pgrp session ...
    let fields = |pid: u32| -> Vec<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(") ")
            .next()
            .unwrap_or("")
            .split(' ')
            .map(String::from)
            .collect()
    };
    let (daemon_stat, our_stat) = (fields(daemon), fields(std::process::id()));
    assert_ne!(
        daemon_stat[1],
        std::process::id().to_string(),
        "the daemon is not our child"
    );
    assert_ne!(
        daemon_stat[3], our_stat[3],
        "the daemon runs in its own session"
    );
    let served = crate::support::poll_until(DEADLINE, || {
        let mut c = Conn::tcp(port);
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        (c.read_response().status == 200).then_some(())
    });
    assert!(served.is_some(), "the daemon serves");
    crate::support::poll_until(DEADLINE, || {
        (crate::support::children_of(daemon).len() == 2).then_some(())
    })
    .expect("two workers");
    crate::support::send_signal_to(daemon, "WINCH");
    wait_for_file(&log, "graceful stop of workers", DEADLINE);
    let stopped = crate::support::poll_until(DEADLINE, || {
        crate::support::children_of(daemon).is_empty().then_some(())
    });
    assert!(stopped.is_some(), "WINCH stops every worker of a daemon");
    crate::support::send_signal_to(daemon, "TERM");
    let gone = crate::support::poll_until(DEADLINE, || (!pidfile.exists()).then_some(()));
    assert!(
        gone.is_some(),
        "the daemon exits on TERM and removes its pid file"
    );
}

/// `-g` switches the workers' group (and drops the master's supplementary groups).
#[test]
fn group_switches_the_workers_group() {
    if !nix::unistd::geteuid().is_root() {
        let done = crate::support::run_to_exit(
            &["-g", "nogroup", "-b", "127.0.0.1:1", "app:application"],
            &[],
            DEADLINE,
        );
        assert_ne!(
            done.code(),
            Some(0),
            "switching groups needs root: {}",
            done.output()
        );
        return;
    }
    let gid = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .unwrap_or(65534);
    let mut s = Server::start(
        "group",
        &["-w", "1", "-g", &gid.to_string(), "app:application"],
    );
    let worker = s.wait_workers(1, DEADLINE)[0];
    // The worker drops privileges a moment after it exists: wait for the group it takes
    // (a read at once raced it), then check the rest of its identity.
    let target = gid.to_string();
    let status = crate::support::poll_until(DEADLINE, || {
        std::fs::read_to_string(format!("/proc/{worker}/status"))
            .ok()
            .filter(|text| {
                text.lines()
                    .find(|l| l.starts_with("Gid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    == Some(target.as_str())
            })
    })
    .unwrap_or_else(|| {
        std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap_or_default()
    });
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("Gid:").split_whitespace().nth(1) == Some(gid.to_string().as_str()),
        "{}",
        line("Gid:")
    );
    assert_eq!(
        line("Groups:")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>(),
        vec![gid.to_string().as_str()]
    );
    let master = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    assert!(
        master.lines().any(|l| l.starts_with("Gid:\t0")),
        "the master keeps its identity"
    );
    assert_eq!(s.get("/pid").status, 200);
}

/// Unknown users and groups are refused with Gunicorn's messages, exit 1.
#[test]
fn unknown_user_or_group_is_a_config_error() {
    let user = crate::support::run_to_exit(
        &["-u", "no-such-user-xyz", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(user.code(), Some(1));
    assert!(
        user.output()
            .contains("Error: No such user: 'no-such-user-xyz'"),
        "{}",
        user.output()
    );
    let group = crate::support::run_to_exit(
        &["-g", "no-such-group-xyz", "app:application"],
        &[],
        DEADLINE,
    );
    assert_eq!(group.code(), Some(1));
    assert!(
        group
            .output()
            .contains("Error: No such group: 'no-such-group-xyz'"),
        "{}",
        group.output()
    );
}

/// `--reuse-port` sets SO_REUSEPORT: another SO_REUSEPORT socket can bind the same port
/// (and cannot without the flag).
#[test]
fn reuse_port_lets_another_socket_bind_the_port() {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let try_bind = |port: u16| {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReusePort, &true).unwrap();
        let addr = SockaddrIn::new(127, 0, 0, 1, port);
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).is_ok()
    };
    let with = Server::start("reuse", &["-w", "1", "--reuse-port", "app:application"]);
    assert!(
        try_bind(with.port),
        "a second SO_REUSEPORT socket binds the port"
    );
    let without = Server::start("noreuse", &["-w", "1", "app:application"]);
    assert!(
        !try_bind(without.port),
        "without --reuse-port the port is exclusive"
    );
}

/// A configuration file (or a preloaded app) that installs its own Python handler for a
/// master signal does not make the master deaf to it: rgunicorn puts its handler back,
/// says so, and TERM still stops the server.
#[test]
fn python_code_in_the_master_cannot_take_its_signals() {
    let tmp = TempDir::new("sig-conf");
    let conf = tmp.join("conf.py");
    std::fs::write(
        &conf,
        "import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n",
    )
    .unwrap();
    let mut s = Server::start(
        "sig-conf",
        &["-c", &conf.display().to_string(), "app:application"],
    );
    s.wait_for_log("SIGTERM had a Python handler in the master", DEADLINE);
    s.send_signal("TERM");
    let status = s.try_wait_exit(DEADLINE);
    assert!(
        status.is_some_and(|st| st.success()),
        "TERM stopped the master: {status:?}\n{}",
        s.stderr()
    );
}

/// A terminal's Ctrl-C (SIGINT to the whole process group, through a real pty): 30 times
/// with `-w 2`, the server exits 0 every time, with no traceback, no "Exception ignored"
/// and no worker crash, as Gunicorn does.
#[test]
fn ctrl_c_in_a_terminal_is_clean() {
    let script = r#"
import os, pty, select, socket, sys, time
binary, port, app_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
problems = []
for i in range(30):
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(app_dir)
        os.execv(binary, [binary, "-w", "2", "-b", "127.0.0.1:%d" % port, "app:application"])
    out, status = b"", None
    deadline = time.time() + 30
    while out.count(b"Booting worker") < 2 and time.time() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            s.recv(100)
    except OSError:
        pass
    os.write(fd, b"\x03")
    deadline = time.time() + 30
    while status is None and time.time() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                pass
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(st)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    seen = [w for w in ("Traceback", "Exception ignored", "was sent SIG", "exited with code") if w in text]
    if status != 0 or seen:
        problems.append("run %d: exit %s, %s\n%s" % (i, status, seen, text[-800:]))
print("%d bad of 30" % len(problems))
for p in problems[:3]:
    print(p)
"#;
    let port = crate::support::free_port();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(crate::support::binary())
        .arg(port.to_string())
        .arg(crate::support::apps_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("0 bad of 30"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// When the whole process group gets TERM (systemd's `KillMode=control-group`, `docker
/// stop`, honcho), the master logs `Worker (pid:N) was sent SIGTERM!` at INFO for each
/// worker, as Gunicorn does; a TERM to the master alone logs no such line. Both stops are
/// graceful (exit status 0).
#[test]
fn a_process_group_term_is_logged_per_worker_as_gunicorn_does() {
    let mut s = Server::start("group-term", &["-w", "2", "app"]);
    let workers = s.wait_workers(2, DEADLINE);
    // The test process is not the master: to the workers, this is the group's TERM.
    for &w in &workers {
        crate::support::send_signal_to(w, "TERM");
    }
    s.send_signal("TERM");
    assert!(s.wait_exit(DEADLINE).success());
    let log = s.stderr();
    for w in workers {
        assert!(
            log.contains(&format!("[INFO] Worker (pid:{w}) was sent SIGTERM!")),
            "{log}"
        );
    }

    let mut s = Server::start("master-term", &["-w", "2", "app"]);
    s.wait_workers(2, DEADLINE);
    s.send_signal("TERM");
    assert!(s.wait_exit(DEADLINE).success());
    let log = s.stderr();
    assert!(log.contains("Worker exiting"), "{log}");
    assert!(!log.contains("was sent"), "{log}");
}

/// A worker that is sent TERM by someone other than its master while its app import is
/// failing still exits with the boot-failure status, so the master halts (exit 3) instead
/// of respawning it: ending by the signal is only for a worker that served.
#[test]
fn a_foreign_term_during_a_failing_boot_keeps_the_boot_failure_status() {
    let dir = TempDir::new("slow-fail");
    std::fs::write(
        dir.join("slowfail.py"),
        "import time\ntime.sleep(1.5)\nimport rgunicorn_test_module_that_does_not_exist\n",
    )
    .unwrap();
    let mut s = Server::builder("slow-fail")
        .args(["-w", "1", "slowfail"])
        .cwd(dir.path())
        .no_wait()
        .start();
    let worker = s.wait_workers(1, DEADLINE)[0];
    crate::support::send_signal_to(worker, "TERM");
    let status = s.wait_exit(DEADLINE);
    let log = s.stderr();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("Reason: Worker failed to boot."), "{log}");
    assert_eq!(log.matches("Booting worker").count(), 1, "{log}");
    assert!(!log.contains("was sent SIGTERM"), "{log}");
}
