"""The main WSGI app of the integration suite: one route per behaviour under test.

Served as `app:application` (or just `app`) from tests/apps. Routes take their
parameters from the query string; see each handler's docstring.
"""

import json
import logging
import os
import sys
import time
from urllib.parse import parse_qs


def _qs(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj, sort_keys=True).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _text(start_response, text, status="200 OK", extra=()):
    body = text.encode() if isinstance(text, str) else text
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def environ_route(environ, start_response):
    """JSON of the environ: str values as they are, others as repr / type name."""
    out = {}
    for key, value in environ.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (bool, int, tuple)):
            out[key] = repr(value)
        else:
            out[key] = "<%s>" % type(value).__name__
    out["__has_read__"] = hasattr(environ["wsgi.input"], "read")
    out["__has_write__"] = hasattr(environ["wsgi.errors"], "write")
    out["__has_flush__"] = hasattr(environ["wsgi.errors"], "flush")
    out["__file_wrapper_callable__"] = callable(environ.get("wsgi.file_wrapper"))
    out["__body__"] = environ["wsgi.input"].read().decode("latin-1")
    return _json(start_response, out)


def mutate_environ(environ, start_response):
    """Changes and adds environ keys, which must not reach the connection's next request."""
    environ["REMOTE_ADDR"] = "mutated"
    environ["SERVER_NAME"] = "mutated"
    environ["HTTP_X_LEAK"] = "leaked"
    del environ["gunicorn.socket"]
    return _text(start_response, "mutated")


def echo(environ, start_response):
    """The request body, read with read(), sent back with a Content-Length."""
    body = environ["wsgi.input"].read()
    return _text(start_response, body, extra=[("X-Body-Length", str(len(body)))])


_HOARD = []


def hoard(environ, start_response):
    """As /echo, and keeps 2 MiB (touched, so resident) for the worker's life: a leak.
    ?ms=N: then works (sleeps) N ms, as an app would."""
    _HOARD.append(b"x" * (2 << 20))
    ms = float(_qs(environ).get("ms", "0"))
    if ms:
        time.sleep(ms / 1000)
    body = environ["wsgi.input"].read()
    return _text(start_response, body, extra=[("X-Body-Length", str(len(body)))])


def input_route(environ, start_response):
    """Reads wsgi.input the way ?mode= says, returns the pieces as JSON (latin-1 text).

    read_n: read(n) until b""; readline: readline() until b""; readline_n: readline(n);
    readlines: readlines(); iter: for line in input; read_all_then: read() then read(5).
    """
    q = _qs(environ)
    inp = environ["wsgi.input"]
    mode = q.get("mode", "read_n")
    n = int(q.get("n", "3"))
    pieces = []
    if mode == "read_n":
        while True:
            piece = inp.read(n)
            if not piece:
                break
            pieces.append(piece)
    elif mode == "readline":
        while True:
            piece = inp.readline()
            if not piece:
                break
            pieces.append(piece)
    elif mode == "readline_n":
        while True:
            piece = inp.readline(n)
            if not piece:
                break
            pieces.append(piece)
    elif mode == "readlines":
        pieces = inp.readlines()
    elif mode == "iter":
        pieces = [line for line in inp]
    elif mode == "read_all_then":
        pieces = [inp.read(), inp.read(5), inp.read()]
    return _json(start_response, [p.decode("latin-1") for p in pieces])


def upload(environ, start_response):
    """Streams the body in 64 KiB reads; answers the byte count and the worker's peak RSS."""
    inp = environ["wsgi.input"]
    total = 0
    while True:
        piece = inp.read(65536)
        if not piece:
            break
        total += len(piece)
    return _json(start_response, {"bytes": total, "pid": os.getpid()})


def sleep_route(environ, start_response):
    """Sleeps ?s= seconds (default 30), then answers `slept`; first appends its pid to
    ?marker= (if given) so a test knows the request reached the app."""
    q = _qs(environ)
    if "marker" in q:
        with open(q["marker"], "a") as f:
            f.write("%d\n" % os.getpid())
    time.sleep(float(q.get("s", "30")))
    return _text(start_response, "slept")


def hold_gil(environ, start_response):
    """Holds the GIL without letting go: `sum` over a range of ?n= numbers is one C call,
    which no other thread interrupts. Appends `held` to ?marker= before, `done` after."""
    q = _qs(environ)
    with open(q["marker"], "a") as f:
        f.write("held\n")
    total = sum(range(int(q["n"])))
    with open(q["marker"], "a") as f:
        f.write("done\n")
    return _text(start_response, str(total))


def pid(environ, start_response):
    """The worker's pid as text."""
    return _text(start_response, str(os.getpid()))


def exit_route(environ, start_response):
    """The worker process dies with os._exit(?code=)."""
    os._exit(int(_qs(environ).get("code", "1")))


def sysexit(environ, start_response):
    """Raises SystemExit, as an app calling sys.exit() in a view does."""
    raise SystemExit(0)


def error(environ, start_response):
    """Raises before start_response."""
    raise RuntimeError("boom from the test app")


def write_route(environ, start_response):
    """Uses the write() callable returned by start_response, then returns more chunks."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"one,")
    write(b"two,")
    return [b"three"]


def exc_info_route(environ, start_response):
    """start_response(exc_info) before headers are sent replaces the response (?after=1: after)."""
    q = _qs(environ)
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    if q.get("after") == "1":
        write(b"partial")
    try:
        raise ValueError("handled by the app")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def framing(environ, start_response):
    """?cl=N sets Content-Length; ?status= sets the status; body = ?body= repeated over ?chunks=."""
    q = _qs(environ)
    headers = [("Content-Type", "text/plain")]
    if "cl" in q:
        headers.append(("Content-Length", q["cl"]))
    start_response(q.get("status", "200 OK"), headers)
    chunks = int(q.get("chunks", "1"))
    body = q.get("body", "hello").encode()
    return [body] * chunks + ([b""] if q.get("empty") else []) + [b"end"] * (1 if q.get("tail") else 0)


def hop(environ, start_response):
    """Sends hop-by-hop headers the server must drop, and an ordinary one it must keep."""
    body = b"hop"
    start_response("200 OK", [
        ("Content-Length", str(len(body))),
        ("Connection", "close-me-not"),
        ("Keep-Alive", "timeout=99"),
        ("Proxy-Authenticate", "Basic"),
        ("TE", "trailers"),
        ("Trailers", "X-T"),
        ("Upgrade", "h2c"),
        ("Server", "app-server"),
        ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ("X-Kept", "yes"),
    ])
    return [body]


def bad_status(environ, start_response):
    """An invalid status string (?s=)."""
    start_response(_qs(environ).get("s", "twohundred OK"), [("Content-Type", "text/plain")])
    return [b"should not be sent"]


def bad_header(environ, start_response):
    """A header value carrying CR LF and an injected header."""
    start_response("200 OK", [("X-Bad", "a\r\nX-Injected: yes"), ("Content-Type", "text/plain")])
    return [b"should not be sent"]


def str_body(environ, start_response):
    """A str (not bytes) body chunk before anything was sent."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["not bytes"]


class Closing:
    """An iterable whose close() appends a line to ?marker=; ?raise_at=N raises at chunk N;
    ?chunks=N chunks of ?size= bytes, ?delay= seconds between chunks."""

    def __init__(self, q):
        self.marker = q["marker"]
        self.raise_at = int(q.get("raise_at", "-1"))
        self.chunks = int(q.get("chunks", "3"))
        self.size = int(q.get("size", "5"))
        self.delay = float(q.get("delay", "0"))

    def __iter__(self):
        for i in range(self.chunks):
            if i == self.raise_at:
                raise RuntimeError("raised mid-iteration")
            if i and self.delay:
                time.sleep(self.delay)
            yield b"x" * self.size

    def close(self):
        with open(self.marker, "a") as f:
            f.write("closed\n")


def ticks(environ, start_response):
    """A generator of ?n= chunks of ?size= bytes, ?every= seconds apart. Each chunk starts
    with T=<time.monotonic() at its yield>; so the client can tell how long it waited."""
    q = _qs(environ)
    n, size, every = int(q.get("n", "10")), int(q.get("size", "0")), float(q.get("every", "0"))
    start_response("200 OK", [("Content-Type", "text/plain")])

    def chunks():
        for i in range(n):
            if i and every:
                time.sleep(every)
            stamp = b"T=%.6f;" % time.monotonic()
            yield stamp + b"." * max(0, size - len(stamp))

    return chunks()


def close_route(environ, start_response):
    q = _qs(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(q)


def file_route(environ, start_response):
    """wsgi.file_wrapper over ?path=."""
    path = _qs(environ)["path"]
    size = os.path.getsize(path)
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 8192)


def blocking_socket(environ, start_response):
    """Makes gunicorn.socket blocking (as an app may), then serves ?path= like /file."""
    environ["gunicorn.socket"].setblocking(True)
    return file_route(environ, start_response)


def os_environ(environ, start_response):
    """os.environ[?key=] (or `<unset>`), and sys.path as JSON under ?sys_path=1."""
    q = _qs(environ)
    if q.get("sys_path"):
        return _json(start_response, sys.path)
    return _text(start_response, os.environ.get(q.get("key", ""), "<unset>"))


def log_route(environ, start_response):
    """Logs ?msg= through logging.getLogger("gunicorn.error") at INFO and WARNING."""
    msg = _qs(environ).get("msg", "app-log-marker")
    logging.getLogger("gunicorn.error").info("info %s", msg)
    logging.getLogger("gunicorn.error").warning("warning %s", msg)
    return _text(start_response, "logged")


def errors_write(environ, start_response):
    """Writes ?msg= and a newline to wsgi.errors, then flushes it."""
    errors = environ["wsgi.errors"]
    errors.write(_qs(environ).get("msg", "errors-marker") + "\n")
    errors.flush()
    return _text(start_response, "written")


def big(environ, start_response):
    """?size= bytes of the pattern bytes(i % 251) in ?chunk=-byte pieces; ?cl=1 adds a
    Content-Length."""
    q = _qs(environ)
    size = int(q.get("size", "1048576"))
    chunk = int(q.get("chunk", "65536"))
    pattern = bytes(i % 251 for i in range(251)) * (chunk // 251 + 2)
    headers = [("Content-Type", "application/octet-stream")]
    if q.get("cl"):
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)

    def gen():
        sent = 0
        while sent < size:
            n = min(chunk, size - sent)
            off = sent % 251
            yield pattern[off:off + n]
            sent += n

    return gen()


def proto(environ, start_response):
    """Breaks the WSGI protocol the way ?case= says (each must give a 500)."""
    case = _qs(environ).get("case")
    if case == "none":
        start_response("200 OK", [])
        return None
    if case == "no_start_response":
        return [b"body without start_response"]
    if case == "start_twice":
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"twice"]
    if case == "bad_name":
        start_response("200 OK", [("Bad Name", "v")])
        return [b"bad name"]
    if case == "int_value":
        start_response("200 OK", [("X-Int", 5)])
        return [b"int value"]
    if case == "bytearray":
        start_response("200 OK", [])
        return [bytearray(b"bytearray body")]
    raise ValueError("unknown case %r" % case)


def early_hints(environ, start_response):
    """Sends a 103 Early Hints through wsgi.early_hints, then the response."""
    environ["wsgi.early_hints"]([("Link", "</style.css>; rel=preload; as=style")])
    return _text(start_response, "after hints")


def status_route(environ, start_response):
    """Answers with ?code= and a body (for access-log tests)."""
    q = _qs(environ)
    return _text(start_response, q.get("body", "status"), status=q.get("code", "200") + " Whatever",
                 extra=[("X-Resp", "resp-value")])


def head_body(environ, start_response):
    """Always returns a body, whatever the method (for HEAD tests)."""
    return _text(start_response, "body-for-head")


STASH = {}


def stash(environ, start_response):
    """Keeps this request's write callable, start_response and wsgi.input past the request
    (as a global, a closure or a thread might)."""
    STASH["write"] = start_response("200 OK", [("Content-Type", "text/plain")])
    STASH["start_response"] = start_response
    STASH["input"] = environ["wsgi.input"]
    return [b"stashed"]


KEPT = {}


def keep_one(environ, start_response):
    """Keeps one of this request's objects (named by the query) past the request, and
    nothing else."""
    what = environ["QUERY_STRING"]
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    KEPT[what] = {
        "early_hints": environ["wsgi.early_hints"],
        "start_response": start_response,
        "write": write,
        "environ": environ,
        "input": environ["wsgi.input"],
    }[what]
    return [b"kept " + what.encode()]


def keep_socket(environ, start_response):
    """Keeps this connection's `gunicorn.socket` past its request."""
    KEPT["socket"] = environ["gunicorn.socket"]
    return _text(start_response, "kept")


def kept_socket(environ, start_response):
    """The kept `gunicorn.socket`'s descriptor: -1 once its connection closed."""
    return _text(start_response, str(KEPT["socket"].fileno()))


def use_kept(environ, start_response):
    """Uses what /keep_one kept, before answering; reports what it did."""
    what = environ["QUERY_STRING"]
    kept = KEPT.pop(what)
    use = {
        "early_hints": lambda: kept([("Link", "</stale.css>; rel=preload")]),
        "start_response": lambda: kept("500 Stale", []),
        "write": lambda: kept(b"INJECTED"),
        "environ": lambda: kept["wsgi.early_hints"]([("Link", "</stale.css>; rel=preload")]),
        "input": lambda: kept.read(),
    }[what]
    try:
        use()
        result = "acted"
    except Exception as e:
        result = type(e).__name__
    return _text(start_response, result)


def stale(environ, start_response):
    """Uses what /stash kept, from an earlier request; reports what each did."""
    out = {}
    for name, use in [
        ("write", lambda: STASH["write"](b"INJECTED-FROM-OLD-REQUEST")),
        ("start_response", lambda: STASH["start_response"]("500 X", [])),
        ("input", lambda: STASH["input"].read()),
    ]:
        try:
            use()
            out[name] = "acted"
        except Exception as e:
            out[name] = type(e).__name__
    return _json(start_response, out)


def threaded(environ, start_response):
    """Uses wsgi.input, start_response and write() from threads the app starts (a thread
    and a concurrent.futures pool), as upload and streaming code does."""
    import concurrent.futures
    import threading

    got = {}
    reader = threading.Thread(target=lambda: got.update(body=environ["wsgi.input"].read()))
    reader.start()
    reader.join()

    def respond():
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"from-thread:")
        write(got["body"])

    responder = threading.Thread(target=respond)
    responder.start()
    responder.join()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: b"[%d]" % i, range(4)))


def threads_race(environ, start_response):
    """Eight threads call write() at once, 50 times each: some calls may be refused with an
    exception (the object is in use), none may crash the worker."""
    import concurrent.futures

    write = start_response("200 OK", [("Content-Type", "text/plain")])
    errors = []

    def hammer(i):
        for _ in range(50):
            try:
                write(b"%d" % i)
            except Exception as e:
                errors.append(type(e).__name__)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(hammer, range(8)))
    return [b"|refused:%d:%s" % (len(errors), ",".join(sorted(set(errors))).encode())]


ROUTES = {
    "/environ": environ_route,
    "/echo": echo,
    "/hoard": hoard,
    "/input": input_route,
    "/upload": upload,
    "/sleep": sleep_route,
    "/pid": pid,
    "/hold_gil": hold_gil,
    "/error": error,
    "/exit": exit_route,
    "/sysexit": sysexit,
    "/write": write_route,
    "/exc_info": exc_info_route,
    "/framing": framing,
    "/hop": hop,
    "/bad_status": bad_status,
    "/bad_header": bad_header,
    "/str_body": str_body,
    "/close": close_route,
    "/ticks": ticks,
    "/file": file_route,
    "/blocking_socket": blocking_socket,
    "/os_environ": os_environ,
    "/log": log_route,
    "/status": status_route,
    "/proto": proto,
    "/early_hints": early_hints,
    "/big": big,
    "/errors_write": errors_write,
    "/head_body": head_body,
    "/stash": stash,
    "/stale": stale,
    "/mutate_environ": mutate_environ,
    "/keep_one": keep_one,
    "/use_kept": use_kept,
    "/keep_socket": keep_socket,
    "/kept_socket": kept_socket,
    "/threaded": threaded,
    "/threads_race": threads_race,
}


def application(environ, start_response):
    handler = ROUTES.get(environ["PATH_INFO"])
    if handler is None:
        return _text(start_response, "hello " + environ["PATH_INFO"])
    return handler(environ, start_response)
