#!/usr/bin/env bash
# The CUDA checks in one script: the CUDA unit tests, then `pytest benchmarks/ --full` on the GPU
# (components, whole step, recipes, the Adapter docstring's loop), each suite under its own time
# limit so one slow or broken suite cannot eat the others' time. Results go to $DIGA_BENCH_RESULTS (default the untracked
# benchmarks/.results; DIGA_BENCH_UPDATE=1 writes the published benchmarks/results and docs/benchmarks.md).
#
#   bash benchmarks/cuda_check.sh            # on a machine with a CUDA GPU and diga installed
#   DIGA_BENCH_RECIPE_ITERS=20 bash ...      # fewer timed iterations per recipe stage (default 200)
#   DIGA_CUDA_RECIPES_ARGS='-k True' ...     # extra pytest arguments for the recipe suite (here: AMP only)
#   DIGA_CUDA_<TESTS|COMPONENTS|STEP|COMPILE|RECIPES|LOOP|DINOV2>_S=N  # each suite's time limit in seconds
#   DIGA_BENCH_LOOP_SEEDS=N                  # seeds of the docstring loop on every shift (default 1 here)
#
# Every step runs even when an earlier one fails; the exit status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
status=0
step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    local start=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$status" -ne 0 ] || status=$rc
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step "${DIGA_CUDA_TESTS_S:-120}" "CUDA unit tests" python3 -m pytest tests -q -x -k cuda -p no:cacheprovider
step 60 "host-sync audit of the steps" python3 benchmarks/sync_audit.py
step "${DIGA_CUDA_COMPONENTS_S:-200}" "components, full" python3 -m pytest benchmarks/test_components.py --full -q
step "${DIGA_CUDA_STEP_S:-150}" "whole step, full" python3 -m pytest benchmarks/test_step.py --full -q
# Eager vs torch.compile of the step's own work (augmentation, mix, KD): reported, decides a compiled default.
step "${DIGA_CUDA_COMPILE_S:-240}" "torch.compile probe" python3 benchmarks/compile_probe.py
step "${DIGA_CUDA_RECIPES_S:-150}" "recipes, full" python3 -m pytest benchmarks/test_recipes.py --full -q \
    --deselect benchmarks/test_recipes.py::test_dinov2_recipe_timing ${DIGA_CUDA_RECIPES_ARGS:-}
DIGA_BENCH_LOOP_SEEDS="${DIGA_BENCH_LOOP_SEEDS:-1}" \
    step "${DIGA_CUDA_LOOP_S:-240}" "docstring loop, full (every shift)" python3 -m pytest benchmarks/test_loop.py --full -q
# The foundation-model preset (DINOv2 ViT-B/14, 504 x 896, sliding-window pseudo-labels): its own time limit.
step "${DIGA_CUDA_DINOV2_S:-200}" "dinov2 recipe, full" \
    python3 -m pytest benchmarks/test_recipes.py::test_dinov2_recipe_timing --full -q ${DIGA_CUDA_RECIPES_ARGS:-}
exit "$status"
