"""A toy flow model in plain numpy, recorded with FlowRecorder so the app can replay it.

It shows everything another flow model (e.g. the original research implementation) has to do
to write an Energy Flow Studio recording: at every step, hand the recorder the positions,
energies, parents and alive flags of its flows. The recorder derives the per-step statistics
the app's panels draw (active counts, spawns, terminations, energy histograms, displacement
ranges, coverage) from that data and writes the file.

The toy: flows start on the input face (z = -1) of an 8×8×6 lattice, one per cell and sample,
drift towards the output plane at z = +1 while losing energy, fade below an energy threshold,
and split off a child now and then, within a budget of live flows.

Run (from the repository root, or with energy-flow-studio installed)::

    PYTHONPATH=. python docs/examples/record_toy_model.py toy.h5
    python -m energy_flow.trace inspect toy.h5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from energy_flow.trace import (REASON_FADED, REASON_LANDED, REASON_TIMED_OUT, FlowRecorder,
                               open_recording)

WIDTH, HEIGHT, DEPTH = 8, 8, 6
SAMPLES = 2
MAX_STEPS = 12
FADE_BELOW = 0.05
SPAWN_ABOVE = 0.5
SPAWN_PROBABILITY = 0.2
MAX_LIVE_FLOWS = 150


def run_batch(rec: FlowRecorder, rng: np.random.Generator, step: int) -> None:
    """Propagate one batch of toy flows, recording every step."""
    xs, ys = np.meshgrid(np.linspace(-1, 1, WIDTH), np.linspace(-1, 1, HEIGHT))
    cells = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, -1.0)], axis=1)
    pos = np.tile(cells, (SAMPLES, 1))
    energy = rng.uniform(0.3, 1.0, size=pos.shape[0])
    parent = np.full(pos.shape[0], -1)
    sample = np.repeat(np.arange(SAMPLES), cells.shape[0])
    alive = np.ones(pos.shape[0], dtype=bool)
    reason = np.zeros(pos.shape[0], dtype=np.int8)

    rec.begin_batch(step=step)
    rec.record_step(pos, energy, parent, alive, sample_index=sample)   # step 0: placement
    for t in range(1, MAX_STEPS + 1):
        idx = np.flatnonzero(alive)
        if idx.size == 0:
            break
        delta = np.column_stack([rng.normal(0, 0.1, idx.size), rng.normal(0, 0.1, idx.size),
                                 rng.uniform(0.05, 0.35, idx.size)])
        pos[idx] = np.clip(pos[idx] + delta, -1.0, 1.0)
        energy[idx] *= rng.uniform(0.75, 0.98, idx.size)
        landed = pos[idx, 2] >= 1.0
        faded = ~landed & (energy[idx] < FADE_BELOW)
        timed_out = ~landed & ~faded & (t == MAX_STEPS)
        reason[idx[landed]], reason[idx[faded]] = REASON_LANDED, REASON_FADED
        reason[idx[timed_out]] = REASON_TIMED_OUT
        alive[idx] = ~(landed | faded | timed_out)

        # spawning within the budget of live flows: requests beyond it are denied
        wants = idx[alive[idx] & (energy[idx] > SPAWN_ABOVE) & (rng.random(idx.size) < SPAWN_PROBABILITY)]
        granted = wants[: max(0, MAX_LIVE_FLOWS - int(alive.sum()))]
        if granted.size:
            energy[granted] *= 0.5
            offset = np.column_stack([rng.normal(0, 0.05, (granted.size, 2)), np.zeros(granted.size)])
            pos = np.vstack([pos, np.clip(pos[granted] + offset, -1.0, 1.0)])
            energy = np.concatenate([energy, energy[granted]])
            parent = np.concatenate([parent, granted])   # flow ids are row indices
            sample = np.concatenate([sample, sample[granted]])
            alive = np.concatenate([alive, np.ones(granted.size, dtype=bool)])
            reason = np.concatenate([reason, np.zeros(granted.size, dtype=np.int8)])
        rec.record_step(pos, energy, parent, alive, sample_index=sample, reasons=reason,
                        spawn_requested=int(wants.size), spawn_denied=int(wants.size - granted.size))
    rec.end_batch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="recording to write (.h5)")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with FlowRecorder(args.path, lattice_shape=(WIDTH, HEIGHT, DEPTH), plane_z=(1.0,),
                      start_mode="input_face", model_name="numpy toy flow model",
                      provenance={"data_source": "random energies", "device": "cpu"},
                      config={"max_steps": MAX_STEPS, "energy_threshold": FADE_BELOW,
                              "max_live_flows": MAX_LIVE_FLOWS}) as rec:
        for step in range(args.batches):
            run_batch(rec, rng, step)
    with open_recording(args.path) as recording:
        for i in range(recording.num_batches):
            tel = recording.batch(i)
            agg = tel.aggregates
            print(f"batch {i}: {tel.num_steps} steps, {tel.total_flows} flows, "
                  f"{int(agg.spawn_granted.sum())} spawned ({int(agg.spawn_denied.sum())} denied), "
                  f"{int(agg.landed.sum())} landed, {int(agg.faded.sum())} faded, "
                  f"{int(agg.timed_out.sum())} timed out, coverage {float(agg.coverage[-1, 0]):.2f}")
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
