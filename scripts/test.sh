#!/usr/bin/env bash
# Installs dsink with its test dependencies into .venv (see install.sh), then runs the default (fast) test tier.
# Slow tests: .venv/bin/python -m pytest -m slow
# The real CIFAR-N label files are an extra check when DSINK_CIFAR_N_DIR names their folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,plot
.venv/bin/python -m pytest "$@"
