#!/usr/bin/env bash
# The GPU check: <= 8 minutes on one H100/H200. Each part is `python benchmarks/gpu_check.py
# PART` (see its docstring); this script runs them in turn under one time budget, then merges
# their results into OUT/gpu_check.json and OUT/gpu_check.md (and every part's output into
# OUT/gpu_check.log).
#
#   bash benchmarks/gpu_check.sh [--smoke] [--install] [--out DIR] [--budget SECONDS]
#
#   --smoke    tiny sizes on any backend (a CPU is enough): tests the whole chain
#   --install  when jax has no GPU backend, pip install the CUDA build of the same jax version
#              ("jax[cuda12]==X"; JAX_CUDA=cuda13 for a CUDA 13 driver) and check again
#   --out      output folder (default benchmarks/gpu_check)
#   --budget   seconds for all parts together (default 440); a part gets at most its own cap
#              and what is left, and one cut short is reported as not finished
#
# Environment: PYTHON (default python3), JAXTRAIN_DATA_DIR (prepared data with jaxtrain_shakespeare
# and jaxtrain_fashion_mnist; default .data/tfds), GPU_CHECK_ATTENTION (GPT attention_impl for
# the MFU parts). Python packages jaxtrain needs that the machine lacks can be carried as wheels
# in .whl/ (benchmarks/gpu_check_wheels.sh fetches them): they are installed into /tmp/site first.
#
# On a lent machine with no network (this project's device tool): copy the prepared
# jaxtrain_shakespeare and jaxtrain_fashion_mnist folders into .data/tfds, fetch .whl/, carry
# [".whl", ".data/tfds"] (~60 MB with the repo, under the 64 MiB limit) and run
#   JAXTRAIN_DATA_DIR=.data/tfds bash benchmarks/gpu_check.sh --out /tmp/gc; cp /tmp/gc/gpu_check.* $OUT/
# (the out dir holds more files than come back from $OUT).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=benchmarks/gpu_check
SMOKE=""
INSTALL=0
BUDGET=440
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE="--smoke" ;;
    --install) INSTALL=1 ;;
    --out) OUT="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
rm -f "$OUT"/part_*.json "$OUT"/gpu_check.json "$OUT"/gpu_check.md
LOG="$OUT/gpu_check.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || { echo "gpu_check: installing .whl/ failed (see $LOG)" >&2; exit 2; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if [ -z "$SMOKE" ] && ! "$PY" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>>"$LOG"; then
  if [ "$INSTALL" = 1 ]; then
    version=$("$PY" -c 'import jax; print(jax.__version__)')
    echo "gpu_check: no GPU backend; pip install -U \"jax[${JAX_CUDA:-cuda12}]==$version\"" | tee -a "$LOG"
    "$PY" -m pip install -q -U "jax[${JAX_CUDA:-cuda12}]==$version" >>"$LOG" 2>&1
  fi
fi

start=$(date +%s)
# part:cap_seconds, in order of importance for the budget
for entry in backend:60 mfu_124m:150 mfu_350m:170 shakespeare:170 attention:80 host:100; do
  part=${entry%%:*}
  cap=${entry##*:}
  left=$((BUDGET - ($(date +%s) - start)))
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "== $part: skipped, ${left}s of the budget left" | tee -a "$LOG"
    continue
  fi
  echo "== $part (at most ${limit}s)" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$PY" benchmarks/gpu_check.py "$part" $SMOKE --out "$OUT" \
    ${GPU_CHECK_ATTENTION:+--attention "$GPU_CHECK_ATTENTION"} >>"$LOG" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "== $part: exit $rc$([ $rc -eq 124 ] && echo " (over its ${limit}s)")" | tee -a "$LOG"
    if [ "$part" = backend ]; then
      tail -n 5 "$LOG" >&2
      exit 2
    fi
  fi
done
"$PY" benchmarks/gpu_check.py report --out "$OUT" | tee -a "$LOG"
echo "gpu_check: $(($(date +%s) - start))s; wrote $OUT/gpu_check.json, $OUT/gpu_check.md, $LOG"
