"""Spectral telemetry in the record path: values against numpy SVDs; off costs nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_log import count_compiles

import specdyn as sd
from specdyn.simulate import _chunk_program, _start_program, recipe_of, single_device

ROWS, COLS, SAMPLES = 6, 4, 10


def problem_and_data():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((COLS, SAMPLES))
    w_star = rng.standard_normal((ROWS, COLS))
    data = {"A": a, "Y": w_star @ a + 0.1 * rng.standard_normal((ROWS, SAMPLES)), "W_star": w_star}
    w0 = rng.standard_normal((ROWS, COLS))
    return sd.problems.MatrixLeastSquares(rows=ROWS, cols=COLS, samples=SAMPLES), data, w0


def numpy_gd_records(data, w0, lr, steps, record_every):
    """Weights and full-data gradients at the record steps of plain GD, in numpy float64."""
    a, y = data["A"], data["Y"]
    w, ws, gs = w0.copy(), [], []
    for t in range(steps + 1):
        g = (w @ a - y) @ a.T / SAMPLES  # gradient of 0.5 ‖W A − Y‖² / n
        if t % record_every == 0 or t == steps:
            ws.append(w.copy())
            gs.append(g)
        w = w - lr * g
    return ws, gs


@pytest.mark.parametrize("k", [2, 4, 6])
def test_top_singular_values_of_weights_and_gradients_match_numpy(k):
    problem, data, w0 = problem_and_data()
    with jax.enable_x64(True):
        out = sd.simulate(problem, sd.gd(0.05), key=jax.random.PRNGKey(0), steps=7, record_every=3,
                          data=data, params={"W": w0}, telemetry=k)
        ws, gs = numpy_gd_records(data, w0, 0.05, 7, 3)
        for name, mats in (("weights_sv/['W']", ws), ("grads_sv/['W']", gs)):
            got = np.asarray(out[name])
            assert got.shape == (4, k) and got.dtype == np.float64  # records at steps 0, 3, 6, 7
            ref = np.stack([np.linalg.svd(m, compute_uv=False) for m in mats])[:, :k]
            np.testing.assert_allclose(got[:, : ref.shape[1]], ref, rtol=1e-10, atol=1e-12)
            assert np.all(np.isnan(got[:, COLS:]))  # k > min(m, n): NaN-padded
        # telemetry leaves the rest of the record as it was
        plain = sd.simulate(problem, sd.gd(0.05), key=jax.random.PRNGKey(0), steps=7, record_every=3,
                            data=data, params={"W": w0})
        np.testing.assert_array_equal(np.asarray(out["loss"]), np.asarray(plain["loss"]))
        assert not any("/" in name for name in plain)


def test_under_jit_and_for_diverged_runs():
    problem, data, w0 = problem_and_data()
    with jax.enable_x64(True):
        run = jax.jit(lambda lr: sd.simulate(problem, sd.gd(lr), key=jax.random.PRNGKey(0), steps=4,
                                             data=data, params={"W": w0}, telemetry=2))
        out = run(0.05)
        ws, _ = numpy_gd_records(data, w0, 0.05, 4, 1)
        ref = np.stack([np.linalg.svd(m, compute_uv=False)[:2] for m in ws])
        np.testing.assert_allclose(np.asarray(out["weights_sv/['W']"]), ref, rtol=1e-10)
        # a diverged run records NaN telemetry from its divergence on, like its other metrics
        bad = sd.simulate(problem, sd.gd(1e6), key=jax.random.PRNGKey(0), steps=30, data=data,
                          params={"W": w0}, telemetry=2)
        at = int(bad["diverged_at"])
        assert at > 0
        steps = np.asarray(bad["step"])
        assert np.all(np.isnan(np.asarray(bad["grads_sv/['W']"])[steps > at]))


def _chunk_cost(telemetry):
    problem, data, w0 = problem_and_data()
    lead = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[None], tree)
    recipe, _ = recipe_of(sd.gd(0.1))
    rates = jnp.asarray([[0.1]])
    params = lead({"W": w0.astype(np.float32)})
    state = _start_program(rates, params, recipe=recipe, shard=single_device())
    args = (lead(problem), rates, state, lead(jax.tree.map(lambda x: x.astype(np.float32), data)),
            jax.random.PRNGKey(0)[None], jnp.ones(3, bool), jnp.ones(3, jnp.int32))
    lowered = _chunk_program.lower(*args, recipe=recipe, shard=single_device(), telemetry=telemetry)
    compiled = lowered.compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0)), compiled.as_text()


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64:UserWarning")  # jax 0.12: float32 lowering of a float64 spec
def test_off_is_free_no_extra_compiled_work():
    off_flops, off_text = _chunk_cost(None)
    on_flops, on_text = _chunk_cost(3)
    # The problem's own metrics already take SVDs (stable rank, nuclear rank); telemetry adds
    # its SVDs and the gradient at records only when asked for: more library calls, more flops.
    calls = lambda text: text.count("custom-call(")
    assert calls(off_text) < calls(on_text), (calls(off_text), calls(on_text))
    assert off_flops < on_flops, (off_flops, on_flops)
    # the default (telemetry=None) is the same program as before: a simulate without the
    # argument and one with telemetry=None share it (no second compile)
    problem, data, w0 = problem_and_data()
    sd.simulate(problem, sd.gd(0.1), key=jax.random.PRNGKey(0), steps=3, data=data, params={"W": w0})
    with count_compiles() as names:
        sd.simulate(problem, sd.gd(0.2), key=jax.random.PRNGKey(1), steps=3, data=data, params={"W": w0},
                    telemetry=None)
    assert "_chunk_program" not in names, names


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "top3"])
def test_bad_telemetry_is_refused_naming_it(bad):
    problem, data, w0 = problem_and_data()
    with pytest.raises(ValueError, match="telemetry="):
        sd.simulate(problem, sd.gd(0.1), key=jax.random.PRNGKey(0), steps=3, telemetry=bad)
