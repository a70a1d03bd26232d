"""The engines import no I/O or clock module (ARCHITECTURE principle 1)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import rsc._engine

FORBIDDEN = {"asyncio", "socket", "selectors", "uvloop", "time", "threading", "datetime"}


def test_engine_imports_no_io_modules_in_a_fresh_interpreter() -> None:
    code = (
        "import sys\n"
        "import rsc._engine.node, rsc._engine.origin, rsc._engine.states, rsc._engine.handshake\n"
        "bad = [m for m in ('asyncio', 'socket', 'selectors', 'uvloop', 'threading') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_engine_sources_name_no_clock_or_io_module() -> None:
    # `time` is loaded by the interpreter itself at start-up, so sys.modules
    # cannot tell; the sources can.
    root = pathlib.Path(rsc._engine.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & FORBIDDEN, f"{path.name} imports {names & FORBIDDEN}"
