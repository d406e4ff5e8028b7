# sanic_ota: `make run` serves on :8000, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The same variables as the server; defaults relative to this directory.
SANIC_OTA_KEYS_FILE ?= authorisation_keys.json
export SANIC_OTA_KEYS_FILE

.PHONY: install run test lint manifest verify example bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: install
	@if [ ! -f "$(SANIC_OTA_KEYS_FILE)" ]; then \
	  token=$$($(BIN)/python tools/keygen.py operator --keys "$(SANIC_OTA_KEYS_FILE)" 2>/dev/null) || exit 1; \
	  echo "Created $(SANIC_OTA_KEYS_FILE) with one key, 'operator': $$token"; \
	else token='<TOKEN from $(SANIC_OTA_KEYS_FILE)>'; fi; \
	echo "Try: curl -o ota.bin -H \"Authorization: token $$token\" 'http://127.0.0.1:$(PORT)/v1/device/rom/?action=download_rom&version=v1.0.0&filename=ota.bin'"
	$(BIN)/sanic sanic_ota.app --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .

test: lint
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure here"; rc=1; fi; \
	exit $$rc

# Sign partitions/$(VERSION)/ into manifests/$(VERSION).json where the private key lives.
manifest: install
	@test -n "$(VERSION)" || { echo "usage: make manifest VERSION=v1"; exit 2; }
	$(BIN)/python tools/build_manifest.py $(VERSION)

verify: install
	@test -n "$(VERSION)" || { echo "usage: make verify VERSION=v1"; exit 2; }
	$(BIN)/python tools/verify_manifest.py $(VERSION) --files

# Regenerate the example release shipped in partitions/.
example: install
	$(BIN)/python tools/make_example_release.py --version v1.0.0

# Side-by-side measurements against nginx (installs nginx and wrk from Debian if missing).
bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache
