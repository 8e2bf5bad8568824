#!/usr/bin/env python3
"""Smoke test of rgunicorn installed with pip, run by the virtualenv's own Python.

Serves a Flask app and a Django project through the venv's ``rgunicorn`` console script and
checks what a deployment relies on: requests answered, HUP (new workers, old ones gone),
USR2 (a new master started the same way, promoted when the old one leaves), TERM (a
graceful stop, exit status 0), ``--version`` and ``python -m rgunicorn``.

Usage: VENV/bin/python tests/wheel_smoke.py   (the venv has rgunicorn, Flask and Django)
Every wait has a deadline; the script ends every process it started.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RGUNICORN = os.path.join(BIN, "rgunicorn")
DEADLINE = 30.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what, check, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Server:
    def __init__(self, args, cwd):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="rgunicorn-smoke-", suffix=".log",
                                               delete=False)
        self.log_path = self.log.name
        self.proc = subprocess.Popen(
            [RGUNICORN, "-b", "127.0.0.1:%d" % self.port, *args],
            cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pids = {self.proc.pid}
        poll("the server to listen", self.listening)

    def listening(self):
        if self.proc.poll() is not None:
            raise AssertionError("rgunicorn exited %s:\n%s" % (self.proc.returncode, self.text()))
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def count(self, pattern):
        return len(re.findall(pattern, self.text()))

    def get(self, path, host="127.0.0.1"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path),
                                     headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def masters(self):
        return [int(p) for p in re.findall(r"Listening at: \S+ \((\d+)\)", self.text())]

    def workers(self):
        return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", self.text())]

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            print(self.text(), file=sys.stderr)  # the server's log explains a failure
        self.stop()

    def stop(self):
        for pid in self.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.log.close()
        os.unlink(self.log_path)


def check_flask():
    with Server(["-w", "2", "--chdir", os.path.join(REPO, "tests", "apps"), "flaskapp:app"],
                cwd=REPO) as s:
        status, body = s.get("/json?x=1")
        assert status == 200 and json.loads(body)["framework"] == "flask", (status, body)
        first = poll("2 workers", lambda: len(s.workers()) >= 2 and s.workers())

        # HUP: two new workers, the old ones stopped, requests answered throughout.
        os.kill(s.proc.pid, signal.SIGHUP)
        poll("new workers after HUP", lambda: len(s.workers()) >= 4)
        poll("old workers to exit", lambda: not any(alive(p) for p in first[:2]))
        assert s.get("/json")[0] == 200

        # USR2: a new master, started as this one was (venv python + the console script).
        os.kill(s.proc.pid, signal.SIGUSR2)
        new_master = poll("a second master", lambda: s.masters()[1:] and s.masters()[1])
        s.pids.add(new_master)
        with open("/proc/%d/cmdline" % new_master, "rb") as f:
            cmdline = f.read()
        assert cmdline.startswith(b"rgunicorn: master"), cmdline
        assert "python" in os.path.basename(os.readlink("/proc/%d/exe" % new_master))
        poll("the new master's workers", lambda: len(s.workers()) >= 6)
        # The old master leaves; the new one keeps serving.
        os.kill(s.proc.pid, signal.SIGTERM)
        assert s.proc.wait(DEADLINE) == 0, s.text()
        assert s.get("/json")[0] == 200
        os.kill(new_master, signal.SIGTERM)
        poll("the new master to exit", lambda: not alive(new_master))
        assert "Shutting down: Master" in s.text()


def check_django():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([os.path.join(BIN, "django-admin"), "startproject", "smokesite", tmp],
                       check=True)
        with Server(["-w", "1", "smokesite.wsgi"], cwd=tmp) as s:
            status, body = s.get("/", host="localhost")
            assert status == 200 and "Django" in body, (status, body[:300])
            os.kill(s.proc.pid, signal.SIGTERM)
            assert s.proc.wait(DEADLINE) == 0, s.text()
            assert s.count(r"Worker exiting") == 1, s.text()


def check_version():
    want = "Python %d.%d.%d" % sys.version_info[:3]
    for cmd in ([RGUNICORN, "--version"], [sys.executable, "-m", "rgunicorn", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=DEADLINE)
        assert out.returncode == 0 and want in out.stdout, (cmd, out)


def main():
    checks = [check_version, check_flask, check_django]
    for check in checks:
        check()
        print("ok %s (Python %d.%d)" % ((check.__name__,) + sys.version_info[:2]))
    print("%d passed, 0 failed" % len(checks))


if __name__ == "__main__":
    main()
