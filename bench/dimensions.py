"""Dimensions in parallel: one sweep over sizes with buckets "auto", one bucket, and none.

Phase retrieval (population loss, W d x d) over d in {16, 24, 32, 48, 64, 96, 128},
GD and SpecGD (Newton-Schulz, 5 steps), 8 seeds x 4 learning rates, 2000 steps,
float32, swept three ways side by side in one process:

  auto  buckets="auto": the cost model of specdyn.buckets chooses the buckets;
  one   every size in one bucket (the largest size);
  none  buckets=None: one program per size (what sweeps did before buckets).

Each is timed cold (after jax.clear_caches(): compiling included) and warm (the same
call again). Reported: training programs compiled (start + chunk), wall seconds, and the
padded-FLOP overhead: FLOPs of the padded steps over those of the true-size steps (XLA
cost analysis of one step per size). The last lines estimate the cost model's two
constants on this machine from the "none" runs: seconds per cell to compile (cold -
warm, per cell) and FLOP/s of the warm steps.

``python bench/dimensions.py`` (the issue's grid) or ``--small`` (d in {8, 12, 16, 24},
2 seeds x 2 rates, 200 steps: a minute on a 2-core CPU). ``--steps``, ``--seeds`` and
``--rates`` (the first k of each optimizer's 4 rates) shrink either grid, e.g. the
issue's sizes at a fraction of its runs: ``--steps 500 --seeds 2 --rates 2``;
``--modes none,auto,one`` runs the modes in another order (the first pays the process's
one-off costs). ``--json PATH`` writes each mode's row for a script to check goals against.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax

import specdyn as sd
from specdyn import buckets as bucketing
from specdyn.simulate import recipe_of
from specdyn.sweep import sweep_plan


def _count(names):
    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kwargs.get("fun_name", "?")))

    return listener


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="a small grid (about a minute on 2 cores)")
    parser.add_argument("--steps", type=int, help="training steps (default: 2000, --small 200)")
    parser.add_argument("--seeds", type=int, help="seeds (default: 8, --small 2)")
    parser.add_argument("--rates", type=int, help="learning rates per optimizer, the first k (default: all)")
    parser.add_argument("--modes", default="auto,one,none",
                        help="the modes to run, in this order (default: auto,one,none; the first also pays "
                             "the process's one-off costs)")
    parser.add_argument("--json", metavar="PATH", help="write each mode's row to this file")
    args = parser.parse_args(argv)
    for name in ("steps", "seeds", "rates"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got --{name}={value}")
    sd.guard_cpu()
    if args.small:
        dims, seeds, steps = [8, 12, 16, 24], 2, 200
        rates = {"gd": [0.02, 0.05], "specgd": [0.01, 0.02]}
    else:
        dims, seeds, steps = [16, 24, 32, 48, 64, 96, 128], 8, 2000
        rates = {"gd": [0.005, 0.01, 0.02, 0.05], "specgd": [0.002, 0.005, 0.01, 0.02]}
    steps = args.steps or steps
    seeds = args.seeds or seeds
    if args.rates is not None:
        if args.rates > len(rates["gd"]):
            parser.error(f"--rates must be at most {len(rates['gd'])}, got --rates={args.rates}")
        rates = {n: v[: args.rates] for n, v in rates.items()}
    problem = sd.problems.PhaseRetrieval(dim=dims[0])
    options = {"gd": {}, "specgd": {"method": "newton_schulz"}}
    factories = {n: functools.partial(sd.get_optimizer, n, **kw) for n, kw in options.items()}
    sweep = dict(optimizers=factories, learning_rates=rates, seeds=seeds, grid={"dim": dims}, steps=steps,
                 record_every=max(1, steps // 20), progress=False)
    runs = seeds * len(next(iter(rates.values())))
    sizes = sorted(set(dims))
    flops = {(d, n): bucketing.step_flops(sd.problems.PhaseRetrieval(dim=d), recipe_of(f(0.01))[0])
             for d in sizes for n, f in factories.items()}
    true_flops = runs * sum(flops.values())
    every = {"auto": "auto", "one": {"dim": [max(dims)]}, "none": None}
    order = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not order or any(m not in every for m in order) or len(set(order)) != len(order):
        parser.error(f"--modes must list distinct modes of {list(every)}, got --modes={args.modes!r}")
    modes = {m: every[m] for m in order}
    print(f"phase retrieval d in {dims}, gd + specgd (newton_schulz), {seeds} seeds x "
          f"{len(rates['gd'])} rates, {steps} steps; {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print()
    print("| buckets | chosen | programs | cold s | warm s | padded FLOPs / true |")
    print("|---|---|---|---|---|---|")
    measured, rows = {}, {}
    planned = {k: v for k, v in sweep.items() if k != "progress"}
    for mode, buckets in modes.items():
        plans = sweep_plan(problem, buckets=buckets, **planned)
        at = lambda p: (p.bucket or {}).get("dim", p.static["dim"])
        chosen = sorted({at(p) for p in plans})
        padded = runs * sum(flops[at(p), p.optimizer] for p in plans)
        jax.clear_caches()
        names: list = []
        listener = _count(names)
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            began = time.perf_counter()
            sd.sweep(problem, buckets=buckets, **sweep)
            cold = time.perf_counter() - began
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
        began = time.perf_counter()
        sd.sweep(problem, buckets=buckets, **sweep)
        warm = time.perf_counter() - began
        programs = sum(n in ("jit(_chunk_program)", "jit(_start_program)") for n in names)
        measured[mode] = (cold, warm, programs)
        rows[mode] = {"chosen": chosen, "programs": programs, "cold_s": cold, "warm_s": warm,
                      "padded_over_true": padded / true_flops}
        print(f"| {mode} | {chosen} | {programs} | {cold:.1f} | {warm:.1f} | {padded / true_flops:.2f} |")
        if args.json:  # after every mode: a run stopped by a time limit keeps the modes it finished
            with open(args.json, "w") as f:
                json.dump({"device": jax.devices()[0].device_kind, "jax": jax.__version__, "dims": dims,
                           "seeds": seeds, "rates": len(rates["gd"]), "steps": steps, "modes": rows}, f,
                          indent=1)
    if "none" not in measured:
        return
    cold, warm, programs = measured["none"]
    cells = len(dims) * len(factories)
    print()
    print(f"cost model constants from 'none': {(cold - warm) / cells:.2f} s to compile one cell, "
          f"{steps * true_flops / warm:.2e} FLOP/s warm "
          f"(specdyn.buckets: COMPILE_SECONDS={bucketing.COMPILE_SECONDS}, "
          f"FLOPS_PER_SECOND={bucketing.FLOPS_PER_SECOND:.1e})")


if __name__ == "__main__":
    main()
