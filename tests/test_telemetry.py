"""Spectral telemetry in the record path: values against numpy SVDs of the same matrices
(float64, 1e-10), named dims in simulate and sweep, sweep files, stores; off costs nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_log import count_compiles

import specdyn as sd
from specdyn.config import load_sweep_file
from specdyn.simulate import _chunk_program, _start_program, recipe_of, single_device

ROWS, COLS, SAMPLES = 6, 4, 10


def problem_and_data():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((COLS, SAMPLES))
    w_star = rng.standard_normal((ROWS, COLS))
    data = {"A": a, "Y": w_star @ a + 0.1 * rng.standard_normal((ROWS, SAMPLES)), "W_star": w_star}
    w0 = rng.standard_normal((ROWS, COLS))
    return sd.problems.MatrixLeastSquares(rows=ROWS, cols=COLS, samples=SAMPLES), data, w0


def gradient(data, w):
    return (w @ data["A"] - data["Y"]) @ data["A"].T / SAMPLES  # of 0.5 ‖W A − Y‖² / n


def svals(m):
    return np.linalg.svd(m, compute_uv=False)


def summaries(m, k, quantiles=()):
    """numpy reference of one matrix's summaries."""
    s = svals(m)
    top = np.full(k, np.nan)
    top[: min(k, s.size)] = s[:k]
    return {"sv": top, "quantile": np.quantile(s, quantiles) if quantiles else None,
            "stable_rank": np.sum(s**2) / s[0] ** 2, "nuclear_rank": np.sum(s) ** 2 / np.sum(s**2)}


def check(out, name, mats, k, quantiles=(), leaf=0):
    """``out[name_*]`` at every record equals the numpy summaries of ``mats`` (one per record)."""
    for r, m in enumerate(mats):
        ref = summaries(m, k, quantiles)
        got = np.asarray(out[f"{name}_sv"])[r, leaf]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref["sv"]))  # NaN past min(m, n)
        np.testing.assert_allclose(got[~np.isnan(got)], ref["sv"][~np.isnan(ref["sv"])], rtol=1e-10, atol=1e-13)
        for part in ("stable_rank", "nuclear_rank"):
            np.testing.assert_allclose(np.asarray(out[f"{name}_{part}"])[r, leaf], ref[part], rtol=1e-10)
        if quantiles:
            np.testing.assert_allclose(np.asarray(out[f"{name}_quantile"])[r, leaf], ref["quantile"], rtol=1e-10)


def test_gd_weights_gradients_and_update_match_numpy_and_it_has_no_polar_step():
    problem, data, w0 = problem_and_data()
    spec = sd.Telemetry(top_k=6, quantiles=(0.9, 0.25, 0.5))
    with jax.enable_x64(True):
        out = sd.simulate(problem, sd.gd(0.05), key=jax.random.PRNGKey(0), steps=7, record_every=3,
                          data=data, params={"W": w0}, telemetry=spec)
    w, ws, gs = w0.copy(), [], []
    for t in range(8):
        if t in (0, 3, 6, 7):
            ws.append(w.copy())
            gs.append(gradient(data, w))
        w = w - 0.05 * gradient(data, w)
    assert spec.quantiles == (0.25, 0.5, 0.9)  # sorted
    assert list(out["leaf"]) == ["['W']"]
    assert np.asarray(out["weights_sv"]).shape == (4, 1, 6) and np.asarray(out["weights_sv"]).dtype == np.float64
    assert np.asarray(out["grads_quantile"]).shape == (4, 1, 3)
    check(out, "weights", ws, 6, spec.quantiles)
    check(out, "grads", gs, 6, spec.quantiles)
    check(out, "update", [-0.05 * g for g in gs], 6, spec.quantiles)  # the update GD takes from there
    for name in ("polar_input_sv", "polar_input_stable_rank", "polar_orthogonality_error", "polar_distance"):
        assert np.all(np.isnan(np.asarray(out[name]))), name  # GD has no polar step
    # the trajectory is GD's: evaluating the update at records changes nothing
    losses = [0.5 * np.sum((w @ data["A"] - data["Y"]) ** 2) / SAMPLES for w in ws]
    np.testing.assert_allclose(np.asarray(out["loss"]), losses, rtol=1e-12)


def test_muon_polar_input_is_its_momentum_and_polar_errors_match_numpy():
    """Replay Muon (Nesterov momentum, Newton–Schulz) in numpy: the recorded polar input is
    G + β m, the update −lr Q, and the polar errors are those of Q against U Vᵀ of the input."""
    problem, data, w0 = problem_and_data()
    lr, beta, steps = 0.05, 0.9, 3
    with jax.enable_x64(True):
        out = sd.simulate(problem, sd.muon(lr, momentum=beta, method="newton_schulz"), key=jax.random.PRNGKey(0),
                          steps=steps, data=data, params={"W": w0}, telemetry=sd.Telemetry(top_k=4))
        w, m, inputs, qs, ws = w0.copy(), np.zeros_like(w0), [], [], []
        for _ in range(steps + 1):
            g = gradient(data, w)
            m = beta * m + g
            x = g + beta * m  # optax.trace(nesterov=True)
            q = np.asarray(sd.polar(x, method="newton_schulz"))  # the library's quintic (tested in test_polar)
            ws.append(w.copy())
            inputs.append(x)
            qs.append(q)
            w = w - lr * q
    check(out, "weights", ws, 4)
    check(out, "polar_input", inputs, 4)
    check(out, "update", [-lr * q for q in qs], 4)
    for r, (x, q) in enumerate(zip(inputs, qs, strict=True)):
        u, _, vt = np.linalg.svd(x, full_matrices=False)
        exact = u @ vt
        orth = np.linalg.norm(q.T @ q - np.eye(COLS))  # full-rank input: ‖QᵀQ − I‖_F
        dist = np.linalg.norm(q - exact)
        assert orth > 1e-3  # five quintic steps do not orthogonalize: the error is real
        np.testing.assert_allclose(np.asarray(out["polar_orthogonality_error"])[r, 0], orth, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(out["polar_distance"])[r, 0], dist, rtol=1e-10)


@sd.problem
class TwoLayer:
    """Several matrix leaves of different shapes, a stacked leaf and a bias (not a matrix)."""

    # deterministic (no random draws to compile): sines of distinct frequencies
    def init(self, key):
        del key
        wave = lambda n, f: jnp.sin(f * jnp.arange(1.0, n + 1.0))
        return {"W1": wave(15, 1.3).reshape(5, 3), "b": jnp.zeros(5), "W2": wave(10, 0.7).reshape(2, 5),
                "S": jnp.eye(3) + 0.3 * wave(18, 2.1).reshape(2, 3, 3)}

    def sample(self, key):
        del key
        x = jnp.sin(0.9 * jnp.arange(24.0)).reshape(8, 3)
        return {"x": x, "y": jnp.sin(x[:, :2])}

    def loss(self, params, data):
        h = jnp.tanh(data["x"] @ params["W1"].T + params["b"])
        z = data["x"] @ params["S"][0] @ params["S"][1]
        return jnp.mean((h @ params["W2"].T - data["y"]) ** 2) + jnp.mean((z - data["x"]) ** 2)

    def metrics(self, params, data):
        return {}


def test_a_network_records_every_matrix_by_name():
    spec = sd.Telemetry(top_k=3, quantiles=(0.0, 1.0), of=("weights", "grads", "update"), polar_error=False)
    with jax.enable_x64(True):
        out = sd.simulate(TwoLayer(), sd.gd(0.05), key=jax.random.PRNGKey(1), steps=2, telemetry=spec)
    assert list(out["leaf"]) == ["['S'][0]", "['S'][1]", "['W1']", "['W2']"]  # the bias is not a matrix
    final = out["params"]
    mats = [final["S"][0], final["S"][1], final["W1"], final["W2"]]
    for i, mat in enumerate(mats):
        check({k: np.asarray(v)[-1:] for k, v in out.items() if k.startswith("weights_")}, "weights", [np.asarray(mat)], 3,
              spec.quantiles, leaf=i)
    assert np.isnan(np.asarray(out["weights_sv"])[-1, 3, 2])  # W2 is 2 x 5: two singular values
    assert sorted(out["weights_sv"].shape) == sorted((3, 4, 3))  # records x leaves x k
    np.testing.assert_allclose(np.asarray(out["update_sv"]), 0.05 * np.asarray(out["grads_sv"]), rtol=1e-12,
                               atol=1e-15)
    assert "polar_input_sv" not in out and "polar_distance" not in out  # not asked for


def test_sweep_dataset_has_named_dims_equal_to_simulate_and_its_store_depends_on_telemetry(tmp_path):
    problem, data, _ = problem_and_data()
    spec = sd.Telemetry(top_k=2, quantiles=(0.5,), of=("grads", "polar_input"))
    kwargs = dict(optimizers=["specgd"], learning_rates=[0.05], seeds=2, steps=4, record_every=2, data=data,
                  progress=False, store=tmp_path / "cells")
    with jax.enable_x64(True):
        ds = sd.sweep(problem, telemetry=spec, **kwargs)
        assert ds["grads_sv"].dims == ("optimizer", "lr", "seed", "step", "leaf", "sv")
        assert ds["grads_quantile"].dims == ("optimizer", "lr", "seed", "step", "leaf", "quantile")
        assert ds["polar_input_nuclear_rank"].dims == ("optimizer", "lr", "seed", "step", "leaf")
        assert list(ds["leaf"].values) == ["['W']"] and list(ds["sv"].values) == [1, 2]
        assert list(ds["quantile"].values) == [0.5]
        assert "weights_sv" not in ds and "update_sv" not in ds  # only the categories asked for
        # SpecGD replayed in numpy from W = 0 (the problem's init) on the same data
        w, grads = np.zeros((ROWS, COLS)), []
        for t in range(5):
            g = gradient(data, w)
            if t % 2 == 0:
                grads.append(g)
            u, _, vt = np.linalg.svd(g, full_matrices=False)
            w = w - 0.05 * u @ vt
        run = ds.sel(optimizer="specgd", seed=1).isel(lr=0)
        check({k: run[k].values for k in run.data_vars}, "grads", grads, 2, (0.5,))
        check({k: run[k].values for k in run.data_vars}, "polar_input", grads, 2, (0.5,))  # SpecGD's input: G
        assert np.nanmax(run["polar_orthogonality_error"].values) < 1e-12  # the exact factor
        # a store recorded with other telemetry settings (or none) is not reused
        with pytest.raises(ValueError, match="telemetry"):
            sd.sweep(problem, telemetry=3, **kwargs)
        with pytest.raises(ValueError, match="telemetry"):
            sd.sweep(problem, **kwargs)
        again = sd.sweep(problem, telemetry=spec, **kwargs)
    assert again.attrs["cells_from_store"] == 1
    np.testing.assert_array_equal(again["grads_sv"].values, ds["grads_sv"].values)


BASE = ('problem = "matrix_least_squares"\nsteps = 4\nseeds = 1\noptimizers = ["gd"]\nlearning_rates = [0.1]\n'
        "[fields]\nrows = 3\ncols = 2\nsamples = 4\n")


@pytest.mark.parametrize("table,needle", [
    ("top_k = 0", "top_k=0"),
    ("top_k = 2.5", "key 'top_k' must be an integer, got 2.5"),
    ("quantiles = [0.5, 1.5]", "got 1.5 in [0.5, 1.5]"),
    ("quantiles = [0.5, 0.5]", "lists 0.5 twice"),
    ('of = ["weights", "momentum"]', "unknown category 'momentum'"),
    ("polar_error = 1", "key 'polar_error' must be true or false, got 1"),
    ("topk = 3", "unknown key 'topk'"),
])
def test_sweep_file_telemetry_errors_name_key_and_value(tmp_path, table, needle):
    path = tmp_path / "t.toml"
    path.write_text(BASE + "[telemetry]\n" + table + "\n")
    with pytest.raises(ValueError, match="telemetry") as err:
        load_sweep_file(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_sweep_file_telemetry_table_reaches_the_sweep(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(BASE + '[telemetry]\ntop_k = 3\nquantiles = [0.9, 0.1]\nof = ["weights"]\n'
                    "[smoke.telemetry]\ntop_k = 1\n")
    spec = load_sweep_file(path)
    assert spec.sweep_kwargs()["telemetry"] == sd.Telemetry(top_k=3, quantiles=(0.1, 0.9), of=("weights",))
    assert load_sweep_file(path, smoke=True).telemetry.top_k == 1  # [smoke.telemetry] merges key by key
    assert load_sweep_file(path, smoke=True).telemetry.of == ("weights",)


def test_under_jit_and_for_diverged_runs():
    problem, data, w0 = problem_and_data()
    with jax.enable_x64(True):
        light = sd.Telemetry(top_k=2, of=("weights", "grads"), polar_error=False)
        run = jax.jit(lambda lr: sd.simulate(problem, sd.gd(lr), key=jax.random.PRNGKey(0), steps=4,
                                             data=data, params={"W": w0}, telemetry=light))
        out = run(0.05)
        w, ws = w0.copy(), []
        for _ in range(5):
            ws.append(w.copy())
            w = w - 0.05 * gradient(data, w)
        np.testing.assert_allclose(np.asarray(out["weights_sv"])[:, 0], np.stack([svals(m)[:2] for m in ws]),
                                   rtol=1e-10)
        # a diverged run records NaN telemetry from its divergence on, like its other metrics
        bad = sd.simulate(problem, sd.gd(1e6), key=jax.random.PRNGKey(0), steps=30, data=data,
                          params={"W": w0}, telemetry=light)
        at = int(bad["diverged_at"])
        assert at > 0
        steps = np.asarray(bad["step"])
        assert np.all(np.isnan(np.asarray(bad["grads_sv"])[steps > at]))
        assert np.all(np.isfinite(np.asarray(bad["grads_sv"])[steps <= at]))


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
    on_flops, on_text = _chunk_cost(sd.Telemetry(top_k=3, of=("weights", "grads")))
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


@pytest.mark.parametrize("bad,needle", [
    (0, "telemetry=0"), (-2, "telemetry=-2"), (2.5, "telemetry=2.5"), (True, "telemetry=True"),
    ("top3", "telemetry='top3'"),
])
def test_bad_telemetry_is_refused_naming_it(bad, needle):
    problem, _, _ = problem_and_data()
    with pytest.raises(ValueError, match="telemetry=") as err:
        sd.simulate(problem, sd.gd(0.1), key=jax.random.PRNGKey(0), steps=3, telemetry=bad)
    assert needle in str(err.value)


@pytest.mark.parametrize("kwargs,needle", [
    ({"top_k": 0}, "top_k=0"), ({"top_k": "8"}, "top_k='8'"), ({"quantiles": (0.2, -0.1)}, "got -0.1"),
    ({"quantiles": 0.5}, "quantiles=0.5"), ({"of": ("weights", "hessian")}, "unknown category 'hessian'"),
    ({"of": ()}, "of=()"), ({"polar_error": "yes"}, "polar_error='yes'"),
])
def test_bad_telemetry_config_is_refused_at_construction(kwargs, needle):
    with pytest.raises(ValueError, match="Telemetry") as err:
        sd.Telemetry(**kwargs)
    assert needle in str(err.value)
