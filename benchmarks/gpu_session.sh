#!/usr/bin/env bash
# Issue 29's device measurements (items 1-3), in one run that fits a 15-minute lease with its
# start-up (docs/BENCHMARKS.md, "On a GPU"; issue 18's parts follow when time is left).
#
#   OUT=gpu_out bash benchmarks/gpu_session.sh
#
# Needs: python3 with torch (CUDA), numpy, pytest and tomli-w (PY=... to choose another). Nothing
# else: every input is random unit-norm embeddings of the teacher's width. Each part has its own
# time limit, shortened so that everything ends by DEADLINE seconds after the start (a part with
# under 20 s left is skipped and says so), and writes its output to $OUT/<part>.txt; a part that
# fails or runs out of time does not stop the next. In order of need:
#   1. profile_optimized, profile_debug: torch.profiler of one optimized train step (bf16 autocast,
#      default batch 8) and of debug steps; time shares by kind of work on the CPU, device and
#      kernel clocks, the top operators and kernels, and Chrome traces ($OUT/profile/*.json.gz,
#      *_summary.md, *_summary.json), summarised by benchmarks/profile_summary.py;
#   2. debug_side_by_side: bench_gpu.py's debug preset on the GPU and on all the machine's CPU
#      cores in one run, with the ratio;
#   3. optimized: the optimized preset's seconds per step, flow-steps/s and peak memory;
#   4. pytest_cuda: the CUDA tests, among them the fast path's equivalences on the device;
#   5. recompute: the optimized preset's gradients with and without recomputation (batch 4).
set -u
OUT=${OUT:-gpu_out}
PY=${PY:-python3}
DEADLINE=${DEADLINE:-560}      # seconds from the start by which every part has ended
START=$SECONDS
mkdir -p "$OUT/profile"
export PYTHONUNBUFFERED=1

part() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        echo "=== $name: skipped, ${left} s left of DEADLINE=${DEADLINE}" | tee "$OUT/$name.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "=== $name (limit ${limit} s) $(date -u +%T)"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 30 "$OUT/$name.txt"
    echo "=== $name: exit $rc $(date -u +%T)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
$PY -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', os.cpu_count())" \
    | tee -a "$OUT/machine.txt"

part profile_optimized 150 $PY benchmarks/profile_step.py --preset optimized --device cuda --steps 1 \
    --telemetry off --out "$OUT/profile"
part profile_debug 60 $PY benchmarks/profile_step.py --preset debug --device cuda --steps 3 --out "$OUT/profile"
part debug_side_by_side 120 $PY benchmarks/bench_gpu.py --device cuda,cpu --presets debug --steps 3
part optimized 120 $PY benchmarks/bench_gpu.py --device cuda --presets optimized --steps 3 --telemetry off
# shellcheck disable=SC2046
part pytest_cuda 100 $PY -m pytest -m cuda $(grep -l "pytest.mark.cuda" tests/*.py) -q \
    -p no:cacheprovider -p no:xvfb -p no:pytestqt
part recompute 120 $PY benchmarks/bench_recompute_grads.py --preset optimized --batch-size 4 --device cuda
echo "=== done $(date -u +%T), $((SECONDS - START)) s"
