# zhangben — every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: serve demo check test test-ha test-image lint bench install clean chromium deploy-tools cluster-tools image-tools

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "zhangben needs Python >= 3.11"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/python -m zhangben.launch

demo: $(STAMP)
	$(BIN)/zhangben demo

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used), with a CJK font
# so the screenshots of the Chinese pages can be read.
chromium:
	@{ command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "wqy\|noto sans cjk"; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium and a CJK font for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
	  else \
	    echo "the browser tests need Chromium: apt-get install chromium"; exit 1; \
	  fi; }

# The going-live tests run Caddy (the TLS front) and validate compose.yaml; no Docker engine is needed.
deploy-tools:
	@command -v caddy >/dev/null 2>&1 && { command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's caddy and docker-compose for the going-live tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq caddy docker-compose >/dev/null; \
	  else \
	    echo "the going-live tests skip without caddy and a Compose (apt-get install caddy docker-compose)"; \
	  fi; }

# The cells' tests and `zhangben dev cluster up` run etcd (Debian's etcd-server, not started as a service) and
# Patroni from PyPI, in .patroni: a venv made from the system's /usr/bin/python3, so the postgres user can run it.
cluster-tools:
	@command -v etcd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's etcd-server for the cells' tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; \
	  else \
	    echo "the cells' tests need etcd: apt-get install etcd-server"; exit 1; \
	  fi; }
	@test -x .patroni/bin/patroni || { \
	  PY=$$(test -x /usr/bin/python3 && echo /usr/bin/python3 || echo $(PYTHON)); \
	  $$PY -m venv .patroni && .patroni/bin/pip install --quiet 'patroni[etcd3,psycopg3]>=4.0'; }

# Lint, format and type checks first: a red check stops the run before the suite.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast tier: lint, the domain's unit tests and the use cases in process against an in-memory WeChat
# (tests/application/fake_wechat.py) — no process, no network; run first by `make test`.
check: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/application tests/test_layers.py

# Lint first (a red check stops the run), then the whole suite — the fast tier's tests too — on every core
# (one test file per worker: a file's deployment is shared by its tests), without the slow fault matrices;
# `make test-ha` runs those (README, "Tests and benchmarks").  One worker more than the cores: the tests wait
# on their servers much of the time (measured on 2 cores: 3 workers 4.5 min, 2 workers 5).
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) + 1 )))

# the tests marked `cells` time Patroni failovers (a gap of a second is a failure): they run alone, after the rest
test: lint chromium deploy-tools cluster-tools
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m "not ha and not cells and not image" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "cells and not ha" $(PYTEST_ARGS)

test-ha: $(STAMP) chromium deploy-tools cluster-tools
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m "ha and not cells and not image" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m cells $(PYTEST_ARGS)  # the whole cells' matrix: make test's kill too

# The image built from the Dockerfile and run under podman: its commands, its healthcheck, its user, compose.yaml's
# services (docs/going-live.md, "The image, proven").  Debian's podman and mmdebstrap; the base image is made from
# Debian's packages and cached in var/image-cache (no registry needed).  Not in `make test`: about 3 minutes.
image-tools:
	@{ command -v podman >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's podman and mmdebstrap for the image's tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman mmdebstrap >/dev/null; \
	  else \
	    echo "make test-image needs podman and mmdebstrap (as root): apt-get install podman mmdebstrap"; exit 1; \
	  fi; }

test-image: $(STAMP) image-tools
	$(BIN)/python -m pytest -m image -p no:cacheprovider tests/image $(PYTEST_ARGS)

bench: $(STAMP)  # QUICK=1: smaller loads, under 3 minutes
	$(BIN)/python -m bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .patroni var/test-* .pytest_cache
