"""The tiny sweep file the command-line tests run and mutate (least squares, 2 optimizers,
2 rates, 2 seeds, 2 noise levels: 2 cells of 8 runs)."""

import textwrap

TINY = textwrap.dedent(
    """
    description = "tiny"
    problem = "matrix_least_squares"
    steps = 6
    seeds = 2
    optimizers = ["gd", "specgd"]
    learning_rates = [0.05, 0.1]
    [fields]
    rows = 4
    cols = 3
    samples = 8
    [grid]
    noise = [0.0, 0.1]
    [plot]
    metrics = ["loss", "distance"]
    [smoke]
    steps = 4
    [smoke.fields]
    samples = 6
    """
)
