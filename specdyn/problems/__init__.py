"""Training problems, one module per model family, and the by-name registry."""

from specdyn.problems.least_squares import MatrixLeastSquares

PROBLEMS = {
    "matrix_least_squares": MatrixLeastSquares,
}

__all__ = ["PROBLEMS", "MatrixLeastSquares", "get_problem"]


def get_problem(name: str) -> type:
    """The problem class registered under ``name``."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem name={name!r}; choose one of {sorted(PROBLEMS)}")
    return PROBLEMS[name]
