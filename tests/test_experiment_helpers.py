"""The helpers shared by the experiments (specdyn.results, specdyn.problems.activations)
against brute-force references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special

from specdyn.problems.activations import ACTIVATIONS, activate
from specdyn.results import best_lr_index, first_crossing, first_step, index_zero_except


def _first_step_loop(hit, steps, stay):
    """Reference: a plain loop over one row."""
    for i in range(len(hit)):
        if hit[i] and (not stay or all(hit[i:])):
            return float(steps[i])
    return np.nan


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=9)), st.booleans())
def test_first_step_matches_a_loop(hit, stay):
    steps = 3 * np.arange(hit.shape[1]) + 1
    want = np.array([_first_step_loop(row, steps, stay) for row in hit])
    np.testing.assert_array_equal(first_step(hit, steps, stay=stay), want)
    # the step axis may be any axis
    np.testing.assert_array_equal(first_step(hit.T, steps, stay=stay, axis=0), want)


def test_first_crossing_nan_counts_below_and_stay_ignores_reverts():
    x = np.array([[0.0, 0.6, 0.2, 0.7, 0.8], [0.0, np.nan, 0.9, np.nan, 0.9]])
    steps = np.array([0, 10, 20, 30, 40])
    np.testing.assert_array_equal(first_crossing(x, 0.5, steps), [10.0, 20.0])
    np.testing.assert_array_equal(first_crossing(x, 0.5, steps, stay=True), [30.0, 40.0])
    np.testing.assert_array_equal(first_crossing(x, 5.0, steps), [np.nan, np.nan])
    with pytest.raises(ValueError, match="steps"):
        first_step(x > 0, steps[:3])


def test_best_lr_index_never_picks_nan():
    score = xr.DataArray([[np.nan, 2.0, 1.0, np.nan], [np.nan] * 4], dims=("optimizer", "lr"))
    np.testing.assert_array_equal(best_lr_index(score).values, [2, 0])
    np.testing.assert_array_equal(best_lr_index(score, mode="max").values, [1, 0])
    with pytest.raises(ValueError, match="mode"):
        best_lr_index(score, mode="median")


def test_index_zero_except():
    da = xr.DataArray(np.arange(24).reshape(2, 3, 4), dims=("a", "b", "c"))
    out = index_zero_except(da, ("b",))
    assert out.dims == ("b",)
    np.testing.assert_array_equal(out.values, np.arange(24).reshape(2, 3, 4)[0, :, 0])


def test_activation_table_matches_numpy():
    z1, z2 = np.linspace(-3, 3, 13), np.linspace(2, -1, 13)
    want = {
        "relu": np.maximum(z1, 0),
        "relu2": np.maximum(z1, 0) ** 2,
        "tanh": np.tanh(z1),
        "gelu": z1 * 0.5 * (1 + special.erf(z1 / np.sqrt(2))),
        "swiglu": z1 / (1 + np.exp(-z1)) * z2,
    }
    assert set(ACTIVATIONS) == set(want)
    with jax.enable_x64(True):
        for name, (_, arity) in ACTIVATIONS.items():
            got = activate(name, *[jnp.asarray(z) for z in (z1, z2)[:arity]])
            np.testing.assert_allclose(np.asarray(got), want[name], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="activation"):
        activate("softplus", jnp.zeros(3))
    with pytest.raises(ValueError, match="pre-activation"):
        activate("swiglu", jnp.zeros(3))
