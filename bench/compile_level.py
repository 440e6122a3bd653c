"""Compiling at -O1 against XLA's default level on CPU, side by side in one run.

specdyn compiles its programs with LLVM at -O1 on CPU (specdyn/_compile.py). This
times a few workloads, cold (a fresh process: compiles included) and warm (the same
call again), with ``SPECDYN_CPU_OPT_LEVEL=default`` and ``=1``, alternating the two
levels over ``--repeats`` fresh processes each, and prints the medians:

  least squares  sd.sweep, d = 64, GD + SpecGD (Newton-Schulz), 8 seeds x 8 rates x 500 steps
  phase retr.    sd.sweep, PhaseRetrieval(dim=32), GD + SpecGD, 8 seeds x 2 rates x 3000 steps
  network        sd.sweep, GaussianMixture depth 3 (width 32), GD + Muon, 4 seeds x 2 rates x 2000 steps
  init ranks     networks.init_stable_ranks(widths=(16, 64), seeds=1) (runs once: cold only)

Final losses must agree between the levels (relative 1e-4: float32, rounding may differ)
before any time is printed. ``python bench/compile_level.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKLOADS = ("least_squares", "phase_retrieval", "network", "init_ranks")


def _workload(name):
    import numpy as np

    import specdyn as sd
    from specdyn.experiments import networks as nw

    if name == "least_squares":
        p = sd.problems.MatrixLeastSquares(rows=64, cols=64, samples=256, condition=10.0)
        rates = {"gd": list(np.geomspace(0.05, 0.8, 8)), "specgd": list(np.geomspace(1e-3, 3e-2, 8))}
        opts = {"gd": lambda lr: sd.gd(lr), "specgd": lambda lr: sd.spectral_gd(lr, method="newton_schulz", steps=5)}
        return lambda: sd.sweep(p, optimizers=opts, learning_rates=rates, seeds=8, steps=500, record_every=50,
                                progress=False)["loss"].isel(step=-1).values
    if name == "phase_retrieval":
        p = sd.problems.PhaseRetrieval(dim=32)
        return lambda: sd.sweep(p, optimizers=["gd", "specgd"], learning_rates=[0.05, 0.1], seeds=8, steps=3000,
                                record_every=300, progress=False)["loss"].isel(step=-1).values
    if name == "network":
        p = sd.problems.GaussianMixture(classes=3, dim=16, width=32, depth=3, init_scale=0.3)
        return lambda: sd.sweep(p, optimizers=["gd", "muon"], learning_rates=[0.05, 0.1], seeds=4, steps=2000,
                                record_every=200, progress=False)["loss"].isel(step=-1).values
    return lambda: nw.init_stable_ranks(widths=(16, 64), seeds=1)["stable_rank"].values


def _child():
    """One process: every workload cold then warm; one JSON line."""
    from specdyn._cpu import guard_cpu

    guard_cpu()
    out = {}
    for name in WORKLOADS:
        run = _workload(name)
        start = time.perf_counter()
        value = run()
        cold = time.perf_counter() - start
        warm = None
        if name != "init_ranks":
            start = time.perf_counter()
            run()
            warm = time.perf_counter() - start
        out[name] = {"cold": cold, "warm": warm, "value": [float(v) for v in value.ravel()]}
    print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child()
        return
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from sweep import machine

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    runs = {"default": [], "1": []}
    for _ in range(args.repeats):
        for level in runs:
            cmd = [sys.executable, __file__, "--child"]
            done = subprocess.run(cmd, env=dict(env, SPECDYN_CPU_OPT_LEVEL=level), check=True, capture_output=True,
                                  text=True)
            runs[level].append(json.loads(done.stdout.splitlines()[-1]))
    print(f"machine: {machine()}")
    print(f"{args.repeats} fresh processes per level, alternating; medians")
    for name in WORKLOADS:
        a, b = np.asarray(runs["default"][0][name]["value"]), np.asarray(runs["1"][0][name]["value"])
        finite = np.isfinite(a) & np.isfinite(b)
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), name
        rel = np.max(np.abs(a[finite] - b[finite]) / np.maximum(np.abs(a[finite]), 1e-30))
        assert rel < 1e-4, (name, rel)
        print(f"{name}: final values at -O1 vs default: largest relative difference {rel:.1e}")
    print()
    print("| workload | default cold (s) | -O1 cold (s) | cold -O1/default | default warm (s) | -O1 warm (s) | warm -O1/default |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in WORKLOADS:
        med = {lv: {k: np.median([r[name][k] for r in runs[lv]]) if runs[lv][0][name][k] is not None else None
                    for k in ("cold", "warm")} for lv in runs}
        warm = ("—", "—", "—") if med["1"]["warm"] is None else (
            f"{med['default']['warm']:.2f}", f"{med['1']['warm']:.2f}", f"{med['1']['warm'] / med['default']['warm']:.2f}")
        print(f"| {name} | {med['default']['cold']:.2f} | {med['1']['cold']:.2f} | "
              f"{med['1']['cold'] / med['default']['cold']:.2f} | {' | '.join(warm)} |")


if __name__ == "__main__":
    main()
