"""rgunicorn's PEP 517 build backend: maturin's, behind two checks that fail at once.

``pip install .`` (or installing the sdist) compiles the Rust crate with cargo. Two cases
would otherwise go wrong slowly or silently, so every hook checks them before handing over to
maturin's own backend (``maturin``, from ``[build-system] requires``):

* No cargo on PATH. maturin's backend (1.8 and later) then downloads a Rust toolchain into a
  temporary directory (the ``puccinialin`` package) and builds with it: minutes and hundreds
  of megabytes, unasked. maturin's only switch for that is the environment variable
  ``MATURIN_NO_INSTALL_RUST``, which pyproject.toml cannot set; this backend sets it for
  maturin, and stops first with what to do: install Rust, or install a prebuilt wheel.
* A free-threaded CPython (3.13t and later): see ``free_threaded_refusal``.

The checks use only the standard library and take their inputs as arguments, so
tests/build_backend.py runs them with made-up ones on any interpreter.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig

# maturin's backend reads it in its get_requires_* hooks and before running `maturin pep517`:
# set, it never installs Rust itself. (Harmless when cargo is there, which is checked first.)
os.environ["MATURIN_NO_INSTALL_RUST"] = "1"

# Set to 1 to build for a free-threaded CPython anyway (to try the module there).
ALLOW_FREE_THREADED = "RGUNICORN_ALLOW_FREE_THREADED"

# The source tree (this file is src/pep517/rgunicorn_build.py in it).
ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                     os.pardir))
# Where the native module `rgunicorn._native` is defined.
EXTENSION_RS = os.path.join(ROOT, "src", "process", "extension.rs")

NO_CARGO = """\
rgunicorn: cannot build from source: {why}.

rgunicorn is a Rust program: building it from source (`pip install .`, or an sdist) needs
Rust's cargo and rustc (Rust {rust_version} or later). Either
  * install Rust, from https://rustup.rs or your distribution (Debian: apt install cargo),
    make sure `cargo --version` works in this shell, and run pip again; or
  * install a prebuilt wheel, which needs no Rust:
        pip install --find-links <dir> rgunicorn
    where <dir> holds rgunicorn's wheels (tests/build-wheels makes them in target/wheels/).
This build does not download a Rust toolchain by itself."""


def rust_version():
    """``rust-version`` from Cargo.toml, for the message (best effort)."""
    try:
        with open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8") as f:
            match = re.search(r'^rust-version\s*=\s*"([^"]+)"', f.read(), re.M)
    except OSError:
        match = None
    return match.group(1) if match else "stable"


def cargo_problem(which=shutil.which, run=subprocess.run):
    """Why cargo cannot build here, as a phrase; None when ``cargo --version`` works."""
    cargo = which("cargo")
    if cargo is None:
        return "cargo was not found on PATH"
    try:
        out = run([cargo, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return "`{} --version` could not run ({})".format(cargo, e)
    if out.returncode != 0 or not out.stdout.startswith(b"cargo "):
        # A rustup proxy without a toolchain, say: its own words come last.
        said = (out.stderr or out.stdout).decode("utf-8", "replace").strip().splitlines()
        return "`{} --version` failed{}".format(cargo, ": " + said[-1] if said else "")
    return None


def is_free_threaded(config_var=sysconfig.get_config_var, abiflags=None):
    """Whether this interpreter is a free-threaded (no GIL) build of CPython."""
    if abiflags is None:
        abiflags = getattr(sys, "abiflags", "")
    return bool(config_var("Py_GIL_DISABLED")) or "t" in abiflags


def pymodule_options(source):
    """The options of the ``#[pymodule(...)]`` on ``fn _native`` ("" for a bare
    ``#[pymodule]``), or None when the definition is not found."""
    module = re.search(r"#\[pymodule(?:\(([^)]*)\))?\]\s*(?:#\[[^\]]*\]\s*)*"
                       r"(?:pub(?:\([^)]*\))?\s+)?fn\s+_native\b", source)
    return None if module is None else module.group(1) or ""


def declared_gil_used(source):
    """What the native module declares about ``gil_used``: True, False, or None when it says
    nothing (or its definition is not found)."""
    said = re.search(r"\bgil_used\s*=\s*(true|false)\b", pymodule_options(source) or "")
    return None if said is None else said.group(1) == "true"


def free_threaded_refusal(free_threaded, gil_used, allowed=False):
    """Why not to build for this interpreter, or None to build.

    On a free-threaded CPython the module is built only when it declares
    ``#[pymodule(gil_used = false)]`` itself: its authors have checked that it runs without
    the GIL. Declared ``gil_used = true``, CPython would switch the GIL back on for the whole
    server when it imports the module, undoing what the interpreter was chosen for. Not
    declared, pyo3 (0.28 and later) declares ``gil_used = false`` on the module's behalf, a
    claim nobody has checked for rgunicorn: its unsafe code was written for a GIL build
    (objects reused when Py_REFCNT says only the server holds them, src/wsgi/reuse.rs), and it
    has never run on a free-threaded CPython. Both are refused unless ``allowed``.
    """
    if not free_threaded or gil_used is False or allowed:
        return None
    if gil_used:
        why = ("its native module declares #[pymodule(gil_used = true)]: importing it would "
               "switch the GIL back on for the whole server, and this combination is untested")
    else:
        why = ("its native module does not declare that it may run without the GIL "
               "(#[pymodule(gil_used = false)] in src/process/extension.rs, once checked); "
               "pyo3 would claim so on its behalf, and rgunicorn has never been tested on a "
               "free-threaded CPython")
    return ("rgunicorn: not building for this free-threaded CPython ({exe}, Python {ver}): "
            "{why}.\nUse the regular (GIL) build of CPython, e.g. python{minor} rather than "
            "python{minor}t (--workers N runs requests in parallel there, as processes); "
            "{env}=1 builds it anyway, to try it.".format(
                exe=sys.executable, ver=sys.version.split()[0], why=why,
                minor="%d.%d" % sys.version_info[:2], env=ALLOW_FREE_THREADED))


def check(for_this_interpreter=True):
    """Exits with a message when the build cannot or must not go on: first the interpreter
    (nothing to install would help), then cargo. The sdist hooks need cargo too (maturin asks
    it for the crate's file list), but build for no interpreter."""
    if for_this_interpreter and is_free_threaded():
        try:
            with open(EXTENSION_RS, encoding="utf-8") as f:
                gil_used = declared_gil_used(f.read())
        except OSError:
            gil_used = None
        allowed = os.environ.get(ALLOW_FREE_THREADED) == "1"
        refusal = free_threaded_refusal(True, gil_used, allowed)
        if refusal is not None:
            _stop(refusal)
    problem = cargo_problem()
    if problem is not None:
        _stop(NO_CARGO.format(why=problem, rust_version=rust_version()))


def _stop(message):
    # pip shows a failed hook's output, indented, under the hook's name.
    sys.stderr.write("\n" + message + "\n\n")
    sys.stderr.flush()
    sys.exit(1)


def _maturin():
    import maturin  # from [build-system] requires; imported only once the checks passed

    return maturin


def get_requires_for_build_wheel(config_settings=None):
    check()
    return _maturin().get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):
    check()
    return _maturin().get_requires_for_build_editable(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    check(for_this_interpreter=False)
    return _maturin().get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    check()
    return _maturin().prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    check()
    return _maturin().prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    check()
    return _maturin().build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    check()
    return _maturin().build_editable(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    check(for_this_interpreter=False)
    return _maturin().build_sdist(sdist_directory, config_settings)
