#!/usr/bin/env bash
# The tenth round's random sample of unseen settings (studies/dsink_study.py group random10) on a machine with
# many cores, for one short lease: one single-threaded process per (setting, seed) cell through
# studies/study_pool.py, no cell started after START_BY seconds, running cells stopped at STOP_AT seconds, the
# merged results (whatever finished) in $OUT. Fashion-MNIST's IDX files come from FMNIST_DIR (copied into
# $DSINK_CACHE) when the machine has no copy of its own.
# Environment: OUT (default /tmp/dsink-pool), PY (python3), JOBS (the number of cores), START_BY (370), STOP_AT (500),
# FIRST / SKIP (a slice of the 24 settings).
# Usage: OUT=DIR FMNIST_DIR=FOLDER bash studies/pool_check.sh
set -u
OUT=${OUT:-/tmp/dsink-pool}; PY=${PY:-python3}; JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DSINK_CACHE=${DSINK_CACHE:-/tmp/dsink-cache}
if [ -n "${FMNIST_DIR:-}" ]; then mkdir -p "$DSINK_CACHE/fashion-mnist" && cp "$FMNIST_DIR"/*.gz "$DSINK_CACHE/fashion-mnist/"; fi
{ date; nproc; $PY -c "import torch; print('torch', torch.__version__)"; } >"$OUT/pool.log" 2>&1
SLICE=(); [ -n "${FIRST:-}" ] && SLICE+=(--first "$FIRST"); [ -n "${SKIP:-}" ] && SLICE+=(--skip "$SKIP")
$PY studies/study_pool.py --group random10 "${SLICE[@]}" --variants default "f_L selected" "kd, f_L selected" \
  --jobs "$JOBS" --work "$DSINK_CACHE/pool" --out "$OUT/dsink_study_mlp_random.json" \
  --start-by "${START_BY:-370}" --stop-at "${STOP_AT:-500}" >>"$OUT/pool.log" 2>&1
tail -3 "$OUT/pool.log"
