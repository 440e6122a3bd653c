"""Notebook 04_matrix_sensing executes from its jupytext source at smoke size (see tests/notebook_run.py)."""

from notebook_run import execute_smoke, pytestmark  # noqa: F401  (pytestmark: the "notebook" mark)


def test_runs_at_smoke_size():
    execute_smoke("04_matrix_sensing")
