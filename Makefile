# Two commands on a fresh machine: `make run` (server on the example jobs) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run test bench build clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The browser tests drive Debian's Chromium (never a browser download).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium

# The remote-host tests start a real sshd on 127.0.0.1 (Debian's openssh-server).
SSHD := /usr/sbin/sshd
$(SSHD):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openssh-server openssh-client

# The sudo_for_user tests switch users through the real sudo (Debian's sudo).
SUDO_BIN := /usr/bin/sudo
$(SUDO_BIN):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq sudo

# `make run PORT=5006` when 5005 is taken; ARGS='...' adds any other `serve` options.
PORT ?=
ARGS ?=
run: install
	$(VENV)/bin/apsis-lite serve --jobs jobs $(if $(PORT),--port $(PORT)) $(ARGS)

# The one-file executable, rebuilt only when a source, template, static file or example
# job is newer than it (a find, not make prerequisites: job file names may hold spaces).
# Built aside and moved into place, so that a running copy is never overwritten.
EXE := dist/apsis-lite
build: install
	@if [ ! -x $(EXE) ] || [ -n "$$(find apsis_lite templates static jobs build.spec pyproject.toml \
	      -type f -newer $(EXE) -not -path '*/__pycache__/*' | head -n 1)" ]; then \
	  echo "building $(EXE)"; \
	  $(VENV)/bin/pyinstaller --noconfirm --log-level ERROR --distpath build/dist build.spec && \
	  mkdir -p dist && mv build/dist/apsis-lite $(EXE); \
	else echo "$(EXE) is up to date"; fi

# tests/system/test_executable.py tests the executable just built rather than building its own.
test: install $(CHROMIUM) $(SSHD) $(SUDO_BIN) build
	APSIS_LITE_EXE=$(abspath $(EXE)) $(PY) -m pytest -q

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .data build dist *.egg-info
