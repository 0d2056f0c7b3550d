# rsia_geo: the two set-up commands of the README are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Debian packages the tests need (speech synthesis: training voices and held-out families;
# headless Chromium and its driver: map pages and the notebook panel in a real browser).
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k chromium chromium-driver

.PHONY: demo test test-qgis plugin-zip install install-dev apt apt-qgis lint docs notebooks clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[all]"

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[all,dev,docs]"

# Install missing Debian packages when we can (root or sudo); otherwise say what is missing.
apt:
	@missing=""; for c in espeak-ng flite text2wave chromium chromedriver; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  else echo "warning: missing$$missing (apt-get install $(APT_PACKAGES)); tests needing them will skip"; fi; \
	fi

# QGIS from Debian for the plugin's tests (about 1 GB, under a minute).
apt-qgis:
	@if ! /usr/bin/python3 -c "import qgis.core" 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-qgis qgis-providers >/dev/null; \
	  elif command -v sudo >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-qgis qgis-providers >/dev/null; \
	  else echo "warning: python3-qgis missing (apt-get install python3-qgis qgis-providers); QGIS tests will not run"; fi; \
	fi

# QGIS runs only under Debian's own python3: a separate venv that sees its site packages.
.venv-qgis/bin/python:
	/usr/bin/python3 -m venv --system-site-packages .venv-qgis
	.venv-qgis/bin/pip install -q pytest pytest-qgis mock

demo: install
	$(BIN)/rsia-geo demo

test: apt install-dev
	$(BIN)/python -m pytest -q

# The QGIS plugin in real QGIS (headless), against a real service started from .venv.
test-qgis: apt-qgis install-dev .venv-qgis/bin/python
	QT_QPA_PLATFORM=offscreen RSIA_MAIN_PYTHON=$(CURDIR)/$(BIN)/python \
	  .venv-qgis/bin/python -m pytest -q -p no:cacheprovider -o addopts="" tests/qgis

# The documentation site (site/), warnings as errors; the tests build it too.
docs: install-dev
	$(BIN)/python -m mkdocs build --strict

# Regenerate the notebooks from scripts/make_notebooks.py and execute them in place.
notebooks: apt install-dev
	$(BIN)/python scripts/make_notebooks.py --execute

# A zip QGIS can install (Plugins > Manage and Install > Install from ZIP).
plugin-zip:
	mkdir -p dist
	rm -f dist/qgis_rsia.zip
	cd plugins && zip -qr ../dist/qgis_rsia.zip qgis_rsia -x "*/__pycache__/*"
	@echo "dist/qgis_rsia.zip"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf out build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
