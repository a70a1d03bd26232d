#!/usr/bin/env python3
"""``pip install -v ARGS`` for rsc's build, showing progress instead of pip's log.

Compiling rsc's extensions takes a minute or more; a quiet pip shows nothing
all that time, and a verbose one buries the progress under compiler command
lines and setuptools' deprecation banners. This runs pip verbosely, prints
one line per extension module as its compile starts (``[3/17] rsc._core._envelope``)
and a heartbeat while Cython generates C, and keeps everything else to
itself, unless pip fails: then the tail of its log is printed.

    python scripts/pip_progress.py --no-build-isolation -e ".[test]"
"""

from __future__ import annotations

import collections
import glob
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILDING = re.compile(r"building '([\w.]+)' extension")
HEARTBEAT_S = 5.0
TAIL_LINES = 200


def extension_count() -> int:
    """How many extension modules a build compiles (as setup.py finds them)."""
    if os.environ.get("RSC_NO_EXTENSIONS", "") not in ("", "0"):
        return 0
    core = glob.glob(os.path.join(ROOT, "rsc", "_core", "_*.pyx"))
    pure = [p for p in glob.glob(os.path.join(ROOT, "rsc", "**", "*.pxd"), recursive=True)
            if os.path.basename(os.path.dirname(p)) != "_core"]
    return len(core) + len(pure)


def main(argv: list[str]) -> int:
    total = extension_count()
    t0 = time.monotonic()
    say = lambda msg: print(f"rsc build [{time.monotonic() - t0:5.1f}s] {msg}", flush=True)  # noqa: E731
    say(f"installing rsc: Cython generates C, then {total} extension modules compile "
        "(a minute or two)")
    proc = subprocess.Popen([sys.executable, "-m", "pip", "install", "-v", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    assert proc.stdout is not None
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    last_said = [time.monotonic()]
    done = threading.Event()

    n = 0

    def heartbeat() -> None:
        while not done.wait(1.0):
            if time.monotonic() - last_said[0] >= HEARTBEAT_S:
                say("... Cython is generating C" if n == 0 else f"... compiling ({n}/{total} started)")
                last_said[0] = time.monotonic()

    threading.Thread(target=heartbeat, daemon=True).start()
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        m = BUILDING.search(line)
        if m:
            n += 1
            say(f"[{n}/{total}] compiling {m[1]}")
            last_said[0] = time.monotonic()
    rc = proc.wait()
    done.set()
    if rc != 0:
        print("\n".join(tail), file=sys.stderr)
        say(f"pip failed with exit status {rc} (its last {len(tail)} lines above)")
        return rc
    say("installed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
