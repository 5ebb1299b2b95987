#!/usr/bin/env bash
# embedrt's GPU checks on a fresh GPU machine, in one command, from the checkout's root:
#
#     bash tests/e2e/gpu/check_on_gpu.sh            # results under $OUT (default /tmp/embedrt-gpu-check)
#
# It needs onnxruntime-gpu importable (pip install "embedrt[gpu,export]", or the offline route of
# ../shared/gpu/README.md: `source .gpu/unpack.sh && bash tests/e2e/gpu/check_on_gpu.sh`) and puts this
# checkout's src/ on PYTHONPATH itself. Steps: versions, nvidia-smi and the CUDA kernel architectures
# read from the provider; a stand-in model (full-size DMetaSoul with the real vocabulary when
# shared/data or ../shared/data exists, else the tiny one) exported to fp32 + fp16; parity and batch
# invariance on CUDA (the encode path: device pooling, buckets warmed at load, overlap); the graph's mean
# pooling against NumPy pooling of the same GPU output; CUDA graphs (one text a width) against the normal session;
# the server's batcher on CUDA, its runs padded ahead or not; a process that cannot import torch starting the CUDA
# provider (with embedrt's preload_dlls() call, and without it to show what it is for); `embedrt bench
# --device cuda` (figures to $OUT/bench-cuda.json); `pytest -m gpu tests` when pytest is installed.
# Each step is bounded, reports, and the next one runs whatever happened; the whole run stays within
# BUDGET_S seconds (default 480). The summary is the last lines, also in $OUT/summary.txt.
# Without a GPU it runs through and reports each GPU step as failed (EMBEDRT_TINY=1: a quick dry run).
set -u

OUT=${OUT:-/tmp/embedrt-gpu-check}
BUDGET_S=${BUDGET_S:-480}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
ROOT=$(pwd)
case ":${PYTHONPATH:-}:" in
  *":$ROOT/src:"*) ;;
  *) export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$ROOT/src:$ROOT" ;;
esac
export PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
START=$(date +%s)
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
DATA=""
for candidate in "${EMBEDRT_DATA:-}" "$ROOT/shared/data" "$ROOT/../shared/data"; do
  if [ -n "$candidate" ] && [ -f "$candidate/bert-base-chinese-vocab.txt" ]; then DATA=$candidate; break; fi
done
[ -n "${EMBEDRT_TINY:-}" ] && DATA=""  # the tiny stand-in even where the data is (a quick dry run)
DATA_ARGS=()
[ -n "$DATA" ] && DATA_ARGS=(--data "$DATA")

# step NAME CAP_S COMMAND...: run with at most CAP_S seconds (less when the budget runs short).
step() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET_S - ($(date +%s) - START) - 5))
  local limit=$(( cap < left ? cap : left ))
  local log="$OUT/$name.log"
  if [ "$limit" -lt 10 ]; then
    echo "SKIP  $name (time budget spent)" | tee -a "$SUMMARY"; return 0
  fi
  echo "=== $name (at most ${limit}s): $*"
  local began=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - began ))
  grep -v -E 'Writing model shards|Loading weights|it/s\]$' "$log" | tail -n 40
  local verdict=PASS
  [ "$rc" -ne 0 ] && verdict=FAIL
  [ "$rc" -eq 124 ] && verdict="FAIL (timed out)"
  local result
  result=$(grep -E '^RESULT:|passed|failed|skipped|error' "$log" | tail -n 1)
  echo "$verdict  $name  ${took}s  rc=$rc  ${result}" | tee -a "$SUMMARY"
  return "$rc"
}

echo "embedrt GPU check: $(date -u +%FT%TZ), checkout $ROOT ($(git -C "$ROOT" log -1 --format=%h 2>/dev/null || echo 'no git')), data: ${DATA:-none}"
step 01-nvidia-smi 30 nvidia-smi
step 02-versions 60 "$PY" tests/e2e/gpu/gpu_checks.py versions

BUNDLE="$WORK/bundle"
if ! step 03-export 200 "$PY" tests/e2e/gpu/gpu_checks.py export --out "$BUNDLE" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}; then
  if [ -n "$DATA" ]; then  # the later steps still need a bundle: the tiny one exports in seconds
    step 03b-export-tiny 90 "$PY" tests/e2e/gpu/gpu_checks.py export --out "$BUNDLE" --tiny
  fi
fi

if [ -f "$BUNDLE/embedrt.json" ]; then
  step 04-cuda-parity 120 "$PY" tests/e2e/gpu/gpu_checks.py cuda --bundle "$BUNDLE" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
  step 04b-device-pooling 90 "$PY" tests/e2e/gpu/gpu_checks.py pooling --bundle "$BUNDLE" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
  # CUDA graphs of one text a width: accepted by ONNX Runtime, the normal session's vectors, batch-1 latency.
  step 04c-cuda-graphs 60 "$PY" tests/e2e/gpu/gpu_checks.py graphs --bundle "$BUNDLE" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
  # The server's batcher on CUDA with and without its runs padded ahead: encode's vectors, sent/s (figures).
  step 04d-serve-overlap 60 "$PY" tests/e2e/gpu/gpu_checks.py serve --bundle "$BUNDLE" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
  # A torch-free process as a pip install lays it out: onnxruntime beside pip's nvidia/ packages.
  SITE=""
  if step 05-pip-layout 30 "$PY" tests/e2e/gpu/gpu_checks.py pip-layout --into "$WORK/site"; then
    [ -d "$WORK/site/onnxruntime" ] && SITE="$WORK/site:"
  fi
  step 06-no-torch 90 env PYTHONPATH="$SITE$PYTHONPATH" "$PY" tests/e2e/gpu/gpu_checks.py no-torch --bundle "$BUNDLE"
  # Without LD_LIBRARY_PATH: CUDA must come from pip's nvidia packages through preload_dlls().
  step 07-no-torch-no-ld-path 90 env -u LD_LIBRARY_PATH PYTHONPATH="$SITE$PYTHONPATH" \
    "$PY" tests/e2e/gpu/gpu_checks.py no-torch --bundle "$BUNDLE"
  # What the call is for: a finding, not a check (an image with CUDA in ld.so.conf starts anyway).
  step 08-finding-no-torch-no-preload 90 env -u LD_LIBRARY_PATH PYTHONPATH="$SITE$PYTHONPATH" \
    "$PY" tests/e2e/gpu/gpu_checks.py no-torch --bundle "$BUNDLE" --skip-preload
  # Figures, not a check: engine alone vs encode per batch size, first-pass vs warm p99, fp16 and fp32.
  step 09-bench-device-cuda 150 "$PY" tests/e2e/gpu/gpu_checks.py bench --bundle "$BUNDLE" \
    --json-out "$OUT/bench-cuda.json" ${DATA_ARGS[@]+"${DATA_ARGS[@]}"}
else
  echo "SKIP  04..09 (no bundle was exported)" | tee -a "$SUMMARY"
fi

if "$PY" -c "import pytest" 2>/dev/null; then
  step 10-pytest-gpu 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests
else
  echo "SKIP  10-pytest-gpu (pytest is not installed: steps 04-07 ran the same checks as plain Python)" \
    | tee -a "$SUMMARY"
fi

rm -rf "$WORK"
echo
echo "=== summary ($(( $(date +%s) - START ))s; logs in $OUT)"
cat "$SUMMARY"
