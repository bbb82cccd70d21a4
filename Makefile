# Development entry points. Everything runs non-interactively (CI=true, no stdin) on a fresh
# Debian machine: missing system packages come from apt, Python packages go into .venv.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export DEBIAN_FRONTEND := noninteractive

# apt needs root; use sudo only when we are not root already (CI containers usually are).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
# Install $(1); refresh the package lists only when the first attempt fails.
apt_install = $(APT_GET) install -y --no-install-recommends $(1) \
	|| { $(APT_GET) update && $(APT_GET) install -y --no-install-recommends $(1); }

# Mosquitto lives in /usr/sbin, which is not on a normal user's PATH.
MOSQUITTO_TOOLS := mosquitto mosquitto_pub mosquitto_sub mosquitto_rr mosquitto_passwd

# tr50gw's Mosquitto plugin (broker/README.md), compiled against Debian's plugin headers:
# mosquitto-dev (mosquitto_broker.h, mosquitto_plugin.h), libmosquitto-dev (mosquitto.h,
# mqtt_protocol.h: MQTT v5 properties) and libssl-dev (SHA-256 from libcrypto, which the broker
# itself links). Mosquitto's own functions are resolved from the broker when it loads the plugin.
PLUGIN_SRC := broker/tr50gw_auth.c
PLUGIN := broker/build/tr50gw_auth.so
PLUGIN_CFLAGS := -Wall -Wextra -Werror -O2 -fPIC -shared
PLUGIN_HEADERS := /usr/include/mosquitto_broker.h:mosquitto-dev \
	/usr/include/mosquitto.h:libmosquitto-dev /usr/include/openssl/evp.h:libssl-dev

.PHONY: help venv mosquitto broker-plugin node_modules chromium postgresql run test test-backends screenshots lint bench bench-large \
	fuzz soak clean distclean

help:
	@echo "make venv       create .venv and install the project with its test extras"
	@echo "make mosquitto  install mosquitto and mosquitto-clients from apt if missing"
	@echo "make broker-plugin  build broker/build/tr50gw_auth.so (apt: gcc, mosquitto-dev if missing)"
	@echo "make node_modules  npm ci: uPlot (console), MQTT.js (tests) (apt: nodejs, npm if missing)"
	@echo "make chromium   install Debian's Chromium (browser tests of the console) if missing"
	@echo "make postgresql  install Debian's PostgreSQL (the DuckLake tests start their own) if missing"
	@echo "make run        start a local broker, the gateway and a demo fleet (DEMO=0: no fleet)"
	@echo "make test       run the whole test suite (real Mosquitto on free ports)"
	@echo "make test-backends  the same with every backend-parametrized case on DuckLake too"
	@echo "make screenshots  the console's browser tests, saving their screenshots to docs/console"
	@echo "make lint       ruff check, ruff format --check, lint-imports (layer contracts), mypy"
	@echo "make bench      run the benchmarks"
	@echo "make bench-large  the queries on 100M records (generated once, 11 GB)"
	@echo "make fuzz       >= 100,000 random inputs through the codec and dispatcher (FUZZ_ARGS=...)"
	@echo "make soak       mixed MQTT + WebSocket load with a broker restart (DURATION=120)"
	@echo "make clean      remove caches; make distclean also removes .venv, .run and data"

venv: $(STAMP)

# Re-run the install only when pyproject.toml changes (the stamp is newer otherwise).
# Debian ships venv's ensurepip separately (python3-venv); minimal images lack python3.
$(STAMP): pyproject.toml
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
		$(call apt_install,python3 python3-venv); \
	fi
	@[ -x $(VPY) ] || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(VPY) -m pip install --disable-pip-version-check -e '.[test]'
	@touch $@

mosquitto:
	@missing=""; \
	for tool in $(MOSQUITTO_TOOLS); do \
		command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing mosquitto (missing:$$missing)"; \
		$(call apt_install,mosquitto mosquitto-clients); \
	fi

broker-plugin: $(PLUGIN)

# Rebuilt when the source changes; written under a temporary name and renamed, so a broker that
# has the old file loaded never sees it change under it.
$(PLUGIN): $(PLUGIN_SRC)
	@missing=""; \
	command -v gcc >/dev/null || missing="$$missing gcc"; \
	for entry in $(PLUGIN_HEADERS); do \
		[ -f "$${entry%%:*}" ] || missing="$$missing $${entry#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing the plugin's build dependencies (missing:$$missing)"; \
		$(call apt_install,$$missing); \
	fi
	@mkdir -p $(@D)
	gcc $(PLUGIN_CFLAGS) -o $@.tmp $< -lcrypto
	@mv -f $@.tmp $@

# The console's front-end packages (uPlot, served from node_modules by the gateway) and MQTT.js, a
# device client the tests run unchanged (tests/test_real_clients.py): package.json pins them,
# package-lock.json everything under them, and `npm ci` installs exactly that. Node.js and npm
# come from apt when missing (Debian's nodejs 18 is enough; a nodejs that brings its own npm, as
# NodeSource's does, is left alone). Re-run only when the lock file changes.
NODE_STAMP := node_modules/.installed

node_modules: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	@missing=""; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing Node.js (missing:$$missing)"; \
		$(call apt_install,$$missing); \
	fi
	npm ci --no-audit --no-fund
	@touch $@

# Debian's own Chromium for the console's browser tests (tests/test_console.py): Playwright for
# Python drives it through `executable_path` (Playwright's browser download is not needed).
chromium:
	@if ! command -v chromium >/dev/null; then \
		echo "installing chromium"; \
		$(call apt_install,chromium fonts-dejavu-core); \
	fi

# PostgreSQL's server binaries (initdb, pg_ctl) for the tests' own clusters (devtools/postgres.py:
# a private cluster on a free port, never the machine's service); Debian keeps them off the PATH.
postgresql:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing postgresql"; \
		$(call apt_install,postgresql); \
	fi

# `DEMO=0 make run` (or `make run DEMO=0`) starts no demo fleet (devtools/demo.py).
DEMO ?= 1
run: venv mosquitto broker-plugin node_modules
	DEMO='$(DEMO)' $(VPY) -m devtools.run

test: venv mosquitto broker-plugin node_modules chromium postgresql
	$(VPY) -m pytest -q

# Every case of every test that takes the `backend` fixture on the DuckLake too (make test runs
# each such test's first case there; tests/conftest.py: BACKEND_MATRIX).
test-backends: venv mosquitto broker-plugin node_modules chromium postgresql
	TR50GW_BACKEND_MATRIX=full $(VPY) -m pytest -q

SCREENSHOTS := docs/console
screenshots: venv node_modules chromium
	TR50GW_SCREENSHOTS=$(SCREENSHOTS) $(VPY) -m pytest -q tests/test_console.py tests/test_console_admin.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo
	$(VENV)/bin/mypy

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(VPY) -m pip install --disable-pip-version-check -e '.[test,bench]'
	@touch $@

bench: venv mosquitto broker-plugin postgresql node_modules chromium $(BENCH_STAMP)
	$(VPY) -m bench $(BENCH_ARGS)

# The queries suite on 100M records (issue 14): the set is generated once (about 15 min, 11 GB in
# bench/results) and reused while fresh; results go to bench/results/large/.
bench-large: venv $(BENCH_STAMP)
	$(VPY) -m bench --only queries --large --out bench/results/large $(BENCH_ARGS)

fuzz: venv
	$(VPY) -m devtools.fuzz $(FUZZ_ARGS)

DURATION ?= 120
soak: venv mosquitto broker-plugin $(BENCH_STAMP)
	$(VPY) -m bench.soak --duration $(DURATION) $(SOAK_ARGS)

clean:
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info broker/build

# Also forgets node_modules, the dev credentials and the dev database (the last two belong
# together: a user created with one password in data/ would not match freshly generated
# credentials in .run/).
distclean: clean
	rm -rf $(VENV) .run data node_modules
