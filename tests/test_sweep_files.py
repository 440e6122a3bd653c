"""Every shipped sweep file is valid at both sizes: it loads, its problem (and every grid
value) constructs, its plotted metrics exist, and its named figures resolve."""

import dataclasses
import importlib
from pathlib import Path

import jax
import pytest

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
        for v in values:
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
