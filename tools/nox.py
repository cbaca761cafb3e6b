#!/usr/bin/env python3
"""Runs nox from a private virtual environment, creating it first if needed.

    python3 tools/nox.py            # the test sessions (lint, typecheck, core, docs)
    python3 tools/nox.py -s parity  # the parity report

Needs only Python >= 3.10 with venv: nox (pinned below) is installed into `.tools/nox`, and
nox builds every session's environment itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

NOX = "nox==2026.10.20"
ROOT = Path(__file__).resolve().parent.parent
ENV = ROOT / ".tools" / "nox"


def main() -> int:
    python = ENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    marker = ENV / "installed.txt"
    if not marker.exists() or marker.read_text() != NOX:
        print(f"tools/nox.py: installing {NOX} into {ENV.relative_to(ROOT)}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(ENV)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", NOX],
                       check=True)
        marker.write_text(NOX)
    os.chdir(ROOT)
    return subprocess.call([python, "-m", "nox", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
