"""The documentation site (mkdocs.yml, ``make docs``) builds offline with
``--strict``: a broken link or anchor, a page missing from the nav, or a
docstring the API reference cannot render fails the build. The built pages
load nothing from the network, and the API reference holds the public API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cluster import REPO_ROOT

ROOT = Path(REPO_ROOT)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=REPO_ROOT, env=env, text=True, capture_output=True, timeout=120)
    log = build.stdout + build.stderr
    assert build.returncode == 0, log
    assert not re.search(r"^(WARNING|ERROR)\b", log, re.M), log
    return out


def _nav_files(nav: list) -> list[str]:
    files = []
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            files += _nav_files(value) if isinstance(value, list) else [value]
    return files


def test_every_page_is_in_the_nav_and_built(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_files(config["nav"])
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages
    for page in nav:
        assert (site / page).with_suffix(".html").is_file(), page


def test_the_guide_is_read_in_order(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    guide = next(e["Guide"] for e in config["nav"] if isinstance(e, dict) and "Guide" in e)
    titles = [next(iter(e)) for e in guide]
    assert [t.split(".")[0] for t in titles] == [str(i) for i in range(1, len(titles) + 1)]


def test_no_page_loads_anything_from_the_network(site: Path) -> None:
    remote = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)=["']?(https?:)?//""", re.I)
    for page in site.rglob("*.html"):
        found = remote.search(page.read_text())
        assert found is None, f"{page.relative_to(site)} loads {found.group(0)!r}"
    css = "\n".join(p.read_text() for p in site.rglob("*.css"))
    assert "fonts.googleapis" not in css and "@import url(http" not in css


@pytest.mark.parametrize("page, objects", [
    ("reference/remote.html", ["rsc.remote.Runtime", "rsc.remote.spawn_remote", "rsc.handle.RemoteHandle.join",
                               "rsc.handle.RemoteHandle.abort", "rsc.handle.RemoteHandle.close"]),
    ("reference/regions.html", ["rsc.regions.region", "rsc.regions.Region.cancel", "rsc.cx.Cx.checkpoint"]),
    ("reference/lease.html", ["rsc.lease.fail", "rsc.lease.cancel", "rsc.lease.retry", "rsc.lease.Lease"]),
    ("reference/sagas.html", ["rsc.sagas.saga", "rsc.sagas.Saga"]),
    ("reference/registry.html", ["rsc.registry.Registry.computation"]),
    ("reference/errors.html", ["rsc.errors.RemoteFailed", "rsc.errors.RemoteCancelled", "rsc.errors.Cancelled"]),
    ("reference/launch.html", ["rsc.supervise.LocalCluster"]),
])
def test_the_api_reference_documents(site: Path, page: str, objects: list[str]) -> None:
    html = (site / page).read_text()
    missing = [o for o in objects if f'id="{o}"' not in html]
    assert not missing, f"{page} lacks {missing}"
