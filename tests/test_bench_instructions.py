"""bench/instructions.py pairs the measured side with this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "instructions.py")


def test_the_side_run_natively_imports_this_checkouts_rsc(tmp_path) -> None:
    """The partner run in the script's own process (the origin of ``--side
    node``) imports the rsc beside the script, whatever ``rsc`` an installed
    package or the working directory would give."""
    code = ("import runpy, sys; g = runpy.run_path(sys.argv[1]); g['_use_this_checkout'](); "
            "import rsc; print(rsc.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code, SCRIPT], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == os.path.join(ROOT, "rsc", "__init__.py")
