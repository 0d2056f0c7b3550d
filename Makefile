# rsia_geo: the two set-up commands of the README are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests need (speech synthesis for audio tests).
APT_PACKAGES := espeak-ng

.PHONY: demo test install install-dev apt lint typecheck clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[all]"

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[all,dev]"

# Install missing Debian packages when we can (root or sudo); otherwise say what is missing.
apt:
	@missing=""; for c in espeak-ng; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  else echo "warning: missing$$missing (apt-get install $(APT_PACKAGES)); tests needing them will skip"; fi; \
	fi

demo: install
	$(BIN)/rsia-geo demo

test: apt install-dev
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf out build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
