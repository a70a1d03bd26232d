"""The code the README and the guide show is real code: it runs against a real
4-node cluster (serving examples.guide_registry) and prints what they say."""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import rsc
from tests.cluster import REPO_ROOT

ROOT = Path(REPO_ROOT)
REGISTRY = "examples.guide_registry:registry"


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)


def block_with(page: str, text: str) -> str:
    return next(b for b in python_blocks(page) if text in b)


def test_the_readme_s_ten_lines_run(cluster: Any) -> None:
    code = block_with("README.md", "asyncio.run(main())")
    assert len([line for line in code.splitlines() if line.strip()]) <= 13
    c = cluster(1, registry=REGISTRY)
    printed: list[tuple] = []
    ns: dict = {"print": lambda *a: printed.append(a), "__name__": "__main__"}
    exec(compile(code.replace('"cluster.json"', repr(c.nodes)), "README.md", "exec"), ns)
    assert printed == [(285,)]
    assert ns["square"](None, 12) == 144  # the registered function is still the function


def test_the_concepts_page_s_snippets_run(cluster: Any) -> None:
    first = block_with("docs/guide/concepts.md", "async with rsc.Runtime")
    region = block_with("docs/guide/concepts.md", "async with rsc.region")
    c = cluster(4, registry=REGISTRY)
    printed: list[tuple] = []

    async def main() -> int:
        ns: dict = {"rsc": rsc, "print": lambda *a: printed.append(a), "NODES": c.nodes}
        code = "async def _first():\n" + textwrap.indent(first.replace('"cluster.json"', "NODES"), "    ")
        code += "\nasync def _region(rt):\n" + textwrap.indent(region, "    ") + "    return total\n"
        exec(compile(code, "concepts.md", "exec"), ns)
        await ns["_first"]()
        async with rsc.Runtime(c.nodes) as rt:
            return await ns["_region"](rt)

    total = asyncio.run(main())
    assert printed == [(144,)]
    assert total == sum(i * i for i in range(100))


def test_every_python_block_of_the_guide_compiles() -> None:
    """Blocks that need names from around them (``rt``, ``registry``) cannot run
    alone, but each is valid Python, inside a coroutine where it awaits."""
    pages = ["README.md", "docs/index.md"] + sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guide").glob("*.md"))
    checked = 0
    for page in pages:
        for block in python_blocks(page):
            try:
                compile(block, page, "exec")
            except SyntaxError:  # an await outside a function: the body of one
                compile("async def _body():\n" + textwrap.indent(block, "    "), page, "exec")
            checked += 1
    assert checked >= 10
