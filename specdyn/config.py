"""Sweep files: TOML -> a validated sweep specification (schema in sweeps/README.md).

Every problem with a file is reported as a ``ValueError`` with a one-line message
naming the key and the value, which the CLI prints before exiting with code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path

from specdyn.optimizers import OPTIMIZERS, get_optimizer
from specdyn.problem import data_fields, static_fields
from specdyn.problems import get_problem

__all__ = ["SweepSpec", "load_sweep_file"]

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
    "batch_size": int,
    "smoke": dict,
}
_PLOT_SCHEMA = {"metrics": list, "figures": list}
_TABLES = ("fields", "grid", "options", "plot")  # merged key by key by [smoke]


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

    def sweep_kwargs(self) -> dict:
        return dict(
            optimizers=self.optimizers,
            learning_rates=self.learning_rates,
            seeds=self.seeds,
            grid=self.grid,
            steps=self.steps,
            record_every=self.record_every,
            batch_size=self.batch_size,
        )


def _type_name(t) -> str:
    names = {int: "an integer", str: "a string", bool: "true/false", list: "an array", dict: "a table"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))


def _check_types(table: dict, schema: dict, where: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise ValueError(f"{where}unknown key {key!r} (allowed: {', '.join(schema)})")
        want = schema[key]
        ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
        if not ok:
            raise ValueError(f"{where}key {key!r} must be {_type_name(want)}, got {value!r}")


def _field_value(value):
    """TOML has no null or tuple: "none" means None; arrays become tuples (hashable)."""
    if isinstance(value, str) and value.lower() == "none":
        return None
    if isinstance(value, list):
        return tuple(_field_value(v) for v in value)
    return value


def _merge_smoke(raw: dict) -> dict:
    smoke = raw.pop("smoke", {})
    _check_types(smoke, {k: v for k, v in _SCHEMA.items() if k != "smoke"}, "[smoke] ")
    for key, value in smoke.items():
        if key in _TABLES and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def load_sweep_file(path, *, smoke: bool = False) -> SweepSpec:
    """Read and validate a sweep file; ``smoke`` applies its ``[smoke]`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no sweep file at {str(path)!r}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    where = f"{path}: "
    _check_types(raw, _SCHEMA, where)
    for table, label in ((raw, ""), (raw.get("smoke", {}), "[smoke] ")):
        for key in ("steps", "record_every"):
            if isinstance(table.get(key), int) and table[key] < 1:
                raise ValueError(f"{where}{label}key {key!r} must be >= 1, got {table[key]!r}")
    if smoke:
        raw = _merge_smoke(raw)
    else:
        raw.pop("smoke", None)
    for key in ("problem", "steps", "optimizers", "learning_rates", "seeds"):
        if key not in raw:
            raise ValueError(f"{where}missing key {key!r}")
    if not all(isinstance(o, str) for o in raw["optimizers"]) or not raw["optimizers"]:
        raise ValueError(f"{where}key 'optimizers' must list optimizer names, got {raw['optimizers']!r}")
    for name in raw["optimizers"]:
        if name not in OPTIMIZERS:
            raise ValueError(f"{where}unknown optimizer {name!r} in 'optimizers' (known: {', '.join(OPTIMIZERS)})")
    try:
        problem_cls = get_problem(raw["problem"])
    except ValueError as err:
        raise ValueError(f"{where}key 'problem': {err}") from None

    fields = {k: _field_value(v) for k, v in raw.get("fields", {}).items()}
    known = static_fields(problem_cls) + data_fields(problem_cls)
    for key in list(fields) + list(raw.get("grid", {})):
        if key not in known:
            raise ValueError(f"{where}unknown field {key!r} for problem {raw['problem']!r} (fields: {', '.join(known)})")
    grid = {}
    for key, values in raw.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}[grid] key {key!r} must be a non-empty array, got {values!r}")
        grid[key] = [_field_value(v) for v in values]
    try:
        problem = problem_cls(**fields)
    except ValueError as err:
        raise ValueError(f"{where}[fields]: {err}") from None

    options = raw.get("options", {})
    for name, opts in options.items():
        if name not in raw["optimizers"]:
            raise ValueError(f"{where}[options.{name}] names an optimizer not in 'optimizers'")
        if not isinstance(opts, dict):
            raise ValueError(f"{where}[options.{name}] must be a table, got {opts!r}")
    factories = {}
    for name in raw["optimizers"]:
        opts = {k: _field_value(v) for k, v in options.get(name, {}).items()}
        try:
            get_optimizer(name, 0.1, **opts)  # validate the options now
        except ValueError as err:
            raise ValueError(f"{where}[options.{name}]: {err}") from None
        factories[name] = functools.partial(get_optimizer, name, **opts)

    lrs = raw["learning_rates"]
    plot = raw.get("plot", {})
    _check_types(plot, _PLOT_SCHEMA, f"{where}[plot] ")
    return SweepSpec(
        name=path.stem,
        description=raw.get("description", ""),
        problem=problem,
        optimizers=factories,
        learning_rates=lrs,
        seeds=raw["seeds"],
        grid=grid,
        steps=raw["steps"],
        record_every=raw.get("record_every", 1),
        x64=raw.get("x64", False),
        batch_size=raw.get("batch_size"),
        metrics=list(plot.get("metrics", ["loss"])),
        figures=list(plot.get("figures", [])),
    )
