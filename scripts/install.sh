#!/usr/bin/env bash
# Installs dsink and the offline Fashion-MNIST files (Debian package dataset-fashion-mnist).
# Usage: bash scripts/install.sh [pip extras; default plot, e.g. test]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
extras="${1:-plot}"
python3 -m pip install -q -e ".${extras:+[$extras]}"
