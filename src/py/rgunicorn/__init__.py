"""rgunicorn: a Gunicorn-compatible pre-fork WSGI HTTP server written in Rust.

Installed with pip, the server runs inside the virtualenv's own interpreter: the console
script ``rgunicorn`` and ``python -m rgunicorn`` call into the native module built from the
same Rust crate as the ``rgunicorn`` binary, and behave exactly like it.
"""

import signal
import sys

from rgunicorn._native import __version__
from rgunicorn._native import run as _run

__all__ = ["__version__", "main"]


def _serve(argv, reexec_argv):
    # The server handles its signals itself. Python's SIGINT handler (KeyboardInterrupt)
    # would still be called from any Python code the master runs (hooks, the config file),
    # so it goes before the server installs its own.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(_run(argv, sys.executable, reexec_argv))


def main():
    """The ``rgunicorn`` console script: ``rgunicorn [OPTIONS] [APP_MODULE]``."""
    # A USR2 upgrade starts the new master the way this one was started.
    _serve(sys.argv, [sys.executable] + sys.argv)
