"""Shared by the tests/test_notebook_NAME.py files: execute a notebook's jupytext source
at smoke size (notebooks/execute.py); a failing cell fails the test with its traceback.

One test file per notebook, so that `pytest -n 2 --dist loadfile` spreads the
executions over the workers; `pytestmark` marks them "notebook" (CI runs them on the
newest Python only).
"""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook

_spec = importlib.util.spec_from_file_location(
    "notebooks_execute", Path(__file__).resolve().parent.parent / "notebooks" / "execute.py"
)
_execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_execute)


def execute_smoke(name: str, timeout: int = 600) -> None:
    _execute.execute(name, "smoke", timeout=timeout)
