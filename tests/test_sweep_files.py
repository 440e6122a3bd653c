"""Every shipped sweep file is valid at both sizes: it loads, its problem (and every grid
value) constructs, its plotted metrics exist, and its named figures resolve.

And a property: any mutation of a shipped file (a key deleted, renamed or duplicated, a
value retyped, negated or duplicated, a list emptied) gives exit 0 or exit 2 with one
line on stderr naming the file, never a traceback."""

import contextlib
import copy
import dataclasses
import importlib
import io
import json
import math
import re
import tempfile
import tomllib
from pathlib import Path

import jax
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from specdyn.cli import main
from specdyn.config import load_sweep_file

FILES = sorted((Path(__file__).parent.parent / "sweeps").rglob("*.toml"))


def test_there_are_sweep_files_for_every_paper():
    folders = {f.parent.name for f in FILES}
    assert {"engine", "phase_retrieval", "imbalanced", "layerwise", "matrix_sensing"} <= folders


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("path", FILES, ids=[f"{f.parent.name}/{f.stem}" for f in FILES])
def test_sweep_file_is_valid(path, smoke):
    spec = load_sweep_file(path, smoke=smoke)
    for name, values in spec.grid.items():
        optimizer, _, option = name.partition(".")  # an option axis "<optimizer>.<option>"
        for v in values:
            if option:
                spec.optimizers[optimizer](1.0, **{option: v})  # builds with that option
            else:
                dataclasses.replace(spec.problem, **{name: v})  # validation runs on construction
    with jax.enable_x64(spec.x64):
        key = jax.random.PRNGKey(0)
        params = jax.eval_shape(spec.problem.init, key)
        data = jax.eval_shape(spec.problem.sample, key)
        metrics = jax.eval_shape(spec.problem.metrics, params, data)
    missing = set(spec.metrics) - set(metrics) - {"loss"}
    assert not missing, f"{path}: [plot] metrics {sorted(missing)} are not metrics of the problem"
    for figure in spec.figures:
        module, _, function = figure.rpartition(".")
        assert callable(getattr(importlib.import_module(f"specdyn.experiments.{module}"), function, None)), figure


# ---------------------------------------------------------------- mutated sweep files


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)  # inf, -inf, 1e-05 are TOML as written
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def dumps(data: dict) -> str:
    """TOML text, one top-level key a line (tables written inline)."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in data.items())


def _paths(node, prefix=()):
    """Every (path, value) below a TOML document: table keys and array items."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield (*prefix, key), value
        yield from _paths(value, (*prefix, key))


def _parent(doc, path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


OTHER_VALUES = ["ten", 7, -3, 2.5, 0, True, [], [1, "a"], {"k": 1}, "none", float("inf")]
KINDS = ["delete", "retype", "rename", "negate", "duplicate_value", "empty_list", "duplicate_key"]


SHIPPED = [(f"{f.parent.name}/{f.name}", f.read_text()) for f in FILES]
TINY = (
    "engine/tiny.toml",
    'problem = "matrix_least_squares"\nsteps = 4\nrecord_every = 2\nseeds = 1\noptimizers = ["gd", "specgd"]\n'
    "learning_rates = [0.1]\n[fields]\nrows = 3\ncols = 2\nsamples = 4\n[grid]\nnoise = [0.0, 0.1]\n"
    '[plot]\nmetrics = ["loss"]\n[smoke]\nsteps = 3\n',
)


@st.composite
def mutated_files(draw, sources=SHIPPED):
    """(name, text): a sweep file with one or two mutations."""
    name, text = draw(st.sampled_from(sources))
    doc = tomllib.loads(text)
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(KINDS))
        if kind == "duplicate_key":  # TOML refuses it; the message must still be one line
            lines = dumps(doc).splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            return name, "".join(lines[: i + 1] + lines[i:])
        paths = list(_paths(doc))
        where, value = draw(st.sampled_from(paths))
        parent, key = _parent(doc, where), where[-1]
        if kind == "delete":
            del parent[key]
        elif kind == "retype":
            parent[key] = copy.deepcopy(draw(st.sampled_from([v for v in OTHER_VALUES if type(v) is not type(value)])))
        elif kind == "rename" and isinstance(parent, dict):
            new = draw(st.sampled_from([key + "s", key[:-1] or "x", "unknown_key", *parent]))
            parent[new] = parent.pop(key)
        elif kind == "negate" and isinstance(value, int | float) and not isinstance(value, bool):
            parent[key] = -value if value else -1
        elif kind == "duplicate_value" and isinstance(value, list) and value:
            value.append(copy.deepcopy(value[0]))
        elif kind == "empty_list" and isinstance(value, list | dict):
            parent[key] = type(value)()
    return name, dumps(doc)


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)  # an uncaught exception here is the traceback a user would see
    return code, out.getvalue(), err.getvalue()


def assert_clean_outcome(code: int, err: str, file: str) -> None:
    assert code in (0, 2), (code, err)
    if code == 0:
        assert err == ""
    else:
        assert err.count("\n") == 1 and err.startswith("specdyn: error: "), err
        assert file in err, f"the message does not name the file: {err}"
        for leak in ("Traceback", "np.float64", "np.str_", "np.int64", "missing []", "unknown []"):
            assert leak not in err, err


def _write(tmp, name, text) -> Path:
    file = Path(tmp) / name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return file


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files())
def test_a_mutated_sweep_file_exits_0_or_2_with_one_line(case):
    """Validation only (--check): what a run would refuse at load, refused here, named."""
    with tempfile.TemporaryDirectory() as tmp:
        file = _write(tmp, *case)
        code, _, err = run_cli(["sweep", str(file), "--smoke", "--check", "--out", str(Path(tmp) / "out")])
    event(f"exit {code}")
    assert_clean_outcome(code, err, str(file))


@settings(max_examples=4, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_files(sources=[TINY]))
def test_a_mutated_tiny_sweep_runs_or_exits_2_with_one_line(case):
    """The same property through a real smoke run (the engine's own checks included)."""
    with tempfile.TemporaryDirectory() as tmp:
        file = _write(tmp, *case)
        code, out, err = run_cli(["sweep", str(file), "--smoke", "--no-progress", "--out", str(Path(tmp) / "out")])
        event(f"exit {code}")
        assert_clean_outcome(code, err, str(file))
        if code == 0:
            assert (Path(tmp) / "out" / "results.nc").is_file() and "best lr" in out
