# rsc — every target creates .venv if needed and is safe to run twice.
# Another CPython (3.11 to 3.13) in its own venv, beside the default one:
#   make test PY=/path/to/python3.13 VENV=.venv313
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.rsc-installed
# Pure-mode modules (a .py with a .pxd beside it, outside rsc/_core) are compiled too.
PURE_PXD := $(filter-out rsc/_core/%,$(wildcard rsc/*.pxd rsc/*/*.pxd))
SOURCES := $(wildcard rsc/_core/*.pyx rsc/_core/*.pxd) $(PURE_PXD) $(PURE_PXD:.pxd=.py) \
	setup.py pyproject.toml

.PHONY: demo test test-core bench lab docs clean venv

venv: $(STAMP)

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# Editable install compiles the extensions in place; a failed compile fails here.
# scripts/pip_progress.py shows which module is compiling (pip's own log only
# when it fails: no setuptools banners).
# editable_mode=compat puts the checkout on sys.path with a .pth file, which
# type checkers follow (the default import hook they cannot see).
$(STAMP): $(VENV)/bin/python $(SOURCES)
	$(VPY) -m pip install --quiet "Cython==3.3.1" "setuptools>=68" wheel
	$(VPY) scripts/pip_progress.py --no-build-isolation --config-settings editable_mode=compat -e ".[test]"
	$(VPY) -c "import rsc._core as c, rsc.remote, rsc._engine.node, rsc.node.server; [c.load(n, compiled=True) for n in c.NAMES]; print('rsc: compiled core and engines OK')"
	touch $(STAMP)

# The first run builds the venv (progress shown while it compiles), then the demo.
demo: $(STAMP)
	@$(VPY) scripts/demo.py

# One run covers both twins: every rsc._core test is parametrized c/py; the
# rest of the suite runs on the compiled core and engines, and
# tests/test_twins_env.py runs a node end to end and the engine tests with
# RSC_NO_EXTENSIONS=1.
test: $(STAMP)
	$(VPY) -m pytest -q -p no:cacheprovider

# The pytest-benchmark suites (bench/README.md), then the instruction counts
# (callgrind, about 15 minutes; BENCH_INSTRUCTIONS=0 skips them and the report
# shows the last saved ones), then the report of both.
BENCH_INSTRUCTIONS ?= 1

bench: $(STAMP)
	$(VPY) -m pytest bench -q -p no:cacheprovider --benchmark-only --benchmark-autosave \
		--benchmark-columns=min,median,mean,ops,rounds --benchmark-group-by=group
	@if [ "$(BENCH_INSTRUCTIONS)" != 0 ]; then \
		$(VPY) bench/instructions.py --side all --json .benchmarks/instructions.json; fi
	$(VPY) bench/report.py

# The lab (docs/LAB.md): every shipped scenario over LAB_SEEDS seeds in FIFO
# order, then over LAB_SHUFFLED more with shuffled ready callbacks; stops at the
# first violation and prints the command that replays it. The suite runs a few
# hundred seeds of each; this is the long exploration (about 7 minutes here).
LAB_SEEDS ?= 2000
LAB_SHUFFLED ?= 1000
LAB_SCENARIOS := $(filter-out examples/lab/lab_registry.py,$(wildcard examples/lab/*.py))

lab: $(STAMP)
	@for s in $(LAB_SCENARIOS); do \
		echo "== $$s"; \
		$(VPY) -m rsc lab explore $$s --seeds $(LAB_SEEDS) || exit 1; \
		$(VPY) -m rsc lab explore $$s --seeds $(LAB_SHUFFLED) --start $(LAB_SEEDS) --shuffle || exit 1; \
	done

# The documentation site (mkdocs.yml), built offline into site/ (git-ignored);
# --strict turns every warning (a broken link, a page missing from the nav)
# into a failure, as tests/test_docs_build.py does.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VPY) -m mkdocs build --strict --site-dir site
	@echo "docs: open site/index.html"

clean:
	rm -rf $(VENV) build site *.egg-info rsc/_core/_*.c rsc/_core/_*.so rsc/_core/_*.html .benchmarks
	rm -f $(PURE_PXD:.pxd=.c) $(foreach p,$(PURE_PXD:.pxd=),$(wildcard $(p).*.so))
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
