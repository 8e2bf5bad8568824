#!/usr/bin/env python3
"""Checks of rgunicorn's build backend (src/pep517/rgunicorn_build.py), which stops
``pip install .`` at once when it cannot or must not build.

The checks' logic, with made-up inputs (no free-threaded CPython exists on the machines this
runs on): which interpreters are free-threaded, what the native module declares, which
combinations are refused, how a missing or broken cargo is told; then the backend's hooks in
a child interpreter whose sysconfig says Py_GIL_DISABLED=1, which must refuse before maturin
is imported. Unless --unit: ``pip install .`` into a fresh virtualenv with Rust hidden must
fail within 60 s with the backend's message (maturin comes from the package index).

Usage: python3 tests/build_backend.py [--unit]
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = os.path.join(REPO, "src", "pep517", "rgunicorn_build.py")

spec = importlib.util.spec_from_file_location("rgunicorn_build", BACKEND)
backend = importlib.util.module_from_spec(spec)
sys.dont_write_bytecode = True  # no __pycache__ in src/
spec.loader.exec_module(backend)


def check_free_threaded_detection():
    def config(value):
        return lambda name: value if name == "Py_GIL_DISABLED" else None

    assert backend.is_free_threaded(config(1), "t")
    assert backend.is_free_threaded(config(1), "")
    assert backend.is_free_threaded(config(None), "t")  # no sysconfig variable, abi tag 't'
    assert not backend.is_free_threaded(config(0), "")
    assert not backend.is_free_threaded(config(None), "")  # 3.12 and older: no variable
    assert not backend.is_free_threaded(config(None), "d")  # a debug build


def check_declaration_reading():
    read = backend.declared_gil_used
    assert read("#[pymodule]\nfn _native(m: &Bound<'_, PyModule>)") is None
    assert read("#[pymodule(gil_used = true)]\nfn _native(m)") is True
    assert read("#[pymodule(gil_used = false)]\nfn _native(m)") is False
    assert read('#[pymodule(name = "x", gil_used=false)]\n#[doc = "d"]\npub fn _native(m)') \
        is False
    assert read("#[pymodule(gil_used = false)]\nfn other(m) {}\n#[pymodule]\nfn _native(m)") \
        is None
    assert read("fn _native() {}") is None
    # The real definition is found (a rename must not pass for "says nothing").
    with open(backend.EXTENSION_RS, encoding="utf-8") as f:
        source = f.read()
    assert backend.pymodule_options(source) is not None, backend.EXTENSION_RS
    options = backend.pymodule_options(source)
    print("  src/process/extension.rs: #[pymodule%s] fn _native: gil_used %s"
          % ("(%s)" % options if options else "",
             {None: "not declared", True: "true", False: "false"}[read(source)]))


def check_refusals():
    refuse = backend.free_threaded_refusal
    for gil_used in (None, True, False):
        assert refuse(False, gil_used) is None  # a regular CPython always builds
    assert refuse(True, False) is None  # declared safe without the GIL: builds
    said = refuse(True, True)
    assert "gil_used = true" in said and "regular (GIL) build" in said, said
    said = refuse(True, None)
    assert "does not declare" in said and backend.ALLOW_FREE_THREADED in said, said
    assert refuse(True, None, allowed=True) is None
    assert refuse(True, True, allowed=True) is None


def check_cargo_problems():
    class Done:
        def __init__(self, returncode, stdout, stderr=b""):
            self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def run(result):
        return lambda *args, **kwargs: result

    assert backend.cargo_problem(lambda _: None) == "cargo was not found on PATH"
    found = lambda _: "/x/bin/cargo"  # noqa: E731
    said = backend.cargo_problem(found, run(Done(1, b"", b"info: ...\nerror: rustup could not "
                                                         b"choose a version of cargo to run")))
    assert "failed: error: rustup could not choose" in said, said
    assert backend.cargo_problem(found, run(Done(0, b"cargo 1.95.0 (f2d3ce0bd)\n"))) is None

    def missing(*args, **kwargs):
        raise FileNotFoundError("gone")

    assert "could not run" in backend.cargo_problem(found, missing)
    message = backend.NO_CARGO.format(why="cargo was not found on PATH", rust_version="1.85")
    assert "https://rustup.rs" in message and "pip install --find-links <dir> rgunicorn" \
        in message, message


# A child interpreter on which sysconfig says free-threaded, cargo is there or not (argv[2]),
# and `maturin` is a stand-in that records being reached.
CHILD = r"""
import os, sys, sysconfig, types
real = sysconfig.get_config_var
sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else real(name)
stand_in = types.ModuleType("maturin")
stand_in.get_requires_for_build_wheel = lambda settings=None: ["reached maturin"]
sys.modules["maturin"] = stand_in
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import rgunicorn_build
rgunicorn_build.cargo_problem = lambda: None if sys.argv[2] == "cargo" else "no cargo (made up)"
print(rgunicorn_build.get_requires_for_build_wheel())
"""


def check_hooks_on_free_threaded():
    def child(cargo, allowed):
        env = dict(os.environ)
        env.pop(backend.ALLOW_FREE_THREADED, None)
        if allowed:
            env[backend.ALLOW_FREE_THREADED] = "1"
        return subprocess.run([sys.executable, "-c", CHILD, os.path.dirname(BACKEND), cargo],
                              capture_output=True, text=True, env=env, timeout=60)

    refused = "not building for this free-threaded CPython"
    out = child("cargo", allowed=False)
    assert out.returncode == 1 and "reached" not in out.stdout, out
    assert refused in out.stderr, out
    # Refused first: installing Rust would not help.
    out = child("no cargo", allowed=False)
    assert out.returncode == 1 and refused in out.stderr and "made up" not in out.stderr, out
    out = child("cargo", allowed=True)
    assert out.returncode == 0 and "reached maturin" in out.stdout, out
    out = child("no cargo", allowed=True)
    assert out.returncode == 1 and "cannot build from source: no cargo (made up)" in out.stderr


def without_rust(env, empty):
    """``env`` with no cargo, rustc or rustup reachable."""
    env = {k: v for k, v in env.items() if k not in ("RUSTC", "CARGO", "RUSTUP_TOOLCHAIN")}
    env["PATH"] = os.pathsep.join(
        d for d in env.get("PATH", "").split(os.pathsep)
        if d and not any(os.path.exists(os.path.join(d, t)) for t in ("cargo", "rustc", "rustup")))
    for name in ("CARGO_HOME", "RUSTUP_HOME"):
        env[name] = os.path.join(empty, name.lower())
        os.makedirs(env[name])
    assert shutil.which("cargo", path=env["PATH"]) is None
    return env


def check_pip_install_without_rust():
    with tempfile.TemporaryDirectory(prefix="rgunicorn-no-rust-") as tmp:
        env = without_rust(os.environ, tmp)
        venv = os.path.join(tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=env)
        start = time.monotonic()
        out = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install",
                              "--disable-pip-version-check", REPO], capture_output=True,
                             text=True, env=env, timeout=300)
        took = time.monotonic() - start
        said = out.stdout + out.stderr
        assert out.returncode != 0, said
        assert "cannot build from source: cargo was not found on PATH" in said, said
        assert "pip install --find-links <dir> rgunicorn" in said, said
        assert "puccinialin" not in said and "Rust not found, installing" not in said, said
        assert took < 60, "pip took %.1f s to fail" % took
        print("  pip install . without Rust: exit status %d after %.1f s"
              % (out.returncode, took))


def main():
    checks = [check_free_threaded_detection, check_declaration_reading, check_refusals,
              check_cargo_problems, check_hooks_on_free_threaded]
    if sys.argv[1:] != ["--unit"]:
        checks.append(check_pip_install_without_rust)
    for check in checks:
        check()
        print("ok %s" % check.__name__)
    print("%d passed, 0 failed" % len(checks))


if __name__ == "__main__":
    main()
