#!/usr/bin/env bash
# GPU check of the training paths, under 8 minutes on one H100 (every step is time-boxed; the limits add up
# to 460 s):
#   1. bf16-mixed fits of the tiny recipes (recipes/tiny/*.yaml) on a fresh small ShapesWorld;
#   2. the tiny VistaLLM fit under lightning_gpv.strategies.VistaLLMFSDPStrategy on one GPU (with
#      GPU_CHECK_ARGS=--fsdp2 also under lightning_gpv.strategies_fsdp2.VistaLLMFSDP2Strategy, 75 s more);
#   3. VistaLLM-7B-shaped training throughput (benchmarks/vistallm_gpu.py: full width, as many LLM layers as
#      the memory plan fits): tokens/s, samples/s, MFU, peak memory;
#   4. the memory plan's prediction (lightning_gpv.plan) next to the measured peak.
# A failing step does not stop the others. Everything goes to OUT_DIR: <step>.log per step, summary.txt,
# plan.json, throughput.json, plan_vs_measured.{json,txt}. The steps and their limits come from
# benchmarks/gpu_check.py (`python benchmarks/gpu_check.py prepare OUT_DIR --dry-run` prints them).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default: outputs/gpu_check
#   GPU_CHECK_ARGS="--accelerator cpu --preset tiny --steps 5" bash benchmarks/gpu_check.sh /tmp/check  # no GPU
#
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python).
set -u -o pipefail

cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)" | tee -a "$SUMMARY"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  | sed 's/^/gpu: /' | tee -a "$SUMMARY"

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND with a time limit, log it, record the outcome.
step() {
  local name=$1 limit=$2
  shift 2
  local start rc status
  start=$(date +%s)
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMEOUT (limit ${limit}s)" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  printf '%-20s %-26s %4ss  %s\n' "$name" "$status" "$(($(date +%s) - start))" "$name.log" | tee -a "$SUMMARY"
}

# word splitting of GPU_CHECK_ARGS is intended: it holds options
# shellcheck disable=SC2086
step prepare 45 "$PYTHON" benchmarks/gpu_check.py prepare "$OUT" ${GPU_CHECK_ARGS:-}
grep '^plan: ' "$OUT/prepare.log" | tee -a "$SUMMARY"
if [[ -s "$OUT/steps.tsv" ]]; then
  while IFS=$'\t' read -r name limit command; do
    step "$name" "$limit" bash -c "$command" </dev/null
  done <"$OUT/steps.tsv"
else
  echo "no steps: prepare failed (see prepare.log)" | tee -a "$SUMMARY"
fi
if [[ -s "$OUT/plan_vs_measured.txt" ]]; then
  tee -a "$SUMMARY" <"$OUT/plan_vs_measured.txt"
fi
echo "summary: $SUMMARY"
