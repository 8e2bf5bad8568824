#!/usr/bin/env python3
"""Replays Gunicorn's own request corpus against rgunicorn, over TCP.

Gunicorn 27.0.1's sdist carries `tests/requests`: raw HTTP requests (`*.http`) with the
parse Gunicorn expects (`*.py`: a request dict, a list of them for pipelined requests, or
the exception class a bad request raises, plus any `cfg.set(...)` the case needs). This
script downloads that sdist (pinned, from the package index), starts rgunicorn with the
flags each case's settings translate to, sends the bytes in one write, and checks:

- a valid case: one 200 per expected request, whose environ (method, raw URI, protocol,
  headers, body) is the one Gunicorn's parser produces;
- an invalid case: the status Gunicorn's `handle_error` gives that exception (400, 414,
  431, 501, ...), or a closed connection for a bad PROXY line.

HTTP/1.1 requests without a Host header get one (rgunicorn requires it, RFC 9112 §3.2).
The cases rgunicorn answers differently on purpose are listed in DEVIATIONS, with the
README's reason; they must still differ (a case that starts to pass is reported).

Usage: tests/gunicorn_corpus.py RGUNICORN_BINARY [CASE_NAME...]
Exit status: 0 when every case passes or is a listed deviation.
"""

import importlib.machinery
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from urllib.parse import unquote

GUNICORN_VERSION = "27.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, "target", "gunicorn-corpus")

# Cases where rgunicorn deliberately answers otherwise (README, "Deviations from Gunicorn").
DEVIATIONS = {
    # A body shorter than its Content-Length at EOF is an incomplete message (RFC 9112 §8):
    # the app's read raises (and the client gets a 400) where Gunicorn hands it the
    # truncated body.
    "valid/099.http": "a body cut short by EOF is refused, not passed on truncated",
    # CONNECT's authority-form target is kept whole as PATH_INFO; Gunicorn's URL split
    # leaves only the port.
    "valid/rfc9112_target_authority_connect_01.http": "CONNECT keeps host:port as PATH_INFO",
}

# Gunicorn's handle_error: exception class name -> status.
STATUS_OF = {
    "LimitRequestLine": 414,
    "LimitRequestHeaders": 431,
    "UnsupportedTransferCoding": 501,
    "ExpectationFailed": 417,
    "ForbiddenProxyRequest": 403,
    "ConfigurationProblem": 500,
}
# A bad PROXY line: Gunicorn answers 400 too; rgunicorn may also just close.
CLOSE_OK = {"InvalidProxyLine", "InvalidProxyHeader", "NoMoreData"}

APP = r'''
import json

def application(environ, start_response):
    headers = {key: value for key, value in environ.items()
               if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    out = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ["RAW_URI"],
        "path_info": environ["PATH_INFO"],
        "protocol": environ["SERVER_PROTOCOL"],
        "headers": headers,
        "body": environ["wsgi.input"].read().decode("latin-1"),
    }
    body = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def fetch_corpus():
    """The sdist's source tree (downloaded once into target/)."""
    root = os.path.join(CACHE, "gunicorn-%s" % GUNICORN_VERSION)
    if os.path.isdir(os.path.join(root, "tests", "requests")):
        return root
    os.makedirs(CACHE, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--no-binary", ":all:", "--disable-pip-version-check",
         "gunicorn==%s" % GUNICORN_VERSION, "-d", CACHE],
        check=True)
    with tarfile.open(os.path.join(CACHE, "gunicorn-%s.tar.gz" % GUNICORN_VERSION)) as tar:
        tar.extractall(CACHE, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(CACHE)
    return root


def load_case(root, http_path):
    """(data bytes, expectation, cfg) as Gunicorn's own treq.py reads them."""
    from gunicorn.config import Config
    from gunicorn.util import split_request_uri

    def uri(data):
        return {"raw": data, "path": split_request_uri(data).path or ""}

    mod = types.ModuleType("__corpus_case__")
    mod.uri = uri
    mod.cfg = Config()
    loader = importlib.machinery.SourceFileLoader("__corpus_case__", http_path[:-5] + ".py")
    loader.exec_module(mod)
    with open(http_path, "rb") as f:
        data = f.read()
    data = data.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\000").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    data = re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)
    return data, mod.request, mod.cfg


def flags_for(cfg):
    """The rgunicorn command-line flags for the settings a case changed."""
    from gunicorn.config import Config
    default = Config()
    flags = []
    for name, setting in sorted(cfg.settings.items()):
        value = setting.get()
        if value == default.settings[name].get() or name == "http_parser":
            continue
        flag = setting.cli[0]
        if setting.action == "store_true":
            if value:
                flags.append(flag)
        elif name == "proxy_protocol":
            flags += [flag, "auto" if value is True else str(value)]
        elif isinstance(value, (list, tuple)):
            flags += [flag, ",".join(value)]
        else:
            flags += [flag, str(value)]
    return tuple(flags)


def add_host(data):
    """Gives each HTTP/1.1 request head that lacks a Host header one.

    Walks the requests one by one (a body may itself look like a request)."""
    out, pos = b"", 0
    while pos < len(data):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            head_end = len(data)
        if data.startswith(b"PROXY ", pos):  # a PROXY v1 line before the first request
            eol = data.find(b"\r\n", pos)
            eol = len(data) if eol < 0 else eol + 2
            out += data[pos:eol]
            pos = eol
            continue
        head = data[pos:head_end]
        line_end = head.find(b"\r\n")
        line = head if line_end < 0 else head[:line_end]
        if line.endswith(b" HTTP/1.1") and not re.search(rb"\r\nhost[ \t]*:", head, re.I):
            out += data[pos:pos + len(line) + 2] + b"Host: corpus\r\n"
            start = pos + len(line) + 2
        else:
            start = pos
        end = message_end(data, head, head_end)
        out += data[start:end]
        pos = end
    return out


def message_end(data, head, head_end):
    """Where the message whose head ends at head_end ends (best effort)."""
    pos = min(head_end + 4, len(data))
    if re.search(rb"(?i)\r\ntransfer-encoding:[^\r]*chunked", head):
        while pos < len(data):
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                return len(data)
            try:
                size = int(data[pos:eol].split(b";")[0], 16)
            except ValueError:
                return len(data)
            pos = eol + 2
            if size == 0:
                trailers_end = data.find(b"\r\n\r\n", pos - 2)
                return len(data) if trailers_end < 0 else trailers_end + 4
            pos += size + 2
        return len(data)
    m = re.search(rb"(?i)\r\ncontent-length:[ \t]*(\d+)", head)
    return min(pos + int(m.group(1)), len(data)) if m else pos


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, appdir, flags):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1:%d" % self.port, "--workers", "1",
             "--chdir", appdir, "--log-level", "critical", *flags, "corpus_app:application"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rgunicorn %s exited: %s" % (" ".join(flags), self.proc.stderr.read().decode()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rgunicorn did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def exchange(port, data, responses):
    """Sends data; reads up to `responses` responses: [(status, body bytes)]."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        # Then EOF, as Gunicorn's own harness gives its parser.
        s.shutdown(socket.SHUT_WR)
        buf, out = b"", []
        while len(out) < responses:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].decode("latin-1")
                status = int(head.split(" ", 2)[1])
                m = re.search(r"(?im)^content-length:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(buf) >= end + 4 + length:
                    out.append((status, buf[end + 4:end + 4 + length]))
                    buf = buf[end + 4 + length:]
                    continue
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                chunk = b""
            if not chunk:
                break
            buf += chunk
        return out


def check_valid(port, data, expect):
    expects = expect if isinstance(expect, list) else [expect]
    got = exchange(port, data, len(expects))
    if len(got) != len(expects):
        return "expected %d responses, got %d: %r" % (len(expects), len(got), got)
    for want, (status, body) in zip(expects, got):
        if status != 200:
            return "status %d: %r" % (status, body[:200])
        env = json.loads(body)
        # The environ Gunicorn's wsgi.create() makes of those headers.
        headers = {}
        for name, value in want["headers"]:
            if name in ("CONTENT-TYPE", "CONTENT-LENGTH"):
                headers[name.replace("-", "_")] = value
                continue
            key = "HTTP_" + name.replace("-", "_")
            headers[key] = headers[key] + "," + value if key in headers else value
        if want["version"] == (1, 1) and "HTTP_HOST" not in headers:
            headers["HTTP_HOST"] = "corpus"  # add_host() gave the request one
        wanted = {
            "method": want["method"],
            "raw_uri": want["uri"]["raw"],
            "path_info": unquote(want["uri"]["path"], "latin-1"),
            "protocol": "HTTP/%d.%d" % want["version"],
            "headers": headers,
            "body": want["body"].decode("latin-1") if isinstance(want["body"], bytes) else want["body"],
        }
        for key in wanted:
            if env[key] != wanted[key]:
                return "%s: got %r, want %r" % (key, env[key], wanted[key])
    return None


def check_invalid(port, data, exc):
    name = exc.__name__
    got = exchange(port, data, 1)
    if not got:
        return None if name in CLOSE_OK else "connection closed without a response (%s)" % name
    status = got[0][0]
    want = STATUS_OF.get(name, 400)
    if status != want:
        return "status %d, want %d (%s)" % (status, want, name)
    return None


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: tests/gunicorn_corpus.py RGUNICORN_BINARY [CASE...]")
    binary, only = os.path.abspath(sys.argv[1]), set(sys.argv[2:])
    root = fetch_corpus()
    sys.path.insert(0, root)
    cases = []
    for kind in ("valid", "invalid"):
        folder = os.path.join(root, "tests", "requests", kind)
        for fname in sorted(os.listdir(folder)):
            if fname.endswith(".http") and (not only or "%s/%s" % (kind, fname) in only):
                data, expect, cfg = load_case(root, os.path.join(folder, fname))
                cases.append(("%s/%s" % (kind, fname), add_host(data), expect, flags_for(cfg)))

    passed, failed, deviating = 0, [], []
    with tempfile.TemporaryDirectory() as appdir:
        with open(os.path.join(appdir, "corpus_app.py"), "w") as f:
            f.write(APP)
        servers = {}
        try:
            for name, data, expect, flags in cases:
                if flags not in servers:
                    servers[flags] = Server(binary, appdir, flags)
                port = servers[flags].port
                if isinstance(expect, type):
                    problem = check_invalid(port, data, expect)
                else:
                    problem = check_valid(port, data, expect)
                if name in DEVIATIONS:
                    if problem is None:
                        failed.append((name, "listed as a deviation but now passes"))
                    else:
                        deviating.append((name, DEVIATIONS[name], problem))
                elif problem is None:
                    passed += 1
                else:
                    failed.append((name + " " + " ".join(flags), problem))
        finally:
            for server in servers.values():
                server.stop()

    for name, problem in failed:
        print("FAIL %s: %s" % (name, problem))
    for name, reason, problem in deviating:
        print("deviation %s (%s): %s" % (name, reason, problem))
    print("Gunicorn %s corpus: %d of %d cases pass, %d documented deviations, %d failures"
          % (GUNICORN_VERSION, passed, len(cases), len(deviating), len(failed)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
