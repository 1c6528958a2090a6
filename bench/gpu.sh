#!/usr/bin/env bash
# What a lent single-GPU machine runs, in one call with a fixed time budget (the figures in
# README's Benchmarks and results/fashion come from it):
#
#   AUTOLR_GIT_COMMIT=$(git rev-parse HEAD) OUT=/tmp/gpu bash bench/gpu.sh [BUDGET_SECONDS] [JOBS]
#   SWEEP=sweeps/fashion-models.yaml ... bash bench/gpu.sh 540 8      # another sweep (default: fashion)
# (commit a clean tree first: the records take their commit from AUTOLR_GIT_COMMIT)
#
# 1. a smoke run of train.py on CUDA (2 epochs, bf16, channels-last, tensor loader);
# 2. bench/throughput.py: train.py's step against a bare loop (cnn_fashion, ResNet-50 at 224 px,
#    CIFAR ResNet-18, bf16 + channels-last; and the models of SWEEP where it is not the fashion
#    sweep), the tensor loader, AutoWU's test next to an epoch;
# 3. the sweep SWEEP with JOBS runs sharing the GPU, stopped with SIGINT
#    before the budget ends (finished runs keep their records; the sweep resumes where it stopped);
# 4. the records, stages, logs and the throughput JSON packed into $OUT.
# Needs Fashion-MNIST's four IDX files (.gz is fine) under data/FashionMNIST/raw/. No FFCV needed.
set -u
BUDGET=${1:-540}
JOBS=${2:-12}
OUT=${OUT:-/tmp/autolr-gpu}
SWEEP=${SWEEP:-sweeps/fashion.yaml}
NAME=$(sed -n 's/^name: *//p' "$SWEEP")
DATA=$(sed -n 's/^data: *//p' "$SWEEP")
MODELS=$(sed -n 's/^models: *\[\(.*\)\]/\1/p' "$SWEEP" | tr -d ' ')
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NUMBA_THREADING_LAYER=omp NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-.cache/numba}
PY=${PYTHON:-python3}
log() { echo "[gpu.sh $(date +%T) +${SECONDS}s] $*"; }

log "budget ${BUDGET}s, sweep ${NAME} (${SWEEP}), ${JOBS} jobs, commit ${AUTOLR_GIT_COMMIT:-unknown}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import sys, torch, timm, gpytorch; print('python', sys.version.split()[0], 'torch', torch.__version__, \
'timm', timm.__version__, 'gpytorch', gpytorch.__version__, 'cuda', torch.cuda.is_available())"

log "1/4 smoke run"
set -o pipefail
if ! timeout 90 $PY train.py --loader tensor --subset 4096 --epochs 2 --bs 1024 --sched auto \
     --out /tmp/autolr-smoke --ckpt-dir /tmp/autolr-smoke/ckpt --progress off 2>&1 | tail -n 12; then
  log "the smoke run failed: stopping here, before spending the budget"
  exit 1
fi
set +o pipefail

log "2/4 throughput"
if [ "$NAME" = fashion ]; then
  timeout 150 $PY bench/throughput.py --steps 20 --out bench/results/throughput_gpu.json 2>&1 \
    | grep -v Warning | tail -n 16
  cp bench/results/throughput_gpu.json "$OUT/" 2>/dev/null
else  # the sweep's models at its data, at batch 512, long enough for stable medians
  gm=$(echo "$MODELS" | tr ',' '\n' | sed "s/\$/@${DATA}:512/" | paste -sd,)
  timeout 240 $PY bench/throughput.py --steps 40 --skip-loaders --gpu-models "$gm" \
    --out "bench/results/throughput_gpu_${NAME}.json" 2>&1 | grep -v Warning | tail -n 12
  cp "bench/results/throughput_gpu_${NAME}.json" "$OUT/" 2>/dev/null
fi

left=$((BUDGET - SECONDS - 25))
log "3/4 sweep ${NAME} for at most ${left}s"
if [ "$left" -gt 30 ]; then
  timeout -s INT "$left" $PY -m autolr.sweep "$SWEEP" --jobs "$JOBS" > "$OUT/sweep.log" 2>&1
  echo "sweep exit code $?" | tee -a "$OUT/sweep.log"
  grep -c "\] " "$OUT/sweep.log" | xargs echo "runs ended:"
  tail -n 4 "$OUT/sweep.log"
fi

log "4/4 pack"
tar czf "$OUT/${NAME}.tgz" "results/${NAME}" "checkpoints/${NAME}/logs" 2>/dev/null
ls -la "$OUT"
log "done"
