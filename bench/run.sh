#!/usr/bin/env bash
# Side-by-side measurements of sanic_ota, a bare Sanic app and nginx; see bench/README.md.
# Installs nginx and wrk from Debian and py-spy (the project's "bench" extra) when
# missing, then runs bench/compare.py with the project's venv (made by `make install`).
# Arguments go to compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]} from Debian"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo apt-get install -y "${missing[@]}"
fi

[ -x .venv/bin/py-spy ] || .venv/bin/pip install -q 'py-spy>=0.3'

exec .venv/bin/python bench/compare.py "$@"
