#!/usr/bin/env bash
# Set up Lens on a fresh machine: Debian's Chromium (browser tests) and PostgreSQL (lake
# tests), a virtual environment in .venv with PyTorch and every dependency (with the DuckLake
# and postgres extension packages), and Lens itself (editable).
# Safe to re-run. Needs Python >= 3.11; apt-get is used when present (as root or via sudo).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}

# Debian packages: chromium (browser tests) and postgresql (the lake tests start a private
# PostgreSQL 15 server from /usr/lib/postgresql/15/bin; no system service is used or started).
APT_PKGS=""
command -v chromium >/dev/null 2>&1 || APT_PKGS="$APT_PKGS chromium"
[ -x /usr/lib/postgresql/15/bin/initdb ] || [ -n "${LENS_PG_BIN:-}" ] || APT_PKGS="$APT_PKGS postgresql"
if [ -n "$APT_PKGS" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "==> installing Debian$APT_PKGS (browser and lake tests)"
    $SUDO apt-get update -qq
    # policy-rc.d 101: the package must not start the system's PostgreSQL service
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod +x /usr/sbin/policy-rc.d
      REMOVE_POLICY=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PKGS >/dev/null
    if [ -n "${REMOVE_POLICY:-}" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "warning: no apt-get; install$APT_PKGS yourself for the browser and lake tests" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "==> installing PyTorch"
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
echo "==> installing Lens and its dependencies"
.venv/bin/python -m pip install --quiet hatchling
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "==> done: try  .venv/bin/lens --help"
