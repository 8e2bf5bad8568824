//! Issue 20, part 2: the Prometheus exporter (`--metrics`, `--metrics-address`,
//! `--metrics-port`), checked with the real tools: `promtool check metrics` on the page,
//! and a real Prometheus server (Debian's package, installed by `tests/run`) scraping a
//! server under load, read back through its HTTP API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::load::KeepAliveLoad;
use crate::support::{
    free_port, poll_until, run_to_exit, send_signal_to, Conn, Server, TempDir,
    LOG_DEADLINE as DEADLINE,
};

/// A server with the exporter on a free port (`--metrics-port 0`): the server, and the
/// port it logged.
fn start(tag: &str, extra: &[&str]) -> (Server, u16) {
    let server = Server::builder(tag)
        .args(["--metrics", "--metrics-port", "0"])
        .args(extra)
        .arg("app:application")
        .start();
    let log = server.wait_for_log("Metrics exporter listening at http://127.0.0.1:", DEADLINE);
    (server, metrics_port(&log))
}

/// The exporter's port from the master's log line.
pub fn metrics_port(log: &str) -> u16 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Metrics exporter listening at"))
        .unwrap();
    let rest = line.split("http://127.0.0.1:").nth(1).unwrap();
    rest.trim_end_matches("/metrics").parse().unwrap()
}

/// `GET /metrics` on a fresh connection: the page.
pub fn scrape(port: u16) -> String {
    let mut c = Conn::tcp(port);
    c.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.raw_head);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.body_str()
}

/// The sum of every sample of `name` whose labels contain each of `labels`.
pub fn sum(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let metric = l.split(['{', ' ']).next().unwrap_or("");
            metric == name && labels.iter().all(|want| l.contains(want))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Debian's `promtool`, or where `tests/run` expects it.
fn promtool() -> PathBuf {
    which("promtool")
}

fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name))
}

/// `promtool check metrics` on `page`: its verdict (empty when it has nothing to say).
fn promtool_check(page: &str) -> String {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (tests/run installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{said}"
    );
    said
}

#[test]
fn the_page_passes_promtool_and_counts_every_response_by_status_class() {
    let (s, port) = start("metrics-page", &["-w", "2"]);
    // The fixture's readiness probe (a connection) is counted once a worker accepts it.
    let before = poll_until(DEADLINE, || {
        let page = scrape(port);
        (sum(&page, "rgunicorn_connections_accepted_total", &[]) >= 1.0).then_some(page)
    })
    .expect("the readiness probe is accepted");
    assert_eq!(sum(&before, "rgunicorn_requests_total", &[]), 0.0);
    let accepted = sum(&before, "rgunicorn_connections_accepted_total", &[]);
    for i in 0..30 {
        assert_eq!(s.get(&format!("/n{i}")).status, 200);
    }
    for _ in 0..5 {
        assert_eq!(s.get("/status?code=404").status, 404);
    }
    assert_eq!(s.get("/error").status, 500);
    let refused = s.request("GET /\x01 HTTP/1.1\r\n\r\n");
    assert_eq!(refused.status, 400);

    // A worker counts a response once it has written it: the client may be first.
    let page = poll_until(DEADLINE, || {
        let page = scrape(port);
        (sum(&page, "rgunicorn_requests_total", &[]) == 36.0).then_some(page)
    })
    .unwrap_or_else(|| panic!("36 responses counted\n{}", scrape(port)));
    assert_eq!(promtool_check(&page), "", "promtool has remarks");
    assert_eq!(
        sum(&page, "rgunicorn_requests_total", &["status=\"2xx\""]),
        30.0
    );
    assert_eq!(
        sum(&page, "rgunicorn_requests_total", &["status=\"4xx\""]),
        5.0
    );
    assert_eq!(
        sum(&page, "rgunicorn_requests_total", &["status=\"5xx\""]),
        1.0
    );
    assert_eq!(sum(&page, "rgunicorn_requests_refused_total", &[]), 1.0);
    assert_eq!(
        sum(&page, "rgunicorn_request_duration_seconds_count", &[]),
        36.0
    );
    assert_eq!(
        sum(
            &page,
            "rgunicorn_request_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        36.0
    );
    assert_eq!(
        sum(&page, "rgunicorn_connections_accepted_total", &[]) - accepted,
        37.0
    );
    assert_eq!(sum(&page, "rgunicorn_workers", &[]), 2.0);
    assert_eq!(sum(&page, "rgunicorn_workers_target", &[]), 2.0);
    assert_eq!(sum(&page, "rgunicorn_workers_spawned_total", &[]), 2.0);
    assert_eq!(sum(&page, "rgunicorn_worker_info", &[]), 2.0);
    assert!(sum(&page, "rgunicorn_worker_resident_memory_bytes", &[]) > 1e6);
    assert_eq!(
        sum(
            &page,
            "rgunicorn_listener_backlog_limit",
            &[&format!(":{}\"", s.port)]
        ),
        2048.0
    );
}

#[test]
fn a_scrape_is_answered_while_every_worker_is_busy_and_shows_them_busy() {
    let (s, port) = start("metrics-busy", &["-w", "1", "--threads", "2"]);
    let _first = s.slow_request(30);
    let _second = s.slow_request(30);
    let page = scrape(port);
    assert_eq!(sum(&page, "rgunicorn_workers_busy", &[]), 1.0, "{page}");
    assert_eq!(sum(&page, "rgunicorn_worker_threads_busy", &[]), 2.0);
    assert_eq!(sum(&page, "rgunicorn_worker_threads", &[]), 2.0);
    // A third request waits for a thread; the loop publishes its queue every second.
    let mut third = s.connect();
    third.send("GET /sleep?s=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    poll_until(DEADLINE, || {
        (sum(&scrape(port), "rgunicorn_worker_queued_requests", &[]) == 1.0).then_some(())
    })
    .expect("the queued request is reported");
}

#[test]
fn keep_alive_connections_and_a_crashed_workers_counts_are_kept() {
    // Keep-alive outlasts the gauges' publishing (every second or two).
    let (mut s, port) = start("metrics-crash", &["-w", "2", "--keep-alive", "30"]);
    let mut idle: Vec<Conn> = (0..3).map(|_| s.connect()).collect();
    for c in &mut idle {
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.read_response().status, 200);
    }
    poll_until(DEADLINE, || {
        (sum(&scrape(port), "rgunicorn_connections_keepalive", &[]) == 3.0).then_some(())
    })
    .expect("3 idle keep-alive connections reported");
    let counted = poll_until(DEADLINE, || {
        (sum(&scrape(port), "rgunicorn_requests_total", &[]) == 3.0).then_some(())
    });
    assert!(counted.is_some(), "3 requests counted\n{}", scrape(port));

    // A worker killed from outside: replaced, counted as an error respawn, and the requests
    // it served still count (its slot goes on with its successor).
    let victim = s.worker_pids()[0];
    send_signal_to(victim, "KILL");
    let page = poll_until(DEADLINE, || {
        let page = scrape(port);
        let replaced = sum(
            &page,
            "rgunicorn_workers_respawned_total",
            &["cause=\"error\""],
        ) == 1.0
            && sum(&page, "rgunicorn_workers", &[]) == 2.0
            && !page.contains(&format!("pid=\"{victim}\""));
        replaced.then_some(page)
    })
    .unwrap_or_else(|| panic!("no respawn reported\n{}", scrape(port)));
    assert_eq!(sum(&page, "rgunicorn_workers_spawned_total", &[]), 3.0);
    assert_eq!(sum(&page, "rgunicorn_requests_total", &[]), 3.0, "{page}");
    assert_eq!(
        page.matches("rgunicorn_worker_info{").count(),
        2,
        "the successor took the dead worker's slot: {page}"
    );
}

#[test]
fn bad_requests_get_a_clear_answer_and_the_master_goes_on() {
    let (s, port) = start("metrics-bad", &["-w", "1"]);
    let mut c = Conn::tcp(port);
    c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().status, 404);
    c.send("DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert!(r.says_close());
    // Garbage, then a client that never sends anything: neither keeps the master from
    // answering the next scrape or serving the app.
    let mut garbage = TcpStream::connect(("127.0.0.1", port)).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let _silent: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert!(scrape(port).contains("rgunicorn_workers 1\n"));
    assert_eq!(s.get("/").status, 200);
}

#[test]
fn a_taken_port_or_a_bad_setting_stops_the_start_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let app_port = free_port().to_string();
    let bind = format!("127.0.0.1:{app_port}");
    let args = [
        "-b",
        &bind,
        "--metrics",
        "--metrics-port",
        &port,
        "app:application",
    ];
    let done = run_to_exit(&args, &[], DEADLINE);
    done.expect_code(1);
    assert!(
        done.output().contains(&format!(
            "Can't start the metrics exporter at 127.0.0.1:{port}"
        )),
        "{}",
        done.output()
    );
    let done = run_to_exit(
        &["--metrics-port", "70000", "app:application"],
        &[],
        DEADLINE,
    );
    done.expect_code(1);
    assert!(done
        .output()
        .contains("--metrics-port: 70000 is not in the range"));
    let done = run_to_exit(
        &["--metrics-address", "localhost:1", "app:application"],
        &[],
        DEADLINE,
    );
    done.expect_code(1);
    assert!(done.output().contains("is not an IP address"));
}

/// A real Prometheus server (Debian's `prometheus`), scraping `targets` every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: rgunicorn\n    static_configs:\n\
                 \x20     - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(which("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run prometheus (tests/run installs Debian's prometheus package)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant query whose answer is one sample, if there is one.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "GET /api/v1/query?query={encoded} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        // {"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[T,"V"]}]}}
        let value = answer.split("\"value\":[").nth(1)?;
        value.split('"').nth(1)?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_server_under_load_and_counts_every_request() {
    let (s, port) = start("metrics-prometheus", &["-w", "2", "--keep-alive", "30"]);
    let prometheus = Prometheus::start(port);
    poll_until(Duration::from_secs(60), || {
        (prometheus.query("up{job=\"rgunicorn\"}") == Some(1.0)).then_some(())
    })
    .expect("Prometheus scrapes rgunicorn");

    let load = KeepAliveLoad::start(s.port, 8);
    load.wait_for_more(400);
    let (sent, lost) = load.finish();
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(5)]);
    // What Prometheus stored, once a scrape after the load has come in.
    let counted = poll_until(Duration::from_secs(30), || {
        let n = prometheus.query("sum(rgunicorn_requests_total)")?;
        (n == f64::from(sent)).then_some(n)
    });
    assert_eq!(
        counted,
        Some(f64::from(sent)),
        "Prometheus counted {:?} of {sent} requests\n{}",
        prometheus.query("sum(rgunicorn_requests_total)"),
        scrape(port)
    );
    assert_eq!(prometheus.query("rgunicorn_workers"), Some(2.0));
    assert_eq!(
        prometheus.query("sum(rgunicorn_request_duration_seconds_count)"),
        Some(f64::from(sent))
    );
    assert_eq!(
        prometheus.query("count(rgunicorn_connections_accepted_total)"),
        Some(2.0),
        "one series per worker"
    );
}

/// The master's start time, as the page reports it (a USR2 child's differs).
fn start_time(page: &str) -> f64 {
    sum(page, "process_start_time_seconds", &[])
}

#[test]
fn after_usr2_the_new_master_takes_the_port_over_when_the_old_one_leaves() {
    let port = free_port();
    let dir = TempDir::new("metrics-usr2");
    let pidfile = dir.join("pid");
    let port_arg = port.to_string();
    let mut old = Server::builder("metrics-usr2")
        .args(["--metrics", "--metrics-port", &port_arg])
        .args(["-p", &pidfile.display().to_string(), "app:application"])
        .start();
    old.wait_for_log("Metrics exporter listening at", DEADLINE);
    let first = start_time(&scrape(port));
    old.send_signal("USR2");
    // The new master cannot bind the port yet: the old one still answers.
    old.wait_for_log("is held by the old master", DEADLINE);
    assert_eq!(start_time(&scrape(port)), first);
    old.send_signal("TERM");
    old.wait_exit(DEADLINE);
    let page = poll_until(DEADLINE, || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut page = String::new();
        c.read_to_string(&mut page).ok()?;
        (page.starts_with("HTTP/1.1 200") && start_time(&page) != first).then_some(page)
    })
    .unwrap_or_else(|| panic!("the new master serves the port\n{}", old.stderr()));
    assert!(page.contains("rgunicorn_workers 1\n"), "{page}");
    let new_pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    send_signal_to(new_pid, "TERM");
    poll_until(DEADLINE, || {
        (!crate::support::is_alive(new_pid)).then_some(())
    })
    .expect("the new master stops");
}

#[test]
fn the_settings_come_from_the_config_file_and_gunicorn_cmd_args_too() {
    let dir = TempDir::new("metrics-conf");
    let conf = dir.join("gunicorn.conf.py");
    let port = free_port();
    std::fs::write(&conf, format!("metrics = True\nmetrics_port = {port}\n")).unwrap();
    let s = Server::builder("metrics-conf")
        .args(["-c", &conf.display().to_string(), "app:application"])
        .start();
    s.wait_for_log(
        &format!("Metrics exporter listening at http://127.0.0.1:{port}/metrics"),
        DEADLINE,
    );
    assert!(scrape(port).contains("rgunicorn_workers 1\n"));
    drop(s);

    let port = free_port();
    let env = format!("--metrics --metrics-port {port} --metrics-address 127.0.0.1");
    let done = run_to_exit(
        &["--print-config", "app:application"],
        &[("GUNICORN_CMD_ARGS", env.as_str())],
        DEADLINE,
    );
    done.expect_code(0);
    let out = done.output();
    let value = |name: &str| {
        out.lines()
            .find_map(|l| {
                let (key, value) = l.split_once('=')?;
                (key.trim() == name).then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
    };
    assert_eq!(value("metrics"), "True");
    assert_eq!(value("metrics_port"), port.to_string());
    assert_eq!(value("metrics_address"), "127.0.0.1");
}
