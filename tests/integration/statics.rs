//! Issue 22, part 1: static files served by the worker's loop (`--static-path-route`,
//! `--static-path-mount`, `--static-path-dir-to-file`, `--static-path-expires`: rgunicorn's
//! own settings, taken from Granian), never by Python.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{run_to_exit, Server, TempDir, LOG_DEADLINE as DEADLINE};

/// A tree of files to serve, with a secret beside it and a symlink leading to it.
fn site(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    let root = dir.join("site");
    std::fs::create_dir_all(root.join("css")).unwrap();
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("css/app.css"), css()).unwrap();
    std::fs::write(root.join("css/app.css.gz"), b"pretend-gzip").unwrap();
    std::fs::write(root.join("css/app.css.br"), b"pretend-br").unwrap();
    std::fs::write(root.join("css/app.3f2a9c1be4d1.css"), b"hashed").unwrap();
    std::fs::write(root.join("docs/index.html"), b"<h1>docs</h1>").unwrap();
    std::fs::write(root.join("icon.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::write(dir.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
    std::os::unix::fs::symlink("css/app.css", root.join("inside.css")).unwrap();
    dir
}

fn css() -> Vec<u8> {
    (0..2000)
        .flat_map(|i| format!("a{i}{{color:red}}\n").into_bytes())
        .collect()
}

fn start(tag: &str, dir: &TempDir, extra: &[&str]) -> Server {
    let root = dir.join("site");
    Server::builder(tag)
        .args(["--static-path-mount", &root.display().to_string()])
        .args(["--access-logfile", "-"])
        .args(extra)
        .arg("app:application")
        .start()
}

fn get(s: &Server, path: &str, headers: &str) -> crate::support::Response {
    s.request(format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    ))
}

#[test]
fn a_file_is_served_with_its_type_validators_and_cache_headers_without_python() {
    let dir = site("static-basic");
    let s = start("static-basic", &dir, &[]);
    let r = get(&s, "/static/css/app.css", "");
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(r.body, css());
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some(&*css().len().to_string()));
    assert_eq!(r.header("cache-control"), Some("public, max-age=86400"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(r
        .header("last-modified")
        .is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(r.header("content-encoding"), None, "not asked for");
    let hashed = get(&s, "/static/css/app.3f2a9c1be4d1.css", "");
    assert_eq!(
        hashed.header("cache-control"),
        Some("public, max-age=86400, immutable")
    );
    assert_eq!(
        get(&s, "/static/icon.png", "").header("content-type"),
        Some("image/png")
    );
    // A symlink that stays inside the mount is followed.
    assert_eq!(get(&s, "/static/inside.css", "").body, css());
    // Outside the route, the app answers.
    assert_eq!(get(&s, "/staticx", "").body_str(), "hello /staticx");
    // Logged as any request, by the worker (not the app).
    let log = s.wait_for_stdout("\"GET /static/icon.png HTTP/1.1\" 200 4", DEADLINE);
    assert!(
        log.contains("\"GET /static/css/app.css HTTP/1.1\" 200 "),
        "{log}"
    );
}

#[test]
fn conditional_ranged_head_and_precompressed_requests() {
    let dir = site("static-http");
    let s = start("static-http", &dir, &["--static-path-expires", "0"]);
    let r = get(&s, "/static/css/app.css", "");
    assert_eq!(r.header("cache-control"), None, "--static-path-expires 0");
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();

    let r = get(
        &s,
        "/static/css/app.css",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(&*etag));
    let r = get(
        &s,
        "/static/css/app.css",
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert_eq!(r.status, 304);
    let r = get(&s, "/static/css/app.css", "If-None-Match: \"stale\"\r\n");
    assert_eq!(r.status, 200);

    let r = get(&s, "/static/css/app.css", "Range: bytes=0-9\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &css()[..10]);
    let len = css().len();
    assert_eq!(
        r.header("content-range"),
        Some(&*format!("bytes 0-9/{len}"))
    );
    let r = get(&s, "/static/css/app.css", "Range: bytes=-4\r\n");
    assert_eq!(r.body, &css()[len - 4..]);
    let r = get(&s, "/static/css/app.css", "Range: bytes=0-1,5-6\r\n");
    assert_eq!(
        (r.status, r.body.len()),
        (200, len),
        "many ranges: the whole"
    );
    let r = get(
        &s,
        "/static/css/app.css",
        &format!("Range: bytes={len}-\r\n"),
    );
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(&*format!("bytes */{len}")));

    let mut c = s.connect();
    c.send("HEAD /static/css/app.css HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*len.to_string()));
    // The connection is still framed right: the next response follows.
    c.send("GET /static/icon.png HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().body, [0x89, b'P', b'N', b'G']);

    let r = get(&s, "/static/css/app.css", "Accept-Encoding: gzip, br\r\n");
    assert_eq!(r.body, b"pretend-br");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = get(&s, "/static/css/app.css", "Accept-Encoding: gzip\r\n");
    assert_eq!(r.body, b"pretend-gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_ne!(
        r.header("etag"),
        Some(&*etag),
        "each representation has its tag"
    );
    let r = get(
        &s,
        "/static/css/app.css",
        "Accept-Encoding: br;q=0, gzip;q=0\r\n",
    );
    assert_eq!(r.body, css());
}

#[test]
fn paths_that_leave_the_mount_or_are_not_files_are_refused() {
    let dir = site("static-refuse");
    let s = start("static-refuse", &dir, &[]);
    for (path, status) in [
        ("/static/../secret.txt", 400),
        ("/static/css/../../secret.txt", 400),
        ("/static/%2e%2e/secret.txt", 400),
        ("/static/%2E%2E%2Fsecret.txt", 400),
        ("/static/css%2fapp.css", 400),
        ("/static/app%00.css", 400),
        ("/static/leak.txt", 404),
        ("/static/up/secret.txt", 404),
        ("/static/css", 404),
        ("/static/empty/", 404),
        ("/static/missing.css", 404),
    ] {
        let r = get(&s, path, "");
        assert_eq!(r.status, status, "{path}: {}", r.raw_head);
        assert!(!r.body_str().contains("secret"), "{path}");
    }
    let r =
        s.request("POST /static/css/app.css HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert!(
        r.says_close(),
        "the body was not read: the connection closes"
    );
    assert_eq!(get(&s, "/", "").body_str(), "hello /", "the worker goes on");
}

#[test]
fn a_directory_serves_its_index_file_when_asked_to() {
    let dir = site("static-index");
    let s = start(
        "static-index",
        &dir,
        &["--static-path-dir-to-file", "index.html"],
    );
    let r = get(&s, "/static/docs/", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<h1>docs</h1>"[..]));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = get(&s, "/static/docs?x=1", "");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/static/docs/?x=1"));
    assert_eq!(get(&s, "/static/empty/", "").status, 404);
}

#[test]
fn routes_pair_with_mounts_and_the_longest_wins() {
    let dir = site("static-routes");
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("app.css"), b"other").unwrap();
    let s = Server::builder("static-routes")
        .args(["--static-path-route", "/assets", "--static-path-mount"])
        .arg(dir.join("site").display().to_string())
        .args(["--static-path-route", "/assets/css/", "--static-path-mount"])
        .arg(other.display().to_string())
        .arg("app:application")
        .start();
    assert_eq!(get(&s, "/assets/css/app.css", "").body, b"other");
    assert_eq!(get(&s, "/assets/icon.png", "").status, 200);
    assert_eq!(
        get(&s, "/static/icon.png", "").body_str(),
        "hello /static/icon.png"
    );
}

/// A slow client taking a large file holds no worker: the one sync worker serves others
/// meanwhile, the file going out of the outbox with sendfile.
#[test]
fn a_large_file_to_a_slow_client_does_not_pin_the_worker() {
    let dir = site("static-slow");
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("site/big.bin"), &big).unwrap();
    let s = start("static-slow", &dir, &["-w", "1"]);
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    slow.write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // The slow client reads nothing yet; the worker answers another client at once.
    let began = Instant::now();
    assert_eq!(get(&s, "/pid", "").status, 200);
    assert!(began.elapsed() < Duration::from_secs(5));
    // Then it takes the whole file, intact.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    slow.read_to_end(&mut got).unwrap();
    let body_at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(got.len() - body_at, big.len());
    assert!(got[body_at..] == big[..], "the body is the file");
}

/// A file truncated while it is being sent: the connection closes (the framing cannot be
/// kept), the worker goes on.
#[test]
fn a_file_that_shrinks_while_sent_closes_the_connection_and_nothing_else() {
    let dir = site("static-shrink");
    let path = dir.join("site/shrinks.bin");
    std::fs::write(&path, vec![7u8; 16 << 20]).unwrap();
    let s = start("static-shrink", &dir, &["-w", "1"]);
    let mut slow = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    slow.write_all(b"GET /static/shrinks.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut first = [0u8; 4096];
    let n = slow.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1024)
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        n + rest.len() < 16 << 20,
        "the connection ended short, not hung"
    );
    assert_eq!(get(&s, "/", "").body_str(), "hello /");
    assert_eq!(get(&s, "/static/gone.bin", "").status, 404);
}

/// Threads all busy in the app: a static file is still answered at once by the loop.
#[test]
fn the_threaded_worker_serves_static_files_while_its_threads_are_busy() {
    let dir = site("static-threads");
    let s = start("static-threads", &dir, &["-w", "1", "--threads", "2"]);
    let _a = s.slow_request(30);
    let _b = s.slow_request(30);
    let began = Instant::now();
    let r = get(&s, "/static/icon.png", "");
    assert_eq!(r.status, 200);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    s.wait_for_stdout("\"GET /static/icon.png HTTP/1.1\" 200 4", DEADLINE);
}

#[test]
fn the_settings_are_shown_and_checked() {
    let done = run_to_exit(
        &[
            "--print-config",
            "--static-path-route",
            "/assets/",
            "--static-path-mount",
            "public",
            "--static-path-expires",
            "1h",
            "app:application",
        ],
        &[],
        DEADLINE,
    );
    done.expect_code(0);
    let value = |name: &str| {
        done.stdout
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(" = ")?;
                (k.trim() == name).then(|| v.to_string())
            })
            .unwrap_or_else(|| panic!("no {name}\n{}", done.stdout))
    };
    assert_eq!(value("static_path_route"), "['/assets']");
    assert_eq!(value("static_path_mount"), "['public']");
    assert_eq!(value("static_path_expires"), "3600");
    assert_eq!(value("static_path_dir_to_file"), "None");
    for (args, error) in [
        (
            &["--static-path-route", "assets"][..],
            "is not an absolute path",
        ),
        (
            &["--static-path-expires", "-1"][..],
            "--static-path-expires",
        ),
        (
            &["--static-path-mount", "a", "--static-path-mount", "b"][..],
            "2 directories but 1 routes",
        ),
    ] {
        let mut all = args.to_vec();
        all.push("app:application");
        let done = run_to_exit(&all, &[], DEADLINE);
        done.expect_code(1);
        assert!(done.output().contains(error), "{args:?}: {}", done.output());
    }
    // A mount that does not exist stops the start with its name.
    let missing = TempDir::new("static-missing");
    let gone = missing.join("nowhere");
    let bind = format!("127.0.0.1:{}", crate::support::free_port());
    let done = run_to_exit(
        &[
            "-b",
            &bind,
            "--static-path-mount",
            &gone.display().to_string(),
            "app:application",
        ],
        &[],
        DEADLINE,
    );
    assert_ne!(done.code(), Some(0));
    assert!(
        done.output().contains("Can't serve static files from"),
        "{}",
        done.output()
    );
}

/// Under TLS the file is read and encrypted (sendfile would bypass TLS): the client gets
/// the same bytes.
#[test]
fn files_go_out_encrypted_under_tls() {
    let dir = site("static-tls");
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("site/big.bin"), &big).unwrap();
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let cert = certs.join("cert.pem").display().to_string();
    let key = certs.join("key.pem").display().to_string();
    let s = start(
        "static-tls",
        &dir,
        &["--certfile", &cert, "--keyfile", &key],
    );
    let script = format!(
        r#"
import hashlib, socket, ssl
ctx = ssl.create_default_context(cafile={cert:?})
with socket.create_connection(("127.0.0.1", {port}), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
head, _, body = data.partition(b"\r\n\r\n")
print(head.split()[1].decode(), len(body), hashlib.sha256(body).hexdigest())
"#,
        port = s.port
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let want = format!("200 {} {}", big.len(), sha256_hex(&big));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        want,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SHA-256 of `data`, by Python's hashlib (the test's reference, not ours).
fn sha256_hex(data: &[u8]) -> String {
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// Out of descriptors, a static file is a 503 to retry, not a 404 a client or cache would
/// keep; with descriptors again it is served.
#[test]
fn out_of_descriptors_a_file_is_a_503_not_a_404() {
    let dir = site("static-emfile");
    let mut s = start("static-emfile", &dir, &["-w", "1", "--keep-alive", "60"]);
    let worker = s.wait_workers(1, DEADLINE)[0];
    let mut c = s.connect();
    let ask = "GET /static/icon.png HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(ask);
    assert_eq!(c.read_response().status, 200);
    // The client can have the whole body before the worker drops the file's descriptor;
    // a limit computed while it is open would leave its number free once it closes.
    wait_until_closed(worker, "icon.png");
    crate::lifecycle::leave_descriptors(worker, 0);
    c.send(ask);
    let r = c.read_response();
    assert_eq!(r.status, 503, "{}", r.raw_head);
    assert_eq!(r.header("retry-after"), Some("1"));
    crate::lifecycle::leave_descriptors(worker, 64);
    c.send(ask);
    assert_eq!(c.read_response().status, 200);
}

/// Waits until no descriptor of process `pid` is open on a file named `name`.
fn wait_until_closed(pid: u32, name: &str) {
    let deadline = Instant::now() + DEADLINE;
    let open = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|target| target.file_name().is_some_and(|f| f == name))
    };
    while open() {
        assert!(Instant::now() < deadline, "worker {pid} kept {name} open");
        std::thread::sleep(Duration::from_millis(10));
    }
}
