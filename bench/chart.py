#!/usr/bin/env python3
"""Draws the benchmark results as one SVG: throughput and CPU per response per app and
server (from bench/run's results/latest.json), and p99 latency against the request rate
(from bench/latency's results/latency.json, when present).

Usage: bench/chart.py [--out bench/chart.svg]
Standard library only; the SVG is plain text, so the README can show it and git can diff it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from html import escape
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
COLORS = {"rgunicorn": "#d9480f", "gunicorn": "#1971c2", "granian": "#2f9e44",
          "rgunicorn-base": "#f59f00", "rgunicorn-wheel": "#ae3ec9",
          "rgunicorn-abi3": "#868e96", "rgunicorn-whitenoise": "#ff8787",
          "gunicorn-whitenoise": "#74c0fc", "nginx": "#212529",
          # The threaded variants (bench/run --variant-threads T): darker than their base.
          "rgunicorn-threads": "#a61e4d", "gunicorn-gthread": "#0b3d91",
          "granian-threads": "#0b7285"}
THREAD_SERVERS = ("rgunicorn-threads", "gunicorn-gthread", "granian-threads")
FONT = 'font-family="sans-serif"'


def color(server: str) -> str:
    return COLORS.get(server, "#495057")


class Svg:
    def __init__(self, width: int):
        self.width = width
        self.parts: list[str] = []
        self.height = 0

    def text(self, x: float, y: float, s: str, size: int = 12, anchor: str = "start",
             weight: str = "normal", fill: str = "#212529") -> None:
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" {FONT} '
                          f'text-anchor="{anchor}" font-weight="{weight}" fill="{fill}">'
                          f'{escape(s)}</text>')

    def rect(self, x: float, y: float, w: float, h: float, fill: str) -> None:
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
                          f'height="{max(h, 0):.1f}" fill="{fill}"/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#dee2e6",
             width: float = 1) -> None:
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                          f'stroke="{stroke}" stroke-width="{width}"/>')

    def polyline(self, points: list[tuple[float, float]], stroke: str) -> None:
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{stroke}" '
                          f'stroke-width="2"/>')
        for x, y in points:
            self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{stroke}"/>')

    def render(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}">'
                f'<rect width="100%" height="100%" fill="white"/>' + "".join(self.parts) +
                "</svg>\n")


def bar_panel(svg: Svg, top: float, title: str, apps: list[str], servers: list[str],
              value, unit: str, note: str, app_servers: dict | None = None) -> float:
    """Horizontal bars, one group per app; each bar scaled to the app's largest value.
    With app_servers, an app shows only the servers that ran it."""
    svg.text(20, top + 18, title, size=15, weight="bold")
    svg.text(20, top + 36, note, size=11, fill="#495057")
    y = top + 52
    bar_h, label_w, bar_w = 14, 110, svg.width - 110 - 150
    for app in apps:
        ran = (app_servers or {}).get(app)
        vals = {s: value(app, s) for s in servers if ran is None or s in ran}
        biggest = max((v for v in vals.values() if v), default=0) or 1
        svg.text(20, y + 12, app, size=12, weight="bold")
        for s, v in vals.items():
            w = bar_w * (v or 0) / biggest
            svg.rect(label_w + 20, y, w, bar_h - 2, color(s))
            svg.text(label_w + 26 + w, y + 11, "—" if v is None else f"{v:,.{0 if v >= 100 else 1}f} {unit}",
                     size=11)
            y += bar_h
        y += 8
    return y + 10


def legend(svg: Svg, top: float, servers: list[str], labels: dict | None = None) -> float:
    x = 20
    for s in servers:
        label = (labels or {}).get(s, s)
        if x > 20 and x + 30 + 8 * len(label) > svg.width:
            x, top = 20, top + 18
        svg.rect(x, top, 12, 12, color(s))
        svg.text(x + 16, top + 10, label, size=12)
        x += 30 + 8 * len(label)
    return top + 24


def latency_panels(svg: Svg, top: float, lat: dict) -> float:
    svg.text(20, top + 18, "p99 latency at a fixed request rate (oha, open loop, log scale)",
             size=15, weight="bold")
    svg.text(20, top + 36, "x: requests per second sent; y: p99 in ms, from when each "
             "request was due (queueing counts)", size=11, fill="#495057")
    apps = list(lat["results"])
    servers = sorted({s for r in lat["results"].values() for s in r["servers"]},
                     key=lambda s: list(COLORS).index(s) if s in COLORS else 99)
    top = legend(svg, top + 44, servers) - 44
    n = max(1, len(apps))
    gap = 30
    w = (svg.width - 40 - gap * (n - 1)) / n
    h = 220
    y0 = top + 60
    for i, app in enumerate(apps):
        x0 = 20 + i * (w + gap)
        res = lat["results"][app]
        rates = [r for _, r in res["rates"]]
        series = {}
        for server, by_label in res["servers"].items():
            pts = [(rate, by_label[label]["p99_ms"]) for label, rate in res["rates"]
                   if label in by_label and by_label[label].get("p99_ms")]
            if pts:
                series[server] = sorted(pts)
        ys = [p for pts in series.values() for _, p in pts]
        if not rates or not ys:
            continue
        lo, hi = math.log10(max(min(ys), 0.01)), math.log10(max(ys))
        lo, hi = math.floor(lo), math.ceil(hi) if hi > math.floor(lo) else math.floor(lo) + 1
        xmax = max(rates) * 1.05
        px = lambda r: x0 + 40 + (w - 50) * r / xmax  # noqa: E731
        py = lambda v: y0 + h - 20 - (h - 30) * (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo)  # noqa: E731
        svg.text(x0 + w / 2, y0 + 4, app, size=13, anchor="middle", weight="bold")
        for e in range(lo, hi + 1):
            svg.line(x0 + 40, py(10 ** e), x0 + w - 10, py(10 ** e))
            svg.text(x0 + 36, py(10 ** e) + 4, f"{10 ** e:g}", size=10, anchor="end")
        svg.line(x0 + 40, y0 + h - 20, x0 + w - 10, y0 + h - 20, stroke="#868e96")
        for r in (0, xmax / 2, max(rates)):
            svg.text(px(r), y0 + h - 6, f"{r:,.0f}", size=10, anchor="middle")
        for server, pts in series.items():
            svg.polyline([(px(r), py(v)) for r, v in pts], color(server))
    return y0 + h + 10


def write(out: Path = BENCH / "chart.svg") -> Path | None:
    """Draws results/latest.json (and results/latency.json, if there) into `out`."""
    latest = RESULTS / "latest.json"
    if not latest.exists():
        print(f"no {latest}: run bench/run first", file=sys.stderr)
        return None
    data = json.loads(latest.read_text())
    summary, servers = data["summary"], data["servers"]
    apps = list(summary)
    svg = Svg(900)
    a = data.get("args", {})
    svg.text(20, 26, f"rgunicorn benchmark — {data.get('date', '')[:10]}, {a.get('workers')} "
             f"workers, wrk -c{a.get('connections')}, {data['machine']['cpus']} CPUs",
             size=17, weight="bold")
    t = a.get("variant_threads")
    labels = {s: f"{s} ({t} threads)" for s in servers if s in THREAD_SERVERS and t}
    y = legend(svg, 40, servers, labels)
    app_servers = data.get("app_servers")

    def stat(key):
        return lambda app, s: summary[app].get(s, {}).get(key)

    y = bar_panel(svg, y, "Throughput (requests/s, higher is better)", apps, servers,
                  stat("rps"), "", "median of the rounds; wrk closed loop, keep-alive",
                  app_servers)
    y = bar_panel(svg, y, "CPU per response (µs, lower is better)", apps, servers,
                  stat("cpu_us_per_resp"), "µs",
                  "user + system time of the server's processes / responses", app_servers)
    lat_file = RESULTS / "latency.json"
    if lat_file.exists():
        y = latency_panels(svg, y, json.loads(lat_file.read_text()))
    svg.height = int(y + 10)
    out.write_text(svg.render())
    print(f"chart: {out}", file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=BENCH / "chart.svg")
    return 0 if write(ap.parse_args().out) else 1


if __name__ == "__main__":
    sys.exit(main())
