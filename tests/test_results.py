"""Result helpers against closed forms."""

import numpy as np

from specdyn.results import log_log_slope


def test_log_log_slope_recovers_a_power_law_and_skips_bad_points():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    y = 3.0 * x**1.7
    assert abs(log_log_slope(x, y) - 1.7) < 1e-12
    y_bad = np.concatenate([y, [np.nan, 0.0, -1.0]])
    x_bad = np.concatenate([x, [32.0, 64.0, 128.0]])
    assert abs(log_log_slope(x_bad, y_bad) - 1.7) < 1e-12  # NaN and non-positive points left out
    assert np.isnan(log_log_slope([1.0, 2.0], [1.0, np.nan]))  # fewer than two usable points
