#!/usr/bin/env python3
"""Benchmark rgunicorn against Gunicorn (sync worker) and Granian (WSGI) with wrk.

For every app and in alternating rounds, each server is started with the same worker count
on a free 127.0.0.1 port, polled until it answers correctly, warmed up, then driven by
``wrk -t2 -c32 -d<N>s --latency`` (keep-alive). Measured per run:

* requests/s and p99 latency (parsed from wrk's output),
* CPU time per response: utime+stime of the server's whole process tree (master + workers,
  from /proc/<pid>/stat, including reaped children) over the wrk run / responses,
* memory: PSS sum over the process tree (from /proc/<pid>/smaps_rollup) after the load.

The medians over rounds go into a Markdown table; raw numbers go to results/latest.json.
Only the Python standard library is used here. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chart  # beside this file: draws results/*.json into bench/chart.svg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS_DIR = BENCH / "apps"
VENV = BENCH / ".venv"
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
POST_LUA = BENCH / "post16k.lua"
PIP_PACKAGES = ["gunicorn", "granian", "flask", "whitenoise"]

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ["rgunicorn", "gunicorn", "granian"]
# Also selectable: rgunicorn installed with pip into bench/.venv (the same crate as a Python
# extension module, run by the console script), to compare with the binary.
# rgunicorn-abi3: the same, built against the limited API (one wheel for CPython 3.10+),
# installed into bench/.venv-abi3.
# nginx: the floor for hello (the same 13 bytes from its config, no application), as the
# issue that set the CPU-per-response targets measured it; other apps are skipped for it.
OPTIONAL_SERVERS = ["rgunicorn-wheel", "rgunicorn-abi3", "nginx"]
NGINX_APPS = {"hello"}
# The static apps (static_css, static_icon) are served without Python by rgunicorn's
# --static-path-mount, Granian's --static-path-mount and nginx's sendfile, and through
# Python by WhiteNoise (apps/static_app.py) under rgunicorn and under Gunicorn (sync).
STATIC_SERVERS = ["rgunicorn", "rgunicorn-whitenoise", "gunicorn-whitenoise", "granian",
                  "nginx"]
WHITENOISE_SERVERS = {"rgunicorn-whitenoise": "rgunicorn", "gunicorn-whitenoise": "gunicorn"}
WHITENOISE_APP = "static_app:app"
# With --baseline BINARY, "rgunicorn-base" is that binary (an earlier build), run in the
# same rounds: what a change gained, measured side by side.
BASELINE = "rgunicorn-base"
# Threaded variants, in the same rounds as the plain names (so sync against threads in one
# run): each runs its base server with --variant-threads T threads per worker, whatever
# --server-threads gives the plain names. rgunicorn and Gunicorn get -k gthread --threads T
# (Gunicorn's gthread worker), Granian --blocking-threads T. Plain apps only.
THREAD_SERVERS = {"rgunicorn-threads": "rgunicorn", "gunicorn-gthread": "gunicorn",
                  "granian-threads": "granian"}
WHEEL_VENVS = {"rgunicorn-wheel": VENV, "rgunicorn-abi3": BENCH / ".venv-abi3"}


# --------------------------------------------------------------------------- apps

def _check_exact(expected: bytes):
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}"
        if body != expected:
            return f"body of {len(body)} bytes, expected {len(expected)} bytes"
        return None
    return check


def _check_flask(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"status {status}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:80]!r}"
    if data != {"message": "Hello, World!", "items": [1, 2, 3]}:
        return f"unexpected JSON {data!r}"
    return None


POST_BODY = b"a" * 16384  # must match post16k.lua


def _check_pg(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    return None if body == b'{"count": 100, "sum": 5050}' else f"unexpected {body[:80]!r}"


def _static_css() -> bytes:
    """100 KiB of stylesheet text (rules of a component library), the same on every run."""
    import random
    rnd = random.Random(22)
    parts, n = [], 0
    blocks = ["btn", "card", "nav", "modal", "form-control", "alert", "badge", "table", "tooltip"]
    props = [("color", lambda: f"#{rnd.randrange(1 << 24):06x}"),
             ("background-color", lambda: f"#{rnd.randrange(1 << 24):06x}"),
             ("margin", lambda: f"{rnd.randrange(0, 32)}px {rnd.randrange(0, 32)}px"),
             ("padding", lambda: f"{rnd.randrange(0, 4)}.{rnd.randrange(0, 10)}rem"),
             ("border-radius", lambda: f"{rnd.randrange(0, 12)}px"),
             ("font-size", lambda: f"{rnd.choice(['.75', '.875', '1', '1.25', '1.5'])}rem"),
             ("line-height", lambda: rnd.choice(["1", "1.2", "1.5", "normal"])),
             ("display", lambda: rnd.choice(["block", "flex", "inline-block", "grid", "none"])),
             ("transition", lambda: f"opacity .{rnd.randrange(1, 10)}s ease-in-out")]
    parts.append("/*! bench.css: generated by bench/bench.py for the static apps */\n")
    size = len(parts[0])
    while True:
        sel = (f".{rnd.choice(blocks)}-{rnd.choice(['primary', 'secondary', 'lg', 'sm', 'dark'])}"
               f"-{n}" + rnd.choice(["", ":hover", " > a", ":focus-visible", "::before"]))
        decls = "".join(f"  {k}: {v()};\n" for k, v in rnd.sample(props, rnd.randrange(2, 6)))
        rule = f"{sel} {{\n{decls}}}\n"
        if size + len(rule) > 102400 - 8:
            break
        parts.append(rule)
        size += len(rule)
        n += 1
    # A closing comment pads the file to exactly 100 KiB.
    return ("".join(parts) + "/*" + "-" * (102400 - size - 5) + "*/\n").encode()


def _static_icon() -> bytes:
    """2 KiB starting with PNG's signature (the bytes need not be a valid image)."""
    import random
    head = b"\x89PNG\r\n\x1a\n"
    return head + random.Random(2048).randbytes(2048 - len(head))


# Generated into a temporary folder at run time (STATIC_DIR), served under /static/.
STATIC_FILES = {"app.css": _static_css(), "icon.png": _static_icon()}
STATIC_DIR: Path | None = None


def make_static_dir() -> Path:
    """A fresh folder holding STATIC_FILES, readable by nginx's unprivileged workers,
    removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="rgunicorn-bench-static-"))
    atexit.register(shutil.rmtree, root, True)
    os.chmod(root, 0o755)
    static = root / "static"
    static.mkdir(mode=0o755)
    for name, data in STATIC_FILES.items():
        (static / name).write_bytes(data)
        os.chmod(static / name, 0o644)
    return static


APPS = {
    # name: (APP spec for the servers, URL path, HTTP method, request body, response check)
    "hello": ("apps:hello", "/", "GET", None, _check_exact(b"Hello, World!")),
    "big": ("apps:big", "/", "GET", None, _check_exact(b"x" * 65536)),
    "stream": ("apps:stream", "/", "GET", None, _check_exact(b"y" * 102400)),
    "echo": ("apps:echo", "/", "POST", POST_BODY, _check_exact(POST_BODY)),
    "flask_json": ("flask_json:app", "/json", "GET", None, _check_flask),
    # Waiting apps, for threads (only run when asked for with --apps):
    "sleep10": ("apps:sleep10", "/", "GET", None, _check_exact(b"Hello, World!")),
    "pg": ("pg_app:app", "/", "GET", None, _check_pg),
    # Static files (STATIC_SERVERS): the APP spec is the trivial app beside the static
    # route; the *-whitenoise servers run WHITENOISE_APP instead.
    "static_css": ("apps:hello", "/static/app.css", "GET", None,
                   _check_exact(STATIC_FILES["app.css"])),
    "static_icon": ("apps:hello", "/static/icon.png", "GET", None,
                    _check_exact(STATIC_FILES["icon.png"])),
}
STATIC_APPS = {"static_css", "static_icon"}
# Not in the default run: sleep10 only measures waiting, pg needs a PostgreSQL server, the
# static apps have servers of their own (bench/run --apps static_css,static_icon).
DEFAULT_APPS = ["hello", "big", "stream", "echo", "flask_json"]


def applies(server: str, app: str) -> bool:
    """Whether a server has a way to serve an app: nginx only hello and the static files,
    the WhiteNoise servers only the static files, Gunicorn no static files of its own, the
    threaded variants only the plain apps."""
    if server == "nginx":
        return app in NGINX_APPS or app in STATIC_APPS
    if server in WHITENOISE_SERVERS:
        return app in STATIC_APPS
    if server == "gunicorn" or server in THREAD_SERVERS:
        return app not in STATIC_APPS
    return True


# --------------------------------------------------------------------------- setup

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_checked(cmd: list[str], **kw) -> None:
    log("+ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    log("wrk not found: installing the Debian package")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    run_checked(sudo + ["apt-get", "update", "-qq"])
    run_checked(sudo + ["apt-get", "install", "-y", "-qq", "wrk"],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    wrk = shutil.which("wrk")
    if not wrk:
        sys.exit("wrk is still missing after apt-get install")
    return wrk


def ensure_venv(upgrade: bool) -> dict[str, str]:
    """bench/.venv made with this python3, holding gunicorn, granian, flask and whitenoise."""
    py = VENV / "bin" / "python"
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    if py.exists():
        have = subprocess.run(
            [str(py), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True).stdout.strip()
        if have != want:
            log(f"{VENV.relative_to(REPO)} has Python {have}, this python3 is {want}: recreating it")
            shutil.rmtree(VENV)
    if not py.exists():
        run_checked([sys.executable, "-m", "venv", str(VENV)])
        upgrade = True
    missing = subprocess.run([str(py), "-c", "import " + ", ".join(PIP_PACKAGES)],
                             capture_output=True).returncode != 0
    if missing or upgrade:
        run_checked([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip", *PIP_PACKAGES])
    out = subprocess.run(
        [str(py), "-c",
         "import importlib.metadata as m, json, sys;"
         "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))", *PIP_PACKAGES],
        capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def install_wheel(server: str, skip: bool) -> bool:
    """pip install . into the server's venv (bench/.venv, or bench/.venv-abi3 with Flask and
    the limited-API build), in a target folder of its own so that the binary's build and
    this one do not rebuild each other."""
    venv = WHEEL_VENVS[server]
    py = venv / "bin" / "python"
    if not skip:
        log(f"+ pip install . (into {venv.relative_to(REPO)})")
        if not py.exists():
            run_checked([sys.executable, "-m", "venv", str(venv)])
            run_checked([str(py), "-m", "pip", "install", "-q", "flask"])
        env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / "target" / server))
        if server == "rgunicorn-abi3":
            env["MATURIN_PEP517_ARGS"] = "--features abi3"
        rc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--force-reinstall",
                             "--no-deps", str(REPO)], env=env).returncode
        if rc != 0:
            log(f"pip install . failed: {server} is left out of this run")
            return False
    return (venv / "bin" / "rgunicorn").exists()


def build_rgunicorn(skip: bool) -> Path | None:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    binary = target / "release" / "rgunicorn"
    if not skip:
        log("+ cargo build --release")
        rc = subprocess.run(["cargo", "build", "--release"], cwd=REPO).returncode
        if rc != 0:
            log("cargo build --release failed: rgunicorn is left out of this run")
            return None
    if not binary.exists():
        log(f"no binary at {binary}: rgunicorn is left out of this run")
        return None
    return binary


# --------------------------------------------------------------------------- /proc

def read_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime+cutime+cstime in ticks, starttime) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    # rest[0] is field 3 (state); field n is rest[n - 3]
    ppid = int(rest[1])
    cpu = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return ppid, cpu, int(rest[19])


def process_tree(root: int) -> dict[int, tuple[int, int, int]]:
    """The root and all its descendants, found by walking the ppid of every /proc entry."""
    stats: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = read_stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    if root not in stats:
        return {}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st[0], []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        tree[pid] = stats[pid]
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_ticks(root: int) -> int:
    # cutime/cstime make the time of children that exited (and were reaped) count too.
    return sum(st[1] for st in process_tree(root).values())


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def same_memory(a: int, b: int) -> bool:
    """Whether processes a and b share one address space (`kcmp(KCMP_VM)`): rgunicorn's
    keeper is cloned with CLONE_VM, so its smaps are its worker's, not memory of its own."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        kcmp, kcmp_vm = 312, 1  # x86_64 syscall number; KCMP_VM
        return platform.machine() == "x86_64" and libc.syscall(kcmp, a, b, kcmp_vm, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def tree_pss(root: int) -> tuple[int, int]:
    """(PSS in KiB summed over the tree, number of processes). A process that shares
    another's address space counts once (and is left out of the process count)."""
    counted: list[int] = []
    for pid in sorted(process_tree(root)):
        if not any(same_memory(pid, other) for other in counted):
            counted.append(pid)
    return sum(pss_kib(pid) for pid in counted), len(counted)


# --------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


BASELINE_BINARY: Path | None = None


def server_command(server: str, app_spec: str, port: int, workers: int,
                   rgunicorn: Path | None, threads: int = 1,
                   static_dir: Path | None = None, variant_threads: int = 4) -> list[str]:
    """static_dir (a static app's): served under /static by the server's own static route
    (rgunicorn, Granian, nginx), or by WhiteNoise in Python for the *-whitenoise servers
    (WHITENOISE_APP under rgunicorn or Gunicorn; BENCH_STATIC_DIR tells it the folder).
    The THREAD_SERVERS run their base server with variant_threads threads per worker."""
    vbin = VENV / "bin"
    if server in WHITENOISE_SERVERS:
        server, app_spec, static_dir = WHITENOISE_SERVERS[server], WHITENOISE_APP, None
    # --threads N: Gunicorn switches to its gthread worker, Granian gets N blocking threads.
    gthreads = ["--threads", str(threads)] if threads > 1 else []
    variant = server in THREAD_SERVERS
    if variant:
        if static_dir:
            raise ValueError(f"{server} runs the plain apps only")
        server, threads = THREAD_SERVERS[server], variant_threads
        # -k gthread: the threaded worker even with one thread (--threads 1 alone is sync).
        gthreads = ["-k", "gthread", "--threads", str(threads)]
    if server == "rgunicorn" or server == BASELINE or server in WHEEL_VENVS:
        exe = {"rgunicorn": rgunicorn, BASELINE: BASELINE_BINARY}.get(server) \
            or WHEEL_VENVS[server] / "bin" / "rgunicorn"
        # Its default --static-path-route is /static.
        static = ["--static-path-mount", str(static_dir)] if static_dir else []
        return [str(exe), "-w", str(workers), "-b", f"{HOST}:{port}",
                "--log-level", "warning", *gthreads, *static, app_spec]
    if server == "gunicorn":
        if static_dir:
            raise ValueError("gunicorn has no static route (gunicorn-whitenoise has)")
        return [str(vbin / "gunicorn"), "-w", str(workers), "-b", f"{HOST}:{port}",
                "--log-level", "warning", "--no-control-socket", *gthreads, app_spec]
    if server == "nginx":
        return nginx_command(port, workers, static_dir)
    if server == "granian":
        # Threads: granian's defaults (runtime threads, blocking threads) unless
        # --server-threads, or granian-threads (always --blocking-threads).
        blocking = ["--blocking-threads", str(threads)] if threads > 1 or variant else []
        static = (["--static-path-mount", str(static_dir), "--static-path-route", "/static"]
                  if static_dir else [])
        return [str(vbin / "granian"), "--interface", "wsgi", "--workers", str(workers),
                "--host", HOST, "--port", str(port), "--log-level", "warning", *blocking,
                *static, app_spec]
    raise ValueError(server)


def nginx_command(port: int, workers: int, static_dir: Path | None = None) -> list[str]:
    """nginx in the foreground answering every request with hello's 13 bytes, with
    keep-alive and no access log; its files go to results/logs. With static_dir, it also
    serves that folder under /static/ (sendfile on, the two files' types declared)."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(exe).exists():
        run_checked(["apt-get", "install", "-y", "-q", "nginx-light"])
    root = LOGS / f"nginx-{port}"
    root.mkdir(parents=True, exist_ok=True)
    temps = "\n".join(f"    {d}_temp_path {root}/{d};"
                      for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    static_http = static_location = ""
    if static_dir:
        static_http = ("\n    sendfile on;\n"
                       "    types { text/css css; image/png png; }")
        static_location = f"\n        location /static/ {{ alias {static_dir}/; }}"
    (root / "nginx.conf").write_text(f"""
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
{temps}{static_http}
    server {{
        listen {HOST}:{port};
        location / {{ default_type text/plain; return 200 "Hello, World!"; }}{static_location}
    }}
}}
""")
    return [exe, "-p", str(root), "-c", str(root / "nginx.conf"), "-g", "daemon off;"]


class Postgres:
    """A throwaway PostgreSQL cluster for the pg app: Debian's server (installed if
    missing), run as the postgres user, listening only on a unix socket in a fresh
    folder, with a 100-row table. Stopped and removed by stop()."""

    def __init__(self) -> None:
        self.bin = self._find_bin() or self._install()
        self.root = Path(tempfile.mkdtemp(prefix="rgunicorn-bench-pg-"))
        self.data = self.root / "data"
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.as_pg = as_pg
        run_checked(as_pg + [str(self.bin / "initdb"), "-D", str(self.data), "-U", "bench",
                             "--auth=trust", "-E", "UTF8"], stdout=subprocess.DEVNULL)
        run_checked(as_pg + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                             str(self.root / "server.log"), "-o",
                             f"-c listen_addresses='' -k {self.root} -c max_connections=200",
                             "start"], stdout=subprocess.DEVNULL)
        self.dsn = f"host={self.root} user=bench dbname=postgres"
        run_checked(["psql", "-q", "-h", str(self.root), "-U", "bench", "-d", "postgres", "-c",
                     "CREATE TABLE bench_items (n int); "
                     "INSERT INTO bench_items SELECT generate_series(1, 100);"])

    @staticmethod
    def _find_bin() -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        return found[-1].parent if found else None

    @staticmethod
    def _install() -> Path:
        log("PostgreSQL not found: installing the Debian package")
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        run_checked(sudo + ["apt-get", "update", "-qq"])
        run_checked(sudo + ["apt-get", "install", "-y", "-qq", "postgresql"],
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = Postgres._find_bin()
        if found is None:
            sys.exit("PostgreSQL is still missing after apt-get install")
        return found

    def stop(self) -> None:
        subprocess.run(self.as_pg + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                                     "fast", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)


PG_DSN: str | None = None


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("GRANIAN_") or k in (
               "GUNICORN_CMD_ARGS", "PYTHONPATH", "PYTHONHOME", "WEB_CONCURRENCY"))}
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if PG_DSN:
        env["BENCH_PG_DSN"] = PG_DSN
    if STATIC_DIR:
        env["BENCH_STATIC_DIR"] = str(STATIC_DIR)  # for apps/static_app.py (WhiteNoise)
    return env


def http_probe(port: int, app: str, timeout: float) -> str | None:
    """One request; None when the answer is right, else what was wrong."""
    _, path, method, body, check = APPS[app]
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return check(resp.status, resp.read())
    finally:
        conn.close()


class Server:
    def __init__(self, name: str, cmd: list[str], logfile: Path):
        self.name = name
        self.cmd = cmd
        self.logfile = logfile
        self._log = open(logfile, "wb")
        self.proc = subprocess.Popen(cmd, cwd=APPS_DIR, env=server_env(),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self, port: int, app: str, deadline_s: float) -> None:
        """Poll with a deadline until the server answers the app's request correctly."""
        deadline = time.monotonic() + deadline_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode} "
                                   f"before answering")
            try:
                err = http_probe(port, app, timeout=min(2.0, deadline_s))
                if err is None:
                    return
                raise RuntimeError(f"{self.name} answered wrongly: {err}")
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {deadline_s:.0f}s ({last})")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the master we started, wait, SIGKILL fallback; then any leftover of
        the process tree we saw (same pid and start time) is killed by pid."""
        tree = process_tree(self.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log(f"  {self.name} (pid {self.pid}) ignored SIGTERM for {grace_s:.0f}s: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + grace_s
        leftovers = [(pid, st[2]) for pid, st in tree.items() if pid != self.pid]
        while leftovers and time.monotonic() < deadline:
            leftovers = [(p, s) for p, s in leftovers if (read_stat(p) or (0, 0, -1))[2] == s]
            if leftovers:
                time.sleep(0.05)
        for pid, _ in leftovers:
            log(f"  {self.name}: pid {pid} outlived its master: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()

    def log_tail(self, n: int = 15) -> str:
        self._log.flush()
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + line for line in lines[-n:])


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    def grab(pattern: str) -> re.Match | None:
        return re.search(pattern, out, re.MULTILINE)

    m = grab(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGT]?B) read")
    if not m:
        raise ValueError("no 'requests in' line in wrk output:\n" + out)
    res = {
        "requests": int(m.group(1)),
        "seconds": _ms(m.group(2) + m.group(3)) / 1e3,
        "rps": float(grab(r"^Requests/sec:\s+([\d.]+)").group(1)),
        "read_bytes": int(float(m.group(4)) * 1024 ** "BKMGT".index(m.group(5)[0])),
        "errors": 0,
        "non_2xx": 0,
    }
    for pct in ("50", "75", "90", "99"):
        p = grab(rf"^\s+{pct}%\s+(\S+)")
        res[f"p{pct}_ms"] = _ms(p.group(1)) if p else None
    s = grab(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    if s:
        res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                        map(int, s.groups())))
        res["errors"] = sum(res["socket_errors"].values())
    n = grab(r"Non-2xx or 3xx responses: (\d+)")
    if n:
        res["non_2xx"] = int(n.group(1))
    return res


def wrk_cmd(wrk: str, args, app: str, port: int, duration: int) -> list[str]:
    _, path, method, _, _ = APPS[app]
    cmd = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s",
           "--timeout", "5s", "--latency"]
    if method == "POST":
        cmd += ["-s", str(POST_LUA)]
    return cmd + [f"http://{HOST}:{port}{path}"]


def run_wrk(cmd: list[str], duration: int) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    if p.returncode != 0:
        raise RuntimeError(f"wrk exited with code {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p.stdout


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------- one run

def bench_once(server: str, app: str, rnd: int, args, wrk: str,
               rgunicorn: Path | None) -> dict:
    port = free_port()
    cmd = server_command(server, APPS[app][0], port, args.workers, rgunicorn,
                         args.server_threads, STATIC_DIR if app in STATIC_APPS else None,
                         args.variant_threads)
    logfile = LOGS / f"{app}-{server}-r{rnd}.log"
    t0 = time.monotonic()
    srv = Server(server, cmd, logfile)
    phase = "start"
    try:
        srv.wait_ready(port, app, args.start_timeout)
        startup = time.monotonic() - t0
        phase = "run"
        if args.warmup > 0:
            run_wrk(wrk_cmd(wrk, args, app, port, args.warmup), args.warmup)
        cpu0, wrk_cpu0 = tree_cpu_ticks(srv.pid), children_cpu()
        out = run_wrk(wrk_cmd(wrk, args, app, port, args.duration), args.duration)
        cpu1, wrk_cpu1 = tree_cpu_ticks(srv.pid), children_cpu()
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{server} exited with code {srv.proc.returncode} during the run")
        pss, nproc = tree_pss(srv.pid)
        res = parse_wrk(out)
        cpu_s = (cpu1 - cpu0) / CLK_TCK
        res.update({
            "server": server, "app": app, "round": rnd, "ok": True,
            "startup_s": round(startup, 3),
            "cpu_s": cpu_s,
            "cpu_us_per_resp": cpu_s / res["requests"] * 1e6 if res["requests"] else None,
            "wrk_cpu_us_per_resp": ((wrk_cpu1 - wrk_cpu0) / res["requests"] * 1e6
                                    if res["requests"] else None),
            "bytes_per_resp": res["read_bytes"] / res["requests"] if res["requests"] else None,
            "pss_kib": pss, "processes": nproc,
            "command": [c if not c.startswith(str(REPO)) else os.path.relpath(c, REPO)
                        for c in cmd],
        })
        if server in THREAD_SERVERS:
            res["threads"] = args.variant_threads
        if server in ("granian", "granian-threads"):
            # Granian warns about how many Python threads its defaults allow; keep the number.
            m = re.search(r"spawning up to (\d+) Python threads",
                          logfile.read_text(errors="replace"))
            res["granian_python_threads"] = int(m.group(1)) if m else None
        return res
    except Exception as e:  # noqa: BLE001 - a failed run is recorded, the bench goes on
        tail = srv.log_tail()
        log(f"  FAILED {server} {app} round {rnd}: {e}" + ("\n" + tail if tail else ""))
        return {"server": server, "app": app, "round": rnd, "ok": False, "phase": phase,
                "error": str(e)}
    finally:
        srv.stop()


# --------------------------------------------------------------------------- report

def med(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "—" if v is None else format(v, spec) + suffix


def summarize(results: list[dict], apps: list[str], servers: list[str]) -> dict:
    summary: dict = {}
    for app in apps:
        summary[app] = {}
        for srv in servers:
            runs = [r for r in results if r["app"] == app and r["server"] == srv]
            summary[app][srv] = {
                "rps": med(runs, "rps"), "p99_ms": med(runs, "p99_ms"),
                "cpu_us_per_resp": med(runs, "cpu_us_per_resp"),
                "pss_mib": (None if med(runs, "pss_kib") is None
                            else med(runs, "pss_kib") / 1024),
                "processes": med(runs, "processes"),
                "ok_rounds": sum(1 for r in runs if r.get("ok")),
                "rounds": len(runs),
                "errors": sum(r.get("errors", 0) + r.get("non_2xx", 0)
                              for r in runs if r.get("ok")),
            }
    return summary


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def markdown(summary: dict, apps: list[str], servers: list[str]) -> str:
    others = [s for s in servers if s != "rgunicorn"] if "rgunicorn" in servers else []
    head = ["app"] + [f"{s} req/s" for s in servers]
    head += [f"rg/{s}" for s in others]
    head += [f"{s} p99 ms" for s in servers] + [f"{s} CPU µs/resp" for s in servers]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for app in apps:
        row = [app]
        s = summary[app]
        row += [fmt(s[v]["rps"], ",.0f") for v in servers]
        row += [fmt(ratio(s["rgunicorn"]["rps"], s[o]["rps"]), ".2f", "×") for o in others]
        row += [fmt(s[v]["p99_ms"], ".2f") for v in servers]
        row += [fmt(s[v]["cpu_us_per_resp"], ".1f") for v in servers]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Memory: PSS of master + workers after the load, MiB (processes in the tree)", "",
              "| app | " + " | ".join(servers) + " |",
              "|---|" + "|".join(["---:"] * len(servers)) + "|"]
    for app in apps:
        cells = []
        for v in servers:
            c = summary[app][v]
            cells.append("—" if c["pss_mib"] is None
                         else f"{c['pss_mib']:.1f} ({c['processes']:.0f})")
        lines.append(f"| {app} | " + " | ".join(cells) + " |")
    notes = [n for app in apps for v in servers for n in failure_notes(app, v, summary[app][v])]
    if notes:
        lines += [""] + ["- " + n for n in notes]
    return "\n".join(lines)


def failure_notes(app: str, server: str, c: dict) -> list[str]:
    """What went wrong in a server's rounds on an app, for the notes under a table."""
    notes = []
    if c["ok_rounds"] < c["rounds"]:
        notes.append(f"{app}/{server}: {c['rounds'] - c['ok_rounds']} of {c['rounds']} "
                     f"rounds failed (see results/logs/)")
    if c["errors"]:
        notes.append(f"{app}/{server}: {c['errors']} wrk socket errors or non-2xx responses")
    return notes


def requirement_checks(summary: dict, apps: list[str], servers: list[str]) -> list[tuple[bool, str]]:
    """The targets from the issue, checked against the medians."""
    if "rgunicorn" not in servers:
        return []
    checks = []
    rg = {a: summary[a]["rgunicorn"] for a in apps}
    if "gunicorn" in servers and "hello" in apps:
        r = ratio(rg["hello"]["rps"], summary["hello"]["gunicorn"]["rps"])
        checks.append((r is not None and r >= 5.0,
                       f"hello: rgunicorn >= 5x gunicorn req/s ({fmt(r, '.2f', 'x')})"))
    # The threaded variants have targets of their own (thread_checks).
    for other in [s for s in servers if s != "rgunicorn" and s not in THREAD_SERVERS]:
        for a in apps:
            o = summary[a][other]
            if other == "granian":
                r = ratio(rg[a]["rps"], o["rps"])
                checks.append((r is not None and r > 1.0,
                               f"{a}: rgunicorn req/s > granian ({fmt(r, '.2f', 'x')})"))
            ok = rg[a]["p99_ms"] is not None and o["p99_ms"] is not None \
                and rg[a]["p99_ms"] < o["p99_ms"]
            checks.append((ok, f"{a}: rgunicorn p99 < {other} "
                               f"({fmt(rg[a]['p99_ms'], '.2f')} vs {fmt(o['p99_ms'], '.2f')} ms)"))
    if "gunicorn" in servers:
        for a in apps:
            m_rg, m_gu = rg[a]["pss_mib"], summary[a]["gunicorn"]["pss_mib"]
            ok = m_rg is not None and m_gu is not None and m_rg <= m_gu
            checks.append((ok, f"{a}: rgunicorn PSS <= gunicorn "
                               f"({fmt(m_rg, '.1f')} vs {fmt(m_gu, '.1f')} MiB)"))
    return checks


def threads_markdown(summary: dict, apps: list[str], app_servers: dict, threads: int) -> str:
    """One row per plain app that rgunicorn-threads ran: its numbers, its CPU per response
    and req/s against the sync rgunicorn's, its req/s against the other threaded servers'."""
    rt = "rgunicorn-threads"
    apps = [a for a in apps if rt in app_servers[a]]
    peers = [s for s in ("rgunicorn", "gunicorn-gthread", "granian-threads")
             if any(s in app_servers[a] for a in apps)]
    head = ["app", f"{rt} req/s", "p99 ms", "CPU µs/resp"]
    if "rgunicorn" in peers:
        head += ["CPU ÷ rgunicorn's", "req/s ÷ rgunicorn's"]
    head += [f"req/s ÷ {s}'s" for s in peers if s != "rgunicorn"]
    if "gunicorn-gthread" in peers:
        head.append("p99 ÷ gunicorn-gthread's")
    lines = [f"Threads: {rt} ({threads} threads per worker) against the same app's rows", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for app in apps:
        s = summary[app]
        t = s[rt]
        row = [app, fmt(t["rps"], ",.0f"), fmt(t["p99_ms"], ".2f"),
               fmt(t["cpu_us_per_resp"], ".1f")]
        if "rgunicorn" in peers:
            row += [fmt(ratio(t["cpu_us_per_resp"], s["rgunicorn"]["cpu_us_per_resp"]), ".2f", "×"),
                    fmt(ratio(t["rps"], s["rgunicorn"]["rps"]), ".2f", "×")]
        row += [fmt(ratio(t["rps"], s[v]["rps"]), ".2f", "×") for v in peers if v != "rgunicorn"]
        if "gunicorn-gthread" in peers:
            row.append(fmt(ratio(t["p99_ms"], s["gunicorn-gthread"]["p99_ms"]), ".2f", "×"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def thread_checks(summary: dict, apps: list[str], app_servers: dict, workers: int,
                  threads: int) -> list[tuple[bool, str]]:
    """The threaded worker's targets, each listed when both its sides ran for the app:
    hello and echo within 10 % of the sync worker's CPU per response; pg at or above the
    sync worker's req/s with a p99 below Gunicorn gthread's; sleep10 at 95 % or more of
    workers x threads / 10 ms."""
    rt = "rgunicorn-threads"
    checks = []
    for a in apps:
        ran = app_servers[a]
        if rt not in ran:
            continue
        t = summary[a][rt]
        if a in ("hello", "echo") and "rgunicorn" in ran:
            r = ratio(t["cpu_us_per_resp"], summary[a]["rgunicorn"]["cpu_us_per_resp"])
            checks.append((r is not None and r <= 1.10,
                           f"{a}: {rt} CPU/response <= 1.10x rgunicorn's ({fmt(r, '.2f', 'x')})"))
        if a == "pg" and "rgunicorn" in ran:
            r = ratio(t["rps"], summary[a]["rgunicorn"]["rps"])
            checks.append((r is not None and r >= 1.0,
                           f"pg: {rt} req/s >= rgunicorn ({fmt(r, '.2f', 'x')})"))
        if a == "pg" and "gunicorn-gthread" in ran:
            mine, theirs = t["p99_ms"], summary[a]["gunicorn-gthread"]["p99_ms"]
            ok = mine is not None and theirs is not None and mine < theirs
            checks.append((ok, f"pg: {rt} p99 < gunicorn-gthread "
                               f"({fmt(mine, '.2f')} vs {fmt(theirs, '.2f')} ms)"))
        if a == "sleep10":
            ideal = workers * threads / 0.010
            r = ratio(t["rps"], ideal)
            checks.append((r is not None and r >= 0.95,
                           f"sleep10: {rt} req/s >= 0.95x {workers} workers x {threads} "
                           f"threads / 10 ms ({fmt(t['rps'], ',.0f')} of {ideal:,.0f}: "
                           f"{fmt(r, '.2f', 'x')})"))
    return checks


def static_markdown(summary: dict, apps: list[str], app_servers: dict) -> str:
    """One row per static app and server: req/s, CPU per response, and the two ratios the
    issue sets targets on: CPU per response against nginx's, req/s against Granian's."""
    lines = ["Static files (one row per server; ratios against the same app's nginx and "
             "granian rows)", "",
             "| app | server | req/s | p99 ms | CPU µs/resp | CPU ÷ nginx's | "
             "req/s ÷ granian's | PSS MiB (procs) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for app in apps:
        s = summary[app]
        ng = s.get("nginx", {}).get("cpu_us_per_resp")
        gr = s.get("granian", {}).get("rps")
        for v in app_servers[app]:
            c = s[v]
            mem = "—" if c["pss_mib"] is None else f"{c['pss_mib']:.1f} ({c['processes']:.0f})"
            lines.append(f"| {app} | {v} | {fmt(c['rps'], ',.0f')} | {fmt(c['p99_ms'], '.2f')} | "
                         f"{fmt(c['cpu_us_per_resp'], '.1f')} | "
                         f"{fmt(ratio(c['cpu_us_per_resp'], ng), '.2f', '×')} | "
                         f"{fmt(ratio(c['rps'], gr), '.2f', '×')} | {mem} |")
            notes += failure_notes(app, v, c)
    if notes:
        lines += [""] + ["- " + n for n in notes]
    return "\n".join(lines)


def static_checks(summary: dict, apps: list[str], app_servers: dict) -> list[tuple[bool, str]]:
    """The static-file targets: rgunicorn's CPU per response within 1.2x nginx's, its
    req/s at or above Granian's."""
    checks = []
    for a in apps:
        if "rgunicorn" not in app_servers[a]:
            continue
        rg = summary[a]["rgunicorn"]
        if "nginx" in app_servers[a]:
            r = ratio(rg["cpu_us_per_resp"], summary[a]["nginx"]["cpu_us_per_resp"])
            checks.append((r is not None and r <= 1.2,
                           f"{a}: rgunicorn CPU/response <= 1.2x nginx ({fmt(r, '.2f', 'x')})"))
        if "granian" in app_servers[a]:
            r = ratio(rg["rps"], summary[a]["granian"]["rps"])
            checks.append((r is not None and r >= 1.0,
                           f"{a}: rgunicorn req/s >= granian ({fmt(r, '.2f', 'x')})"))
    return checks


# --------------------------------------------------------------------------- main

def parse_list(text: str, allowed, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {','.join(bad) or '(none)'}; choose from {','.join(allowed)}")
    return items


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds of each measured wrk run")
    ap.add_argument("--warmup", type=int, default=1,
                    help="seconds of wrk before measuring (0: none)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per app")
    ap.add_argument("--apps", default=",".join(DEFAULT_APPS),
                    type=lambda t: parse_list(t, list(APPS), "app"),
                    help="comma-separated, from " + ",".join(APPS))
    ap.add_argument("--servers", default=argparse.SUPPRESS,
                    type=lambda t: parse_list(t, SERVERS + OPTIONAL_SERVERS +
                                              list(THREAD_SERVERS) +
                                              list(WHITENOISE_SERVERS), "server"),
                    help=f"default: {','.join(SERVERS)} for the plain apps, "
                         f"{','.join(STATIC_SERVERS)} for the static ones; each app runs "
                         f"the servers that can serve it")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--server-threads", type=int, default=1,
                    help="threads per worker (rgunicorn and Gunicorn: --threads, which makes "
                         "Gunicorn's worker gthread; Granian: --blocking-threads)")
    ap.add_argument("--variant-threads", type=int, default=4, metavar="T",
                    help="threads per worker of " + ", ".join(THREAD_SERVERS) +
                         " (rgunicorn and Gunicorn: -k gthread --threads T; Granian: "
                         "--blocking-threads T), which --servers can add beside the plain ones")
    ap.add_argument("--connections", type=int, default=32, help="wrk -c")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t")
    ap.add_argument("--start-timeout", type=float, default=30.0,
                    help="seconds a server gets to answer its first request")
    ap.add_argument("--no-build", action="store_true",
                    help="use the existing target/release/rgunicorn, skip cargo build")
    ap.add_argument("--upgrade", action="store_true",
                    help="pip install --upgrade " + ", ".join(PIP_PACKAGES) + " in bench/.venv")
    ap.add_argument("--baseline", type=Path, metavar="BINARY",
                    help="also run this rgunicorn binary (an earlier build) as rgunicorn-base")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 when rgunicorn misses a target from the issue")
    args = ap.parse_args()
    args.servers = getattr(args, "servers", None)  # None: each app's default servers
    if args.variant_threads < 1:
        ap.error("--variant-threads must be at least 1")

    started = time.monotonic()
    wrk = ensure_wrk()
    versions = ensure_venv(args.upgrade)
    if args.servers is None:
        defaults = [STATIC_SERVERS if a in STATIC_APPS else SERVERS for a in args.apps]
        servers = list(dict.fromkeys(s for d in defaults for s in d))
    else:
        servers = list(args.servers)
    rgunicorn = None
    uses_binary = ("rgunicorn", "rgunicorn-whitenoise", "rgunicorn-threads")
    if any(s in servers for s in uses_binary):
        rgunicorn = build_rgunicorn(args.no_build)
        if rgunicorn is None:
            servers = [s for s in servers if s not in uses_binary]
        else:
            v = subprocess.run([str(rgunicorn), "--version"], capture_output=True, text=True,
                               timeout=30)
            versions["rgunicorn"] = (v.stdout or v.stderr).strip() or f"exit {v.returncode}"
    if args.baseline:
        global BASELINE_BINARY
        BASELINE_BINARY = args.baseline.resolve()
        servers.append(BASELINE)
    for wheel in [s for s in servers if s in WHEEL_VENVS]:
        if not install_wheel(wheel, args.no_build):
            servers.remove(wheel)
    # The servers each app runs: those that can serve it, among the ones asked for (or,
    # without --servers, among the app's defaults; an earlier build runs for every app).
    app_servers = {
        app: [s for s in servers if applies(s, app) and (
            args.servers is not None or s == BASELINE
            or s in (STATIC_SERVERS if app in STATIC_APPS else SERVERS))]
        for app in args.apps}
    for app, ran in app_servers.items():
        if not ran:
            log(f"no server asked for can serve {app}: it is left out")
    servers = [s for s in servers if any(s in ran for ran in app_servers.values())]
    if not servers:
        log("no server left to benchmark")
        return 1
    versions["wrk"] = subprocess.run([wrk, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout \
        .splitlines()[0:1]
    versions["wrk"] = versions["wrk"][0].split(" [")[0].removeprefix("wrk ") \
        if versions["wrk"] else "?"
    versions["python"] = platform.python_version()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if "nginx" in servers and Path(nginx).exists():  # else installed at its first start
        v = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=30)
        versions["nginx"] = (v.stderr or v.stdout).strip().rpartition("/")[2]
    LOGS.mkdir(parents=True, exist_ok=True)
    if STATIC_APPS & set(args.apps):
        global STATIC_DIR
        STATIC_DIR = make_static_dir()
    if "pg" in args.apps:
        global PG_DSN
        py = VENV / "bin" / "python"
        if subprocess.run([str(py), "-c", "import psycopg"], capture_output=True).returncode:
            run_checked([str(py), "-m", "pip", "install", "-q", "psycopg[binary]"])
        postgres = Postgres()
        atexit.register(postgres.stop)
        PG_DSN = postgres.dsn
        versions["postgresql"] = postgres.bin.parent.name

    runs_total = args.rounds * sum(len(ran) for ran in app_servers.values())
    log(f"{runs_total} runs: apps {','.join(args.apps)}; servers {','.join(servers)}; "
        f"{args.rounds} rounds x {args.duration:g}s (+{args.warmup:g}s warm-up); "
        f"{args.workers} workers x {args.server_threads} threads"
        + (f" ({args.variant_threads} for {','.join(s for s in servers if s in THREAD_SERVERS)})"
           if any(s in THREAD_SERVERS for s in servers) else "")
        + f"; wrk -t{args.threads} -c{args.connections}")
    results: list[dict] = []
    width = max(9, *map(len, servers))
    for app in args.apps:
        no_start: set[str] = set()  # servers that could not start this app: not retried
        for rnd in range(1, args.rounds + 1):
            for server in app_servers[app]:
                if server in no_start:
                    results.append({"server": server, "app": app, "round": rnd, "ok": False,
                                    "phase": "skipped", "error": "did not start in round 1"})
                    continue
                r = bench_once(server, app, rnd, args, wrk, rgunicorn)
                if not r["ok"] and r["phase"] == "start" and rnd == 1:
                    no_start.add(server)
                results.append(r)
                if r["ok"]:
                    err = f"  errors {r['errors'] + r['non_2xx']}" if r["errors"] or r["non_2xx"] else ""
                    log(f"  {app:<11} r{rnd} {server:<{width}} {r['rps']:>10,.0f} req/s  "
                        f"p99 {r['p99_ms']:7.2f} ms  {r['cpu_us_per_resp']:7.1f} µs/resp  "
                        f"PSS {r['pss_kib'] / 1024:6.1f} MiB ({r['processes']} procs){err}")

    summary = summarize(results, args.apps, servers)
    plain_apps = [a for a in args.apps if a not in STATIC_APPS]
    static_apps = [a for a in args.apps if a in STATIC_APPS]
    plain_servers = [s for s in servers if any(s in app_servers[a] for a in plain_apps)]
    static_servers = [s for s in servers if any(s in app_servers[a] for a in static_apps)]
    tables = []
    if plain_apps and plain_servers:
        tables.append(markdown(summary, plain_apps, plain_servers))
    if any("rgunicorn-threads" in app_servers[a] for a in plain_apps):
        tables.append(threads_markdown(summary, plain_apps, app_servers, args.variant_threads))
    if static_apps and static_servers:
        tables.append(static_markdown(summary, static_apps, app_servers))
    table = "\n\n".join(tables)
    checks = requirement_checks(summary, plain_apps, plain_servers) if plain_apps else []
    checks += thread_checks(summary, plain_apps, app_servers, args.workers,
                            args.variant_threads)
    checks += static_checks(summary, static_apps, app_servers)
    elapsed = time.monotonic() - started

    header = [
        f"## rgunicorn benchmark — {args.workers} workers, wrk -t{args.threads} "
        f"-c{args.connections} keep-alive, {args.duration:g}s x {args.rounds} rounds (median)",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"Machine: {os.cpu_count()} CPUs, Linux {platform.release()}",
    ]
    if "granian" in servers:
        threads = sorted({r["granian_python_threads"] for r in results
                          if r.get("ok") and r["server"] == "granian"
                          and r.get("granian_python_threads")})
        header.append("Granian: --interface wsgi with its default threads (1 runtime thread, "
                      "blocking threads = backpressure/2"
                      + (f": it allows up to {', '.join(map(str, threads))} Python threads"
                         if threads else "") + ") and its default keep-alive.")
    if STATIC_DIR:
        header.append(
            "Static files: " + ", ".join(f"{n} {len(b):,} B" for n, b in STATIC_FILES.items())
            + " in a temporary folder; rgunicorn: --static-path-mount (route /static), "
              "granian: --static-path-mount/--static-path-route /static (both beside a "
              "trivial app), nginx: alias + sendfile, *-whitenoise: "
              "WhiteNoise(app, root=DIR, prefix=\"/static/\") (apps/static_app.py).")
    if "gunicorn" in servers and args.server_threads > 1:
        header.append(f"Gunicorn: gthread worker (--threads {args.server_threads}); "
                      f"Granian: --blocking-threads {args.server_threads}.")
    elif "gunicorn" in servers or "gunicorn-whitenoise" in servers:
        header.append("Gunicorn: default sync worker (closes the connection after each "
                      "response, so wrk reconnects).")
    variants = [s for s in servers if s in THREAD_SERVERS]
    if variants:
        t = args.variant_threads
        how = {"rgunicorn-threads": f"rgunicorn -k gthread --threads {t}",
               "gunicorn-gthread": f"gunicorn -k gthread --threads {t}",
               "granian-threads": f"granian --blocking-threads {t}"}
        header.append(f"Threaded variants ({t} threads per worker): "
                      + "; ".join(f"{s}: {how[s]}" for s in variants) + ".")
    report = "\n".join(header) + "\n\n" + table
    if checks:
        report += "\n\nTargets from the issue:\n\n" + "\n".join(
            f"- [{'x' if ok else ' '}] {text}" for ok, text in checks)
    print(report)
    log(f"\nwall time {elapsed:.0f}s; raw numbers in "
        f"{(RESULTS / 'latest.json').relative_to(REPO)}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(report + "\n")
    (RESULTS / "latest.json").write_text(json.dumps({
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "servers": servers, "app_servers": app_servers, "versions": versions,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "wall_time_s": round(elapsed, 1),
        "summary": summary,
        "checks": [{"ok": ok, "check": text} for ok, text in checks],
        "runs": results,
    }, indent=2) + "\n")
    chart.write()
    if args.check and checks and not all(ok for ok, _ in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
