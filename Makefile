# One command to run JupyterLab with the extension, one to run every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Jupyter refuses to run as root without --allow-root; containers and CI often are root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888
comma := ,

.PHONY: lab test bench setup system-deps frontend clean

setup: $(STAMP)

# `make lab` installs the package alone; `make test` and `make bench` add their extras
# (ipyparallel among them, whose Lab tab a user of the extension has no use for).
LAB_STAMP := $(VENV)/.installed-lab
# The venv with jlpm (JupyterLab's yarn, from jupyter_builder, which JupyterLab 4.6.6 installs at
# this version), all the frontend's build needs of Python, and hatchling, which reads the
# project's requirements.
BASE_STAMP := $(VENV)/.base
VENV_PATH := PATH=$(CURDIR)/$(VENV)/bin:$$PATH
BUILD_TOOLS := hatchling==1.27.0 hatch-jupyter-builder==0.10.0 editables==0.5 jupyterlab==4.6.6

$(BASE_STAMP):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q jupyter_builder==1.3.1 hatchling==1.27.0
	touch $@

# The frontend builds (`make frontend`, its log in .venv/frontend.log) while pip installs the
# build tools, JupyterLab and the project's requirements (.ci/requirements.py reads them from
# pyproject.toml, through hatchling); then the project itself goes in without them, its build hook
# finding the extension built.
# rfc3987-syntax (an extra of jupyter-events' jsonschema) builds some 35 parsers when jsonschema
# imports it: a second of CPU in every Jupyter server's start, JupyterLab's included, for a format
# (`iri`) no Jupyter schema uses. Without it jsonschema leaves that one format unchecked
# (python-jsonschema/jsonschema#1428).
define install
	@echo "installing the Python requirements$(if $(2), (extras: $(2)),) while the frontend builds"
	@$(MAKE) --no-print-directory frontend > $(VENV)/frontend.log 2>&1 & fe=$$!; \
	  $(PY) .ci/requirements.py $(2) > $(VENV)/requirements.txt && \
	  $(PIP) install -q $(BUILD_TOOLS) -r $(VENV)/requirements.txt; py=$$?; \
	  wait $$fe; fe=$$?; [ $$fe -eq 0 ] || { cat $(VENV)/frontend.log; echo "the frontend build failed"; }; \
	  test $$py -eq 0 -a $$fe -eq 0
	$(VENV_PATH) $(PIP) install -q --no-build-isolation --no-deps -e "$(1)"
	$(PIP) uninstall -y -q rfc3987-syntax
	$(VENV_PATH) $(VENV)/bin/jupyter labextension develop --overwrite . >/dev/null
endef

$(STAMP): pyproject.toml package.json | $(BASE_STAMP)
	$(call install,.[test$(comma)bench],test bench)
	touch $(LAB_STAMP) $(STAMP)

$(LAB_STAMP): pyproject.toml package.json | $(BASE_STAMP)
	$(call install,.)
	touch $(LAB_STAMP)

# The lock file is the truth: install exactly it (fails if package.json and yarn.lock disagree).
# The built extension is remade only when a source is newer; setup builds it on a fresh clone.
LABEXT := jupyter_compute/labextension/package.json
FRONTEND_SOURCES := $(shell find src style schema -type f 2>/dev/null) package.json yarn.lock tsconfig.json

frontend: $(LABEXT)

$(LABEXT): $(FRONTEND_SOURCES) | $(BASE_STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm install --immutable
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm build
	touch $@

# The server logs only warnings, so the last line is the address to open, token included (the
# token goes to the server in its environment, not on its command line). Terminals opened in Lab
# run an interactive, non-login shell: it keeps this PATH, so `jupyter compute` works there.
lab: $(LAB_STAMP) frontend
	@token=$$($(PY) -c 'import secrets; print(secrets.token_hex(24))'); \
	  echo "JupyterLab with jupyter_compute, on $(CURDIR) (start with examples/getting-started.ipynb):"; \
	  echo "    http://127.0.0.1:$(PORT)/lab?token=$$token"; \
	  JUPYTER_TOKEN=$$token PATH=$(CURDIR)/$(VENV)/bin:$$PATH exec $(VENV)/bin/jupyter lab --no-browser \
	    --ip=127.0.0.1 --port=$(PORT) --ServerApp.port_retries=0 --ServerApp.root_dir=$(CURDIR) \
	    --ServerApp.log_level=WARN --LabApp.log_level=WARN --ComputeApp.log_level=WARN \
	    --ServerApp.terminado_settings='{"shell_command": ["'"$${SHELL:-/bin/bash}"'", "-i"]}' $(ALLOW_ROOT)

# System packages the tests drive for real: Chromium (browser tests) and OpenSSH's sshd (SSH targets).
system-deps:
	@./.ci/system-deps

# Most tests wait on processes, sockets and timers rather than the CPU: more workers than cores
# keeps both cores busy, and the frontend's tests run beside the Python ones (their output is shown
# when they end). Tests marked `serial` would run alone afterwards (none needs to today: pytest's
# exit status 5 says it found none).
TEST_WORKERS ?= 4
PYTEST := PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m pytest -p no:cacheprovider

test: $(STAMP) system-deps frontend
	@mkdir -p tests/artifacts
	@PATH=$(CURDIR)/$(VENV)/bin:$$PATH jlpm test > tests/artifacts/jest.log 2>&1 & jest=$$!; \
	  $(PYTEST) --ignore=tests/browser -n $(TEST_WORKERS) --dist loadgroup -m "not serial" $(PYTEST_ARGS); py=$$?; \
	  wait $$jest; js=$$?; cat tests/artifacts/jest.log; \
	  [ $$js -eq 0 ] || echo "frontend tests failed"; test $$py -eq 0 -a $$js -eq 0
	$(PYTEST) --ignore=tests/browser -m serial $(PYTEST_ARGS) || test $$? -eq 5
	# Playwright's sync API keeps an event loop running in the main thread, which the
	# pytest-jupyter fixtures of the other tests cannot share: the browser tests run on their own,
	# a JupyterLab per worker, and after the others: run beside them, both took longer in all
	# (11 m 37 s against 10 m 27 s) and timing tests failed.
	$(PYTEST) tests/browser -n 2 --dist loadfile $(PYTEST_ARGS)
	$(PY) -m tests.leftovers

bench: $(STAMP) system-deps frontend
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m bench

clean:
	rm -rf $(VENV) node_modules lib jupyter_compute/labextension tsconfig.tsbuildinfo
