#!/usr/bin/env python3
"""Instructions per request of one rgunicorn worker, counted by callgrind.

Wall-clock figures on a small shared machine move by 10% from run to run; an instruction
count does not. This runs the release build under `valgrind --tool=callgrind` with one
worker, sends N and then 2N requests on one keep-alive connection (two runs), and prints
(Ir(2N) - Ir(N)) / N for the worker: the boot and the master's work cancel out. Kernel time
is not counted (system calls are one instruction each), so it complements, not replaces,
bench/run's CPU time per response.

Usage: bench/instructions.py [--apps hello,echo,stream] [--requests 1000]
                             [--baseline OTHER_BINARY] [--variant 'NAME=ARGS'] [--annotate]

--variant runs the same binary again with more arguments, e.g.
`--variant 'metrics=--metrics --metrics-port 0'` for the cost of the Prometheus meters.

Needs valgrind (Debian's package). PYTHONHASHSEED is fixed: without it, dict layouts and so
the count vary by about 1,000 instructions per request between runs.
"""

import argparse
import http.client
import os
import shutil
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
POST_BODY = b"a" * 16384

# name: (app spec in bench/apps, method, body)
APPS = {
    "hello": ("apps:hello", "GET", None),
    "echo": ("apps:echo", "POST", POST_BODY),
    "stream": ("apps:stream", "GET", None),
    "big": ("apps:big", "GET", None),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(port: int, n: int, method: str, body: bytes | None) -> None:
    """Waits for the server (slow under valgrind), then sends n requests on one connection."""
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the server did not start under valgrind within 120 s")
            time.sleep(0.2)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for _ in range(n):
        conn.request(method, "/", body=body)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"status {resp.status}")
    conn.close()


def worker_instructions(name: str, binary: Path, extra: list[str], app: str, n: int,
                        out: Path) -> tuple[int, Path]:
    """Runs the server under callgrind for n requests; the worker's total Ir and profile."""
    spec, method, body = APPS[app]
    port = free_port()
    tag = f"{name}.{app}.{n}"
    # The file options go through VALGRIND_OPTS, which valgrind copies into its own memory:
    # builds before the process-title fix overwrote the command line valgrind re-reads
    # in each forked worker.
    env = dict(os.environ, PYTHONHASHSEED="0", VALGRIND_OPTS=(
        f"--callgrind-out-file={out}/cg.{tag}.%p --log-file={out}/vg.{tag}.%p.log"))
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", str(binary), "-w", "1", "-b",
         f"127.0.0.1:{port}", "--timeout", "600", "--keep-alive", "60", *extra, spec],
        cwd=BENCH / "apps", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        drive(port, n, method, body)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=300)
    profiles = [p for p in out.glob(f"cg.{tag}.*") if p.suffix != f".{server.pid}"]
    if len(profiles) != 1:
        raise SystemExit(f"expected one worker profile for {tag}, found {len(profiles)}:\n"
                         + err.decode(errors="replace")[-2000:])
    for line in profiles[0].read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1]), profiles[0]
    raise SystemExit(f"no summary in {profiles[0]}")


def per_request(name: str, binary: Path, extra: list[str], app: str, n: int,
                out: Path) -> tuple[float, Path]:
    one, _ = worker_instructions(name, binary, extra, app, n, out)
    two, profile = worker_instructions(name, binary, extra, app, 2 * n, out)
    return (two - one) / n, profile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", default="hello,echo")
    ap.add_argument("--requests", type=int, default=1000, help="N (the runs send N and 2N)")
    ap.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "rgunicorn")
    ap.add_argument("--baseline", type=Path, help="another binary, measured the same way")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=ARGS: the binary again with these arguments (repeatable)")
    ap.add_argument("--annotate", action="store_true",
                    help="print callgrind_annotate's top functions of the 2N run")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = [a for a in apps if a not in APPS]
    if unknown:
        print(f"unknown app {','.join(unknown)}; choose from {','.join(APPS)}", file=sys.stderr)
        return 2
    binaries = {"rgunicorn": (args.binary, [])}
    for variant in args.variant:
        name, _, extra = variant.partition("=")
        binaries[name] = (args.binary, shlex.split(extra))
    if args.baseline:
        binaries["baseline"] = (args.baseline, [])
    out = Path(tempfile.mkdtemp(prefix="rgunicorn-callgrind-"))
    rows = []
    for app in apps:
        row = [app]
        for name, (binary, extra) in binaries.items():
            ir, profile = per_request(name, binary.resolve(), extra, app, args.requests, out)
            row.append(ir)
            print(f"{app} {name}: {ir:,.0f} instructions per request", file=sys.stderr)
            if args.annotate:
                subprocess.run(["callgrind_annotate", "--inclusive=yes", str(profile)],
                               check=False, stdout=sys.stderr)
        rows.append(row)
    head = ["app"] + [f"{n} Ir/request" for n in binaries]
    others = list(binaries)[1:]
    head += [f"{n} / rgunicorn" for n in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [row[0]] + [f"{v:,.0f}" for v in row[1:]]
        cells += [f"{v / row[1]:.4f}×" for v in row[2:]]
        print("| " + " | ".join(cells) + " |")
    print(f"(profiles in {out})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
