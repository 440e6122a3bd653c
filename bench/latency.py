"""Interactive latency of ``sd.simulate``: the first call against a hand-written jitted scan,
and the time and compile count of later calls that change one thing.

The problem is the one of the engine issue: ``PhaseRetrieval(dim=32)`` (population
loss), GD at lr 0.05, 3000 steps, recorded every 30 steps (101 records: loss and
the problem's metrics). Each "first call" runs in a fresh Python process (so no
compiled program or cached eager operation is shared), timed from just before the
call to the returned arrays; the two first calls alternate ``--repeats`` times and
the medians are reported. Later calls run in the process of a first ``sd.simulate``
call, each changing one thing: the learning rate, the seed, the optimizer object
(same factory), the step count, the record interval, a data field of the problem
(spike strength). Compiles are counted from jax's compile events.

Usage: ``python bench/latency.py [--repeats N] [--steps N]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

FIRST_CALL = {"simulate", "scan"}


def _compile_counter():
    import jax

    names = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    return names


def hand_written(problem, lr, key, steps, every):
    """The same run as one jitted lax.scan: init, sample, steps, records every ``every``
    steps and at the last step (no divergence bookkeeping)."""
    import jax
    import optax

    import specdyn as sd

    def run(key):
        init_key, data_key = jax.random.split(key)
        data, params = problem.sample(data_key), problem.init(init_key)
        opt = optax.sgd(lr)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(problem.loss)(p, data), s, p)
            return (optax.apply_updates(p, u), s), None

        def slot(carry, _):
            record = {"loss": problem.loss(carry[0], data), **problem.metrics(carry[0], data)}
            carry, _ = jax.lax.scan(step, carry, None, length=every)
            return carry, record

        carry, records = jax.lax.scan(slot, (params, opt.init(params)), None, length=steps // every)
        last = {"loss": problem.loss(carry[0], data), **problem.metrics(carry[0], data)}
        return jax.tree.map(lambda a, b: jax.numpy.concatenate([a, b[None]]), records, last)

    del sd
    return jax.jit(run)(key)


def child(kind: str, steps: int, every: int) -> dict:
    import jax
    import numpy as np

    import specdyn as sd

    problem = sd.problems.PhaseRetrieval(dim=32)
    key = jax.random.PRNGKey(0)
    compiles = _compile_counter()
    start = time.perf_counter()
    if kind == "scan":
        out = hand_written(problem, 0.05, key, steps, every)
    else:
        out = sd.simulate(problem, sd.gd(0.05), key=key, steps=steps, record_every=every)
    loss = np.asarray(out["loss"])
    result = {"first": time.perf_counter() - start, "compiles": len(compiles), "final_loss": float(loss[-1])}
    if kind == "scan":
        return result
    later = {
        "another learning rate": lambda: sd.simulate(problem, sd.gd(0.02), key=key, steps=steps, record_every=every),
        "another seed (new optimizer object)": lambda: sd.simulate(
            problem, sd.gd(0.05), key=jax.random.PRNGKey(1), steps=steps, record_every=every
        ),
        "same kind by name (get_optimizer)": lambda: sd.simulate(
            problem, sd.get_optimizer("gd", 0.05), key=key, steps=steps, record_every=every
        ),
        "another step count": lambda: sd.simulate(problem, sd.gd(0.05), key=key, steps=steps // 2 + 7,
                                                  record_every=every),
        "another record interval": lambda: sd.simulate(problem, sd.gd(0.05), key=key, steps=steps,
                                                       record_every=every * 2 + 1),
        "another data field (spike)": lambda: sd.simulate(
            sd.problems.PhaseRetrieval(dim=32, spike=3.0), sd.gd(0.05), key=key, steps=steps, record_every=every
        ),
    }
    result["later"] = {}
    for label, call in later.items():
        compiles.clear()
        start = time.perf_counter()
        np.asarray(call()["loss"])
        result["later"][label] = {"seconds": time.perf_counter() - start, "compiles": len(compiles)}
    return result


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=30)
    parser.add_argument("--child", choices=sorted(FIRST_CALL), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.every)))
        return

    import os

    import jax

    print(f"machine: {lscpu_model()}, {os.cpu_count()} cores, python {platform.python_version()}, jax {jax.__version__}")
    runs = {"scan": [], "simulate": []}
    for _ in range(args.repeats):
        for kind in ("scan", "simulate"):
            cmd = [sys.executable, __file__, "--child", kind, "--steps", str(args.steps), "--every", str(args.every)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    agree = abs(runs["scan"][0]["final_loss"] - runs["simulate"][0]["final_loss"]) / abs(runs["scan"][0]["final_loss"])
    print(f"final loss: hand-written {runs['scan'][0]['final_loss']:.6e}, sd.simulate "
          f"{runs['simulate'][0]['final_loss']:.6e} (relative difference {agree:.1e})")
    first = {k: statistics.median(r["first"] for r in v) for k, v in runs.items()}
    print()
    print(f"PhaseRetrieval(dim=32), GD, {args.steps} steps, records every {args.every}; "
          f"median of {args.repeats} fresh processes each")
    print()
    print("| call | wall time (s) | compiles | / hand-written first call |")
    print("|---|---:|---:|---:|")
    print(f"| hand-written jitted scan, first call | {first['scan']:.2f} | {runs['scan'][0]['compiles']} | 1.00 |")
    print(f"| `sd.simulate`, first call | {first['simulate']:.2f} | {runs['simulate'][0]['compiles']} | "
          f"{first['simulate'] / first['scan']:.2f} |")
    for label in runs["simulate"][0]["later"]:
        t = statistics.median(r["later"][label]["seconds"] for r in runs["simulate"])
        c = max(r["later"][label]["compiles"] for r in runs["simulate"])
        print(f"| `sd.simulate` later: {label} | {t:.3f} | {c} | {t / first['scan']:.2f} |")


if __name__ == "__main__":
    from specdyn._cpu import guard_cpu

    guard_cpu()  # one OpenBLAS thread on few-core CPUs; one XLA thread where jaxlib 0.10 hangs (specdyn/_cpu.py)
    main()
