#!/usr/bin/env python3
"""Checks built wheels before they are handed out (run by tests/build-wheels).

For each wheel: ``auditwheel show`` must find it consistent with the manylinux tag its name
claims (no glibc symbol newer than the tag allows, no shared library outside the manylinux
policy), and each native module in it must have no RPATH or RUNPATH, no libpython among its
needed libraries, and none of the given build-machine directories in its bytes.

Usage: BUILD_VENV/bin/python tests/wheel_audit.py [--forbid DIR]... WHEEL...
(the Python of a venv with auditwheel, whose pyelftools reads the ELF files)
"""

import io
import json
import os
import re
import subprocess
import sys
import zipfile

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile


def glibc(tag):
    """(major, minor) of a manylinux tag, or None for anything else (linux_x86_64...)."""
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    m = re.match(r"(manylinux1|manylinux2010|manylinux2014)_", tag)
    if m:
        return legacy[m.group(1)]
    m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def claimed_tags(wheel):
    """The platform tags in a wheel's file name (``a.b`` is two of them)."""
    return os.path.basename(wheel)[:-len(".whl")].split("-")[-1].split(".")


def audit_tags(wheel):
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "auditwheel"), "show",
                          "--json", wheel], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        said = (out.stderr or out.stdout).strip().splitlines() or ["no output"]
        return ["auditwheel show failed: " + said[-1]], None
    report = json.loads(out.stdout)
    problems = []
    overall = report.get("overall_tag", "")
    if report.get("pure"):
        problems.append("auditwheel finds no native code in it")
    if report.get("external_libs"):
        problems.append("it needs libraries from outside the manylinux policy: %s"
                        % ", ".join(sorted(report["external_libs"])))
    if report.get("unsupported_isa"):
        problems.append("it needs an instruction set extension beyond the baseline")
    have = glibc(overall)
    for tag in claimed_tags(wheel):
        want = glibc(tag)
        if want is None:
            problems.append("%s is not a manylinux tag" % tag)
        elif have is None or have > want:
            problems.append("it claims %s, but auditwheel says it needs %s"
                            % (tag, overall or "?"))
    return problems, overall


def audit_elf(name, data, forbidden):
    problems = []
    elf = ELFFile(io.BytesIO(data))
    for section in elf.iter_sections():
        if not isinstance(section, DynamicSection):
            continue
        for entry in section.iter_tags():
            if entry.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                path = getattr(entry, "rpath", None) or getattr(entry, "runpath", "")
                problems.append("%s has %s %s" % (name, entry.entry.d_tag[3:], path))
            elif entry.entry.d_tag == "DT_NEEDED" and entry.needed.startswith("libpython"):
                problems.append("%s links %s (an extension module must not)"
                                % (name, entry.needed))
    for directory in forbidden:
        if directory.encode() in data:
            problems.append("%s contains the build machine's %s" % (name, directory))
    return problems


def audit(wheel, forbidden):
    problems, overall = audit_tags(wheel)
    natives = 0
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.endswith(".so") or ".so." in name:
                natives += 1
                problems += audit_elf(name, z.read(name), forbidden)
    if natives == 0:
        problems.append("it has no native module")
    return problems, overall


def main(argv):
    forbidden, wheels = [], []
    args = iter(argv)
    for arg in args:
        if arg == "--forbid":
            directory = os.path.normpath(next(args))
            if len(directory) > 1:
                forbidden.append(directory)
        else:
            wheels.append(arg)
    if not wheels:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for wheel in wheels:
        problems, overall = audit(wheel, forbidden)
        if problems:
            failed += 1
            for problem in problems:
                print("FAIL %s: %s" % (os.path.basename(wheel), problem))
        else:
            print("ok %s (auditwheel: %s; no RPATH/RUNPATH, no build path, %d KiB)"
                  % (os.path.basename(wheel), overall, os.path.getsize(wheel) // 1024))
    print("%d passed, %d failed" % (len(wheels) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
