# make run: set up and start the service on embedded defaults. make test: set up and run the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := ffmpeg sox libsox-fmt-all espeak-ng sip-tester chromium tcpdump
STAMP := $(VENV)/.installed

.PHONY: setup system-packages run test bench clean

setup: system-packages $(STAMP)

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,stand-in-model]'
	touch $(STAMP)

run: setup
	$(BIN)/hotline db upgrade
	$(BIN)/hotline prompts build
	$(BIN)/hotline serve

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 4 --dist loadfile

bench: setup
	$(BIN)/python bench/transcribe.py

clean:
	rm -rf $(VENV) var
