# sanic_ota: `make run` serves on :8000, `make test` runs the checks.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The same variables as the server; defaults relative to this directory.
SANIC_OTA_KEYS_FILE ?= authorisation_keys.json
export SANIC_OTA_KEYS_FILE

.PHONY: install run test lint system-tools manifest verify example url bench clean install-service s3-dev publish

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

# ruff over everything; mypy as configured in pyproject.toml (strict on the core).
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# Tools the tests drive from outside Python: openssl and jq + xxd (the auditor's
# commands), chromium (the status page in a real browser), nginx (deploy/nginx-replicas.conf
# in front of two servers). Debian packages.
SYSTEM_TOOLS := openssl:openssl jq:jq xxd:xxd chromium:chromium nginx:nginx

system-tools:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	    || { echo "make test needs:$$missing (apt-get install them as root)"; exit 1; }; \
	fi

# Four pytest workers (pytest-xdist) on 2 cores: most tests wait on real server processes,
# SeaweedFS and sockets, not on the CPU. Measured on 2 cores with 1,295 tests (quiet):
# 4 workers 3 min 47 s, 3 workers 4 min 01 s; with 1,221 tests, 2 workers took 4 min 36 s.
# A fresh clone adds the install (about 40 s). TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 4

test: lint system-tools
	@$(BIN)/python -m pytest -n $(TEST_WORKERS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure here"; rc=1; fi; \
	exit $$rc

# Sign partitions/$(VERSION)/ into manifests/$(VERSION).json where the private key lives.
manifest: install
	@test -n "$(VERSION)" || { echo "usage: make manifest VERSION=v1"; exit 2; }
	$(BIN)/python tools/build_manifest.py $(VERSION)

verify: install
	@test -n "$(VERSION)" || { echo "usage: make verify VERSION=v1"; exit 2; }
	$(BIN)/python tools/verify_manifest.py $(VERSION) --files

# A signed download URL for KEY's VERSION/FILE (AT+USEROTA); only the URL on stdout.
# Optional: EXPIRES=seconds (default 7 days), BASE=http://host:port (default http://127.0.0.1:$(PORT)).
url: install
	@test -n "$(KEY)" -a -n "$(VERSION)" -a -n "$(FILE)" || \
	  { echo "usage: make url KEY=NAME VERSION=v1 FILE=ota.bin [EXPIRES=seconds] [BASE=http://host:port]" >&2; exit 2; }
	@$(BIN)/python tools/sign_url.py "$(KEY)" "$(VERSION)" "$(FILE)" --base "$(or $(BASE),http://127.0.0.1:$(PORT))" \
	  $(if $(EXPIRES),--expires "$(EXPIRES)")

# Upload partitions/$(VERSION)/ and its signed manifest to STORE (s3://bucket/prefix, default
# $SANIC_OTA_STORE), the manifest last; signs it first where the private key is.
# FLAGS: --pin (also pin it), --force (replace a published release), --delete (remove it).
publish: install
	@test -n "$(VERSION)" || { echo "usage: make publish VERSION=v1 STORE=s3://bucket/prefix [FLAGS=--pin]"; exit 2; }
	$(BIN)/python tools/publish.py $(VERSION) $(if $(STORE),--to "$(STORE)") $(FLAGS)

# Regenerate the example release shipped in partitions/.
example: install
	$(BIN)/python tools/make_example_release.py --version v1.0.0

# A local S3-compatible store (SeaweedFS on 127.0.0.1:8333, data in ./s3-dev/) to try
# replicas on one machine; prints the settings to export. Ctrl-C stops it.
s3-dev: install
	$(BIN)/sanic-ota-s3-dev --dir s3-dev

# Side-by-side measurements against nginx (installs nginx and wrk from Debian if missing).
bench: install
	bash bench/run.sh

# Install as a systemd service; needs root: sudo make install-service
# Code, .venv, tools/ and partitions/ in PREFIX (read-only for the service); settings in
# CONFDIR/sanic-ota.env (installed only if absent: an operator's file is never replaced);
# keys file, signing key and manifests/ in STATEDIR (owned by SERVICE_USER, mode 0700).
# Re-running it upgrades the code and the unit. Other locations are written into the
# unit and the env file as they are installed.
PREFIX       ?= /opt/sanic-ota
CONFDIR      ?= /etc/sanic-ota
STATEDIR     ?= /var/lib/sanic-ota
UNITDIR      ?= /etc/systemd/system
SERVICE_USER ?= sanic-ota
DEPLOY_PATHS  = sed -e 's|/opt/sanic-ota|$(PREFIX)|g' -e 's|/etc/sanic-ota|$(CONFDIR)|g' \
  -e 's|/var/lib/sanic-ota|$(STATEDIR)|g' -e 's|^User=sanic-ota$$|User=$(SERVICE_USER)|' \
  -e 's|^Group=sanic-ota$$|Group=$(SERVICE_USER)|' -e 's|sudo -u sanic-ota |sudo -u $(SERVICE_USER) |'

install-service:
	@test "$$(id -u)" = 0 || { echo "make install-service: needs root (sudo make install-service)"; exit 1; }
	id -u $(SERVICE_USER) >/dev/null 2>&1 || \
	  useradd --system --user-group --home-dir $(STATEDIR) --no-create-home --shell /usr/sbin/nologin $(SERVICE_USER)
	umask 022 && install -d $(PREFIX) $(PREFIX)/tools $(CONFDIR) $(UNITDIR)
	umask 022 && { test -x $(PREFIX)/.venv/bin/python || $(PYTHON) -m venv $(PREFIX)/.venv; }
	umask 022 && src=$$(mktemp -d) && cp -R pyproject.toml README.md sanic_ota "$$src" && \
	  { $(PREFIX)/.venv/bin/pip install --quiet "$$src"; rc=$$?; rm -rf "$$src"; exit $$rc; }
	umask 022 && cp tools/*.py $(PREFIX)/tools/ && cp README.md $(PREFIX)/
	umask 022 && { [ -d $(PREFIX)/partitions ] || cp -R partitions $(PREFIX)/partitions; }
	@if [ -f $(CONFDIR)/sanic-ota.env ]; then \
	  echo "kept $(CONFDIR)/sanic-ota.env; compare it with deploy/sanic-ota.env for new settings"; \
	else \
	  echo "install $(CONFDIR)/sanic-ota.env"; \
	  $(DEPLOY_PATHS) deploy/sanic-ota.env > $(CONFDIR)/sanic-ota.env && chmod 0644 $(CONFDIR)/sanic-ota.env; \
	fi
	install -d -m 0700 -o $(SERVICE_USER) -g $(SERVICE_USER) $(STATEDIR)
	install -d -m 0755 -o $(SERVICE_USER) -g $(SERVICE_USER) $(STATEDIR)/manifests
	$(DEPLOY_PATHS) deploy/sanic-ota.service > $(UNITDIR)/sanic-ota.service
	chmod 0644 $(UNITDIR)/sanic-ota.service
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@keys=$$(sed -n 's/^SANIC_OTA_KEYS_FILE=//p' $(CONFDIR)/sanic-ota.env); \
	echo; echo "Installed. Add the first device key (it prints the token), then start the service:"; \
	echo "  sudo -u $(SERVICE_USER) $(PREFIX)/.venv/bin/python $(PREFIX)/tools/keygen.py NAME --keys $${keys:-$(STATEDIR)/authorisation_keys.json}"; \
	echo "  systemctl enable --now sanic-ota     # after an upgrade: systemctl restart sanic-ota"; \
	echo "Logs: journalctl -u sanic-ota -f"

clean:
	rm -rf $(VENV) .pytest_cache
