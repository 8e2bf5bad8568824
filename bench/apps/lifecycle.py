"""The app bench/lifecycle.py drives (stdlib only): ``lifecycle:app``.

GET /pid -> the worker's pid; GET /sleep?s=N -> sleeps N seconds; POST /echo -> the body;
GET /big?size=N -> N bytes from a generator; GET /file?path=P -> P through wsgi.file_wrapper;
POST /hoard?ms=N -> the body, keeping 2 MiB for the worker's life (a leak), after N ms of work.
"""

import os
import time
from urllib.parse import parse_qs


def _reply(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


_HOARD = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/sleep":
        time.sleep(float(q.get("s", "1")))
        return _reply(start_response, b"slept")
    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return _reply(start_response, environ["wsgi.input"].read(length))
    if path == "/hoard":
        _HOARD.append(b"x" * (2 << 20))  # touched, so resident
        time.sleep(float(q.get("ms", "0")) / 1000)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return _reply(start_response, environ["wsgi.input"].read(length))
    if path == "/big":
        size = int(q.get("size", "524288"))
        start_response("200 OK", [("Content-Length", str(size))])
        return (b"b" * min(65536, size - i) for i in range(0, size, 65536))
    if path == "/file":
        f = open(q["path"], "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 65536)
    return _reply(start_response, str(os.getpid()).encode())
