#!/usr/bin/env bash
# Set up Lens on a fresh machine: Debian's Chromium (for the browser tests), a virtual
# environment in .venv with PyTorch and every dependency, and Lens itself (editable).
# Safe to re-run. Needs Python >= 3.11; apt-get is used when present (as root or via sudo).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}

if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "==> installing Debian chromium (browser tests)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: no apt-get; install Chromium yourself for the browser tests" >&2
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
