//! The control socket, driven by Gunicorn 27.0.1's own `gunicornc` (installed in the test
//! venv by `tests/run`), and checked against what Gunicorn 27 itself answers.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// `gunicornc -s SOCKET -c COMMAND -j`: (exit code, stdout, stderr).
pub fn gunicornc(socket: &Path, command: &str) -> (i32, String, String) {
    let out = Command::new(venv().join("bin/gunicornc"))
        .args(["-s", &socket.display().to_string(), "-c", command, "-j"])
        .stdin(Stdio::null())
        .output()
        .expect("run gunicornc from the test venv (tests/run installs gunicorn 27.0.1)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `data` gunicornc printed for a command that must succeed.
pub fn ask(socket: &Path, command: &str) -> String {
    let (code, out, err) = gunicornc(socket, command);
    assert_eq!(code, 0, "gunicornc -c {command:?}: {err}{out}");
    out
}

/// A number field of gunicornc's `-j` output (`"name": 12`), the first one.
pub fn number(json: &str, name: &str) -> i64 {
    let key = format!("\"{name}\": ");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    let digits: String = json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {json}"))
}

/// Every `"pid": N` in the output, in order.
fn pids(json: &str) -> Vec<i64> {
    json.match_indices("\"pid\": ")
        .map(|(at, _)| {
            json[at + 7..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect()
}

/// A server with its control socket at a path of the returned directory (which outlives it).
pub fn start_with_socket(tag: &str, extra: &[&str]) -> (Server, PathBuf, TempDir) {
    let dir = TempDir::new(tag);
    let socket = dir.join("g.ctl");
    let server = Server::builder(tag)
        .args(["--control-socket", &socket.display().to_string()])
        .args(extra)
        .arg("app:application")
        .start();
    poll_until(DEADLINE, || socket.exists().then_some(()))
        .unwrap_or_else(|| panic!("no control socket\n{}", server.stderr()));
    (server, socket, dir)
}

#[test]
fn gunicornc_steers_the_master() {
    let (mut server, socket, _dir) =
        start_with_socket("ctl-steer", &["-w", "1", "--graceful-timeout", "20"]);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket's mode");
    server.wait_for_log("Control socket listening at", DEADLINE);

    let workers = ask(&socket, "show workers");
    assert_eq!(number(&workers, "count"), 1, "{workers}");
    assert_eq!(
        ask(&socket, "worker add 2")
            .split_whitespace()
            .collect::<String>(),
        "{\"added\":2,\"previous\":1,\"total\":3}"
    );
    let three = poll_until(DEADLINE, || {
        let out = ask(&socket, "show workers");
        (number(&out, "count") == 3).then_some(out)
    })
    .unwrap_or_else(|| panic!("three workers\n{}", server.stderr()));
    let before = pids(&three);
    // The socket is the master's alone: workers forked since hold no descriptor of it.
    let inode = socket_inode(&socket).expect("the socket in /proc/net/unix");
    for worker in server.wait_workers(3, DEADLINE) {
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.display().to_string())
            .collect();
        assert!(
            !held.contains(&format!("socket:[{inode}]")),
            "{worker}: {held:?}"
        );
    }

    // worker kill: that one goes, a new one takes its place.
    let victim = before[0];
    let killed = ask(&socket, &format!("worker kill {victim}"));
    assert_eq!(number(&killed, "killed"), victim, "{killed}");
    let replaced = poll_until(DEADLINE, || {
        let now = pids(&ask(&socket, "show workers"));
        (now.len() == 3 && !now.contains(&victim)).then_some(now)
    });
    assert!(
        replaced.is_some(),
        "worker {victim} replaced\n{}",
        server.stderr()
    );
    // Another process is never signalled.
    let foreign = ask(&socket, "worker kill 1");
    assert!(foreign.contains("\"success\": false"), "{foreign}");

    let stats = ask(&socket, "show stats");
    assert_eq!(number(&stats, "pid"), i64::from(server.pid()));
    assert_eq!(number(&stats, "workers_target"), 3);
    assert!(number(&stats, "workers_spawned") >= 4, "{stats}");

    // An error reply: gunicornc says so and exits 1.
    let (code, _, err) = gunicornc(&socket, "bogus");
    assert_eq!(code, 1);
    assert!(err.contains("Unknown command: bogus"), "{err}");

    // shutdown graceful: the request in flight finishes, the master exits 0, the file goes.
    let mut slow = server.slow_request(2);
    let down = ask(&socket, "shutdown graceful");
    assert!(down.contains("\"shutting_down\""), "{down}");
    assert_eq!(slow.read_response().status, 200);
    let status = server.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[test]
fn replies_have_the_fields_gunicorn_27_answers_with() {
    let commands = [
        "show all",
        "show workers",
        "show config",
        "show stats",
        "show listeners",
        "show dirty",
        "help",
        "worker add 1",
        "worker remove 1",
        "worker kill 1",
        "dirty add",
    ];
    let (server, ours, _dir) = start_with_socket("ctl-fields", &["-w", "1"]);
    let our_answers: Vec<String> = commands.iter().map(|c| ask(&ours, c)).collect();
    drop(server);

    // Gunicorn 27.0.1 itself, same settings.
    let dir = TempDir::new("ctl-gunicorn");
    let theirs = dir.join("g.ctl");
    let port = free_port();
    let mut gunicorn = Command::new(venv().join("bin/gunicorn"))
        .args([
            "-w",
            "1",
            "-b",
            &format!("127.0.0.1:{port}"),
            "--control-socket",
        ])
        .arg(&theirs)
        .arg("app:application")
        .current_dir(apps_dir())
        .env("XDG_RUNTIME_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gunicorn from the test venv");
    let ready = poll_until(DEADLINE, || {
        (theirs.exists() && gunicornc(&theirs, "show workers").0 == 0).then_some(())
    });
    let their_answers: Vec<String> = commands.iter().map(|c| ask(&theirs, c)).collect();
    send_signal_to(gunicorn.id(), "TERM");
    let _ = poll_until(DEADLINE, || gunicorn.try_wait().ok().flatten());
    let _ = gunicorn.kill();
    assert!(ready.is_some(), "gunicorn's control socket");

    for ((command, ours), theirs) in commands.iter().zip(&our_answers).zip(&their_answers) {
        let (ours_shape, theirs_shape) = (shape(ours), shape(theirs));
        assert!(theirs_shape.starts_with('{'), "`{command}`: {theirs}");
        if *command == "show stats" {
            // rgunicorn's own keys (`workers_recycled`) follow all of Gunicorn's.
            let gunicorns = theirs_shape.trim_end_matches('}');
            assert!(
                ours_shape == theirs_shape || ours_shape.starts_with(&format!("{gunicorns}, ")),
                "`{command}`: Gunicorn's keys and types do not come first\nrgunicorn: {ours}\ngunicorn:  {theirs}"
            );
            continue;
        }
        assert_eq!(
            ours_shape, theirs_shape,
            "`{command}`: the keys and types differ\nrgunicorn: {ours}\ngunicorn:  {theirs}"
        );
    }
}

/// The inode of the listening unix socket bound at `path`.
fn socket_inode(path: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let wanted = path.display().to_string();
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.last() == Some(&wanted.as_str())).then(|| fields.get(6).map(|s| s.to_string()))?
    })
}

/// The keys (in order) and value types of a JSON document, through the venv's Python.
fn shape(json: &str) -> String {
    let script = "
import json, sys
def shape(v):
    if isinstance(v, dict):
        return '{' + ', '.join(k + ': ' + shape(x) for k, x in v.items()) + '}'
    if isinstance(v, list):
        return '[' + (shape(v[0]) if v else '') + ']'
    if v is None:
        return 'null'
    return type(v).__name__
print(shape(json.load(sys.stdin)))
";
    let mut child = Command::new(venv().join("bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One frame on a raw connection; the reply's JSON, or None if the server closed.
fn exchange(stream: &mut UnixStream, payload: &[u8]) -> Option<String> {
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame).ok()?;
    read_frame(stream)
}

fn read_frame(stream: &mut UnixStream) -> Option<String> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

fn closed_without_reply(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn bad_clients_get_an_error_or_a_closed_connection_and_change_nothing() {
    let (mut server, socket, _dir) = start_with_socket("ctl-bad", &["-w", "2"]);
    let connect = || {
        let s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s
    };
    // A client that connects and never sends holds nothing up.
    let _silent = connect();
    let mut half = connect();
    half.write_all(&[0, 0, 0, 50, b'{']).unwrap();

    let mut c = connect();
    c.write_all(b"\xff\xff\xff\xffgarbage").unwrap();
    assert!(closed_without_reply(&mut c), "a length over 16 MiB");
    let mut c = connect();
    assert_eq!(exchange(&mut c, b"not json"), None, "invalid JSON");
    let mut c = connect();
    assert_eq!(exchange(&mut c, b"[1, 2]"), None, "not an object");
    let mut c = connect();
    assert_eq!(
        exchange(&mut c, b"{\"command\": 5}"),
        None,
        "a command that is not text"
    );
    let mut c = connect();
    assert_eq!(exchange(&mut c, b""), None, "an empty message");

    // Error replies keep the connection, which then serves a good request.
    let mut c = connect();
    let reply = exchange(&mut c, b"{\"id\": \"a\", \"command\": \"frobnicate\"}").unwrap();
    assert_eq!(
        reply,
        "{\"id\": \"a\", \"status\": \"error\", \"error\": \"Invalid argument: Unknown command: frobnicate\"}"
    );
    let reply = exchange(
        &mut c,
        b"{\"id\": 2, \"command\": \"show stats\", \"args\": []}",
    )
    .unwrap();
    assert!(
        reply.starts_with("{\"id\": 2, \"status\": \"ok\", \"data\": {\"uptime\": "),
        "{reply}"
    );

    // 100 clients at once, each answered.
    let mut many: Vec<UnixStream> = (0..100).map(|_| connect()).collect();
    for (i, s) in many.iter_mut().enumerate() {
        let request = format!("{{\"id\": {i}, \"command\": \"help\", \"args\": []}}");
        let mut frame = u32::try_from(request.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(request.as_bytes());
        s.write_all(&frame).unwrap();
    }
    for (i, s) in many.iter_mut().enumerate() {
        let reply = read_frame(s).unwrap();
        assert!(
            reply.starts_with(&format!("{{\"id\": {i}, \"status\": \"ok\"")),
            "{reply}"
        );
    }

    // 100 requests in one write: answered in turns of the master's loop, every one.
    let mut burst = Vec::new();
    for i in 0..100 {
        let request = format!("{{\"id\": {i}, \"command\": \"show stats\", \"args\": []}}");
        burst.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
        burst.extend_from_slice(request.as_bytes());
    }
    let mut c = connect();
    c.write_all(&burst).unwrap();
    for i in 0..100 {
        let reply = read_frame(&mut c).unwrap_or_else(|| panic!("reply {i}"));
        assert!(
            reply.starts_with(&format!("{{\"id\": {i}, \"status\": \"ok\"")),
            "{reply}"
        );
    }

    // The master still supervises: a killed worker is replaced, requests are served.
    let workers = server.wait_workers(2, DEADLINE);
    send_signal_to(workers[0], "KILL");
    poll_until(DEADLINE, || {
        let now = server.worker_pids();
        (now.len() == 2 && !now.contains(&workers[0])).then_some(())
    })
    .unwrap_or_else(|| panic!("worker replaced\n{}", server.stderr()));
    assert_eq!(server.get("/").status, 200);
    server.send_signal("TERM");
    assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));
}

#[test]
fn the_default_socket_follows_xdg_runtime_dir_and_can_be_turned_off() {
    // The test support points XDG_RUNTIME_DIR at each server's own directory.
    let mut server = Server::start("ctl-default", &["app:application"]);
    let default = server.dir.join("gunicorn.ctl");
    poll_until(DEADLINE, || default.exists().then_some(()))
        .unwrap_or_else(|| panic!("no default socket\n{}", server.stderr()));
    assert!(ask(&default, "show config")
        .contains(&format!("\"control_socket\": \"{}\"", default.display())));
    server.send_signal("TERM");
    server.wait_exit(DEADLINE);
    assert!(!default.exists());

    let mut off = Server::start("ctl-off", &["--no-control-socket", "app:application"]);
    assert_eq!(off.get("/").status, 200);
    assert!(!off.dir.join("gunicorn.ctl").exists());
    assert!(
        off.stderr().find("Control socket").is_none(),
        "{}",
        off.stderr()
    );
    off.send_signal("TERM");
    off.wait_exit(DEADLINE);
}

#[test]
fn after_usr2_the_path_belongs_to_the_new_master() {
    let dir = TempDir::new("ctl-usr2");
    let socket = dir.join("g.ctl");
    let pidfile = dir.join("pid");
    let mut old = Server::builder("ctl-usr2")
        .args(["--control-socket", &socket.display().to_string()])
        .args(["-p", &pidfile.display().to_string(), "app:application"])
        .start();
    poll_until(DEADLINE, || socket.exists().then_some(())).expect("socket");
    old.send_signal("USR2");
    // The new master answers at the same path once it has bound it.
    let new_pid = poll_until(DEADLINE, || {
        let (code, out, _) = gunicornc(&socket, "show stats");
        let pid = (code == 0).then(|| number(&out, "pid"))?;
        (pid != i64::from(old.pid())).then_some(pid)
    })
    .unwrap_or_else(|| panic!("a new master at the socket\n{}", old.stderr()));
    // The old master leaves: the file, now the new master's, stays.
    old.send_signal("TERM");
    old.wait_exit(DEADLINE);
    assert!(
        socket.exists(),
        "the old master removed the new master's socket"
    );
    assert_eq!(number(&ask(&socket, "show stats"), "pid"), new_pid);
    let down = ask(&socket, "shutdown quick");
    assert!(down.contains("\"quick\""), "{down}");
    poll_until(DEADLINE, || {
        (!is_alive(u32::try_from(new_pid).unwrap_or(0))).then_some(())
    })
    .expect("the new master stops");
    assert!(!socket.exists());
}
