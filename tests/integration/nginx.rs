//! Behind a real nginx (Debian's package; `tests/run` installs it when missing), with
//! upstream keep-alive as production configures it: a rolling restart of two instances
//! loses no request, POSTs included (nginx can retry only what it never sent).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::load::{KeepAliveLoad, SteadyLoad};
use crate::support::{free_port, poll_until, Server, TempDir, LOG_DEADLINE as DEADLINE};

/// nginx's binary: `RGUNICORN_NGINX`, else the one on PATH or Debian's.
fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RGUNICORN_NGINX") {
        return PathBuf::from(path);
    }
    let candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: tests/run installs it (apt-get install nginx-light)")
        })
}

/// nginx in the foreground, proxying 127.0.0.1:`port` to the upstream `servers` with
/// keep-alive upstream connections. Stopped (by pid) when dropped.
struct Nginx {
    child: Child,
    _dir: TempDir,
}

impl Nginx {
    fn start(port: u16, servers: &[u16]) -> Nginx {
        let dir = TempDir::new("nginx");
        let root = dir.path().display().to_string();
        let upstreams: String = servers
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p};\n"))
            .collect();
        let conf = format!(
            "worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream app {{
{upstreams}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(nginx_binary())
            .args(["-p", &root, "-c", &format!("{root}/nginx.conf")])
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let up = poll_until(DEADLINE, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        assert!(
            up.is_some(),
            "nginx did not listen: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        Nginx { child, _dir: dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::support::send_signal_to(self.child.id(), "QUIT");
        if poll_until(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn instance(tag: &str, port: u16, pidfile: &std::path::Path, extra: &[&str]) -> Server {
    Server::builder(tag)
        .args(["-b", &format!("127.0.0.1:{port}"), "-w", "2"])
        .args(extra)
        .args(["-p", &pidfile.display().to_string(), "app:application"])
        .wait_port(port)
        .start()
}

/// Two instances (`-w 2` each) behind nginx with `keepalive 16`; 8 keep-alive clients
/// POSTing and a client GETting on fresh connections, through a rolling restart: HUP of
/// the first, USR2 and TERM of its old master, then TERM of the second and a new second
/// on the same port. Not one request fails.
#[test]
fn a_rolling_restart_behind_nginx_loses_no_request() {
    rolling_restart("rolling", &[]);
}

/// The same with threaded workers (`--threads 4`), whose loop hands connections to threads
/// and takes them back without a wake-up, and closes them through a thread.
#[test]
fn a_rolling_restart_of_threaded_workers_behind_nginx_loses_no_request() {
    rolling_restart("rolling-threads", &["--threads", "4"]);
}

fn rolling_restart(tag: &str, extra: &[&str]) {
    let tmp = TempDir::new(tag);
    let (port_a, port_b, port_nginx) = (free_port(), free_port(), free_port());
    let pid_a = tmp.join("a.pid");
    let pid_b = tmp.join("b.pid");
    let mut a = instance(&format!("{tag}-a"), port_a, &pid_a, extra);
    let mut b = instance(&format!("{tag}-b"), port_b, &pid_b, extra);
    a.wait_workers(2, DEADLINE);
    b.wait_workers(2, DEADLINE);
    let _nginx = Nginx::start(port_nginx, &[port_a, port_b]);
    let posts = KeepAliveLoad::start(port_nginx, 8);
    let gets = SteadyLoad::start(port_nginx);
    posts.wait_for_more(500);
    gets.wait_for_more(20);

    // HUP: new workers, the old ones stopped gracefully.
    a.send_signal("HUP");
    a.wait_for_log_count("Booting worker", 4, DEADLINE);
    posts.wait_for_more(500);

    // USR2, then TERM of the old master: the new binary takes over the sockets.
    a.send_signal("USR2");
    let pid_a2 = tmp.join("a.pid.2");
    let new_master: u32 = poll_until(DEADLINE, || {
        std::fs::read_to_string(&pid_a2).ok()?.trim().parse().ok()
    })
    .expect("the new master writes <pidfile>.2");
    let _guard = KillOnDrop(new_master);
    let booted = poll_until(DEADLINE, || {
        (crate::support::children_of(new_master).len() == 2).then_some(())
    });
    assert!(booted.is_some(), "the new master boots its workers");
    posts.wait_for_more(200);
    a.send_signal("TERM");
    assert!(a.wait_exit(DEADLINE).success(), "{}", a.stderr());
    posts.wait_for_more(500);

    // TERM of the second instance, then a new one on its port.
    b.send_signal("TERM");
    assert!(b.wait_exit(DEADLINE).success(), "{}", b.stderr());
    posts.wait_for_more(500);
    let b2 = instance(&format!("{tag}-b2"), port_b, &pid_b, extra);
    posts.wait_for_more(500);
    gets.wait_for_more(20);

    let (posted, lost) = posts.finish();
    let (got, failed) = gets.finish();
    let logs = format!(
        "--- a ---\n{}\n--- b ---\n{}\n--- b2 ---\n{}",
        a.stderr(),
        b.stderr(),
        b2.stderr()
    );
    assert!(
        lost.is_empty() && failed.is_empty(),
        "{} of {posted} POSTs and {} of {got} GETs failed: {:?} {:?}\n{logs}",
        lost.len(),
        failed.len(),
        &lost[..lost.len().min(5)],
        &failed[..failed.len().min(5)],
    );
}

/// Ends a process by pid when dropped (the new master a USR2 started).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        crate::support::send_signal_to(self.0, "TERM");
        let _ = poll_until(Duration::from_secs(10), || {
            (!crate::support::is_alive(self.0)).then_some(())
        });
        crate::support::send_signal_to(self.0, "KILL");
    }
}
