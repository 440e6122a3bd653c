"""The ``specdyn`` command: ``demo``, ``sweep``, ``plot``, ``list``.

Bad input — a sweep file with a wrong key or value, an unknown problem, optimizer,
metric or figure, a path that cannot be read or written — prints one line naming
what is wrong (the file, the key, the path) and exits with code 2, without a
traceback. Sweep files are validated whole (``[smoke]`` and ``[plot]`` included)
and the output folder is checked before anything runs; ``specdyn sweep FILE
--check`` does only that.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

__all__ = ["main"]

_WIDTH = 100  # `specdyn list` and the summary fit this many columns
_SUMMARY_ROWS = 40


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # `--smok` is an error, not `--smoke`
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse exits 2 too; keep the one-line form
        self.exit(2, f"specdyn: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


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
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the cells on the Dask cluster of this scheduler, e.g. tcp://host:8786 "
                            "(the output folder must be one every worker can reach)")
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="run the cells on a local Dask cluster of N worker processes")
    sw.add_argument(
        "--check", action="store_true", help="validate the file and the output folder, then stop (runs nothing)"
    )
    pl = sub.add_parser("plot", help="plot one metric of a results file")
    pl.add_argument("results", help="a results.nc written by `specdyn sweep`")
    pl.add_argument("--metric", required=True, help="metric to plot against step (an unknown one lists them)")
    pl.add_argument("--out", help="PNG path (default: beside the results, <metric>.png)")
    sub.add_parser("list", help="problems, optimizers and their parameters")
    return parser


# ---------------------------------------------------------------- errors and paths


@contextlib.contextmanager
def _doing(action: str):
    """Turn an OSError into a one-line ValueError: ``cannot <action> <path>: <reason>``."""
    try:
        yield
    except OSError as err:
        raise ValueError(_os_message(err, action)) from None


def _os_message(err: OSError, action: str | None = None) -> str:
    reason = err.strerror or str(err)
    if err.filename is None:
        return f"cannot {action}: {reason}" if action else reason
    path = os.fsdecode(err.filename)
    if err.filename2 is not None:
        path += f" -> {os.fsdecode(err.filename2)}"
    return f"cannot {action} {path}: {reason}" if action else f"{path}: {reason}"


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _check_path_text(path, option: str) -> Path:
    text = os.fspath(path)
    if "\0" in text:
        raise ValueError(f"{option} {text!r} is not a valid path (it contains a NUL byte)")
    return Path(text)


def _output_folder(out, *, create: bool, label: str | None = None) -> Path:
    """The folder results go to, checked before anything runs (made and probed with ``create``).
    ``label`` names it in messages (default: ``--out <out>``)."""
    out = _check_path_text(out, "--out")
    label = label or f"--out {out}"
    with _doing("use the output folder"):
        if out.exists() and not out.is_dir():
            raise ValueError(f"{label} is a file, not a folder")
        existing = out
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"{label} cannot be made: {existing} is a file")
    if not create:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{label} cannot be made: no permission to write to {existing}")
        return out
    with _doing("create the output folder"):
        out.mkdir(parents=True, exist_ok=True)
    try:  # a probe file: its own name would mean nothing to the user, the folder does
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise ValueError(f"{label} cannot be written to: {err.strerror or err}") from None
    return out


def _output_file(path) -> Path:
    """A file to write (``plot --out``), its folder made and probed."""
    path = _check_path_text(path, "--out")
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file name, e.g. {path / 'figure.png'}")
    _output_folder(path.parent, create=True, label=f"the folder of --out {path}")
    return path


# ---------------------------------------------------------------- list


def _toml_value(value) -> str:
    from specdyn.config import show_value

    if isinstance(value, str):
        return f'"{value}"'
    return show_value(value)


def _choices_from_message(message: str) -> tuple | None:
    """The allowed values a validation message lists: ``... one of ('a', 'b') ...``."""
    import ast

    match = re.search(r"one of (\(.*?\)|\[.*?\])", message)
    if not match:
        return None
    try:
        values = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return None
    return tuple(values) if all(isinstance(v, str) for v in values) else None


def _field_choices(cls, name: str) -> tuple | None:
    """Allowed values of a string field: the class's ``field_choices`` if it declares them,
    else those its validation lists when given a value it must refuse."""
    declared = getattr(cls, "field_choices", None)
    if isinstance(declared, dict) and name in declared:
        return tuple(declared[name])
    try:
        cls(**{name: "\x00?"})
    except (ValueError, TypeError) as err:
        return _choices_from_message(str(err))
    return None


def _option_choices(name: str, option: str) -> tuple | None:
    from specdyn.optimizers import get_optimizer

    try:
        get_optimizer(name, 0.1, **{option: "\x00?"})
    except (ValueError, TypeError) as err:
        return _choices_from_message(str(err))
    return None


def _field_comments(cls) -> dict[str, str]:
    """The end-of-line comment of each field in the class source (``dim: int = static(32)  # d``)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments = {}
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^#]*=[^#]*#\s*(.+)$", line)
        if match:
            comments.setdefault(match.group(1), match.group(2).strip())
    return comments


def _first_line(obj) -> str:
    """The first line of a docstring, without reStructuredText markup."""
    doc = (inspect.getdoc(obj) or "").strip()
    line = doc.splitlines()[0] if doc else ""
    return re.sub(r":\w+:`~?([^`]*)`", r"\1", line).replace("``", "")


def _wrap_items(label: str, items: list[str], indent: str = "  ") -> list[str]:
    """``label item, item, ...`` wrapped at the width, never inside an item."""
    lines, line = [], indent + label
    for i, item in enumerate(items):
        text = item + ("," if i < len(items) - 1 else "")
        if len(line) + 1 + len(text) > _WIDTH and line.strip():
            lines.append(line)
            line = indent + "  " + text
        else:
            line += (" " if line.strip() else "") + text
    return [*lines, line]


def _wrap(text: str, indent: str, width: int = _WIDTH) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ") or [indent]


def _type_text(annotation) -> str:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", str(annotation))


def _list_text() -> str:
    from specdyn.config import optimizer_options
    from specdyn.optimizers import OPTIMIZERS
    from specdyn.problem import static_fields
    from specdyn.problems import get_problem, problem_names

    lines = [
        "Problems: set fields in [fields], sweep them in [grid]. A static field gets one compiled",
        "program per value; a data field is swept without recompiling. TOML writes None as \"none\".",
    ]
    for name in problem_names():
        cls = get_problem(name)
        lines.append("")
        lines += _wrap(f"{name} ({cls.__name__}): {_first_line(cls)}", "")
        comments = _field_comments(cls)
        rows = []
        for f in dataclasses.fields(cls):
            kind = "static" if f.name in static_fields(cls) else "data"
            notes = comments.get(f.name, "")
            if isinstance(f.default, str):
                choices = _field_choices(cls, f.name)
                if choices:
                    notes = f"one of {', '.join(choices)}" + (f"; {notes}" if notes else "")
            rows.append((f.name, _type_text(f.type), _toml_value(f.default), kind, notes))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for row in rows:
            head = "  " + "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  "
            notes = textwrap.wrap(row[4], max(_WIDTH - len(head), 30)) or [""]
            lines.append(head + notes[0])
            lines += [" " * len(head) + part for part in notes[1:]]
    lines += [
        "",
        "Optimizers: learning rates go in learning_rates; options in [options.<name>]; sweep an option",
        'in [grid] as "<name>.<option>" = [...] (traceable numeric options are vmapped; others make cells).',
    ]
    for name, factory in OPTIMIZERS.items():
        lines.append("")
        lines += _wrap(f"{name} ({factory.__name__}): {_first_line(factory)}", "")
        own = inspect.signature(factory).parameters
        parts, polar = [], []
        for option, p in optimizer_options(name).items():
            default = "" if p.default is inspect.Parameter.empty else f" = {_toml_value(p.default)}"
            choices = _option_choices(name, option) if isinstance(p.default, str) else None
            text = f"{option}{default}" + (f" (one of {', '.join(choices)})" if choices else "")
            (parts if option in own else polar).append(text)
        if not parts and not polar:
            lines.append("  no options")
        if parts:
            lines += _wrap_items("options:", parts)
        if polar:
            lines += _wrap_items("polar options (**polar_kwargs, passed to scale_by_polar):", polar)
    return "\n".join(line.rstrip() for line in lines)


def _cmd_list(args) -> None:
    print(_list_text())


# ---------------------------------------------------------------- sweep


def _fmt(value) -> str:
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return f"{float(value):.4g}"
    return str(value.item() if hasattr(value, "item") else value)


def _sweep_rule(figures: dict, metric: str = "loss"):
    """The one learning-rate rule of a sweep: that of its first named figure that picks rates
    (its ``learning_rate_rule``), else the lowest seed-mean final ``metric``; returns
    ``(rule, where)`` with ``where`` naming its source."""
    from specdyn.results import BestRateRule

    for name, draw in figures.items():
        rule = getattr(draw, "learning_rate_rule", None)
        if isinstance(rule, BestRateRule):
            return rule, f"the rule of figure {name}"
    return BestRateRule.of_metric(metric, mode="min", rule="final"), "the default rule"


def _results_rule(ds):
    """The learning-rate rule that the sweep which wrote ``ds`` used for its summary and figures
    (:func:`_sweep_rule` of the named figures of the sweep file kept in its provenance), so
    ``specdyn plot`` marks the same best rates; None when neither a figure's rule nor a loss."""
    import json
    import tomllib

    from specdyn.config import resolve_figure

    try:
        provenance = json.loads(ds.attrs.get("provenance", "{}"))
        text = provenance.get("sweep_file_text")
        spec = tomllib.loads(text) if text else {}
    except (ValueError, TypeError, AttributeError):  # no or foreign provenance: no figure rule
        provenance, spec = {}, {}
    plot = spec.get("plot", {})
    if provenance.get("smoke"):
        plot = {**plot, **spec.get("smoke", {}).get("plot", {})}
    drawers = {}
    for name in plot.get("figures", []):
        with contextlib.suppress(ValueError):  # a figure since renamed: its rule is unknown
            drawers[name] = resolve_figure(name)
    rule, where = _sweep_rule(drawers)
    return None if where == "the default rule" and "loss" not in ds else rule


def _summary(ds, metric: str = "loss", rule=None, where: str = "the default rule") -> str:
    """Per optimizer (and grid point): its best learning rate by ``rule`` (a
    :class:`specdyn.results.BestRateRule`; default: the lowest seed-mean final
    ``metric``), the same rule the figures use, then the rule's score there and the median
    and range over seeds of ``metric`` at the last recorded step."""
    import numpy as np

    from specdyn.results import BestRateRule, converged_runs

    plain = BestRateRule.of_metric(metric, mode="min", rule="final")
    rule = rule or plain
    default = rule.description == plain.description  # its score is the seed mean of the table's metric
    scores = rule.scores(ds)
    best_index = rule.best_index(ds)
    final = ds[metric].isel(step=-1)
    extra = [d for d in final.dims if d not in ds["diverged_at"].dims]
    if extra:
        final = final.mean(extra)
    ok = converged_runs(ds)
    grid_dims = [d for d in ds["diverged_at"].dims if d not in ("optimizer", "lr", "seed")]
    n_seeds = ds.sizes["seed"]
    last = int(ds["step"].values[-1])
    lines = [
        *textwrap.wrap(f"{metric} at the last recorded step ({last}), per optimizer at its best learning rate "
                       f"by {where} (the figures mark the same rates): {rule.description};", _WIDTH),
        f"median and [min, max] over the {n_seeds} seed{'s' if n_seeds != 1 else ''}; "
        "diverged = runs of that optimizer (all rates) that diverged",
    ]
    header = [*grid_dims, "optimizer", "best lr", *([] if default else [rule.score_name]),
              f"median {metric}", "[min, max]", "diverged"]
    rows = []
    points = [dict()] if not grid_dims else [
        dict(zip(grid_dims, idx, strict=True)) for idx in np.ndindex(*(ds.sizes[d] for d in grid_dims))
    ]
    for point in points:
        labels = [_fmt(ds[d].values[i]) if d in ds.coords else str(i) for d, i in point.items()]
        for opt in ds["optimizer"].values:
            score = scores.sel(optimizer=opt).isel(point)
            div = ~ok.sel(optimizer=opt).isel(point)
            diverged = f"{int(div.sum())}/{int(div.size)}"
            if bool(score.isnull().all()):
                what = "every rate diverged in some seed" if default else "no rate qualifies under the rule"
                rows.append([*labels, str(opt), "-", *([] if default else ["-"]), what, "", diverged])
                continue
            best = int(best_index.sel(optimizer=opt).isel(point))
            lr = float(ds["learning_rate"].sel(optimizer=opt).values[best])
            own = [] if default else [_fmt(float(score.isel(lr=best)))]
            values = final.sel(optimizer=opt).isel(point).isel(lr=best).values
            values = values[np.isfinite(values)]
            if values.size == 0:
                rows.append([*labels, str(opt), f"{lr:.4g}", *own, "no finite value", "", diverged])
                continue
            rows.append([
                *labels, str(opt), f"{lr:.4g}", *own, f"{np.median(values):.4g}",
                f"[{values.min():.4g}, {values.max():.4g}]", diverged,
            ])
    shown = rows[:_SUMMARY_ROWS]
    widths = [max(len(r[i]) for r in [header, *shown]) for i in range(len(header))]
    for row in [header, *shown]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if len(rows) > len(shown):
        lines.append(f"... {len(rows) - len(shown)} more rows: read the results file for all of them")
    lines += _paired_lines(ds, metric, scores, grid_dims, points, rule)
    return "\n".join(lines)


def _paired_pairs(ds, scores, mode: str = "min") -> list[tuple[str, str]]:
    """The pairs the summary compares: each optimizer against GD when GD is in the sweep,
    else the best two (best seed-mean score of the rule, averaged over grid points)."""
    import numpy as np

    names = [str(o) for o in ds["optimizer"].values]
    if "gd" in names:
        return [(o, "gd") for o in names if o != "gd"]
    sign = 1.0 if mode == "min" else -1.0
    best = {o: float(np.nanmean((sign * scores.sel(optimizer=o)).min("lr").values)) for o in names}
    ranked = sorted(names, key=lambda o: (not np.isfinite(best[o]), best[o]))
    return [(ranked[0], ranked[1])]


def _paired_lines(ds, metric, scores, grid_dims, points, rule) -> list[str]:
    """The paired comparison (specdyn.results.paired_comparison) of the summary's pairs,
    when the sweep has at least two optimizers and two seeds."""
    import numpy as np

    from specdyn.results import paired_comparison

    if ds.sizes["optimizer"] < 2 or ds.sizes["seed"] < 2:
        return []
    pairs = _paired_pairs(ds, scores, rule.mode)
    which = "each optimizer against gd" if pairs[0][1] == "gd" else "the best two optimizers"
    lines = [
        f"paired comparison of {which}, each at its best rate (the rule above), by seed:",
        f"final {metric} a - b (< 0: a lower); two-sided paired t-test (scipy.stats.ttest_rel),",
        "its p-value and the 95% t-interval of the mean difference; seeds where either diverged left out",
    ]
    rows = []
    for a, b in pairs:
        cmp = paired_comparison(ds, metric, a, b, mode="min", rule="final", test="t", rate_rule=rule)
        for point in points:
            labels = [f"{d}={_fmt(ds[d].values[i]) if d in ds.coords else i}" for d, i in point.items()]
            at = cmp.isel(point)
            n = int(at["n"])
            if n < 2:
                rows.append("  " + " ".join([*labels, f"{a} - {b}: fewer than 2 seeds where both converged"]))
                continue
            mean, low, high, p = (float(at[k]) for k in ("mean_difference", "low", "high", "p_value"))
            ptext = f"{p:.3g}" if np.isfinite(p) else "nan (all differences equal)"
            rows.append(
                "  " + " ".join([*labels, f"{a} - {b}: mean difference {mean:.4g} "
                                 f"[{low:.4g}, {high:.4g}], p = {ptext}, n = {n} seeds"])
            )
    shown = rows[:_SUMMARY_ROWS]
    lines += shown
    if len(rows) > len(shown):
        lines.append(f"... {len(rows) - len(shown)} more comparisons: use specdyn.results.paired_comparison")
    return lines


def _bytes_text(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def _plan_text(plans) -> str:
    """The cells of a sweep plan (``specdyn.sweep.sweep_plan``) as a table."""
    header = ["cell", "optimizer", "static fields and options", "runs", "memory per group", "groups per call", "calls",
              "records"]
    rows = [
        [str(i), p.optimizer, " ".join(f"{k}={v}" for k, v in {**p.static, **p.options}.items()) or "-", str(p.runs),
         _bytes_text(p.bytes_per_group["total"]), f"{p.groups_per_call} of {p.groups}", str(p.calls),
         _bytes_text(p.records_bytes)]
        for i, p in enumerate(plans)
    ]
    if any(getattr(p, "bucket", None) for p in plans):  # cells sharing a padded program
        header.append("bucket")
        for row, p in zip(rows, plans, strict=True):
            row.append(" ".join(f"{k}<={v}" for k, v in p.bucket.items()) if p.bucket else "-")
    shown = rows[:_SUMMARY_ROWS]
    widths = [max(len(r[i]) for r in [header, *shown]) for i in range(len(header))]
    lines = ["plan (memory per group: an estimate with working headroom; calls: batches per cell; records: the "
             "host memory of the cell's recorded values; a bucket: cells that run zero-padded in one program):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *shown]]
    if len(rows) > len(shown):
        lines.append(f"  ... {len(rows) - len(shown)} more cells")
    return "\n".join(lines)


def _store_line(ds, store: Path) -> str | None:
    """How many cells a resumed run took from the store, when the engine says so."""
    resumed = ds.attrs.get("cells_from_store")
    total = ds.attrs.get("cells")
    if resumed is None:
        return None
    resumed = int(resumed)
    of = f" of {int(total)}" if total is not None else ""
    if resumed == 0:
        return None
    return f"resumed: {resumed}{of} cells came from the store {store} (finished earlier; --fresh reruns them)"


@contextlib.contextmanager
def _dask_client(args):
    """The Dask client of ``--scheduler`` or ``--workers`` (None: cells run in this
    process), connected or started before the sweep, closed after it."""
    if args.scheduler is None and args.workers is None:
        yield None
        return
    from specdyn import executors

    flag = f"--scheduler {args.scheduler}" if args.scheduler is not None else f"--workers {args.workers}"
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError(f"{flag} needs Dask: pip install 'dask[distributed]' (or specdyn[distributed])") from None
    if args.workers is not None:
        with executors.local_cluster(args.workers) as client:
            yield client
        return
    with executors.connected(args.scheduler, label=flag) as client:
        yield client


def _cmd_sweep(args) -> None:
    import jax

    from specdyn.config import load_sweep_file

    file = _check_path_text(args.file, "sweep file")
    with _doing("read the sweep file"):
        spec = load_sweep_file(file, smoke=args.smoke)
    default = Path("out") / file.resolve().parent.name / f"{spec.name}{'-smoke' if args.smoke else ''}"
    if args.out is not None:
        out = _output_folder(args.out, create=not args.check)
    else:
        out = _output_folder(default, create=not args.check, label=f"the output folder {default}")
    size = " (smoke size)" if args.smoke else ""
    from specdyn.sweep import sweep, sweep_plan

    if args.check:
        with jax.enable_x64(spec.x64):
            try:
                plans = sweep_plan(spec.problem, **spec.sweep_kwargs())
            except ValueError as err:
                raise ValueError(f"{file}: {err}") from None
        print(
            f"ok: {file}{size}: problem {type(spec.problem).__name__}, {spec.runs} runs of {spec.steps} steps "
            f"in {spec.cells} compiled cells; plots {', '.join(spec.metrics + spec.figures) or 'nothing'}; "
            f"would write {out}"
        )
        print(_plan_text(plans))
        return
    from specdyn.config import resolve_figure
    from specdyn.plot import standard_figures
    from specdyn.results import save

    print(f"sweep {file}{size}: {spec.description}")
    start = time.perf_counter()
    with _doing("read the sweep file"):
        text = file.read_text(encoding="utf-8")
    with jax.enable_x64(spec.x64), _dask_client(args) as client:
        try:
            ds = sweep(
                spec.problem, **spec.sweep_kwargs(), store=out / "cells", progress=not args.no_progress,
                fresh=args.fresh, provenance={"sweep_file": str(file), "sweep_file_text": text, "smoke": args.smoke},
                client=client,
            )
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None
        seconds = time.perf_counter() - start
        ds.attrs["sweep_file"] = str(file)
        ds.attrs["smoke"] = int(args.smoke)
        with _doing("write the results"):
            results = save(ds, out / "results.nc")
            drawers = {name: resolve_figure(name) for name in spec.figures}
            rule, where = _sweep_rule(drawers)
            figures = standard_figures(ds, out, metrics=spec.metrics, figures=drawers, rule=rule)
    print(_summary(ds, rule=rule, where=where))
    line = _store_line(ds, out / "cells")
    if line:
        print(line)
    print(f"{spec.runs} runs in {seconds:.1f} s; results: {results}")
    for f in figures:
        print(f"figure: {f}")


# ---------------------------------------------------------------- plot


def _read_results(path):
    from specdyn.results import load

    path = _check_path_text(path, "results file")
    if not path.exists():
        raise ValueError(f"no results file at {path}")
    if path.is_dir():
        hint = f"; did you mean {path / 'results.nc'}?" if (path / "results.nc").is_file() else ""
        raise ValueError(f"{path} is a folder, not a results file{hint}")
    with _doing("read the results file"):
        ds = load(path)  # a foreign or truncated file: ValueError naming it
    if "step" not in ds.dims or "diverged_at" not in ds:
        raise ValueError(
            f"{path} is not a results file written by `specdyn sweep` (no 'step' axis and 'diverged_at')"
        )
    return ds


def plottable_metrics(ds) -> list[str]:
    """The variables of a results Dataset that can be drawn against step."""
    return [str(v) for v in ds.data_vars if "step" in ds[v].dims]


def _cmd_plot(args) -> None:
    import matplotlib.pyplot as plt

    from specdyn.plot import plot_metric, save_figure

    ds = _read_results(args.results)
    metrics = plottable_metrics(ds)
    if args.metric not in metrics:
        what = (
            f"{args.metric!r} is not a metric against step" if args.metric in ds
            else f"no metric {args.metric!r}"
        )
        raise ValueError(f"{what} to plot in {args.results} (plottable: {', '.join(metrics)})")
    out = _output_file(args.out or Path(args.results).with_name(f"{args.metric}.png"))
    fig = plot_metric(ds, args.metric, rule=_results_rule(ds))  # the sweep's best rates, thick
    try:
        with _doing("write the figure"):
            save_figure(fig, out)
    finally:
        plt.close(fig)
    print(f"figure: {out}")


def _cmd_demo(args) -> None:
    from specdyn.experiments.phase_retrieval import demo

    out = _output_folder(args.out, create=True)
    start = time.perf_counter()
    result = demo(out)
    print(result["rule"] + " (the same rule picks the rates on the figures)")
    for method, stats in result["summary"].items():
        parts = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in stats.items())
        print(f"{method}: {parts}")
    for f in result["figures"]:
        print(f"figure written to {f}")
    print(f"demo took {time.perf_counter() - start:.1f} s")


def _settle() -> None:
    """After an interrupt, wait for the device work already dispatched (at most one short
    program call). An interrupt can land inside jax's tracing or dispatch; on jaxlib 0.10 the
    interpreter's teardown after that crashed (SIGSEGV, 2 of 2 tries), so the command then
    leaves with ``os._exit(130)``: every finished cell is already written atomically."""
    if "jax" not in sys.modules:
        return
    import jax

    for array in jax.live_arrays():
        with contextlib.suppress(Exception):
            array.block_until_ready()


def main(argv=None) -> int:
    """Run the command; return its exit code (2 for bad input, 130 when interrupted)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad argument (2, one line already printed)
        return done.code if isinstance(done.code, int) else 2
    from specdyn._cpu import guard_cpu

    guard_cpu()  # one OpenBLAS thread on few-core CPUs; one XLA thread where jaxlib 0.10 hangs (specdyn/_cpu.py)
    commands = {"demo": _cmd_demo, "sweep": _cmd_sweep, "plot": _cmd_plot, "list": _cmd_list}
    try:
        commands[args.command](args)
    except ValueError as err:
        print(f"specdyn: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `specdyn list | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # a path the command could not use: name it
        print(f"specdyn: error: {_one_line(_os_message(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _settle()
        print("specdyn: interrupted; finished cells are kept in the store, re-run to resume", file=sys.stderr)
        if argv is None:  # the command itself: leave now (see _settle)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
