"""The polar factor three ways: exact (SVD) against Newton-Schulz and Polar Express.

``sd.polar(g, method=...)`` on one random n x n Gaussian matrix, for each size and
input dtype given, each method jitted on its own (compile excluded: one call first,
then timed). A timed repeat is k calls dispatched back to back and one
``jax.block_until_ready`` (k chosen so a repeat lasts at least 50 ms, as ``timeit``
does); the median over repeats, per call, is reported (``--repeats``, fewer where they
would pass ``--budget`` seconds in one cell, as a large SVD may).

The polynomial methods run 5 steps (Newton-Schulz: Muon's "jordan" quintic; Polar
Express: its own per-step minimax table) in the input's dtype: 15 n x n x n products,
so their FLOP rate is printed too. XLA has no half-precision SVD: for a bfloat16
input, method "svd" computes in float32 (sd.polar promotes) and casts back, and the
table says so.

Accuracy, beside the time: the relative Frobenius distance of each result (in float64)
to the exact polar factor of the same matrix, taken from ``scipy.linalg.polar`` in
float64 on the host for n <= ``--reference-max``, else from the float32 SVD on the
device (the "reference" column says which). At 5 steps neither polynomial is the
polar factor: Newton-Schulz's "jordan" quintic leaves the singular values in roughly
[0.7, 1.2] by design, and the smallest singular values of a Gaussian matrix (down to
about n^-1.5 ||G||_F) are not all brought to one by Polar Express's five steps either;
the distance says how far each lands, while tests/test_polar.py checks the methods
themselves.

Usage: ``python bench/polar_methods.py [--sizes 512,1024,4096] [--dtypes float32,bfloat16]
[--repeats N] [--budget S] [--json PATH]``. ``--json`` writes the rows and, per dtype and size, the
speed-up of Newton-Schulz over SVD, for a script to check goals against.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import specdyn as sd

METHODS = ("svd", "newton_schulz", "polar_express")
STEPS = 5


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 2, got {text!r}")
    return values


def _dtypes(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    for name in names:
        try:
            if not jnp.issubdtype(jnp.dtype(name), jnp.floating):
                raise TypeError
        except TypeError as err:
            raise argparse.ArgumentTypeError(f"not a floating dtype: {name!r}") from err
    if not names:
        raise argparse.ArgumentTypeError("no dtype given")
    return names


def time_per_call(fn, x, repeats: int, budget: float, min_seconds: float = 0.05) -> tuple[float, int]:
    """Median seconds per call of ``fn(x)`` (compiled already) over up to ``repeats`` repeats,
    fewer where the repeats would pass ``budget`` seconds (one at least); and the repeats taken."""
    jax.block_until_ready(fn(x))
    began = time.perf_counter()
    calls = 1
    while True:  # autorange: enough back-to-back calls that one repeat lasts min_seconds
        start = time.perf_counter()
        jax.block_until_ready([fn(x) for _ in range(calls)])
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or calls >= 1024:
            break
        calls = min(1024, max(2 * calls, math.ceil(calls * min_seconds / max(elapsed, 1e-9))))
    samples = [elapsed / calls]
    while len(samples) < repeats and time.perf_counter() - began + elapsed < budget:
        start = time.perf_counter()
        jax.block_until_ready([fn(x) for _ in range(calls)])
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples), len(samples)


def relative_distance(q, exact: np.ndarray) -> float:
    q = np.asarray(jnp.asarray(q, jnp.float32), dtype=np.float64)
    return float(np.linalg.norm(q - exact) / np.linalg.norm(exact))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_ints, default=[512, 1024, 4096], help="n of the n x n inputs")
    parser.add_argument("--dtypes", type=_dtypes, default=["float32", "bfloat16"], help="input dtypes")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per cell (median reported)")
    parser.add_argument("--budget", type=float, default=10.0,
                        help="seconds of timed repeats per cell, beyond which no further repeat starts")
    parser.add_argument("--reference-max", type=int, default=1024,
                        help="largest n whose exact factor comes from scipy in float64 (above: float32 SVD)")
    parser.add_argument("--json", help="write the rows and the speed-ups to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive integer, got --repeats={args.repeats}")
    sd.guard_cpu()

    device = jax.devices()[0]
    precision = jax.config.jax_default_matmul_precision
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s), "
          f"python {platform.python_version()}, jax {jax.__version__}, "
          f"default matmul precision {precision or 'XLA default (TF32 allowed for float32 on NVIDIA GPUs)'}")
    print(f"sd.polar on one n x n Gaussian matrix; polynomial methods {STEPS} steps; compile excluded; "
          f"median of {args.repeats} repeats (fewer where they would take over {args.budget:g} s: see 'repeats')")
    print()
    print("| n | input dtype | method | computes in | ms per call | repeats | TFLOP/s | SVD time / this | "
          "rel. distance to exact | reference |")
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---|")
    options = {"svd": {}, "newton_schulz": {"steps": STEPS}, "polar_express": {"steps": STEPS}}
    polar = {method: jax.jit(functools.partial(sd.polar, method=method, **options[method])) for method in METHODS}
    rows = []
    for n in args.sizes:
        g32 = jax.random.normal(jax.random.PRNGKey(n), (n, n), jnp.float32)
        if n <= args.reference_max:
            exact, reference = scipy.linalg.polar(np.asarray(g32, dtype=np.float64))[0], "scipy float64"
        else:  # the same compiled program as the float32 SVD row
            exact, reference = np.asarray(polar["svd"](g32), dtype=np.float64), "device SVD float32"
        for dtype in args.dtypes:
            g = g32.astype(dtype)
            svd_seconds = None
            for method, fn in polar.items():
                q = jax.block_until_ready(fn(g))  # compiles
                seconds, taken = time_per_call(fn, g, args.repeats, args.budget)
                computes = "float32" if method == "svd" and jnp.finfo(dtype).bits < 32 else dtype
                flops = None if method == "svd" else STEPS * 3 * 2 * n**3
                if method == "svd":
                    svd_seconds = seconds
                row = {
                    "n": n, "dtype": dtype, "method": method, "computes_in": computes, "seconds": seconds,
                    "repeats": taken,
                    "tflops": flops / seconds / 1e12 if flops else None,
                    "svd_over_this": svd_seconds / seconds,
                    "distance": relative_distance(q, exact), "reference": reference,
                }
                rows.append(row)
                rate = f"{row['tflops']:.3g}" if flops else "—"
                print(f"| {n} | {dtype} | {method} | {computes} | {seconds * 1e3:.3f} | {taken} | {rate} | "
                      f"{row['svd_over_this']:.2f} | {row['distance']:.1e} | {reference} |")
    speedups = {
        f"{r['dtype']}/{r['n']}": r["svd_over_this"] for r in rows if r["method"] == "newton_schulz"
    }
    print()
    print("Newton-Schulz speed-up over SVD: "
          + ", ".join(f"{k.replace('/', ' n=')}: {v:.1f}x" for k, v in speedups.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.device_kind, "platform": device.platform, "jax": jax.__version__,
                       "rows": rows, "newton_schulz_speedup": speedups}, f, indent=1)


if __name__ == "__main__":
    main()
