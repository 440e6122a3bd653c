"""Sweep throughput: sd.sweep against the loops users write first, side by side in one run.

One grid: a d x d matrix least-squares problem (d = 64, n = 4d samples),
8 seeds x 8 learning rates x 1000 steps, GD and SpecGD (Newton-Schulz, 5 steps),
float32, timed five ways:

  (a) sd.sweep: one vmapped scan per optimizer;
  (b) a Python loop of hand-written jitted single runs (one lax.scan each), learning
      rate baked in as a constant (one compilation per learning rate);
  (c) the same loop with the learning rate traced (one compilation);
  (d) a PyTorch eager loop (CPU) doing the same updates;
  (e) the matrix products alone, batched as (a) batches them (one jitted loop per
      optimizer: the gradient's two products and the Newton-Schulz products, nothing
      else, on random data), timed warm: a floor for (a) warm, and with (a)'s compile time a floor
      for (a) cold, so the best ratio over (b) this machine allows is printed too.

SpecGD at a fixed step never converges: it ends in an oscillation whose
phase amplifies rounding, so float32 PyTorch and JAX part ways there (in
float64 they agree to 1e-15 on the non-oscillating rates); compare medians.

Compilation is included in every JAX timing (it is part of what a user waits
for); (a) is also reported warm. (a) compiles as specdyn does (on CPU, LLVM at -O1:
specdyn/_compile.py), (b) and (c) as a user's ``jax.jit`` does (XLA's default level). Prints a markdown table; run with
``python bench/sweep.py [--steps N] [--dim D] [--skip-torch] [--skip-baked]``.
The FLOP rate of (a) warm is put against one large product measured in the same run
(``--peak-matmul N``: an N x N float32 product, jitted, best of five; default 8192 on a
GPU, 2048 elsewhere; float32 products run at the backend's default precision, TF32 on
recent NVIDIA GPUs, for the sweep and the peak alike). ``--json PATH`` writes the
timings and that fraction for a script to check goals against.
Where this Python has no PyTorch (the CPU wheel at hand is for Python 3.11 only),
``--torch-python PY`` times (d) in that interpreter, within the same run, right
after the others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time

import jax
import numpy as np

import specdyn as sd
from specdyn.sweep import sweep


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return f"{cpu}, {jax.local_device_count()} x {dev.platform} device(s) ({dev.device_kind}), {len(jax.devices())} JAX device(s), python {platform.python_version()}, jax {jax.__version__}"


FACTORIES = {
    "gd": lambda lr: sd.gd(lr),
    "specgd": lambda lr: sd.spectral_gd(lr, method="newton_schulz", steps=5),
}


def factories():
    return FACTORIES


def learning_rates(name):
    return list(np.geomspace(0.05, 0.8, 8)) if name == "gd" else list(np.geomspace(1e-3, 3e-2, 8))


def run_sweep(problem, seeds, steps):
    return sweep(
        problem,
        optimizers=factories(),
        learning_rates={n: learning_rates(n) for n in factories()},
        seeds=seeds,
        steps=steps,
        record_every=steps // 10,
        progress=False,
    )


def one_run(problem, factory, lr, key, steps, record_every):
    return sd.simulate(problem, factory(lr), key=key, steps=steps, record_every=record_every)


def run_loop(problem, seeds, steps, *, traced: bool):
    """A Python loop over runs; each run one hand-written jitted scan (lr constant or traced):
    init, sample, records every steps/10 steps and at the last step, the same steps as sd.simulate."""
    import optax

    every = steps // 10
    finals = {}
    for name, factory in factories().items():

        def run(key, lr, factory=factory):
            opt = factory(lr)
            init_key, data_key = jax.random.split(key)
            data, params = problem.sample(data_key), problem.init(init_key)

            def step(carry, _):
                p, s = carry
                u, s = opt.update(jax.grad(problem.loss)(p, data), s, p)
                return (optax.apply_updates(p, u), s), None

            def slot(carry, _):
                record = problem.metrics(carry[0], data)
                carry, _ = jax.lax.scan(step, carry, None, length=every)
                return carry, record

            carry, _ = jax.lax.scan(slot, (params, opt.init(params)), None, length=steps // every)
            carry, _ = jax.lax.scan(step, carry, None, length=steps % every)
            return problem.metrics(carry[0], data)["loss"]

        traced_run = jax.jit(run)
        for lr in learning_rates(name):
            fn = traced_run if traced else jax.jit(lambda key, lr=lr, run=run: run(key, lr))
            for s in range(seeds):
                finals[name, lr, s] = float(fn(jax.random.PRNGKey(s), lr))
    return finals


def run_torch(problem, seeds, steps):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    finals = {}
    for name in factories():
        for lr in learning_rates(name):
            for s in range(seeds):
                init_key, data_key = jax.random.split(jax.random.PRNGKey(s))
                data = {k: torch.from_numpy(np.array(v)) for k, v in problem.sample(data_key).items()}
                w = torch.from_numpy(np.array(problem.init(init_key)["W"]))
                a, y, n = data["A"], data["Y"], problem.samples
                for _ in range(steps):
                    g = (w @ a - y) @ a.T / n
                    if name == "gd":
                        w -= lr * g
                    else:  # Newton-Schulz quintic, jordan coefficients, as sd.polar does
                        x = g / g.abs().max().clamp_min(1e-30)
                        x = x / x.norm().clamp_min(1e-30)
                        for _ in range(5):
                            gram = x @ x.T
                            x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
                        w -= lr * x
                r = w @ a - y
                finals[name, lr, s] = float(0.5 * (r * r).sum() / n)
    return finals


def run_torch_elsewhere(python: str, seeds: int, steps: int, dim: int) -> tuple[float, dict]:
    """(d) in another interpreter: its wall time (as measured there) and final losses."""
    cmd = [python, __file__, "--torch-only", "--seeds", str(seeds), "--steps", str(steps), "--dim", str(dim)]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    return out["seconds"], {(n, lr, s): v for n, lr, s, v in out["finals"]}


def step_flops(d: int, n: int) -> dict[str, float]:
    """Matrix-product FLOPs of one step of each optimizer (records and elementwise work not counted).

    The gradient of 0.5 * ||W A - Y||^2 / n is two d x d x n products; a Newton-Schulz
    iteration is three d x d x d products (X X^T, its square, and that times X).
    """
    grad = 2 * (2 * d * d * n)
    return {"gd": grad, "specgd": grad + 5 * 3 * (2 * d**3)}


def products_only(problem, seeds: int, steps: int):
    """(e): the runs' matrix products and nothing else, batched as sd.sweep batches them
    (seeds x learning rates of one optimizer share a program; one seed's rates share its
    data). Returns a function that runs both optimizers' loops once, compiled on first call."""
    d, n = problem.rows, problem.samples
    key = jax.random.PRNGKey(0)
    a = jax.random.normal(key, (seeds, d, n), jax.numpy.float32)
    y = jax.random.normal(jax.random.fold_in(key, 1), (seeds, d, n), jax.numpy.float32)
    w = jax.random.normal(jax.random.fold_in(key, 2), (seeds, len(learning_rates("gd")), d, d), jax.numpy.float32) / d

    def gradient(w, a, y):  # (W A - Y) A^T / n; w: (seeds, rates, d, d), a seed's rates share its A, Y
        r = jax.numpy.einsum("srij,sjn->srin", w, a) - y[:, None]
        return jax.numpy.einsum("srin,sjn->srij", r, a) / n

    def newton_schulz(x):
        x = x / jax.numpy.sqrt(jax.numpy.sum(x * x, axis=(-2, -1), keepdims=True))
        for _ in range(5):
            gram = x @ jax.numpy.swapaxes(x, -1, -2)
            x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
        return x

    loops = {
        "gd": lambda w, a, y: jax.lax.fori_loop(0, steps, lambda i, w: w - 1e-3 * gradient(w, a, y), w),
        "specgd": lambda w, a, y: jax.lax.fori_loop(
            0, steps, lambda i, w: w - 1e-3 * newton_schulz(gradient(w, a, y)), w
        ),
    }
    compiled = {name: jax.jit(loop) for name, loop in loops.items()}
    return lambda: jax.block_until_ready([f(w, a, y) for f in compiled.values()])


def matmul_peak(size: int) -> float:
    """FLOP/s of one large float32 product on the default device, best of five."""
    x = jax.random.normal(jax.random.PRNGKey(0), (size, size), jax.numpy.float32)
    product = jax.jit(lambda a: a @ a)
    product(x).block_until_ready()
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        product(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    jax.block_until_ready(out) if not isinstance(out, dict) else None
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-baked", action="store_true", help="skip (b), the loop that recompiles per lr")
    parser.add_argument("--torch-python", help="time (d) with this Python (one that has PyTorch)")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peak-matmul", type=int, metavar="N",
                        help="size of the float32 N x N product that measures the peak (default: 8192 on a "
                             "GPU, 2048 elsewhere)")
    parser.add_argument("--json", metavar="PATH", help="write the timings and the fraction of peak to this file")
    parser.add_argument(
        "--sweep-only", action="store_true", help="time (a) only, e.g. 64 seeds at d = 256 on a GPU (1024 runs)"
    )
    args = parser.parse_args()
    for name in ("dim", "seeds", "steps", "peak_matmul"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.steps < 10:
        parser.error(f"--steps must be at least 10 (records every steps // 10), got {args.steps}")
    d = args.dim
    problem = sd.problems.MatrixLeastSquares(rows=d, cols=d, samples=4 * d, condition=10.0)
    if args.torch_only:  # called by --torch-python: one JSON line
        t_d, finals = timed(run_torch, problem, args.seeds, args.steps)
        print(json.dumps({"seconds": t_d, "finals": [[*k, v] for k, v in finals.items()]}))
        return
    runs = 2 * 8 * args.seeds
    print(f"machine: {machine()}")
    print(f"grid: d={d}, n={4 * d}, {args.seeds} seeds x 8 lrs x {args.steps} steps x (gd, specgd NS5) = {runs} runs")

    rows = []
    t_a, ds = timed(run_sweep, problem, args.seeds, args.steps)
    rows.append(("(a) sd.sweep (cold: includes compile)", t_a))
    t_a_warm, ds = timed(run_sweep, problem, args.seeds, args.steps)
    rows.append(("(a) sd.sweep again (programs reused, no compile)", t_a_warm))
    others = {}
    if not args.sweep_only:
        if not args.skip_baked:
            t_b, others["(b)"] = timed(run_loop, problem, args.seeds, args.steps, traced=False)
            rows.append(("(b) loop of jitted runs, lr baked in (recompiles per lr)", t_b))
        t_c, others["(c)"] = timed(run_loop, problem, args.seeds, args.steps, traced=True)
        rows.append(("(c) loop of jitted runs, lr traced (one compile)", t_c))
        if args.torch_python:
            t_d, others["(d)"] = run_torch_elsewhere(args.torch_python, args.seeds, args.steps, d)
            rows.append(("(d) PyTorch eager loop (CPU, in the --torch-python interpreter)", t_d))
        elif not args.skip_torch:
            t_d, others["(d)"] = timed(run_torch, problem, args.seeds, args.steps)
            rows.append(("(d) PyTorch eager loop (CPU)", t_d))

    floor = products_only(problem, args.seeds, args.steps)
    floor()  # compile
    t_e = min(timed(floor)[0] for _ in range(2))
    rows.append(("(e) the matrix products alone, batched as in (a) (warm, best of two)", t_e))

    # The implementations compute the same runs: check before reporting speed.
    final = ds["loss"].isel(step=-1)
    for label, fin in others.items():
        for name in factories():
            diffs = [
                abs(fin[name, lr, s] - float(final.sel(optimizer=name, seed=s).isel(lr=i)))
                / abs(float(final.sel(optimizer=name, seed=s).isel(lr=i)))
                for i, lr in enumerate(learning_rates(name))
                for s in range(args.seeds)
            ]
            print(
                f"{label} vs (a), {name}: relative difference in final loss: median {np.median(diffs):.1e}, "
                f"largest {max(diffs):.1e}"
            )
    print()
    print("| implementation | wall time (s) | run-steps/s | time / (a) cold | time / (a) warm |")
    print("|---|---:|---:|---:|---:|")
    for label, t in rows:
        print(f"| {label} | {t:.2f} | {runs * args.steps / t:,.0f} | {t / t_a:.2f} | {t / t_a_warm:.2f} |")

    # FLOP rate of (a) warm against the device's own large-matmul rate.
    flops = sum(f * 8 * args.seeds * args.steps for f in step_flops(d, 4 * d).values())
    peak_size = args.peak_matmul or (8192 if jax.default_backend() == "gpu" else 2048)
    peak = matmul_peak(peak_size)
    rate = flops / t_a_warm
    print()
    print(
        f"(a) warm: {flops / 1e12:.2f} TFLOP of matrix products in {t_a_warm:.2f} s = {rate / 1e9:,.1f} GFLOP/s; "
        f"measured matmul peak {peak / 1e9:,.1f} GFLOP/s ({peak_size}² float32): {rate / peak:.0%} of peak"
    )
    print(
        f"(e) products alone: {flops / t_e / 1e9:,.1f} GFLOP/s ({flops / t_e / peak:.0%} of peak); (a) warm takes "
        f"{t_a_warm / t_e:.2f}x their time. Floor for (a) cold: (e) + (a)'s compile and first-call time "
        f"({t_a - t_a_warm:.2f} s) = {t_e + t_a - t_a_warm:.2f} s"
        + (f", so (b)/(a) cold cannot exceed {t_b / (t_e + t_a - t_a_warm):.2f} here" if "(b)" in others else "")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "dim": d, "seeds": args.seeds, "steps": args.steps, "runs": runs,
                       "cold_s": t_a, "warm_s": t_a_warm, "products_alone_s": t_e, "flops": flops,
                       "rate": rate, "peak_size": peak_size, "peak": peak, "fraction_of_peak": rate / peak},
                      f, indent=1)


if __name__ == "__main__":
    from specdyn._cpu import guard_cpu

    guard_cpu()  # one OpenBLAS thread on few-core CPUs; one XLA thread where jaxlib 0.10 hangs (specdyn/_cpu.py)
    main()
