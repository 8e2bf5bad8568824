"""A view that queries PostgreSQL, as a typical database-backed app does.

``GET /`` runs one query over a 100-row table through psycopg 3 and answers JSON. The
server is the one bench.py starts (a throwaway cluster on a unix socket); its address comes
in ``BENCH_PG_DSN``. Each thread keeps its own connection, as Django does.
"""

import json
import os
import threading

import psycopg

_local = threading.local()


def _connection():
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = psycopg.connect(os.environ["BENCH_PG_DSN"], autocommit=True)
        _local.conn = conn
    return conn


def app(environ, start_response):
    with _connection().cursor() as cur:
        cur.execute("SELECT count(*), sum(n) FROM bench_items WHERE n > %s", (0,))
        count, total = cur.fetchone()
    body = json.dumps({"count": count, "sum": int(total)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
