#!/usr/bin/env bash
# Every speed measurement of benchmarks/ in one go, for a machine with an accelerator (it runs on
# CPU too): training throughput, each method's train-step overhead over dense, masked against
# compacted inference, and a sharded seed sweep. Everything lands under one folder, with the log
# and a summary of each step's exit status and wall time.
#
#   GCNPRUNE_DATA_DIR=../shared/data bash benchmarks/gpu.sh [OUT]
#   QUICK=1 bash benchmarks/gpu.sh /tmp/gpu_smoke     # a few epochs: checks the script, not speed
#
# OUT defaults to benchmarks/results/gpu_<backend>_<date>. Sized for at most 10 minutes: each step
# has a time limit (STEP_LIMIT_S, default 100 s; the overhead table, which compiles seven methods,
# gets twice that), so the five steps together stop within 600 s; a step that fails or runs out of
# time is recorded in the summary and the next one runs. Run from the repository root with the
# package importable (pip install -e . or PYTHONPATH=.).
set -uo pipefail

export GCNPRUNE_DATA_DIR="${GCNPRUNE_DATA_DIR:-../shared/data}"
backend="$(python -c 'import jax; print(jax.default_backend())')" || {
  echo "gpu.sh: jax is not importable (pip install -e . or set PYTHONPATH=.)" >&2
  exit 2
}
OUT="${1:-benchmarks/results/gpu_${backend}_$(date +%Y%m%d_%H%M%S)}"
mkdir -p "$OUT"
LIMIT="${STEP_LIMIT_S:-100}"

if [ "${QUICK:-0}" = 1 ]; then
  EPOCHS=4; REPEATS=1; SEEDS=2; SWEEP_EPOCHS=4; BATCHES=1,64; BENCH_REPEATS=2
else
  EPOCHS=50; REPEATS=3; SEEDS=8; SWEEP_EPOCHS=100; BATCHES=1,64,1024; BENCH_REPEATS=20
fi

{
  echo "# gpu.sh on $(hostname), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  python -c 'import jax; print("jax", jax.__version__, "backend", jax.default_backend(), jax.devices())'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); QUICK=${QUICK:-0}"
} > "$OUT/machine.txt" 2>&1

summary="$OUT/summary.md"
printf '# benchmarks/gpu.sh\n\n| step | exit | wall s | output |\n|---|---|---|---|\n' > "$summary"

step() {  # step NAME OUTPUT LIMIT_S COMMAND...
  local name="$1" output="$2" limit="$3"
  shift 3
  echo "== $name: $*" | tee -a "$OUT/log.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1
  local rc=$?
  [ $rc = 124 ] && echo "   $name: stopped after ${limit} s" | tee -a "$OUT/log.txt"
  echo "| $name | $rc | $((SECONDS - t0)) | $output |" >> "$summary"
}

step train_throughput train_throughput.md "$LIMIT" \
  python benchmarks/train_throughput.py --epochs "$EPOCHS" --repeats "$REPEATS" \
  --out "$OUT/train_throughput"
step train_overhead train_overhead.md "$((2 * LIMIT))" \
  python benchmarks/train_overhead.py --dataset sbu --epochs "$EPOCHS" --repeats "$REPEATS" \
  --out "$OUT/train_overhead"
for method in structured magnitude; do
  step "inference_$method" "inference_$method/bench.md" "$LIMIT" \
    python -m gcnprune_jax bench --method "$method" --rate 0.95 --dataset sbu \
    --batch-sizes "$BATCHES" --repeats "$BENCH_REPEATS" --out "$OUT/inference_$method"
done
step sweep_seeds sweep_seeds.md "$LIMIT" \
  python benchmarks/sweep_seeds.py --dataset sbu --method magnitude --rate 0.9 \
  --seeds "$SEEDS" --epochs "$SWEEP_EPOCHS" --out "$OUT/sweep_seeds"

cat "$summary"
echo "wrote $OUT (log.txt has every step's output)"
