#!/usr/bin/env bash
# The GPU checks recorded in docs/benchmarks.md ("On a GPU"), as one script for one short GPU lease:
#   1. a short CIFAR-shaped `dsink run` (CIFAR-10-LT recipe: ResNet-32, AMP; data from benchmarks/cifar_shaped.py)
#   2. Sinkhorn and Newton on the GPU against POT            (benchmarks/sinkhorn.py --device cuda)
#      and the cost of a D-SINK and a kd epoch against CE     (benchmarks/dsink_cost.py --device cuda, ResNet-32)
#   3. engine throughput at 32 px, then at 224 px            (benchmarks/throughput.py --device cuda --amp)
#   4. image-file streaming at 32 px, then at 224 px          (benchmarks/streaming.py)
#   5. D-SINK against every row of `dsink run`, ResNet-32 on CIFAR-shaped data, two seeds
#                                                              (benchmarks/regimes.py --regimes gpu --device cuda)
# Each step has its own time limit, so a slow step costs only itself. Results and one log go to $OUT.
# Environment: OUT (default /tmp/dsink-gpu), PY (python3), DEVICE (cuda), FMNIST_DIR (Fashion-MNIST IDX files,
# copied into $DSINK_CACHE when set), SMALL=1 (a smoke run of the script itself on a CPU: tiny sizes),
# ONLY=regimes (step 5 alone, for a lease sized to it).
# Usage: bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/dsink-gpu}; PY=${PY:-python3}; DEVICE=${DEVICE:-cuda}; SMALL=${SMALL:-0}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export DSINK_CACHE=${DSINK_CACHE:-/tmp/dsink-cache}
LOG=$OUT/gpu_check.log
step() {  # step SECONDS NAME CMD...: run CMD under a time limit, its output appended to the log
  local t=$1 name=$2; shift 2
  echo "== $(date +%T) $name (limit ${t}s): $*" | tee -a "$LOG"
  local t0=$SECONDS; timeout "$t" "$@" >>"$LOG" 2>&1; local rc=$?
  echo "== $name: rc $rc after $((SECONDS - t0))s" | tee -a "$LOG"
}
{ date; uname -m; nproc; nvidia-smi -L 2>/dev/null
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"
} >>"$LOG" 2>&1
if [ -n "${FMNIST_DIR:-}" ]; then mkdir -p "$DSINK_CACHE/fashion-mnist" && cp "$FMNIST_DIR"/*.gz "$DSINK_CACHE/fashion-mnist/"; fi

if [ "$SMALL" = 1 ]; then PER=100 EP=1 MS="[1]" NS=2000 NT=512 N224=64 NST=600 NST224=200 SIZES="20000x10" CEP=2 CPR=1 CMS="[1]"
else PER=5000 EP=12 MS="[8,10]" NS=20000 NT=20000 N224=1024 NST=20000 NST224=3000 SIZES="50000x10 50000x100 1000000x10 1000000x100" CEP=8 CPR=2 CMS="[6,7]"
fi

if [ "${ONLY:-}" != regimes ]; then
# 1. the CIFAR-10-LT (rho=100, 40 % uniform) recipe on CUDA with AMP, shortened to $EP epochs per model
step 5 cifar-shaped-data $PY benchmarks/cifar_shaped.py "$DSINK_CACHE/cifar-shaped" --per-class $PER  # data first
rm -rf "$DSINK_CACHE/gpu-run"
step 170 dsink-run $PY -m dsink run configs/cifar10_lt100_uniform40.yaml --set data.root="$DSINK_CACHE/cifar-shaped" \
  --set data.download=false --set train.device=$DEVICE --set optim.epochs=$EP --set "optim.milestones=$MS" \
  --set optim.warmup_epochs=1 --set "pipeline.baselines=[]" --set "pipeline.combined=[average]" \
  --out "$DSINK_CACHE/gpu-run" -q
cp "$DSINK_CACHE/gpu-run/results.json" "$OUT/run_results.json" 2>/dev/null
cat "$DSINK_CACHE/gpu-run/results.md" >>"$LOG" 2>/dev/null
for f in runs/cache/dsink-cifar10-*/metrics.jsonl; do cp "$f" "$OUT/dsink_metrics.jsonl" 2>/dev/null; done
# 2. solvers on the GPU against POT
step 70 sinkhorn $PY benchmarks/sinkhorn.py --device $DEVICE --sizes $SIZES --out "$OUT/sinkhorn_gpu.json"
# the epoch of D-SINK and kd against CE on the same CIFAR-shaped ResNet-32 (AMP), interleaved epoch by epoch
step 120 dsink-cost $PY benchmarks/dsink_cost.py --device $DEVICE --threads 0 --config configs/cifar10_lt100_uniform40.yaml \
  --recipe none --set data.root="$DSINK_CACHE/cifar-shaped" --set data.download=false --set optim.warmup_epochs=1 \
  --set "optim.milestones=$CMS" \
  --epochs $CEP --profile $CPR --out "$OUT/dsink_cost_gpu.json"
# 3. training throughput of the engine against the bare loop and a DataLoader loop
step 100 throughput-32 $PY benchmarks/throughput.py --device $DEVICE --amp --images $NT --repeats 3 --workers 0,8 \
  --cases small_cnn,resnet32 --out "$OUT/throughput_gpu32.json"
step 70 throughput-224 $PY benchmarks/throughput.py --device $DEVICE --amp --images $N224 --repeats 2 --workers 8 \
  --cases resnet50-224 --out "$OUT/throughput_gpu224.json"
# 4. image-file input: streamed and decoded-into-memory against torchvision's ImageFolder
step 50 streaming-32 $PY benchmarks/streaming.py --device $DEVICE --n $NST --skip-memory --dir "$DSINK_CACHE/st32" \
  --json "$OUT/streaming_gpu32.json"
step 90 streaming-224 $PY benchmarks/streaming.py --device $DEVICE --n $NST224 --image-size 224 --px 200,500 \
  --skip-memory --dir "$DSINK_CACHE/st224" --json "$OUT/streaming_gpu224.json"
fi
# 5. the regimes benchmark's gpu regime: CE, RoLT, f_L, f_N, average, kd, D-SINK, seeds 0 and 1 (12 trained models of
# 12 epochs each; cached in $DSINK_CACHE/regimes, so a rerun on the same machine resumes)
if [ "$SMALL" = 1 ]; then RSIZE=--smoke; else RSIZE=; fi
step 420 regimes-gpu $PY benchmarks/regimes.py --regimes gpu --device $DEVICE --seeds 0 1 $RSIZE \
  --work "$DSINK_CACHE/regimes" --out "$OUT/regimes_gpu.json"
echo "== $(date +%T) done" | tee -a "$LOG"
