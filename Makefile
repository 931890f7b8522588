# Two commands set up a fresh Debian 12 machine (as root):
#   make serve   - install what is missing, build the python template if needed, run the server
#   make test    - install what is missing, lint, type-check, build the test template once, test
# Pass server options with ARGS, e.g. `make serve ARGS="--port 9000 --data-dir /srv/sandcastle"`.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# command:package pairs; a package is installed only when its command is missing.
SYSTEM_TOOLS := bwrap:bubblewrap debootstrap:debootstrap slirp4netns:slirp4netns \
	mkfs.ext4:e2fsprogs losetup:mount ip:iproute2 openssl:openssl
TEST_TEMPLATES := $(CURDIR)/build/templates
ARGS ?=

.PHONY: serve test system postgres e2b-js leap0-sdk browser venv lint typecheck template-test spec sdk-sync \
	clean

serve: system venv
	$(BIN)/sandcastle serve $(ARGS)

# Lint and type-check come before the template build, so a lint error fails in seconds. The
# suite starts a throw-away PostgreSQL cluster of its own (tests/pgcluster.py) and requires it.
test: system postgres e2b-js leap0-sdk browser venv lint typecheck template-test
	SANDCASTLE_TEST_TEMPLATES_DIR=$(TEST_TEMPLATES) SANDCASTLE_TEST_REQUIRE_POSTGRES=1 \
	  $(BIN)/python -m pytest $(PYTEST_ARGS)

# Install the system packages we need, only when one is missing; then gVisor's runsc (from
# bookworm-backports on Debian 12), which the server prefers to bubblewrap when it works.
system:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  tool=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	ldconfig -p | grep -q 'libseccomp\.so\.2' || missing="$$missing libseccomp2"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi
	@scripts/ensure-runsc

# Debian's PostgreSQL server for the test suite (its binaries live off PATH, under
# /usr/lib/postgresql/<version>/bin); the server itself needs none unless pointed at one.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL for the test suite"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	}

# Debian's Chromium, in which the suite renders /docs and /redoc offline.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium for the API documents' test"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	}

# E2B's JavaScript SDK, which the suite drives against the server (tests/e2b_js): Node from
# Debian when missing, the SDK at the versions its lock file pins.
E2B_JS := tests/e2b_js
e2b-js: $(E2B_JS)/node_modules/.installed

$(E2B_JS)/node_modules/.installed: $(E2B_JS)/package.json $(E2B_JS)/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
	  echo "installing Node.js for the E2B JavaScript SDK tests"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
	}
	cd $(E2B_JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Leap0's Python SDK, which the suite drives against the server (tests/leap0): a venv of its own,
# since leap0 0.8.0 requires websockets<16 and would downgrade the server's; every package
# pinned exactly in the requirements file.
LEAP0_VENV := build/leap0-venv
leap0-sdk: $(LEAP0_VENV)/.installed

$(LEAP0_VENV)/.installed: tests/leap0/requirements.txt
	$(PYTHON) -m venv $(LEAP0_VENV)
	$(LEAP0_VENV)/bin/python -m pip install --upgrade pip
	$(LEAP0_VENV)/bin/python -m pip install -r tests/leap0/requirements.txt
	touch $@

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml sdk/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ./sdk/python -e '.[dev]'
	touch $@

template-test: system venv
	SANDCASTLE_TEMPLATES_DIR=$(TEST_TEMPLATES) $(BIN)/sandcastle template build python --if-missing

lint: venv
	$(BIN)/ruff check src sdk tests bench
	$(BIN)/ruff format --check src sdk tests bench

typecheck: venv
	$(BIN)/mypy

# Write the OpenAPI document the server serves to spec/openapi.json (the suite checks they agree).
spec: venv
	SANDCASTLE_TEST_WRITE_SPEC=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
	  tests/api/test_openapi_contract.py

# Rewrite the SDK's synchronous face from its asynchronous one (the suite checks they agree).
sdk-sync: venv
	$(BIN)/python sdk/python/tools/generate_sync.py

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
