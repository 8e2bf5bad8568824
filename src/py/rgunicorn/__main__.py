"""``python -m rgunicorn [OPTIONS] [APP_MODULE]``."""

import sys

from rgunicorn import _serve

_serve(["rgunicorn"] + sys.argv[1:], [sys.executable, "-m", "rgunicorn"] + sys.argv[1:])
