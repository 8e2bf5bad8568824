#!/usr/bin/env python3
"""Connection-lifecycle scenarios, rgunicorn (release build) vs Gunicorn (sync), in one run.

Where bench.py measures speed, this measures what production traffic meets around it:
keep-alive clients across a slow request, HUP, --max-requests recycling and a worker timeout
(requests lost), a request waiting behind another worker's app call (head-of-line delay),
clients that do not read (a third client's latency), read-ahead floods (worker memory), a
head trickled in small pieces (worker CPU), descriptor exhaustion (recovery time), bodies
that never come (a bystander's latency, sync and threads), a recycle with a half-sent head
(the next request's wait), hand-offs at the descriptor limit (requests lost), a threaded
worker timed out (what its hung clients get, requests lost) and workers that crash
(SIGKILL, SIGSEGV: requests lost), and workers recycled on memory (`max_rss`: rgunicorn's
--workers-max-rss against Granian's, which it is taken from; Gunicorn has none).

Usage: bench/lifecycle.py [--servers rgunicorn,gunicorn,granian] [--only NAME,...] [--baseline BINARY]
(--baseline adds a server "baseline": another rgunicorn binary, e.g. an older build. Granian
runs only the scenarios that say so, by default max_rss.)
Run bench/run once first: it builds target/release/rgunicorn and bench/.venv (gunicorn).
Standard library only; every server listens on 127.0.0.1 and every loop is bounded.
"""

import argparse
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, "apps")
VENV = os.path.join(HERE, ".venv")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
APP = "lifecycle:app"
BASELINE = [None]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server under test: started fresh, its master and workers found by pid."""

    def __init__(self, kind, args, nofile=None):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="lifecycle-", suffix=".log")
        common = ["-b", "127.0.0.1:%d" % self.port, "--log-level", "info"] + args + [APP]
        if kind == "granian":
            # Granian's own flags: the scenario passes them (its -w as --workers).
            cmd = [os.path.join(VENV, "bin", "granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "info"] + args + [APP]
        elif kind == "rgunicorn":
            cmd = [os.path.join(TARGET, "release", "rgunicorn")] + common
        elif kind == "baseline":
            cmd = [BASELINE[0]] + common
        else:
            cmd = [os.path.join(VENV, "bin", "gunicorn"), "--no-control-socket"] + common
        env = dict(os.environ, VIRTUAL_ENV=VENV, PATH=os.path.join(VENV, "bin") + ":" + os.environ["PATH"])
        limit = None
        if nofile:
            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(cmd, cwd=APPS, env=env, stdout=self.log, stderr=self.log,
                                     preexec_fn=limit)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if get(self.port, "/pid", timeout=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("%s did not start: %s" % (kind, self.logs()))

    def workers(self):
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        stat = f.read()
                    fields = stat.rsplit(")", 1)[1].split()
                    # rgunicorn's keepers are the master's children only between their
                    # worker's death and the master ending them.
                    keeper = "(rgunicorn-keep)" in stat
                    if int(fields[1]) == self.proc.pid and not keeper and fields[0] != "Z":
                        pids.append(int(entry))
                except OSError:
                    pass
        return sorted(pids)

    def logs(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def read_response(sock):
    """(status, headers text, body) of one Content-Length response; raises on EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed after %d bytes" % len(buf))
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    text = head.decode("latin-1").lower()
    length = int(re.search(r"content-length:\s*(\d+)", text).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return int(text.split()[1]), text, body


def get(port, path, timeout=30, sock=None):
    own = sock is None
    if own:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        return read_response(sock)
    finally:
        if own:
            sock.close()


class KeepAliveClients:
    """Clients on persistent connections POSTing back to back; a request that was sent and
    got no complete, correct answer is lost. Reconnects only when told `Connection: close`
    (or after a loss)."""

    def __init__(self, port, n, limit_s=60, path="/echo"):
        self.port, self.ok, self.lost, self.stop = port, 0, [], False
        self.path = path.encode()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i, limit_s)) for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, c, limit_s):
        sock, end = None, time.time() + limit_s
        for i in range(100000):
            if self.stop or time.time() > end:
                break
            body = b"client %d request %d" % (c, i)
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                             % (self.path, len(body), body))
                status, head, got = read_response(sock)
                if status != 200 or got != body:
                    raise ConnectionError("status %d" % status)
                with self.lock:
                    self.ok += 1
                if "connection: close" in head:
                    sock.close()
                    sock = None
            except OSError as e:
                with self.lock:
                    self.lost.append("%s: %s" % (type(e).__name__, e))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def total(self):
        with self.lock:
            return self.ok + len(self.lost)

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()
        return {"answered": self.ok, "lost": len(self.lost), "examples": self.lost[:3]}


def wait_total(load, n, limit=30):
    end = time.time() + limit
    target = load.total() + n
    while load.total() < target and time.time() < end:
        time.sleep(0.02)


def under_load(kind, args, clients, during):
    """Starts a server with `args`, runs `clients` keep-alive clients, calls `during(server,
    load)` (which returns extra figures or None), and reports answered/lost."""
    s = Server(kind, args)
    try:
        load = KeepAliveClients(s.port, clients)
        extra = during(s, load) or {}
        result = load.finish()
        result.update(extra)
        return result
    finally:
        s.stop()


def slow_request(kind):
    """10 keep-alive clients (-w 2, --keep-alive 2) while one request takes 5 s."""
    def during(s, load):
        wait_total(load, 100)
        get(s.port, "/sleep?s=5")
        wait_total(load, 100)
    return under_load(kind, ["-w", "2", "--keep-alive", "2"], 10, during)


def hup(kind):
    """20 keep-alive clients across a HUP (-w 2)."""
    def during(s, load):
        wait_total(load, 500)
        before = s.workers()
        s.proc.send_signal(signal.SIGHUP)
        end = time.time() + 30
        while time.time() < end and set(s.workers()) & set(before):
            time.sleep(0.05)
        wait_total(load, 500)
    return under_load(kind, ["-w", "2"], 20, during)


def max_requests(kind):
    """4 keep-alive clients, 600 requests, --max-requests 50 (-w 2)."""
    def during(s, load):
        wait_total(load, 600, limit=60)
    return under_load(kind, ["-w", "2", "--max-requests", "50"], 4, during)


def timeout_kill(kind):
    """16 keep-alive clients while a worker is killed for a timeout (-w 2 -t 2)."""
    def during(s, load):
        wait_total(load, 200)
        try:
            status = get(s.port, "/sleep?s=10")[0]
        except OSError as e:
            status = str(e)
        wait_total(load, 200)
        return {"hung_request": status}
    return under_load(kind, ["-w", "2", "-t", "2"], 16, during)


def head_of_line(kind):
    """Connection A idle on worker X; a 1 s request on X; A sends 0.5 s into it (-w 2).
    The figure is A's wait for its answer (a reconnect is allowed when the server closed A)."""
    s = Server(kind, ["-w", "2"])
    try:
        conns = []
        for _ in range(40):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            _, head, body = get(s.port, "/pid", sock=c)
            same = [x for x in conns if x[1] == body]
            if same and "connection: close" not in head:
                a, b = same[0][0], c
                break
            conns.append((c, body))
        else:
            # Gunicorn's sync worker closes every connection: A is a new connection.
            a, b = None, socket.create_connection(("127.0.0.1", s.port), timeout=30)
        b.sendall(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # the scenario's own timing: A sends 0.5 s into B's call
        sent = time.time()
        if a is None:
            a = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        get(s.port, "/pid", sock=a)
        waited = time.time() - sent
        read_response(b)
        return {"delay_ms": round(waited * 1000, 1)}
    finally:
        s.stop()


def small_window_client(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(30)
    return sock


def slow_readers(kind):
    """-w 1 -t 6: one client does not read a 512 KiB response, another a 50 MB file; the
    figure is a third client's latency."""
    s = Server(kind, ["-w", "1", "-t", "6"])
    with tempfile.NamedTemporaryFile() as f:
        f.truncate(50_000_000)
        try:
            big = small_window_client(s.port)
            big.sendall(b"GET /big?size=524288 HTTP/1.1\r\nHost: x\r\n\r\n")
            huge = small_window_client(s.port)
            huge.sendall(b"GET /file?path=%s HTTP/1.1\r\nHost: x\r\n\r\n" % f.name.encode())
            for c in (big, huge):
                c.recv(1, socket.MSG_PEEK)
            start = time.time()
            get(s.port, "/pid")
            return {"third_client_ms": round((time.time() - start) * 1000, 1)}
        finally:
            s.stop()


def rss_peak_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def flood(port, n, data, seconds=5):
    socks = []
    for _ in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        c.setblocking(False)
        socks.append([c, 0])
    end = time.time() + seconds
    while time.time() < end and any(sent < len(data) for _, sent in socks):
        for entry in socks:
            if entry[1] < len(data):
                try:
                    entry[1] += entry[0].send(data[entry[1]:])
                except BlockingIOError:
                    pass
                except OSError:
                    entry[1] = len(data)
    return [c for c, _ in socks]


def normal_requests(port, seconds):
    """Sends ordinary requests one after another for `seconds`; the slowest one's time."""
    slowest, end = 0.0, time.time() + seconds
    while time.time() < end:
        t = time.time()
        try:
            get(port, "/pid", timeout=10)
        except OSError:
            pass
        slowest = max(slowest, time.time() - t)
    return slowest


def read_ahead(kind):
    """-w 1: 300 connections push 1 MB of pipelined 1 KiB requests and never read, then 100
    send 784 KB heads that never end; normal requests meanwhile. Worker peak RSS and the
    slowest normal request."""
    s = Server(kind, ["-w", "1"])
    try:
        worker = s.workers()[0]
        request = b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"x" * 985 + b"\r\n\r\n"
        held = flood(s.port, 300, request * 1024)
        slowest = normal_requests(s.port, 3)
        line = b"X-Long: " + b"y" * 7990 + b"\r\n"
        held += flood(s.port, 100, b"GET / HTTP/1.1\r\nHost: x\r\n" + line * 98)
        slowest = max(slowest, normal_requests(s.port, 3))
        peak = rss_peak_mib(worker)
        for c in held:
            c.close()
        return {"worker_peak_rss_mib": peak, "slowest_normal_ms": round(slowest * 1000, 1)}
    finally:
        s.stop()


def cpu_seconds(pid):
    """CPU time of `pid` in seconds, to the nanosecond (schedstat), not to the 10 ms tick."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0]) / 1e9


def trickled_head(kind):
    """-w 1: a 784 KB head (98 lines of 8000 bytes) sent in 256-byte pieces; the worker's
    CPU time while it arrives."""
    s = Server(kind, ["-w", "1"])
    try:
        worker = s.workers()[0]
        line = b"X-Long: " + b"y" * 7990 + b"\r\n"
        head = b"GET /pid HTTP/1.1\r\nHost: x\r\n" + line * 98
        c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        before = cpu_seconds(worker)
        for i in range(0, len(head), 256):
            c.sendall(head[i:i + 256])
            time.sleep(0.0002)  # separate arrivals, as a slow client's
        c.sendall(b"\r\n")
        status = read_response(c)[0]
        spent = cpu_seconds(worker) - before
        return {"worker_cpu_ms": round(spent * 1000, 1), "pieces": -(-len(head) // 256),
                "status": status}
    finally:
        s.stop()


def fd_exhaustion(kind):
    """-w 1: the worker's descriptor limit is set to what it uses, a client connects and
    sends, then the limit is raised again: how long until that client is answered."""
    s = Server(kind, ["-w", "1"])
    try:
        worker = s.workers()[0]
        used = len(os.listdir("/proc/%d/fd" % worker))
        highest = max(int(x) for x in os.listdir("/proc/%d/fd" % worker))
        old = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (min(used, highest + 1), old[1]))
        c = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        c.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(2)  # the scenario's own timing: 2 s without descriptors
        resource.prlimit(worker, resource.RLIMIT_NOFILE, old)
        freed = time.time()
        try:
            read_response(c)
            return {"answered_after_free_ms": round((time.time() - freed) * 1000, 1)}
        except OSError as e:
            return {"answered_after_free_ms": None, "error": str(e)}
    finally:
        s.stop()


def stalled_bodies(kind, threads):
    """-w 1 -t 10 (--threads 2): 3 clients POST 3 of 100,000 body bytes to a route that does
    not read the body, and never send the rest; then a bystander's GET. Its latency."""
    args = ["-w", "1", "-t", "10"] + (["--threads", "2"] if threads else [])
    s = Server(kind, args)
    held = []
    try:
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=15)
            c.sendall(b"POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc")
            held.append(c)
        time.sleep(0.3)  # the scenario's own timing: the stalled requests arrive first
        start = time.time()
        try:
            get(s.port, "/pid", timeout=15)
            waited = round((time.time() - start) * 1000, 1)
        except OSError as e:
            waited = "no answer in 15 s (%s)" % type(e).__name__
        return {"bystander_ms": waited}
    finally:
        for c in held:
            c.close()
        s.stop()


def slow_body(kind):
    return stalled_bodies(kind, threads=False)


def slow_body_threads(kind):
    return stalled_bodies(kind, threads=True)


def retire_partial_head(kind):
    """-w 1 -t 8 --max-requests 2: a client has sent half a head when the worker is recycled.
    The figures: how long the next request waits, and whether the half-sent request is
    answered once its head is complete."""
    s = Server(kind, ["-w", "1", "-t", "8", "--max-requests", "2"])
    try:
        partial = socket.create_connection(("127.0.0.1", s.port), timeout=15)
        partial.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.1)  # the scenario's own timing: the worker reads the half head
        get(s.port, "/pid")
        get(s.port, "/pid")
        start = time.time()
        try:
            get(s.port, "/pid", timeout=15)
            waited = round((time.time() - start) * 1000, 1)
        except OSError as e:
            waited = "no answer (%s)" % type(e).__name__
        partial.sendall(b"\r\n")
        try:
            answered = read_response(partial)[0]
        except OSError as e:
            answered = "lost (%s)" % type(e).__name__
        partial.close()
        return {"next_request_ms": waited, "half_sent_request": answered}
    finally:
        s.stop()


def handoff_fd_limit(kind):
    """ulimit -n 256, -w 2: 1,000 clients each send a 30 ms request then a quick one on the
    same connection (reconnecting when told to close); requests that got no answer."""
    s = Server(kind, ["-w", "2"], nofile=256)
    lost, lock = [], threading.Lock()

    def client(i):
        sock = None
        for path in ("/sleep?s=0.03", "/pid"):
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
                status, head, _ = read_response(sock)
                if status != 200:
                    raise ConnectionError("status %d" % status)
                if "connection: close" in head:
                    sock.close()
                    sock = None
            except OSError as e:
                with lock:
                    lost.append("%s: %s" % (type(e).__name__, e))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(1000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        dropped = s.logs().count("Dropping a connection handed over")
        return {"requests": 2000, "lost": len(lost), "dropped_log_lines": dropped,
                "examples": lost[:3]}
    finally:
        s.stop()


def threads_timeout(kind):
    """-w 1 --threads 2 -t 3: both threads wedge (30 s requests) while 4 keep-alive clients
    POST; what the hung clients get, and requests lost."""
    s = Server(kind, ["-w", "1", "--threads", "2", "-t", "3"])
    hung = []
    try:
        load = KeepAliveClients(s.port, 4)
        wait_total(load, 100)
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=20)
            c.sendall(b"GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
            hung.append(c)
        got = []
        for c in hung:
            try:
                got.append(read_response(c)[0])
            except OSError as e:
                got.append("closed" if isinstance(e, ConnectionError) else type(e).__name__)
        wait_total(load, 100)
        result = load.finish()
        result["hung_clients_got"] = got
        return result
    finally:
        for c in hung:
            c.close()
        s.stop()


def worker_crashes(kind):
    """-w 4, 32 keep-alive clients POSTing while 10 workers are killed in turn: 5 with
    SIGKILL (the OOM killer's signal), 5 with SIGSEGV (a C extension's crash)."""
    def during(s, load):
        wait_total(load, 500)
        for i in range(10):
            workers = s.workers()
            if not workers:
                break
            victim = workers[0]
            os.kill(victim, signal.SIGKILL if i % 2 == 0 else signal.SIGSEGV)
            end = time.time() + 10
            while time.time() < end and (victim in s.workers() or len(s.workers()) < 4):
                time.sleep(0.02)
            wait_total(load, 300)
        return {"deaths": 10}
    return under_load(kind, ["-w", "4"], 32, during)


def max_rss(kind):
    """-w 2, a limit of 120 MiB sampled every second (--rss-sample-interval 1, both), 50
    keep-alive clients POSTing for 20 s to an app that keeps 2 MiB per request (after 5 ms
    of work). Figures: requests lost, recycles (from the log), the highest worker memory
    sampled every 50 ms, and the longest a worker stayed over the limit."""
    if kind not in ("rgunicorn", "baseline", "granian"):
        return {"n/a": "no --workers-max-rss"}
    limit = 120
    args = (["--workers", "2"] if kind == "granian" else ["-w", "2"]) + [
        "--workers-max-rss", str(limit), "--rss-sample-interval", "1"]
    s = Server(kind, args)
    try:
        stop, seen = [False], {}

        def watch():
            end = time.time() + 120
            while not stop[0] and time.time() < end:
                now = time.time()
                for pid in s.workers():
                    mib = rss_mib(pid)
                    if mib is None:
                        continue
                    w = seen.setdefault(pid, {"peak": 0.0, "first": None, "last": None})
                    w["peak"] = max(w["peak"], mib)
                    if mib > limit:
                        w["first"] = w["first"] or now
                        w["last"] = now
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        load = KeepAliveClients(s.port, 50, limit_s=20, path="/hoard?ms=5")
        time.sleep(20)
        result = load.finish()
        stop[0] = True
        watcher.join()
        log = s.logs()
        result["recycles"] = len(re.findall(r"exceeded --workers-max-rss|RSS over threshold", log))
        result["peak_worker_mib"] = round(max([w["peak"] for w in seen.values()] or [0]))
        result["longest_over_s"] = round(max([w["last"] - w["first"] for w in seen.values()
                                              if w["first"]] or [0]), 2)
        return result
    finally:
        s.stop()


def rss_mib(pid):
    """A process's resident memory now, in MiB (None once it is gone)."""
    try:
        with open("/proc/%d/statm" % pid) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, IndexError, ValueError):
        return None


SCENARIOS = [slow_request, hup, max_requests, timeout_kill, head_of_line, slow_readers,
             read_ahead, trickled_head, fd_exhaustion, slow_body, slow_body_threads,
             retire_partial_head, handoff_fd_limit, threads_timeout, worker_crashes, max_rss]
# Granian runs these only (its flags differ from Gunicorn's).
GRANIAN_SCENARIOS = {"max_rss"}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--servers", default="rgunicorn,gunicorn,granian",
                   help="granian runs only the scenarios it has flags for (max_rss)")
    p.add_argument("--only", default="")
    p.add_argument("--json", default="")
    p.add_argument("--baseline", default="", help="another rgunicorn binary to compare")
    a = p.parse_args()
    servers = a.servers.split(",")
    if a.baseline:
        BASELINE[0] = os.path.abspath(a.baseline)
        servers.insert(1, "baseline")
    only = set(filter(None, a.only.split(",")))
    results = {}
    for scenario in SCENARIOS:
        if only and scenario.__name__ not in only:
            continue
        for kind in servers:
            if kind == "granian" and scenario.__name__ not in GRANIAN_SCENARIOS:
                continue
            try:
                out = scenario(kind)
            except Exception as e:  # one scenario failing must not hide the others
                out = {"error": "%s: %s" % (type(e).__name__, e)}
            results.setdefault(scenario.__name__, {})[kind] = out
            print("%-15s %-10s %s" % (scenario.__name__, kind, json.dumps(out)), flush=True)
    print()
    print("| scenario | " + " | ".join(servers) + " |")
    print("|---|" + "---|" * len(servers))
    for name, by_server in results.items():
        cells = []
        for kind in servers:
            out = dict(by_server.get(kind, {}))
            out.pop("examples", None)
            cells.append(", ".join("%s %s" % (k, v) for k, v in out.items()))
        print("| %s | %s |" % (name, " | ".join(cells)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
