#!/usr/bin/env python3
"""Latency at a fixed request rate: rgunicorn, Gunicorn and Granian side by side.

A closed-loop load generator (wrk) sends the next request only when an answer came back,
so a slow server slows its own load down and its queueing never shows in the percentiles.
Here the rate is fixed (open loop): `oha -q RATE --latency-correction` measures each
request from the moment it was due, so waiting in a queue counts.

For each app, Gunicorn's and Granian's maximum throughput is measured first (wrk, closed
loop, as bench/run does). The rates are 25%, 50% and 80% of each peer's maximum. Every server
then runs every rate, the servers alternating over --rounds rounds for each app, and the
report gives the median p50, p99 and p99.9 per server and rate, plus whether rgunicorn's
p99 is below both peers'.

Usage: bench/latency [--apps hello,echo,flask_json] [--duration 5] [--rounds 3] [--no-build]
Writes results/latency.md, results/latency.json and (with bench/chart.py) the curves in
results/latency.svg. Needs oha (installed with `cargo install oha` when missing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench
import chart
from bench import APPS, HOST, LOGS, RESULTS, Server, free_port, log, server_command

PEERS = ["gunicorn", "granian"]
SERVERS = ["rgunicorn", *PEERS]
FRACTIONS = [0.25, 0.5, 0.8]
DEFAULT_APPS = ["hello", "echo", "flask_json"]


def ensure_oha() -> str:
    found = shutil.which("oha") or shutil.which(str(Path.home() / ".cargo" / "bin" / "oha"))
    if found:
        return found
    log("oha not found: cargo install oha --locked")
    bench.run_checked(["cargo", "install", "oha", "--locked"])
    found = shutil.which("oha") or shutil.which(str(Path.home() / ".cargo" / "bin" / "oha"))
    if not found:
        sys.exit("oha is still missing after cargo install")
    return found


def oha_cmd(oha: str, app: str, port: int, rate: int, seconds: int, connections: int,
            body_file: Path) -> list[str]:
    _, path, method, body, _ = APPS[app]
    cmd = [oha, "-q", str(rate), "-z", f"{seconds}s", "-c", str(connections),
           "--latency-correction", "--no-tui", "--output-format", "json"]
    if method == "POST":
        cmd += ["-m", "POST", "-D", str(body_file),
                "-H", "Content-Type: application/octet-stream"]
    return cmd + [f"http://{HOST}:{port}{path}"]


def fixed_rate(oha: str, app: str, port: int, rate: int, seconds: int, connections: int,
               body_file: Path) -> dict:
    cmd = oha_cmd(oha, app, port, rate, seconds, connections, body_file)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if p.returncode != 0:
        raise RuntimeError(f"oha exited with code {p.returncode}: {p.stderr.strip()[:500]}")
    data = json.loads(p.stdout)
    pct = data.get("latencyPercentiles") or {}
    codes = data.get("statusCodeDistribution") or {}
    ok = codes.get("200", 0)
    errors = {k: v for k, v in (data.get("errorDistribution") or {}).items()
              if "deadline" not in k}  # requests still running when -z ended are not errors
    return {
        "rate": rate,
        "achieved_rps": data["summary"].get("requestsPerSec"),
        "p50_ms": pct.get("p50", 0) * 1e3 if pct.get("p50") is not None else None,
        "p99_ms": pct.get("p99", 0) * 1e3 if pct.get("p99") is not None else None,
        "p99_9_ms": pct.get("p99.9", 0) * 1e3 if pct.get("p99.9") is not None else None,
        "ok": ok,
        "non_200": sum(v for k, v in codes.items() if k != "200"),
        "errors": sum(errors.values()),
    }


def peak(server: str, app: str, args, wrk: str, rgunicorn: Path | None) -> float | None:
    """The server's closed-loop maximum (wrk, as bench/run measures it)."""
    port = free_port()
    srv = Server(server, server_command(server, APPS[app][0], port, args.workers, rgunicorn),
                 LOGS / f"latency-peak-{app}-{server}.log")
    try:
        srv.wait_ready(port, app, 30)
        bench.run_wrk(bench.wrk_cmd(wrk, args, app, port, 1), 1)
        out = bench.run_wrk(bench.wrk_cmd(wrk, args, app, port, args.peak_duration),
                            args.peak_duration)
        return bench.parse_wrk(out)["rps"]
    except Exception as e:  # noqa: BLE001 - reported, the run goes on without this peer
        log(f"  FAILED peak {server} {app}: {e}")
        return None
    finally:
        srv.stop()


def run_server(server: str, app: str, rates: list[tuple[str, int]], args, oha: str,
               rgunicorn: Path | None, body_file: Path) -> dict:
    port = free_port()
    srv = Server(server, server_command(server, APPS[app][0], port, args.workers, rgunicorn),
                 LOGS / f"latency-{app}-{server}.log")
    out = {}
    try:
        srv.wait_ready(port, app, 30)
        fixed_rate(oha, app, port, rates[0][1], 1, args.connections, body_file)  # warm-up
        for label, rate in rates:
            try:
                res = fixed_rate(oha, app, port, rate, args.duration, args.connections,
                                 body_file)
            except Exception as e:  # noqa: BLE001
                log(f"  FAILED {server} {app} {label}: {e}")
                continue
            out[label] = res
            log(f"  {app:10} {server:9} {label:13} {rate:7} req/s  p50 {res['p50_ms']:8.2f}"
                f"  p99 {res['p99_ms']:8.2f}  p99.9 {res['p99_9_ms']:8.2f} ms")
    except Exception as e:  # noqa: BLE001
        log(f"  FAILED {server} {app}: {e}")
    finally:
        srv.stop()
    return out


def median_runs(runs: list[dict]) -> dict:
    """Per rate label, the median of each figure over the rounds that ran it."""
    out = {}
    for label in {label for run in runs for label in run}:
        got = [run[label] for run in runs if label in run]
        merged = dict(got[0])
        for key in ("achieved_rps", "p50_ms", "p99_ms", "p99_9_ms"):
            vals = [g[key] for g in got if g.get(key) is not None]
            merged[key] = statistics.median(vals) if vals else None
        for key in ("ok", "non_200", "errors"):
            merged[key] = sum(g[key] for g in got)
        merged["rounds"] = len(got)
        out[label] = merged
    return out


def fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def report(results: dict, peaks: dict, args, versions: dict) -> tuple[str, list[bool]]:
    lines = [f"## Latency at a fixed rate — {args.workers} workers, oha -c{args.connections} "
             f"--latency-correction, {args.duration}s per rate, median of {args.rounds} "
             "alternating rounds",
             "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
             "",
             "Rates are fractions of each peer's closed-loop maximum (wrk -c32): " +
             "; ".join(f"{app}: " + ", ".join(f"{p} {fmt0(v)} req/s" for p, v in pk.items())
                       for app, pk in peaks.items()),
             "",
             "| app | rate | req/s | " + " | ".join(f"{s} p50 / p99 / p99.9 ms"
                                                    for s in SERVERS) + " | rgunicorn p99 lowest |",
             "|---|---|---:|" + "---:|" * len(SERVERS) + "---|"]
    verdicts = []
    for app, by_label in results.items():
        for label, rate in by_label["rates"]:
            cells = []
            p99 = {}
            for s in SERVERS:
                r = by_label["servers"].get(s, {}).get(label)
                if r is None:
                    cells.append("failed")
                    continue
                p99[s] = r["p99_ms"]
                bad = f" ({r['non_200'] + r['errors']} errors)" if r["non_200"] or r["errors"] else ""
                cells.append(f"{fmt(r['p50_ms'])} / {fmt(r['p99_ms'])} / {fmt(r['p99_9_ms'])}{bad}")
            ok = "rgunicorn" in p99 and all(
                p in p99 and p99["rgunicorn"] < p99[p] for p in PEERS)
            verdicts.append(ok)
            lines.append(f"| {app} | {label} | {rate:,} | " + " | ".join(cells) +
                         f" | {'yes' if ok else 'NO'} |")
    return "\n".join(lines), verdicts


def fmt0(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--apps", default=",".join(DEFAULT_APPS))
    ap.add_argument("--duration", type=int, default=5, help="seconds per rate")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds per server (alternating); figures are medians")
    ap.add_argument("--peak-duration", type=int, default=3, help="seconds of each wrk peak run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32, help="oha and wrk -c")
    ap.add_argument("--threads", type=int, default=2, help="wrk -t (peak runs)")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    unknown = [a for a in apps if a not in APPS]
    if unknown:
        print(f"unknown app {','.join(unknown)}; choose from {','.join(APPS)}", file=sys.stderr)
        return 2

    started = time.monotonic()
    wrk, oha = bench.ensure_wrk(), ensure_oha()
    versions = bench.ensure_venv(False)
    rgunicorn = bench.build_rgunicorn(args.no_build)
    if rgunicorn is None:
        return 1
    versions["oha"] = subprocess.run([oha, "--version"], capture_output=True,
                                     text=True).stdout.strip().removeprefix("oha ")
    LOGS.mkdir(parents=True, exist_ok=True)
    body_file = RESULTS / "post16k.body"
    body_file.write_bytes(bench.POST_BODY)

    peaks: dict = {}
    results: dict = {}
    for app in apps:
        peaks[app] = {p: peak(p, app, args, wrk, rgunicorn) for p in PEERS}
        rates = [(f"{int(f * 100)}% {p}", max(1, round(f * v)))
                 for p, v in peaks[app].items() if v for f in FRACTIONS]
        rates.sort(key=lambda r: r[1])
        log(f"{app}: peaks " + ", ".join(f"{p} {fmt0(v)}" for p, v in peaks[app].items()))
        # Rounds alternate the servers; each figure is the median over the rounds (a
        # stall of the shared machine in one 5 s run does not decide the comparison).
        rounds: dict = {s: [] for s in SERVERS}
        for _ in range(args.rounds):
            for s in SERVERS:
                rounds[s].append(run_server(s, app, rates, args, oha, rgunicorn, body_file))
        results[app] = {"rates": rates, "servers": {s: median_runs(r) for s, r in rounds.items()},
                        "rounds": rounds}

    text, verdicts = report(results, peaks, args, versions)
    text += (f"\n\nrgunicorn's p99 is the lowest at {sum(verdicts)} of {len(verdicts)} rates."
             f" Wall time {time.monotonic() - started:.0f} s.")
    print(text)
    (RESULTS / "latency.md").write_text(text + "\n")
    (RESULTS / "latency.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions, "peaks": peaks,
         "results": results, "workers": args.workers, "connections": args.connections},
        indent=2) + "\n")
    chart.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
