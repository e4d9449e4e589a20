#!/usr/bin/env bash
# Issue 18's measurements on a CUDA machine, in one run (docs/BENCHMARKS.md, "On a GPU").
#
#   OUT=gpu_out bash benchmarks/gpu_session.sh
#
# Needs: python3 with torch (CUDA), numpy, h5py, pytest and tomli-w (PY=... to choose another),
# and the held-out data as embeddings, since the teacher may not be installed there:
# .devdata/wn3000.npz (arrays inputs, targets: `wordnet:3000` encoded by the teacher), written by
#   .venv/bin/python scripts/export_embeddings.py --data wordnet:3000 --out .devdata/wn3000.npz
# Each part has its own time limit and writes its output to $OUT/<part>.txt; a part that fails
# or runs out of time does not stop the next.
set -u
OUT=${OUT:-gpu_out}
PY=${PY:-python3}
MINUTES=${MINUTES:-2.5}       # the experiment preset's training time at most
DEADLINE=${DEADLINE:-540}      # seconds: the experiment's time shrinks so that everything ends by then
START=$SECONDS
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

part() {
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s) $(date -u +%T)"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.txt"
    echo "=== $name: exit $rc $(date -u +%T)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
$PY -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', os.cpu_count())" \
    | tee -a "$OUT/machine.txt"

# 1. the CUDA tests (only the files that hold any: the GUI tests need Qt, which is not there)
# shellcheck disable=SC2046
part pytest_cuda 150 $PY -m pytest -m cuda $(grep -l "pytest.mark.cuda" tests/*.py) -q \
    -p no:cacheprovider -p no:xvfb -p no:pytestqt
# 2. the optimized preset at its default batch: seconds per step, flow-steps/s, peak memory
part optimized 200 $PY benchmarks/bench_gpu.py --device cuda --presets optimized --steps 3 --telemetry off
# 3. its gradients with and without recomputation (batch 4: the unrecomputed step must fit)
part recompute 150 $PY benchmarks/bench_recompute_grads.py --preset optimized --batch-size 4 --device cuda
# 4. the debug preset on the GPU and on all the same machine's CPU cores, side by side
part debug_gpu 60 $PY benchmarks/bench_gpu.py --device cuda --presets debug --steps 5
part debug_cpu 90 $PY benchmarks/bench_gpu.py --device cpu --presets debug --steps 3
# 5. the experiment preset with the debug preset's learning configuration, held-out WordNet
minutes=$($PY -c "print(round(max(0.5, min(${MINUTES}, (${DEADLINE} - ($SECONDS - $START) - 150) / 60)), 2))")
part experiment_wn $($PY -c "print(int(${minutes} * 60 + 90))") $PY -m energy_flow.evaluate \
    --data .devdata/wn3000.npz --preset experiment --device cuda --seed 0 --batches 100000 --minutes "$minutes" \
    --set payload_update=gated --set flow_xy_start=still --set readout_init=tied --set mapper_grid_max=64 \
    --set loss=contrastive --set contrastive_weight=0.1 --json "$OUT/experiment_wn.json"
# 6. the main job headless on the GPU (telemetry on, as the app trains)
part headless 45 $PY main.py --headless --device cuda --data .devdata/wn3000.npz --batches 30 \
    --summary "$OUT/headless.json"
echo "=== done $(date -u +%T)"
