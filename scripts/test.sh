#!/usr/bin/env bash
# Installs dsink with its test dependencies, then runs the default (fast) test tier.
# Slow tests: python3 -m pytest -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test,plot
python3 -m pytest "$@"
