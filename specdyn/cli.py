"""The ``specdyn`` command: ``demo``, ``sweep``, ``plot``, ``list``.

Bad input (a missing file, an unknown key, a wrong type, an unknown problem or
optimizer) prints one line naming the key and value and exits with code 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import time
from pathlib import Path

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep the one-line form
        self.exit(2, f"specdyn: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="specdyn", description="Training dynamics under spectral gradient methods.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="GD vs SpecGD on phase retrieval with a strong spike; writes PNGs")
    demo.add_argument("--out", default="out/demo", help="folder for the figures (default: out/demo)")
    sw = sub.add_parser("sweep", help="run a TOML sweep file; writes results.nc and PNG figures")
    sw.add_argument("file", help="a sweep file, e.g. sweeps/phase_retrieval/spike.toml")
    sw.add_argument("--out", help="output folder (default: out/<folder>/<file name>[-smoke])")
    sw.add_argument("--smoke", action="store_true", help="apply the file's [smoke] sizes (seconds)")
    sw.add_argument("--fresh", action="store_true", help="discard finished cells instead of resuming")
    sw.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    pl = sub.add_parser("plot", help="plot one metric of a results file")
    pl.add_argument("results", help="a results.nc written by `specdyn sweep`")
    pl.add_argument("--metric", required=True, help="metric to plot against step")
    pl.add_argument("--out", help="PNG path (default: beside the results, <metric>.png)")
    sub.add_parser("list", help="problems, optimizers and their parameters")
    return parser


def _cmd_list() -> None:
    from specdyn.optimizers import OPTIMIZERS
    from specdyn.problem import static_fields
    from specdyn.problems import get_problem, problem_names

    print("problems (static fields make compiled cells; the others are swept without recompiling):")
    for name in problem_names():
        cls = get_problem(name)
        print(f"  {name}  ({cls.__name__})")
        for f in dataclasses.fields(cls):
            kind = "static" if f.name in static_fields(cls) else "data"
            print(f"      {f.name} = {f.default!r}  [{kind}]")
    print("optimizers:")
    for name, factory in OPTIMIZERS.items():
        params = [str(p) for n, p in inspect.signature(factory).parameters.items() if n != "learning_rate"]
        print(f"  {name}  ({factory.__name__}): learning_rate, {', '.join(params) or '-'}")


def _summary(ds, metric: str = "loss") -> str:
    import numpy as np

    lines = [f"{'optimizer':<10} {'lr':>10} {'final ' + metric:>14} {'diverged':>9}"]
    final = ds[metric].isel(step=-1)
    extra = [d for d in final.dims if d not in ds["diverged_at"].dims]
    final = final.mean(extra) if extra else final
    for opt in ds["optimizer"].values:
        for i, lr in enumerate(ds["learning_rate"].sel(optimizer=opt).values):
            runs = final.sel(optimizer=opt).isel(lr=i)
            div = ds["diverged_at"].sel(optimizer=opt).isel(lr=i) >= 0
            value = float(runs.where(~div).mean()) if (~div).any() else float("nan")
            lines.append(f"{opt:<10} {lr:>10.4g} {value:>14.5g} {int(div.sum()):>4}/{int(np.prod(div.shape))}")
    return "\n".join(lines)


def _cmd_sweep(args) -> None:
    import jax

    from specdyn.config import load_sweep_file

    spec = load_sweep_file(args.file, smoke=args.smoke)
    default = Path("out") / Path(args.file).resolve().parent.name / f"{spec.name}{'-smoke' if args.smoke else ''}"
    out = Path(args.out) if args.out else default
    if spec.x64:
        jax.config.update("jax_enable_x64", True)
    from specdyn.plot import standard_figures
    from specdyn.results import save
    from specdyn.sweep import sweep

    print(f"sweep {args.file}{' (smoke size)' if args.smoke else ''}: {spec.description}")
    start = time.perf_counter()
    ds = sweep(
        spec.problem, **spec.sweep_kwargs(), store=out / "cells", progress=not args.no_progress, fresh=args.fresh
    )
    seconds = time.perf_counter() - start
    ds.attrs["sweep_file"] = str(args.file)
    ds.attrs["smoke"] = int(args.smoke)
    results = save(ds, out / "results.nc")
    figures = standard_figures(ds, out, metrics=spec.metrics, figures=spec.figures)
    print(_summary(ds))
    print(f"{int(ds['diverged_at'].size)} runs in {seconds:.1f} s; results: {results}")
    for f in figures:
        print(f"figure: {f}")


def _cmd_plot(args) -> None:
    import matplotlib.pyplot as plt

    from specdyn.plot import plot_metric
    from specdyn.results import load

    ds = load(args.results)
    fig = plot_metric(ds, args.metric)
    out = Path(args.out or Path(args.results).with_name(f"{args.metric}.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"figure: {out}")


def _cmd_demo(args) -> None:
    from specdyn.experiments.phase_retrieval import demo

    start = time.perf_counter()
    result = demo(Path(args.out))
    for method, stats in result["summary"].items():
        parts = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in stats.items())
        print(f"{method}: {parts}")
    for f in result["figures"]:
        print(f"figure written to {f}")
    print(f"demo took {time.perf_counter() - start:.1f} s")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from specdyn._cpu import limit_blas_threads

    limit_blas_threads()  # one OpenBLAS thread on few-core CPUs (see specdyn/_cpu.py)
    commands = {"demo": _cmd_demo, "sweep": _cmd_sweep, "plot": _cmd_plot, "list": lambda a: _cmd_list()}
    try:
        commands[args.command](args)
    except ValueError as err:
        print(f"specdyn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("specdyn: interrupted; finished cells are kept in the store, re-run to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
