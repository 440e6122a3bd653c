"""Sweep files: TOML -> a validated sweep specification (schema in sweeps/README.md).

A file is validated whole before anything runs, at both sizes: its keys, the
``[smoke]`` overrides merged over them (whether or not ``--smoke`` is given), the
``[plot]`` metrics (against the problem's metrics, found with ``jax.eval_shape``,
without running anything) and the named figures. Every problem is a ``ValueError``
whose one-line message names the file, the key as written in TOML and the value
received; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import itertools
import math
import numbers
import tomllib
from pathlib import Path

import numpy as np

from specdyn.optimizers import OPTIMIZERS, get_optimizer, optimizer_options
from specdyn.option_axes import OptionAxes, split_grid
from specdyn.problem import data_fields, static_fields
from specdyn.problems import get_problem, problem_names

__all__ = [
    "SweepSpec",
    "load_sweep_file",
    "named_figure",
    "optimizer_options",
    "problem_metrics",
    "resolve_figure",
    "show_value",
]

_SCHEMA = {
    "description": str,
    "problem": str,
    "x64": bool,
    "steps": int,
    "record_every": int,
    "seeds": (int, list),
    "optimizers": list,
    "learning_rates": (list, dict),
    "fields": dict,
    "grid": dict,
    "options": dict,
    "plot": dict,
    "telemetry": dict,
    "batch_size": int,
    "buckets": (str, dict),
    "smoke": dict,
}
_PLOT_SCHEMA = {"metrics": list, "figures": list}
_TELEMETRY_SCHEMA = {"top_k": int, "quantiles": list, "of": list, "polar_error": bool}
_TABLES = ("fields", "grid", "options", "plot", "telemetry", "buckets")  # merged key by key by [smoke]
_REQUIRED = ("problem", "steps", "optimizers", "learning_rates", "seeds")
_MAX_SEED = 2**32  # jax.random.PRNGKey takes a uint32 seed
_MAX_CHECKED_GRID_POINTS = 4096


@dataclasses.dataclass
class SweepSpec:
    """A sweep file, validated: ready for :func:`specdyn.sweep`."""

    name: str
    description: str
    problem: object
    optimizers: dict
    learning_rates: object
    seeds: object
    grid: dict
    steps: int
    record_every: int
    x64: bool
    batch_size: int | None
    metrics: list
    figures: list
    telemetry: object = None  # an sd.Telemetry, or None (off)
    plottable: tuple = ()  # every metric the results will hold against step
    runs: int = 0  # optimizers x learning rates x seeds x grid points
    cells: int = 0  # compiled cells: optimizers x static grid points
    buckets: object = "auto"  # "auto", None or {field: (bucket sizes)}: see specdyn.buckets

    def sweep_kwargs(self) -> dict:
        return dict(
            optimizers=self.optimizers,
            learning_rates=self.learning_rates,
            seeds=self.seeds,
            grid=self.grid,
            steps=self.steps,
            record_every=self.record_every,
            batch_size=self.batch_size,
            telemetry=self.telemetry,
            buckets=self.buckets,
        )


def show_value(value) -> str:
    """A value as a TOML user would write it: plain numbers, 'strings', [arrays], no numpy reprs."""
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _type_name(t) -> str:
    names = {int: "an integer", str: "a string", bool: "true or false", list: "an array", dict: "a table"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _field_value(value):
    """TOML has no null or tuple: "none" means None; arrays become tuples (hashable)."""
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, list):
        return tuple(_field_value(v) for v in value)
    return value


def _duplicate(values):
    seen = []
    for v in values:
        if v in seen:
            return v
        seen.append(v)
    return None


def _flat_grid(table: dict) -> dict:
    """``table`` with its [grid]'s option axes written as dotted keys (``muon.momentum = [...]``,
    a TOML sub-table) flattened to the quoted form (``"muon.momentum" = [...]``)."""
    grid = table.get("grid")
    if not isinstance(grid, dict) or not any(k in OPTIMIZERS and isinstance(v, dict) for k, v in grid.items()):
        return table
    flat = {}
    for key, value in grid.items():
        if key in OPTIMIZERS and isinstance(value, dict):
            flat.update({f"{key}.{option}": v for option, v in value.items()})
        else:
            flat[key] = value
    return {**table, "grid": flat}


class _File:
    """One variant of a sweep file (full size, or with [smoke] merged): names keys as written."""

    def __init__(self, path: Path, raw: dict, smoke: bool):
        self.path = path
        self.smoke = _flat_grid(dict(raw.get("smoke", {}))) if smoke else None
        data = _flat_grid({k: v for k, v in raw.items() if k != "smoke"})
        for key, value in (self.smoke or {}).items():
            if key in _TABLES and isinstance(data.get(key), dict) and isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        self.data = data

    def _from_smoke(self, key, sub=None) -> bool:
        if self.smoke is None or key not in self.smoke:
            return False
        return sub is None or not isinstance(self.smoke[key], dict) or sub in self.smoke[key]

    def key(self, key: str) -> str:
        """``key 'steps'``, or ``[smoke] key 'steps'`` when [smoke] set it."""
        return f"[smoke] key {key!r}" if self._from_smoke(key) else f"key {key!r}"

    def table(self, table: str, sub: str | None = None) -> str:
        """``[fields]`` or ``[smoke.fields]``, as the user wrote the table holding ``sub``."""
        return f"[smoke.{table}]" if self._from_smoke(table, sub) else f"[{table}]"

    def fail(self, message: str):
        if self.smoke is not None and "[smoke" not in message:
            message += " (with the [smoke] overrides)"
        raise ValueError(f"{self.path}: {message}")


def _read(path: Path) -> dict:
    if not path.exists():
        raise ValueError(f"no sweep file at {path}")
    if path.is_dir():
        files = sorted(p.name for p in path.glob("*.toml"))
        hint = f"; sweep files in it: {', '.join(files)}" if files else ""
        raise ValueError(f"{path} is a folder, not a sweep file{hint}")
    data = path.read_bytes()  # an OSError (unreadable file) names the path; the CLI prints it
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte {data[err.start]:#04x} at offset {err.start}); "
            "a sweep file is TOML text"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


def _check_types(path: Path, table: dict, schema: dict, label: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ValueError(f"{path}: {label}unknown key {key!r} (allowed: {', '.join(schema)})")
        want = schema[key]
        ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{path}: {label}key {key!r} must be {_type_name(want)}, got {show_value(value)}")


def load_sweep_file(path, *, smoke: bool = False) -> SweepSpec:
    """Read and validate a sweep file (both sizes); ``smoke`` returns the ``[smoke]`` size."""
    path = Path(path)
    raw = _read(path)
    _check_types(path, raw, _SCHEMA, "")
    _check_types(path, raw.get("smoke", {}), {k: v for k, v in _SCHEMA.items() if k != "smoke"}, "[smoke] ")
    for table, label in ((raw, "[plot] "), (raw.get("smoke", {}), "[smoke.plot] ")):
        _check_types(path, table.get("plot", {}), _PLOT_SCHEMA, label)
    for table, label in ((raw, "[telemetry] "), (raw.get("smoke", {}), "[smoke.telemetry] ")):
        _check_types(path, table.get("telemetry", {}), _TELEMETRY_SCHEMA, label)
    full = _validate(_File(path, raw, smoke=False))
    if "smoke" not in raw:
        return full
    small = _validate(_File(path, raw, smoke=True))
    return small if smoke else full


def _validate(f: _File) -> SweepSpec:
    d = f.data
    for key in _REQUIRED:
        if key not in d:
            f.fail(f"missing key {key!r}")
    for key in ("steps", "record_every", "batch_size"):
        if key in d and d[key] < 1:
            f.fail(f"{f.key(key)} must be >= 1, got {show_value(d[key])}")
    steps, record_every = d["steps"], d.get("record_every", 1)
    _check_run_lengths(f, steps, record_every)

    names = _optimizer_names(f, d["optimizers"])
    if d["problem"] not in problem_names():
        f.fail(f"{f.key('problem')}: unknown problem {d['problem']!r} (known: {', '.join(problem_names())})")
    problem_cls = get_problem(d["problem"])
    known = static_fields(problem_cls) + data_fields(problem_cls)
    raw_grid = {}  # a table under a key that is no field: an option axis written as a dotted key
    for key, value in d.get("grid", {}).items():
        nested = isinstance(value, dict) and key not in known and value
        raw_grid.update({f"{key}.{k}": v for k, v in value.items()} if nested else {key: value})
    field_grid, option_grid = split_grid(raw_grid)
    problem, grid = _problem_and_grid(f, problem_cls, d.get("fields", {}), field_grid)
    factories = _optimizers(f, names, d.get("options", {}))
    axes = _option_axes(f, names, factories, option_grid)
    grid.update({a.key: list(a.values) for a in axes.axes})
    grid = {k: grid[k] for k in raw_grid}  # the file's order: the Dataset's dims
    lrs = _learning_rates(f, d["learning_rates"], names)
    seeds = _seeds(f, d["seeds"])
    telemetry = _telemetry(f, d["telemetry"]) if "telemetry" in d else None

    x64 = d.get("x64", False)
    try:
        plottable = problem_metrics(problem, x64)
    except (ValueError, TypeError) as err:
        f.fail(f"problem {d['problem']!r} with these fields cannot be set up: {err}")
    plot = d.get("plot", {})
    metrics = _strings(f, plot.get("metrics", ["loss"]), f"key 'metrics' in {f.table('plot', 'metrics')}")
    for m in metrics:
        if m not in plottable:
            f.fail(
                f"{f.table('plot', 'metrics')} metric {m!r} is not a metric of problem {d['problem']!r} "
                f"(its metrics: {', '.join(plottable)})"
            )
    figures = _strings(f, plot.get("figures", []), f"key 'figures' in {f.table('plot', 'figures')}")
    for name in figures:
        try:
            resolve_figure(name)
        except ValueError as err:
            f.fail(f"{f.table('plot', 'figures')} {err}")

    buckets = _buckets(f, problem, grid, d.get("buckets", "auto"))
    n_lr = len(lrs) if isinstance(lrs, list) else len(next(iter(lrs.values())))
    statics = [k for k in field_grid if k in static_fields(problem_cls)]
    n_seeds = seeds if isinstance(seeds, int) else len(seeds)
    n_points = math.prod(len(v) for v in field_grid.values())
    n_cells = math.prod(len(field_grid[k]) for k in statics)
    size = lambda axes: math.prod(len(a.values) for a in axes)
    return SweepSpec(
        name=f.path.stem,
        description=d.get("description", ""),
        problem=problem,
        optimizers=factories,
        learning_rates=lrs,
        seeds=seeds,
        grid=grid,
        steps=steps,
        record_every=record_every,
        x64=x64,
        batch_size=d.get("batch_size"),
        telemetry=telemetry,
        metrics=metrics,
        figures=figures,
        plottable=plottable,
        runs=sum(n_lr * n_seeds * n_points * size(axes.of(n)) for n in names),
        cells=sum(n_cells * size(axes.of(n, data=False)) for n in names),
        buckets=buckets,
    )


def _buckets(f: _File, problem, grid: dict, value):
    """``buckets = "auto" | "none"`` or a ``[buckets]`` table ``field = [sizes]`` (or "auto")."""
    from specdyn.buckets import check_buckets

    if isinstance(value, str):
        if value.lower() not in ("auto", "none"):
            f.fail(f'{f.key("buckets")} must be "auto", "none" or a table field = [sizes], got {show_value(value)}')
        return None if value.lower() == "none" else "auto"
    for field, sizes in value.items():
        label = f"key {field!r} in {f.table('buckets', field)}"
        if not (isinstance(sizes, list) or sizes == "auto"):
            f.fail(f'{label} must be an array of sizes or "auto", got {show_value(sizes)}')
        try:
            check_buckets(problem, {field: sizes})
        except ValueError as err:
            f.fail(f"{label}: {err}")
        if isinstance(sizes, list):
            too_big = [v for v in grid.get(field, []) if isinstance(v, int) and v > sizes[-1]]
            if too_big:
                f.fail(f"{label} = {show_value(sizes)} holds no bucket for {field} = {too_big[0]} in "
                       f"{f.table('grid', field)}: add a bucket >= {max(too_big)}")
    return check_buckets(problem, value)


def _check_run_lengths(f: _File, steps: int, record_every: int) -> None:
    """The engine's own rule for steps and record_every, named as in the file."""
    from specdyn.simulate import check_run_lengths

    try:
        check_run_lengths(steps, record_every)
    except ValueError as err:
        f.fail(str(err))


def _telemetry(f: _File, table: dict):
    """``[telemetry]`` (keys as :class:`specdyn.Telemetry`'s arguments) as a Telemetry."""
    from specdyn.telemetry import Telemetry

    for key, value in table.items():
        label = f"key {key!r} in {f.table('telemetry', key)}"
        if key == "of":
            _strings(f, value, label)
        if key == "quantiles":
            for v in value:
                if not _is_number(v) or not 0 <= v <= 1:
                    f.fail(f"{label} must list quantile levels in [0, 1], got {show_value(v)} in {show_value(value)}")
            dup = _duplicate(value)
            if dup is not None:
                f.fail(f"{label} lists {show_value(dup)} twice")
    try:
        return Telemetry(**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()})
    except ValueError as err:
        f.fail(f"{f.table('telemetry')}: {err}")


def _strings(f: _File, values: list, label: str) -> list:
    for v in values:
        if not isinstance(v, str):
            f.fail(f"{label} must list names (strings), got {show_value(v)}")
    dup = _duplicate(values)
    if dup is not None:
        f.fail(f"{label} lists {dup!r} twice")
    return list(values)


def _optimizer_names(f: _File, names: list) -> list:
    label = f.key("optimizers")
    if not names:
        f.fail(f"{label} must list at least one optimizer (known: {', '.join(OPTIMIZERS)})")
    _strings(f, names, label)
    for name in names:
        if name not in OPTIMIZERS:
            f.fail(f"unknown optimizer {name!r} in {label} (known: {', '.join(OPTIMIZERS)})")
    return names


_DECLARED = {
    "int": (int, "an integer"),
    "float": (numbers.Real, "a number"),
    "str": (str, "a string"),
    "bool": (bool, "true or false"),
    "None": (type(None), '"none"'),
}


def _type_problem(value, annotation, default=inspect.Parameter.empty) -> str | None:
    """``"must be an integer or \"none\""`` when ``value`` does not fit the declared type (an
    annotation such as ``int | None``, else the type of the default), None when it fits or
    when nothing is declared."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip() for p in text.split("|")] if text else []
    if not parts or not all(p in _DECLARED for p in parts):
        parts = (
            ["bool"] if isinstance(default, bool)
            else ["float"] if _is_number(default)
            else ["str"] if isinstance(default, str)
            else []
        )
    if not parts:
        return None
    for part in parts:
        kind = _DECLARED[part][0]
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return None
    return "must be " + " or ".join(_DECLARED[p][1] for p in parts)


def _check_field_value(f: _File, problem_cls, name: str, value, label: str) -> None:
    if isinstance(value, dict):
        f.fail(f"{label} must be a value or an array, not a table, got {show_value(value)}")
    if name in data_fields(problem_cls):
        if not _is_number(value):
            f.fail(f"{label} must be a number, got {show_value(value)}")
        return
    field = next(x for x in dataclasses.fields(problem_cls) if x.name == name)
    wrong = _type_problem(_field_value(value), field.type)
    if wrong:
        f.fail(f"{label} {wrong}, got {show_value(value)}")


def _check_value_list(f: _File, label: str, values) -> None:
    """A grid axis is a non-empty array."""
    if values == []:
        f.fail(f"{label} is an empty array; give at least one value")
    if not isinstance(values, list):
        f.fail(f"{label} must be an array of values, got {show_value(values)}")


def _problem_and_grid(f: _File, problem_cls, fields: dict, grid_raw: dict):
    known = static_fields(problem_cls) + data_fields(problem_cls)
    for key, table in [(k, "fields") for k in fields] + [(k, "grid") for k in grid_raw]:
        if key not in known:
            f.fail(
                f"unknown field {key!r} in {f.table(table, key)} for problem {f.data['problem']!r} "
                f"(fields: {', '.join(known)})"
            )
    for key, value in fields.items():
        _check_field_value(f, problem_cls, key, value, f"field {key} in {f.table('fields', key)}")
    grid = {}
    for key, values in grid_raw.items():
        label = f"field {key} in {f.table('grid', key)}"
        _check_value_list(f, label, values)
        for v in values:
            _check_field_value(f, problem_cls, key, v, f"each value of {label}")
        values = [_field_value(v) for v in values]
        dup = _duplicate(values)
        if dup is not None:
            f.fail(f"{label} lists {show_value(dup)} twice")
        grid[key] = values
    try:
        problem = problem_cls(**{k: _field_value(v) for k, v in fields.items()})
    except (ValueError, TypeError) as err:
        named = str(err).split(" ", 1)[0]  # validation messages start with the field's name
        f.fail(f"{f.table('fields', named if named in fields else '')}: {err}")
    points = itertools.islice(itertools.product(*grid.values()), _MAX_CHECKED_GRID_POINTS)
    for point in points:
        values = dict(zip(grid, point, strict=True))
        try:
            dataclasses.replace(problem, **values)
        except (ValueError, TypeError) as err:
            where = ", ".join(f"{k} = {show_value(v)}" for k, v in values.items())
            f.fail(f"{f.table('grid')} point {where}: {err}")
    return problem, grid


def _optimizers(f: _File, names: list, options: dict) -> dict:
    for name, opts in options.items():
        label = f.table("options", name).rstrip("]") + f".{name}]"
        if name not in names:
            f.fail(f"{label} names an optimizer not in 'optimizers' ({', '.join(names)})")
        if not isinstance(opts, dict):
            f.fail(f"{label} must be a table of options, got {show_value(opts)}")
    factories = {}
    for name in names:
        label = f.table("options", name).rstrip("]") + f".{name}]"
        allowed = optimizer_options(name)
        opts = {}
        for key, value in options.get(name, {}).items():
            if key == "learning_rate":
                f.fail(f"{label} sets learning_rate; learning rates go in key 'learning_rates'")
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                f.fail(f"unknown option {key!r} in {label} (options of {name}: {known})")
            value = _field_value(value)
            wrong = _type_problem(value, allowed[key].annotation, allowed[key].default)
            if wrong:
                f.fail(f"option {key} in {label} {wrong}, got {show_value(value)}")
            opts[key] = value
        try:
            get_optimizer(name, 0.1, **opts)  # validate the options now
        except (ValueError, TypeError) as err:
            f.fail(f"{label}: {err}")
        factories[name] = functools.partial(get_optimizer, name, **opts)
    return factories


def _option_axes(f: _File, names: list, factories: dict, grid_raw: dict) -> OptionAxes:
    """The [grid]'s option axes ``"<optimizer>.<option>"``: each value checked against the
    option's declared type, then built (:class:`specdyn.option_axes.OptionAxes`)."""
    grid = {}
    for key, values in grid_raw.items():
        table = f.table("grid", key)
        name, _, option = key.partition(".")
        if name not in names:
            f.fail(
                f"unknown optimizer {name!r} in key {key!r} in {table}: an option axis is "
                f"'<optimizer>.<option>' with an optimizer of 'optimizers' ({', '.join(names)})"
            )
        allowed = optimizer_options(name)
        if option == "learning_rate":
            f.fail(f"key {key!r} in {table} sweeps learning rates; they go in key 'learning_rates'")
        if option not in allowed:
            known = ", ".join(allowed) or "none"
            f.fail(f"unknown option {option!r} in key {key!r} in {table} (options of {name}: {known})")
        label = f"option axis {key} in {table}"
        _check_value_list(f, label, values)
        for v in values:
            if isinstance(v, dict):
                f.fail(f"each value of {label} must be a value or an array, not a table, got {show_value(v)}")
            wrong = _type_problem(_field_value(v), allowed[option].annotation, allowed[option].default)
            if wrong:
                f.fail(f"each value of {label} {wrong}, got {show_value(v)}")
        values = [_field_value(v) for v in values]
        dup = _duplicate(values)
        if dup is not None:
            f.fail(f"{label} lists {show_value(dup)} twice")
        grid[key] = values
    try:
        return OptionAxes(grid, factories)
    except ValueError as err:
        f.fail(f"{f.table('grid')}: {err}")


def _rate_list(f: _File, values, label: str) -> list:
    if values == []:
        f.fail(f"{label} is an empty array; give at least one learning rate")
    if not isinstance(values, list):
        f.fail(f"{label} must be an array of learning rates, got {show_value(values)}")
    for v in values:
        if not (_is_number(v) and math.isfinite(v) and v > 0):
            f.fail(f"{label}: a learning rate must be a finite number > 0, got {show_value(v)}")
    dup = _duplicate(values)
    if dup is not None:
        f.fail(f"{label} lists {show_value(dup)} twice")
    return [float(v) for v in values]


def _learning_rates(f: _File, lrs, names: list):
    label = f.key("learning_rates")
    if isinstance(lrs, list):
        return _rate_list(f, lrs, label)
    missing = [n for n in names if n not in lrs]
    unknown = [n for n in lrs if n not in names]
    if unknown:
        f.fail(f"{label} names {', '.join(map(repr, unknown))}, not in 'optimizers' ({', '.join(names)})")
    if missing:
        f.fail(f"{label} has no rates for {', '.join(map(repr, missing))}; give one array per optimizer")
    table = {n: _rate_list(f, lrs[n], f"{label[:-1]}.{n}'" if label.endswith("'") else label) for n in names}
    lengths = {n: len(v) for n, v in table.items()}
    if len(set(lengths.values())) != 1:
        counts = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        f.fail(f"{label} must give every optimizer the same number of rates, got {counts}")
    return table


def _seeds(f: _File, seeds):
    label = f.key("seeds")
    if isinstance(seeds, int):
        if not 1 <= seeds <= _MAX_SEED:
            f.fail(f"{label} must be a count >= 1 or an array of seeds, got {seeds}")
        return seeds
    if not seeds:
        f.fail(f"{label} is an empty array; give a count >= 1 or at least one seed")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < _MAX_SEED:
            f.fail(f"{label}: each seed must be an integer in [0, 2**32), got {show_value(s)}")
    dup = _duplicate(seeds)
    if dup is not None:
        f.fail(f"{label} lists seed {dup} twice")
    return list(seeds)


@functools.lru_cache(maxsize=64)
def problem_metrics(problem, x64: bool = False) -> tuple[str, ...]:
    """The names of the metrics a sweep of ``problem`` records against step ("loss" first),
    found with ``jax.eval_shape``: nothing is computed."""
    import jax

    with jax.enable_x64(x64):
        key = jax.random.PRNGKey(0)
        params = jax.eval_shape(problem.init, key)
        data = jax.eval_shape(problem.sample, key)
        metrics = jax.eval_shape(problem.metrics, params, data)
    return ("loss", *(m for m in metrics if m != "loss"))


def resolve_figure(name: str):
    """The figure function ``specdyn.experiments.<module>.<function>`` named by
    ``"module.function"`` (``function(ds) -> Figure``); ValueError saying why when none.

    Named figures are resolved here, in the layer that reads sweep files, so that
    :mod:`specdyn.plot` never imports the experiments above it."""
    module, _, function = name.rpartition(".") if isinstance(name, str) else ("", "", "")
    if not module or not function:
        raise ValueError(
            f"figure {name!r}: a figure is named 'module.function' (a function of specdyn.experiments.<module>)"
        )
    if not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"figure {name!r}: no module specdyn.experiments.{module}")
    try:
        mod = importlib.import_module(f"specdyn.experiments.{module}")
    except ModuleNotFoundError:
        raise ValueError(f"figure {name!r}: no module specdyn.experiments.{module}") from None
    fn = getattr(mod, function, None)
    if not callable(fn):
        raise ValueError(f"figure {name!r}: specdyn.experiments.{module} has no function {function}()")
    return fn


def named_figure(ds, name: str):
    """Draw the figure ``name`` (see :func:`resolve_figure`) of a results Dataset."""
    return resolve_figure(name)(ds)
