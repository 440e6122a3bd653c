"""Random-feature regression (PAPERS.md §3, experiment 1): sd.simulate against a PyTorch loop.

One instance: ReLU random features, W 100×100, X 50×400 (d = 50, p = 100, n = 400),
zero init, 1000 steps, float64, both of the paper's rules — GD at n/‖A‖²_op and SpecGD
(exact SVD polar factor, nuclear scaling) at n/‖A‖²_F — timed two ways side by side:

  (a) ``sd.simulate`` (one jitted scan per rule), cold (compile included) and warm
      (the same optimizer object again: the compiled program is reused);
  (b) a PyTorch eager loop doing the same updates (``torch.linalg.svd`` for the
      polar factor), on the same arrays.

Both record the loss every ``--record-every`` steps; sd.simulate also records the
problem's metrics there (nr(G), st(A), the four one-step decreases: a few SVDs per
record). The two must agree on the final loss to ``--rtol`` before any time is printed.
Prints a markdown table; run with ``python bench/random_features.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

import specdyn as sd
from specdyn.experiments.when_spectral_helps import instance, step_rules
from specdyn.problems.random_features import (
    RandomFeatures,
    gd_learning_rate,
    spectral_learning_rate,
)


def machine() -> str:
    """CPU model, JAX devices and versions, for the results table."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{cpu}, {len(jax.devices())} JAX {jax.devices()[0].platform} device(s), "
            f"python {platform.python_version()}, jax {jax.__version__}")


def run_jax(problem, rule, data, steps, record_every, seed):
    out = sd.simulate(problem, rule, key=jax.random.PRNGKey(seed), steps=steps,
                      record_every=record_every, data=data)
    return float(jax.block_until_ready(out["loss"])[-1])


def run_torch(name, data, lr, steps, record_every, threads):
    import torch

    torch.set_num_threads(threads)
    a = torch.from_numpy(np.array(data["A"]))
    y = torch.from_numpy(np.array(data["Y"]))
    n = a.shape[1]
    w = torch.zeros((y.shape[0], a.shape[0]), dtype=torch.float64)
    losses = []
    for t in range(steps + 1):
        r = w @ a - y
        if t % record_every == 0:
            losses.append(float(0.5 * (r * r).sum() / n))
        if t == steps:
            break
        g = r @ a.T / n
        if name == "gd":
            w -= lr * g
        else:
            u, s, vh = torch.linalg.svd(g, full_matrices=False)
            w -= (lr * s.sum()) * (u @ vh)
    return losses[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--record-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--rtol", type=float, default=1e-8)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    problem = RandomFeatures(dim=50, feature_dim=100, samples=400, activation="relu")
    data = instance(problem, args.seed)
    rules = step_rules(data)
    lrs = {"gd": float(gd_learning_rate(data)), "specgd": float(spectral_learning_rate(data))}
    print(f"machine: {machine()}")
    print(f"problem: ReLU random features d=50, p=m=100, n=400, {args.steps} steps, float64, "
          f"records every {args.record_every}; torch threads {args.torch_threads}; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    rows = []
    for name, rule in rules.items():
        t0 = time.perf_counter()
        cold = run_jax(problem, rule, data, args.steps, args.record_every, args.seed)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = run_jax(problem, rule, data, args.steps, args.record_every, args.seed)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = run_torch(name, data, lrs[name], args.steps, args.record_every, args.torch_threads)
        t_torch = time.perf_counter() - t0
        rel = abs(warm - ref) / abs(ref)
        if warm != cold or rel > args.rtol:
            raise SystemExit(f"{name}: final losses disagree: jax {warm!r} (cold {cold!r}), torch {ref!r}")
        rows.append((name, lrs[name], warm, rel, t_cold, t_warm, t_torch))
    print()
    print("| rule | lr | final loss | rel. diff (torch) | sd.simulate cold (s) | sd.simulate warm (s) "
          "| PyTorch loop (s) | torch / warm |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, lr, loss, rel, tc, tw, tt in rows:
        print(f"| {name} | {lr:.4g} | {loss:.6e} | {rel:.1e} | {tc:.2f} | {tw:.3f} | {tt:.3f} | {tt / tw:.2f} |")


if __name__ == "__main__":
    from specdyn._cpu import guard_cpu

    guard_cpu()  # one OpenBLAS thread on few-core CPUs; one XLA thread where jaxlib 0.10 hangs (specdyn/_cpu.py)
    main()
