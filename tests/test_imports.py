"""Import hygiene: refusion.runtime never pulls in torch."""
from __future__ import annotations

import subprocess
import sys


def test_runtime_does_not_import_torch():
    code = (
        "import sys, importlib, pkgutil\n"
        "import refusion.runtime as rt\n"
        "for m in pkgutil.walk_packages(rt.__path__, 'refusion.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print(len(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torch imported by refusion.runtime: {proc.stdout} {proc.stderr[-2000:]}"
