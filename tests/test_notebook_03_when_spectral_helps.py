"""Notebook 03_when_spectral_helps executes from its jupytext source at smoke size; a failing cell
fails the test with the cell's traceback. (One file per notebook, so that
`pytest -n 2 --dist loadfile` spreads the executions over the workers.)"""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "notebooks_execute", Path(__file__).resolve().parent.parent / "notebooks" / "execute.py"
)
pytestmark = pytest.mark.notebook
nbx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbx)


def test_runs_at_smoke_size():
    nbx.execute("03_when_spectral_helps", "smoke", timeout=600)
