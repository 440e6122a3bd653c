"""Phase retrieval benchmark: wall time of the full spike sweep (sweeps/phase_retrieval/spike.toml)
and reduced (a, b, c) map vs full-matrix simulation for the same run (same d, λ, steps, lr).

    .venv/bin/python bench/phase_retrieval.py [--smoke]

Prints a markdown table with the machine (CPU model, cores, jax version, device).
Times are wall clock; "compile+run" is the first call, "run" the best of 3 further calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import jax

import specdyn as sd
from specdyn.config import load_sweep_file
from specdyn.problems.phase_retrieval import PhaseRetrieval
from specdyn.reduced.phase_retrieval import reduced_gd_map, spectral_map

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time(fn, repeats=3):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return first, best


def main(smoke: bool = False) -> None:
    spec = load_sweep_file(ROOT / "sweeps/phase_retrieval/spike.toml", smoke=smoke)
    t = time.perf_counter()
    ds = sd.sweep(spec.problem, progress=False, **spec.sweep_kwargs())
    sweep_s = time.perf_counter() - t
    n_runs = ds.sizes["optimizer"] * ds.sizes["lr"] * ds.sizes["seed"] * ds.sizes["spike"]

    dim, steps = spec.problem.dim, spec.steps
    rec = spec.record_every
    prob = PhaseRetrieval(dim=dim, spike=30.0, init_scale=0.01)
    key = jax.random.PRNGKey(0)
    rows = []
    for name, opt, fmap, lr in [
        ("gd", sd.gd(0.05), reduced_gd_map, 0.05),
        ("specgd (svd)", sd.spectral_gd(0.01, method="svd"), spectral_map, 0.01),
    ]:
        full = jax.jit(lambda p, opt=opt: {k: v for k, v in sd.simulate(
            p, opt, key=key, steps=steps, record_every=rec).items() if k != "params"})
        redm = jax.jit(lambda p, fmap=fmap, lr=lr: fmap(p, lr, steps, rec))
        f_first, f_run = _time(lambda full=full: full(prob))
        r_first, r_run = _time(lambda redm=redm: redm(prob))
        rows.append((name, f_first, f_run, r_first, r_run))

    dev = jax.devices()[0]
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"device {dev.platform} ({dev.device_kind}), float{'64' if jax.config.jax_enable_x64 else '32'}")
    print()
    print("| benchmark | size | compile+run (s) | run (s) |")
    print("|---|---|---|---|")
    print(f"| spike sweep (`spike.toml`{', smoke' if smoke else ''}) | {n_runs} runs: "
          f"d={dim}, {steps} steps, λ∈{list(ds['spike'].values.tolist())}, seeds={ds.sizes['seed']}, "
          f"gd+specgd(svd) | {sweep_s:.2f} | — |")
    for name, f_first, f_run, r_first, r_run in rows:
        print(f"| {name}: full simulation | d=m={dim}, λ=30, {steps} steps | {f_first:.3f} | {f_run:.4f} |")
        print(f"| {name}: reduced map (a,b,c) | same | {r_first:.3f} | {r_run:.5f} "
              f"(×{f_run / r_run:.0f} faster) |")


if __name__ == "__main__":
    from specdyn._cpu import guard_cpu

    guard_cpu()  # one OpenBLAS thread on few-core CPUs; one XLA thread where jaxlib 0.10 hangs (specdyn/_cpu.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="use the sweep file's [smoke] sizes")
    main(ap.parse_args().smoke)
