"""Plain WSGI apps for the benchmark (stdlib only, so their memory is not inflated by Flask).

Served as ``apps:hello``, ``apps:big``, ``apps:stream``, ``apps:echo`` and ``apps:sleep10``
from this directory.
"""

import time

HELLO = b"Hello, World!"  # 13 bytes
BIG = b"x" * (64 * 1024)  # 64 KiB
CHUNK = b"y" * 1024  # 1 KiB
STREAM_CHUNKS = 100


def hello(environ, start_response):
    """13-byte body with Content-Length."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]


def big(environ, start_response):
    """64 KiB body with Content-Length."""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(BIG)))],
    )
    return [BIG]


def _chunks():
    for _ in range(STREAM_CHUNKS):
        yield CHUNK


def stream(environ, start_response):
    """100 x 1 KiB from a generator, no Content-Length (chunked on HTTP/1.1)."""
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return _chunks()


def echo(environ, start_response):
    """Read CONTENT_LENGTH bytes from wsgi.input and send them back."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(body)))],
    )
    return [body]


def sleep10(environ, start_response):
    """Waits 10 ms (standing for a database or API call), then answers like hello."""
    time.sleep(0.010)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]
