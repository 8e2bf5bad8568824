"""WhiteNoise in front of a trivial WSGI app: the static apps (static_css, static_icon)
served through Python, as a Django or Flask project without nginx serves them.

Served as ``static_app:app`` by the rgunicorn-whitenoise and gunicorn-whitenoise servers;
bench.py writes the files into a temporary folder and names it in BENCH_STATIC_DIR.
"""

import os

from whitenoise import WhiteNoise


def hello(environ, start_response):
    """What a request outside /static/ gets."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


app = WhiteNoise(hello, root=os.environ["BENCH_STATIC_DIR"], prefix="/static/")
