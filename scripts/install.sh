#!/usr/bin/env bash
# Installs dsink into the virtual environment .venv of this checkout, and the offline Fashion-MNIST files
# (Debian package dataset-fashion-mnist). Works on "externally managed" system Pythons (Debian 12,
# Ubuntu 24.04), which refuse `pip install` outside a virtual environment.
#   - inside an activated virtual environment ($VIRTUAL_ENV), dsink goes there and .venv links to it;
#   - otherwise .venv is created with `python3 -m venv` (installing python3-venv when it is missing).
# Afterwards: .venv/bin/dsink, or `source .venv/bin/activate` to have `dsink` on the PATH.
# Usage: bash scripts/install.sh [pip extras; default plot, e.g. test,plot]
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$@" >/dev/null; }

if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  apt_install dataset-fashion-mnist
fi

if [ -n "${VIRTUAL_ENV:-}" ]; then
  if [ ! -e .venv ]; then
    ln -s "$VIRTUAL_ENV" .venv
  elif [ "$(cd .venv && pwd -P)" != "$(cd "$VIRTUAL_ENV" && pwd -P)" ]; then
    echo "install.sh: .venv is not the active virtual environment $VIRTUAL_ENV; deactivate it or remove .venv" >&2
    exit 2
  fi
elif [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv 2>/dev/null || {
    rm -rf .venv
    apt_install "python3-venv" || apt_install "python$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    python3 -m venv .venv
  }
fi
extras="${1:-plot}"
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}"
