//! Test support: spawn the built `rgunicorn` binary, wait for it with deadlines, read its
//! logs, signal it, and talk to it with raw bytes.
//!
//! Every wait polls with short sleeps until a generous deadline (the suite must pass on a
//! loaded 2-core machine); nothing synchronises on a bare sleep. Every [`Server`] has its
//! own port and temp dir, so tests run in parallel. `Drop` stops the master by PID.

#![allow(dead_code)]

pub mod load;

use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a server may take to start listening (Python start-up on a loaded machine).
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// Default deadline for a log line or a state change to show up.
pub const LOG_DEADLINE: Duration = Duration::from_secs(20);
/// How long one read from the server may block before a test gives up on it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often polling loops look again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rgunicorn")
}

/// `tests/apps`, where the WSGI apps the tests serve live.
pub fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// The virtualenv with Flask and Django made by `tests/run`; panics with a clear message
/// when `RGUNICORN_TEST_VENV` is unset, so framework tests never pass by accident.
pub fn venv() -> PathBuf {
    match std::env::var_os("RGUNICORN_TEST_VENV") {
        Some(v) if !v.is_empty() => {
            let path = PathBuf::from(v);
            assert!(
                path.join("bin/python").exists(),
                "RGUNICORN_TEST_VENV={} is not a virtualenv (no bin/python); run `tests/run`",
                path.display()
            );
            path
        }
        _ => panic!(
            "RGUNICORN_TEST_VENV is not set: the framework tests need a virtualenv with Flask \
             and Django. Run the suite with `tests/run` (it creates target/test-venv and sets \
             the variable)."
        ),
    }
}

/// Ports handed out in this process, so two tests never get the same one.
static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1: bind port 0, note the port, drop the listener.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some`, or `None` at the deadline.
pub fn poll_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        sleep(POLL_INTERVAL);
    }
}

// ---------------------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop (unique per test).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "rgunicorn-it-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).ok();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------

/// Sends a signal by name (`TERM`, `INT`, `KILL`, ...) to `pid`; false if it failed.
pub fn send_signal_to(pid: u32, sig: &str) -> bool {
    let name = format!("SIG{sig}");
    let signal: Signal = name
        .parse()
        .unwrap_or_else(|_| panic!("unknown signal {sig}"));
    let pid = i32::try_from(pid).expect("pid fits in i32");
    kill(Pid::from_raw(pid), signal).is_ok()
}

/// Whether a process with this pid exists and is not a zombie.
/// The CPU time (user + system) a process has used, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime: fields 14 and 15, i.e. 12 and 13 after the state.
    fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state is the field after the parenthesised command name.
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Whether `pid` is a worker's keeper (`worker::keeper`), which becomes the master's child
/// for the moment between its worker's death and the master ending it.
fn is_keeper(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "rgunicorn-keep")
}

/// Direct children of `pid` (workers' keepers aside), from /proc/<pid>/task/*/children.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out.retain(|&p| !is_keeper(p));
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `pid` runs the binary under test (guards against killing a reused pid).
fn runs_our_binary(pid: u32) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let ours = fs::canonicalize(binary()).unwrap_or_else(|_| PathBuf::from(binary()));
    exe == ours
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What to bind the server under test to.
#[derive(Clone, Debug)]
enum Bind {
    /// `-b 127.0.0.1:<free port>` (the default).
    FreePort,
    /// The test passes its own binds / PORT; wait on this port.
    Port(u16),
    /// The test passes its own binds; wait on this unix socket.
    Unix(PathBuf),
    /// Don't wait for anything (the server is expected to fail).
    Nothing,
}

/// Builds a [`Server`]: arguments, environment, working directory.
pub struct ServerBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    bind: Bind,
    extra_binds: Vec<String>,
    tag: String,
}

/// Variables from the test runner's environment that would change rgunicorn's defaults.
const SCRUBBED_ENV: &[&str] = &[
    "WEB_CONCURRENCY",
    "PORT",
    "GUNICORN_CMD_ARGS",
    "VIRTUAL_ENV",
    "SCRIPT_NAME",
    "FORWARDED_ALLOW_IPS",
    "SENDFILE",
    "PYTHONPATH",
    "PYTHONHOME",
    "LISTEN_FDS",
    "LISTEN_PID",
    "GUNICORN_FD",
    "GUNICORN_PID",
];

impl ServerBuilder {
    /// Adds command-line arguments (before the app module, which is also just an argument).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    pub fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.envs.push((key.to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Working directory of the server (default: tests/apps).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Serve with the test venv (`VIRTUAL_ENV`).
    pub fn venv(self) -> Self {
        let v = venv();
        self.env("VIRTUAL_ENV", v.to_string_lossy())
    }

    /// The test gives its own `-b`/`PORT`; readiness = this TCP port accepts.
    pub fn wait_port(mut self, port: u16) -> Self {
        self.bind = Bind::Port(port);
        self
    }

    /// The test gives its own `-b unix:...`; readiness = this socket accepts.
    pub fn wait_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.bind = Bind::Unix(path.into());
        self
    }

    /// Also bind a unix socket (in addition to the free TCP port).
    pub fn also_bind(mut self, bind: impl AsRef<str>) -> Self {
        self.extra_binds.push(bind.as_ref().to_owned());
        self
    }

    /// Don't add a bind and don't wait: the test expects the server to exit.
    pub fn no_wait(mut self) -> Self {
        self.bind = Bind::Nothing;
        self
    }

    /// Starts the server; for listening servers, waits until it accepts connections.
    ///
    /// # Panics
    /// When the server exits or does not listen before [`START_DEADLINE`] (with its logs).
    pub fn start(self) -> Server {
        let dir = TempDir::new(&self.tag);
        let stdout_path = dir.join("stdout.log");
        let stderr_path = dir.join("stderr.log");
        let port = match self.bind {
            Bind::FreePort => free_port(),
            Bind::Port(p) => p,
            _ => 0,
        };
        let mut cmd = Command::new(binary());
        if let Bind::FreePort = self.bind {
            cmd.arg("-b").arg(format!("127.0.0.1:{port}"));
        }
        for b in &self.extra_binds {
            cmd.arg("-b").arg(b);
        }
        cmd.args(&self.args);
        for key in SCRUBBED_ENV {
            cmd.env_remove(key);
        }
        // The default control socket (`$XDG_RUNTIME_DIR/gunicorn.ctl`) goes to this server's
        // own directory: servers running side by side never take each other's.
        cmd.env("XDG_RUNTIME_DIR", dir.path());
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(self.cwd.clone().unwrap_or_else(apps_dir));
        cmd.stdin(Stdio::null());
        cmd.stdout(fs::File::create(&stdout_path).expect("create stdout log"));
        cmd.stderr(fs::File::create(&stderr_path).expect("create stderr log"));
        let child = cmd.spawn().expect("spawn rgunicorn");
        let mut server = Server {
            child,
            port,
            dir,
            stdout_path,
            stderr_path,
            exited: None,
            known_workers: Vec::new(),
        };
        match self.bind.clone() {
            Bind::FreePort | Bind::Port(_) => {
                server.wait_ready(|| TcpStream::connect(("127.0.0.1", port)).is_ok())
            }
            Bind::Unix(path) => server.wait_ready(|| UnixStream::connect(&path).is_ok()),
            Bind::Nothing => {}
        }
        server
    }
}

/// A running `rgunicorn` master started by a test.
pub struct Server {
    child: Child,
    /// The TCP port it listens on (0 when it has none).
    pub port: u16,
    /// This server's temp dir (logs, sockets, marker files).
    pub dir: TempDir,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    exited: Option<ExitStatus>,
    /// Workers seen so far, so `Drop` can clean up after a master that died.
    known_workers: Vec<u32>,
}

impl Server {
    /// A builder for `rgunicorn <args...>`; add the app module with `.arg("app:application")`.
    pub fn builder(tag: &str) -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            bind: Bind::FreePort,
            extra_binds: Vec::new(),
            tag: tag.to_owned(),
        }
    }

    /// The common case: `rgunicorn -b 127.0.0.1:<port> <args...>` in tests/apps, ready.
    pub fn start(tag: &str, args: &[&str]) -> Server {
        Server::builder(tag).args(args).start()
    }

    fn wait_ready(&mut self, mut accepts: impl FnMut() -> bool) {
        let ready = poll_until(START_DEADLINE, || {
            if accepts() {
                return Some(true);
            }
            if self.try_exit().is_some() {
                return Some(false);
            }
            None
        });
        match ready {
            Some(true) => {}
            Some(false) => panic!(
                "rgunicorn exited ({:?}) before listening.\n--- stderr ---\n{}\n--- stdout ---\n{}",
                self.exited,
                self.stderr(),
                self.stdout()
            ),
            None => panic!(
                "rgunicorn did not listen within {START_DEADLINE:?}.\n--- stderr ---\n{}",
                self.stderr()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole stderr (the error log by default) so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// The whole stdout (where `--access-logfile -` goes) so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }

    /// Waits until stderr contains `pattern`; returns the whole log.
    ///
    /// # Panics
    /// At the deadline, showing the log.
    pub fn wait_for_log(&self, pattern: &str, deadline: Duration) -> String {
        self.wait_for_log_count(pattern, 1, deadline)
    }

    /// Waits until stderr contains `pattern` at least `count` times; returns the whole log.
    pub fn wait_for_log_count(&self, pattern: &str, count: usize, deadline: Duration) -> String {
        wait_for_file_count(&self.stderr_path, pattern, count, deadline)
    }

    /// Waits until stdout contains `pattern`; returns the whole of stdout.
    pub fn wait_for_stdout(&self, pattern: &str, deadline: Duration) -> String {
        wait_for_file_count(&self.stdout_path, pattern, 1, deadline)
    }

    /// The master's current children (its workers).
    pub fn worker_pids(&mut self) -> Vec<u32> {
        let pids = children_of(self.pid());
        for p in &pids {
            if !self.known_workers.contains(p) {
                self.known_workers.push(*p);
            }
        }
        pids
    }

    /// Waits until the master has exactly `n` live children; returns them.
    pub fn wait_workers(&mut self, n: usize, deadline: Duration) -> Vec<u32> {
        let got = poll_until(deadline, || {
            let pids: Vec<u32> = self
                .worker_pids()
                .into_iter()
                .filter(|p| is_alive(*p))
                .collect();
            (pids.len() == n).then_some(pids)
        });
        got.unwrap_or_else(|| {
            panic!(
                "expected {n} workers within {deadline:?}, have {:?}\n--- stderr ---\n{}",
                self.worker_pids(),
                self.stderr()
            )
        })
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`, ...) to the master.
    pub fn send_signal(&self, sig: &str) {
        assert!(
            send_signal_to(self.pid(), sig),
            "kill -{sig} {} failed",
            self.pid()
        );
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
            }
        }
        self.exited
    }

    /// Waits for the master to exit.
    ///
    /// # Panics
    /// At the deadline, showing the log (the server is then killed by `Drop`).
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match poll_until(deadline, || self.try_exit()) {
            Some(status) => status,
            None => panic!(
                "rgunicorn (pid {}) did not exit within {deadline:?}\n--- stderr ---\n{}",
                self.pid(),
                self.stderr()
            ),
        }
    }

    /// Waits for the master to exit, `None` at the deadline (no panic).
    pub fn try_wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        poll_until(deadline, || self.try_exit())
    }

    /// A raw connection to the server's TCP port.
    pub fn connect(&self) -> Conn {
        Conn::tcp(self.port)
    }

    /// Sends `GET /sleep?s=<secs>` (Connection: close) on a new connection and returns it
    /// once the app has the request in hand (it writes a marker file before sleeping).
    pub fn slow_request(&self, secs: u32) -> Conn {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = self.dir.join(&format!("slow-request-{n}"));
        let mut c = self.connect();
        c.send(format!(
            "GET /sleep?s={secs}&marker={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            marker.display()
        ));
        wait_for_file(&marker, "\n", LOG_DEADLINE);
        c
    }

    /// `GET path` with `Connection: close` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        ))
    }

    /// Sends raw request bytes on a fresh connection and reads one response.
    pub fn request(&self, raw: impl AsRef<[u8]>) -> Response {
        let mut c = self.connect();
        c.send(raw.as_ref());
        c.read_response()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.worker_pids();
        if self.try_exit().is_none() {
            send_signal_to(self.pid(), "TERM");
            if poll_until(Duration::from_secs(10), || self.try_exit()).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Workers of a master that died abruptly: give them a moment to notice, then make
        // sure none of ours lingers (checked against our binary, so a reused pid is safe).
        let workers = self.known_workers.clone();
        let _ = poll_until(Duration::from_secs(5), || {
            workers.iter().all(|p| !is_alive(*p)).then_some(())
        });
        for p in workers {
            if is_alive(p) && runs_our_binary(p) {
                send_signal_to(p, "KILL");
            }
        }
    }
}

fn wait_for_file_count(path: &Path, pattern: &str, count: usize, deadline: Duration) -> String {
    let read = || String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
    match poll_until(deadline, || {
        let text = read();
        (text.matches(pattern).count() >= count).then_some(text)
    }) {
        Some(text) => text,
        None => panic!(
            "{:?} not found {count} time(s) in {} within {deadline:?}:\n{}",
            pattern,
            path.display(),
            read()
        ),
    }
}

/// Waits until the file at `path` contains `pattern`; returns its content.
pub fn wait_for_file(path: &Path, pattern: &str, deadline: Duration) -> String {
    wait_for_file_count(path, pattern, 1, deadline)
}

/// The result of running rgunicorn to completion.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Asserts the exit status, showing how it ended and the output when it differs.
    pub fn expect_code(&self, code: i32) {
        assert_eq!(
            self.code(),
            Some(code),
            "exit {}: {}",
            describe(&self.status),
            self.output()
        );
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout and stderr together, for messages that may go to either.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs rgunicorn with `args` in `cwd` (default tests/apps) and `envs`, expecting it to exit
/// by itself within `deadline`; kills it and panics otherwise.
pub fn run_to_exit(args: &[&str], envs: &[(&str, &str)], deadline: Duration) -> Finished {
    run_to_exit_in(&apps_dir(), args, envs, deadline)
}

pub fn run_to_exit_in(
    cwd: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    deadline: Duration,
) -> Finished {
    let dir = TempDir::new("run");
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let mut cmd = Command::new(binary());
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for key in SCRUBBED_ENV {
        cmd.env_remove(key);
    }
    cmd.env("XDG_RUNTIME_DIR", dir.path());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdout(fs::File::create(&out_path).expect("stdout file"));
    cmd.stderr(fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("spawn rgunicorn");
    let status = poll_until(deadline, || child.try_wait().ok().flatten());
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
    match status {
        Some(status) => Finished {
            status,
            stdout: read(&out_path),
            stderr: read(&err_path),
        },
        None => {
            let workers = children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
            for p in workers {
                if is_alive(p) && runs_our_binary(p) {
                    send_signal_to(p, "KILL");
                }
            }
            panic!(
                "rgunicorn {args:?} did not exit within {deadline:?}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                read(&err_path),
                read(&out_path)
            )
        }
    }
}

/// Describes an exit status for assertion messages (`code 3`, `signal 9`).
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.1`, `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    /// Everything after the status code on the status line (may be empty).
    pub reason: String,
    /// The status line exactly as received (without CRLF).
    pub status_line: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// The head exactly as received, CRLFs included.
    pub raw_head: String,
    /// Whether the body was chunked.
    pub chunked: bool,
    /// Raw chunked framing bytes when chunked (sizes, data, trailers), for framing checks.
    pub raw_body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header with this name.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Connection: close` present (case-insensitive value).
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// A raw client connection: exact bytes out, responses parsed from what comes back.
pub struct Conn {
    stream: Stream,
    /// Received bytes not consumed by a parsed response yet.
    buf: Vec<u8>,
    /// The server closed its side (read returned 0).
    eof: bool,
}

impl Conn {
    pub fn tcp(port: u16) -> Conn {
        let end = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    sleep(POLL_INTERVAL);
                }
                Err(e) => panic!("connect to 127.0.0.1:{port}: {e}"),
            }
        };
        stream.set_nodelay(true).ok();
        let s = Stream::Tcp(stream);
        s.set_read_timeout(Some(READ_TIMEOUT));
        Conn {
            stream: s,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn unix(path: &Path) -> Conn {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        let s = Stream::Unix(stream);
        s.set_read_timeout(Some(READ_TIMEOUT));
        Conn {
            stream: s,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// The local port of a TCP connection (what the server sees as REMOTE_PORT).
    pub fn local_port(&self) -> u16 {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().map(|a| a.port()).unwrap_or(0),
            Stream::Unix(_) => 0,
        }
    }

    /// Writes all of `bytes`; a write error (server closed) is returned, not panicked on.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.try_send(bytes.as_ref()).expect("write to server");
    }

    /// Half-closes our side (no more request bytes).
    pub fn shutdown_write(&self) {
        match &self.stream {
            Stream::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Stream::Unix(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }

    /// Reads more bytes into the buffer; false on EOF/reset. Panics on a read timeout.
    fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "no data from the server within {READ_TIMEOUT:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    fn take_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill() {
                panic!(
                    "connection closed with {} of {n} body bytes read",
                    self.buf.len()
                );
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response to a GET-like request (1xx responses are returned as such).
    pub fn read_response(&mut self) -> Response {
        self.read_response_for(false)
    }

    /// Reads one response to a HEAD request (no body whatever the headers say).
    pub fn read_head_response(&mut self) -> Response {
        self.read_response_for(true)
    }

    /// Reads one response; `head` = it answers a HEAD request.
    ///
    /// # Panics
    /// When the connection closes before a complete head, or times out.
    pub fn read_response_for(&mut self, head: bool) -> Response {
        self.try_read_response_for(head).unwrap_or_else(|| {
            panic!(
                "connection closed before a response head; received {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    /// Like [`Conn::read_response`], but `None` when the server closes without a head.
    pub fn try_read_response(&mut self) -> Option<Response> {
        self.try_read_response_for(false)
    }

    fn try_read_response_for(&mut self, head: bool) -> Option<Response> {
        let status_line = self.take_line()?;
        let status_line = String::from_utf8_lossy(&status_line).into_owned();
        let mut raw_head = format!("{status_line}\r\n");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let line = self.take_line().unwrap_or_else(|| {
                panic!("connection closed inside the response head: {raw_head:?}")
            });
            let line = String::from_utf8_lossy(&line).into_owned();
            raw_head.push_str(&line);
            raw_head.push_str("\r\n");
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("header line without ':' {line:?}"));
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        let mut resp = Response {
            version,
            status,
            reason,
            status_line,
            headers,
            body: Vec::new(),
            raw_head,
            chunked: false,
            raw_body: Vec::new(),
        };
        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Some(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().trim().ends_with("chunked"));
        if chunked {
            resp.chunked = true;
            self.read_chunked(&mut resp);
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.trim().parse().expect("numeric Content-Length");
            resp.body = self.take_exact(n);
        } else {
            while self.fill() {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Some(resp)
    }

    fn read_chunked(&mut self, resp: &mut Response) {
        loop {
            let line = self
                .take_line()
                .expect("connection closed in a chunk size line");
            resp.raw_body.extend_from_slice(&line);
            resp.raw_body.extend_from_slice(b"\r\n");
            let text = String::from_utf8_lossy(&line).into_owned();
            let size_text = text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {text:?}"));
            if size == 0 {
                loop {
                    let trailer = self.take_line().expect("connection closed in trailers");
                    resp.raw_body.extend_from_slice(&trailer);
                    resp.raw_body.extend_from_slice(b"\r\n");
                    if trailer.is_empty() {
                        return;
                    }
                }
            }
            let data = self.take_exact(size);
            resp.raw_body.extend_from_slice(&data);
            resp.body.extend_from_slice(&data);
            let crlf = self.take_exact(2);
            assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
            resp.raw_body.extend_from_slice(b"\r\n");
        }
    }

    /// Reads everything until the server closes (with the read timeout), buffered bytes
    /// included.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Whether the server closes the connection (EOF or reset) within `deadline`, with
    /// no further bytes arriving. Unconsumed buffered bytes count as "not closed cleanly".
    pub fn closed_within(&mut self, deadline: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if self.eof {
            return true;
        }
        self.stream.set_read_timeout(Some(deadline));
        let mut tmp = [0u8; 4096];
        let result = match self.stream.read(&mut tmp) {
            Ok(0) => true,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                false
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true,
        };
        if result {
            self.eof = true;
        }
        self.stream.set_read_timeout(Some(READ_TIMEOUT));
        result
    }

    /// Bytes received but not consumed by a parsed response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }
}

/// `Content-Length` framed request bytes.
pub fn post(path: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Parses one error-log line `[YYYY-mm-dd HH:MM:SS +ZZZZ] [pid] [LEVEL] msg`;
/// returns (pid, level, msg), or `None` if the line does not have that shape.
pub fn parse_log_line(line: &str) -> Option<(u32, String, String)> {
    let b = line.as_bytes();
    // "[2026-11-21 01:13:07 +0000] " is 28 bytes.
    if b.len() < 28 || b[0] != b'[' || b[27] != b' ' || b[26] != b']' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape_ok = digits(1..5)
        && b[5] == b'-'
        && digits(6..8)
        && b[8] == b'-'
        && digits(9..11)
        && b[11] == b' '
        && digits(12..14)
        && b[14] == b':'
        && digits(15..17)
        && b[17] == b':'
        && digits(18..20)
        && b[20] == b' '
        && (b[21] == b'+' || b[21] == b'-')
        && digits(22..26);
    if !shape_ok {
        return None;
    }
    let rest = &line[28..];
    let rest = rest.strip_prefix('[')?;
    let (pid, rest) = rest.split_once("] [")?;
    let pid: u32 = pid.parse().ok()?;
    let (level, msg) = rest.split_once("] ")?;
    if !["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"].contains(&level) {
        return None;
    }
    Some((pid, level.to_owned(), msg.to_owned()))
}

/// The (pid, level, msg) of every well-formed log line containing `needle`.
pub fn log_lines_with(log: &str, needle: &str) -> Vec<(u32, String, String)> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(parse_log_line)
        .collect()
}

/// Extracts the number after `prefix` up to the first non-digit (e.g. `pid:` → 1234).
pub fn number_after(text: &str, prefix: &str) -> Option<u32> {
    let start = text.find(prefix)? + prefix.len();
    let digits: String = text[start..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Minimal JSON reading for the echo app's flat `{"key": "string", ...}` objects:
/// returns the string value of `key` (the app only emits string values and booleans).
pub fn json_str(json: &str, key: &str) -> Option<String> {
    let needle = format!("{}:", json_quote(key));
    let start = json.find(&needle)? + needle.len();
    let rest = json[start..].trim_start();
    if let Some(r) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = r.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => out.push(other),
                },
                c => out.push(c),
            }
        }
        None
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim().to_owned())
    }
}

/// Whether the flat JSON object has `key`.
pub fn json_has(json: &str, key: &str) -> bool {
    json.contains(&format!("{}:", json_quote(key)))
}

/// A JSON string literal as Python's `json.dumps` writes it for ASCII keys.
fn json_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Parses the JSON list of strings the `/input` route returns.
pub fn json_str_list(json: &str) -> Vec<String> {
    let inner = json
        .trim()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or("");
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while let Some(r) = rest.strip_prefix('"') {
        let mut s = String::new();
        let mut chars = r.char_indices();
        let mut end = r.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some('u') => {
                        let hex: String = (0..4)
                            .filter_map(|_| chars.next().map(|(_, c)| c))
                            .collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            s.push(c);
                        }
                    }
                    Some(o) => s.push(o),
                    None => {}
                },
                c => s.push(c),
            }
        }
        out.push(s);
        rest = r[end..].trim_start().trim_start_matches(',').trim_start();
    }
    out
}
