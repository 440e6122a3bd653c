"""Training problems, one module per model family, and the by-name registry.

Problem classes load on first use (``sd.problems.PhaseRetrieval`` imports
``specdyn.problems.phase_retrieval``), so importing specdyn stays fast.
"""

from __future__ import annotations

import importlib
import importlib.util

# registry name -> (module, class name)
PROBLEMS: dict[str, tuple[str, str]] = {
    "matrix_least_squares": ("specdyn.problems.least_squares", "MatrixLeastSquares"),
    "phase_retrieval": ("specdyn.problems.phase_retrieval", "PhaseRetrieval"),
    "gaussian_mixture": ("specdyn.problems.gaussian_mixture", "GaussianMixture"),
    "random_features": ("specdyn.problems.random_features", "RandomFeatures"),
    "matrix_sensing": ("specdyn.problems.matrix_sensing", "MatrixSensing"),
}
_BY_CLASS = {cls: (mod, cls) for mod, cls in PROBLEMS.values()}

__all__ = ["PROBLEMS", "get_problem", "problem_names", *sorted(_BY_CLASS)]


def _load(module: str, cls: str) -> type:
    return getattr(importlib.import_module(module), cls)


def problem_names() -> list[str]:
    """Registered problem names whose module is present."""
    return [n for n, (mod, _) in PROBLEMS.items() if importlib.util.find_spec(mod) is not None]


def get_problem(name: str) -> type:
    """The problem class registered under ``name`` (e.g. ``"phase_retrieval"``)."""
    if name not in PROBLEMS or name not in problem_names():
        raise ValueError(f"unknown problem name={name!r}; choose one of {problem_names()}")
    return _load(*PROBLEMS[name])


def __getattr__(attr: str):
    if attr in _BY_CLASS:
        return _load(*_BY_CLASS[attr])
    raise AttributeError(f"module 'specdyn.problems' has no attribute {attr!r}")
