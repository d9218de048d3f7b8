#!/usr/bin/env bash
# One script for an accelerator machine (it runs on a CPU too): the test suite with the thorough
# Hypothesis profile kept to a few minutes, the training-loop overhead, the training step's
# throughput against matmul, and the SAE-FNO step at large n (against PyTorch + neuraloperator
# where those are installed). Within 10 minutes on a GPU; the tables go to one results file.
#
#   bash benchmarks/gpu.sh                      # results in outputs/gpu_results.md
#   OUT=/some/dir bash benchmarks/gpu.sh        # results in /some/dir/gpu_results.md
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3). Where the
# machine cannot install the project, it runs from the source tree (PYTHONPATH=.). Each part
# has a time limit of its own (TEST_SECONDS, BENCH_SECONDS), so one slow part cannot eat the
# rest; a part that fails or times out is reported and the script goes on.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
results_dir=${OUT:-outputs}
mkdir -p "$results_dir"
results="$results_dir/gpu_results.md"
TEST_SECONDS=${TEST_SECONDS:-180}
BENCH_SECONDS=${BENCH_SECONDS:-100}

{
  echo "# equisae on $(hostname), $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  "$PYTHON" -c 'import jax; print(f"jax {jax.__version__}, devices: {jax.devices()}")' 2>&1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} | tee "$results"

part() {  # part TITLE SECONDS COMMAND...: run one part, append its output's tail to the results
  local title=$1 seconds=$2
  shift 2
  echo "== $title" >&2
  local log
  log=$(mktemp)
  local start=$SECONDS
  timeout "$seconds" "$@" 2>&1 | tee "$log" >&2
  local rc=${PIPESTATUS[0]}
  {
    echo
    echo "## $title"
    echo
    echo "\`$*\` — exit $rc$([ "$rc" = 124 ] && echo " (timed out after $seconds s)"), $((SECONDS - start)) s"
    echo
    echo '```'
    grep -v -e '^fit:' -e 'it/s]$' "$log" | tail -n 40
    echo '```'
  } >>"$results"
  rm -f "$log"
}

# thorough properties, fewer examples each than the profile's default, fast tests first
part "tests (HYPOTHESIS_PROFILE=thorough, 40 examples)" "$TEST_SECONDS" \
  env HYPOTHESIS_PROFILE=thorough HYPOTHESIS_EXAMPLES=40 \
  "$PYTHON" -m pytest -q -x -m "not slow" -p no:cacheprovider
part "fit against a hand-written scanned loop" "$BENCH_SECONDS" \
  "$PYTHON" benchmarks/fit_overhead.py --no-record --repeats 1
part "throughput of the training step against matmul" "$BENCH_SECONDS" \
  "$PYTHON" benchmarks/throughput.py --no-record --batches 256 1024 4096
if "$PYTHON" -c "import torch, neuralop" 2>/dev/null; then
  part "SAE-FNO step against PyTorch + neuraloperator" "$BENCH_SECONDS" \
    "$PYTHON" benchmarks/torch_sae_fno.py --no-record --configs 1024,16 4096,16 16384,16
fi
part "SAE-FNO step against n and p" "$BENCH_SECONDS" \
  "$PYTHON" benchmarks/scaling.py --no-record
echo "results: $results" >&2
