"""The problem decorator and the training core, against a plain Python optax loop."""

import dataclasses
import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from compile_log import count_compiles

import specdyn as sd
from specdyn.problem import data_fields, static_fields

PROBLEM = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12, noise=0.1)


def reference_loop(problem, optimizer, key, steps, record_every):
    """The same run written the obvious way: a Python loop over optax updates."""
    init_key, data_key = jax.random.split(key)
    data = problem.sample(data_key)
    params = problem.init(init_key)
    state = optimizer.init(params)
    grad = jax.jit(jax.value_and_grad(problem.loss))
    losses = []
    for t in range(steps + 1):
        loss, g = grad(params, data)
        if t % record_every == 0:
            losses.append(float(loss))
        updates, state = optimizer.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(losses)


@pytest.mark.parametrize("name,lr", [("gd", 0.3), ("specgd", 0.02), ("muon", 0.02), ("adam", 0.01)])
def test_simulate_matches_python_loop(name, lr):
    key = jax.random.PRNGKey(3)
    out = sd.simulate(PROBLEM, sd.get_optimizer(name, lr), key=key, steps=30, record_every=5)
    ref = reference_loop(PROBLEM, sd.get_optimizer(name, lr), key, 30, 5)
    np.testing.assert_array_equal(np.asarray(out["step"]), np.arange(0, 31, 5))
    np.testing.assert_allclose(np.asarray(out["loss"]), ref, rtol=2e-5, atol=1e-7)
    assert int(out["diverged_at"]) == -1
    assert ref[-1] < ref[0]  # the run trained


def test_records_are_before_the_update_and_final_params_returned():
    out = sd.simulate(PROBLEM, sd.gd(0.2), key=jax.random.PRNGKey(0), steps=7, record_every=3)
    np.testing.assert_array_equal(np.asarray(out["step"]), [0, 3, 6, 7])  # the last step is always recorded
    data = PROBLEM.sample(jax.random.split(jax.random.PRNGKey(0))[1])
    params0 = PROBLEM.init(jax.random.split(jax.random.PRNGKey(0))[0])
    np.testing.assert_allclose(out["loss"][0], PROBLEM.loss(params0, data), rtol=1e-6)
    # the final params are after all 7 steps: continuing 0 steps from them gives their loss
    again = sd.simulate(PROBLEM, sd.gd(0.2), key=jax.random.PRNGKey(0), steps=1, params=out["params"])
    ref = reference_loop(PROBLEM, sd.gd(0.2), jax.random.PRNGKey(0), 7, 7)
    np.testing.assert_allclose(again["loss"][0], ref[-1], rtol=1e-5)
    np.testing.assert_allclose(out["loss"][-1], ref[-1], rtol=1e-5)


def test_explicit_data_replaces_sample():
    data = PROBLEM.sample(jax.random.PRNGKey(42))
    a = sd.simulate(PROBLEM, sd.gd(0.2), key=jax.random.PRNGKey(0), steps=5, data=data)
    shifted = dict(data, Y=data["Y"] + 1.0)
    b = sd.simulate(PROBLEM, sd.gd(0.2), key=jax.random.PRNGKey(0), steps=5, data=shifted)
    params0 = PROBLEM.init(jax.random.split(jax.random.PRNGKey(0))[0])
    np.testing.assert_allclose(a["loss"][0], PROBLEM.loss(params0, data), rtol=1e-6)
    assert not np.allclose(a["loss"], b["loss"])


def test_divergence_is_recorded_and_freezes_the_run():
    out = sd.simulate(PROBLEM, sd.gd(1e4), key=jax.random.PRNGKey(0), steps=40, record_every=2)
    at = int(out["diverged_at"])
    assert at > 0
    loss = np.asarray(out["loss"])
    steps = np.asarray(out["step"])
    assert np.all(np.isfinite(loss[steps < at]))
    assert np.all(np.isnan(loss[steps > at]))
    for name in ("distance", "nuclear_rank"):
        assert np.all(np.isnan(np.asarray(out[name])[steps > at]))


def test_float64_when_x64_enabled():
    with jax.enable_x64(True):
        problem = sd.problems.MatrixLeastSquares(rows=4, cols=3, samples=8)
        out = sd.simulate(problem, sd.spectral_gd(0.01), key=jax.random.PRNGKey(0), steps=3)
        assert out["loss"].dtype == jnp.float64
        assert out["params"]["W"].dtype == jnp.float64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), "steps=0"),
        (dict(steps=5, record_every=0), "record_every=0"),
        (dict(steps=2.5), "steps=2.5"),
        (dict(steps=5, record_every=6), "record_every=6 > steps=5"),
        (dict(steps=2**31), r"steps must be at most 2147483647 \(a run counts its steps in int32\), got steps=2147483648"),
    ],
)
def test_simulate_rejects_bad_lengths(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sd.simulate(PROBLEM, sd.gd(0.1), key=jax.random.PRNGKey(0), **kwargs)


def test_records_that_cannot_fit_the_host_are_refused_before_the_run(monkeypatch):
    # The records of a run are estimated from their shapes (jax.eval_shape) and checked
    # against the host's memory: the estimate is exactly the bytes a real run returns.
    engine = importlib.import_module("specdyn.simulate")  # the module; sd.simulate is the function

    optimizer = sd.gd(0.1)
    out = sd.simulate(PROBLEM, optimizer, key=0, steps=6, record_every=2)
    recorded = sum(v.nbytes for k, v in out.items() if k not in ("step", "params", "diverged_at"))
    per_record = engine.record_bytes(PROBLEM, engine.recipe_of(optimizer)[0])
    assert recorded == 4 * per_record == engine.record_count(6, 2) * per_record
    assert [engine.record_count(s, r) for s, r in [(6, 2), (7, 2), (1, 1), (10**9, 1)]] == [
        len(engine.record_steps(s, r)) for s, r in [(6, 2), (7, 2), (1, 1)]] + [10**9 + 1]
    # A billion records: refused in words naming steps and record_every (the host is
    # given 1 GB here, so the test does not depend on the machine).
    monkeypatch.setattr(engine, "host_memory", lambda: 1e9)
    with pytest.raises(ValueError, match=r"steps=1000000000 with record_every=1 makes 1000000001 records per run: "
                                         r"the records of one run need .* of host memory"):
        sd.simulate(PROBLEM, optimizer, key=0, steps=10**9)
    most = int(1e9 // (2 * per_record)) - 1  # the longest run whose records fit twice (kept, copied) in 1 GB
    engine.check_records(engine.record_count(most, 1) * per_record, runs=1, steps=most, record_every=1)
    with pytest.raises(ValueError, match=rf"steps={most + 1} with record_every=1"):
        engine.check_records(engine.record_count(most + 1, 1) * per_record, runs=1, steps=most + 1, record_every=1)


def test_the_calls_of_a_long_run_are_planned_as_they_are_taken():
    # A billion steps recorded at every step: the first call and the last are planned at
    # once, without laying out the billion records (which took minutes and gigabytes).
    from specdyn.simulate import plan_calls

    record, count = next(plan_calls(10**9, 1, budget=64))
    assert record.all() and count.tolist() == [1] * 32
    (record, count), = plan_calls(10**9, 1, budget=64, start=10**9 - 5)
    assert record.tolist() == [True] * 6 + [False] * 26 and count.tolist() == [1] * 5 + [0] * 27


def test_key_is_a_raw_prng_key_or_an_int_seed():
    by_seed = sd.simulate(PROBLEM, sd.gd(0.1), key=3, steps=2)
    by_key = sd.simulate(PROBLEM, sd.gd(0.1), key=jax.random.PRNGKey(3), steps=2)
    np.testing.assert_array_equal(by_seed["loss"], by_key["loss"])
    np.testing.assert_array_equal(by_seed["params"]["W"], by_key["params"]["W"])
    for bad, shown in [("0", "key='0'"), (True, "key=True"), (1.5, "key=1.5"),
                       (jnp.zeros(3), "key=an array of shape (3,) and dtype float32"),
                       (jax.random.key(0), "a typed key of dtype key<fry>; pass jax.random.key_data(key)")]:
        with pytest.raises(ValueError, match=re.escape(shown)):
            sd.simulate(PROBLEM, sd.gd(0.1), key=bad, steps=2)


def test_simulate_rejects_non_problem_and_non_optimizer():
    with pytest.raises(ValueError, match="@sd.problem"):
        sd.simulate(object(), sd.gd(0.1), key=jax.random.PRNGKey(0), steps=1)
    with pytest.raises(ValueError, match="GradientTransformation"):
        sd.simulate(PROBLEM, "gd", key=jax.random.PRNGKey(0), steps=1)


def test_problem_is_a_pytree_with_static_shapes_and_data_floats():
    leaves, treedef = jax.tree.flatten(PROBLEM)
    assert static_fields(PROBLEM) == ("rows", "cols", "samples")
    assert data_fields(PROBLEM) == ("condition", "noise", "init_scale")
    assert leaves == [10.0, 0.1, 0.0]
    rebuilt = jax.tree.unflatten(treedef, [jnp.asarray(2.0)] * 3)
    assert rebuilt.rows == 5 and float(rebuilt.noise) == 2.0
    # a data field vmaps without touching the shapes
    batched = jax.tree.unflatten(treedef, [jnp.ones(3) * 10, jnp.asarray([0.0, 0.1, 0.2]), jnp.zeros(3)])
    losses = jax.vmap(lambda p: p.loss(p.init(jax.random.PRNGKey(0)), p.sample(jax.random.PRNGKey(1))))(batched)
    assert losses.shape == (3,)


def test_problem_validation_names_field_and_value():
    with pytest.raises(ValueError, match=r"noise must be >= 0, got noise=-1"):
        sd.problems.MatrixLeastSquares(noise=-1.0)
    with pytest.raises(ValueError, match="rows"):
        sd.problems.MatrixLeastSquares(rows=0)
    with pytest.raises(ValueError, match="declare it static"):
        sd.problems.MatrixLeastSquares(noise="high")
    with pytest.raises(ValueError, match="noise must be >= 0"):
        dataclasses.replace(PROBLEM, noise=-0.5)


def test_problem_decorator_rejects_fields_named_like_methods():
    with pytest.raises(TypeError, match="loss_type"):

        @sd.problem
        class Bad:
            loss: str = sd.static("squared")

            def init(self, key):
                return {}


# ------------------------------------------------------------------ the engine: compiles once


def test_later_calls_compile_nothing():
    problem = sd.problems.MatrixLeastSquares(rows=7, cols=3, samples=9)  # shapes no other test uses
    first = sd.simulate(problem, sd.spectral_gd(0.05, method="svd"), key=jax.random.PRNGKey(0), steps=30,
                        record_every=5)
    given = problem.sample(jax.random.PRNGKey(9))
    other_data = dict(given, Y=given["Y"] + 1.0)
    sd.simulate(problem, sd.spectral_gd(0.05, method="svd"), key=jax.random.PRNGKey(0), steps=3, data=given)
    with count_compiles() as compiles:
        lr = sd.simulate(problem, sd.spectral_gd(0.02, method="svd"), key=jax.random.PRNGKey(0), steps=30,
                         record_every=5)
        seed = sd.simulate(problem, sd.get_optimizer("specgd", 0.05, method="svd"), key=jax.random.PRNGKey(4),
                           steps=30, record_every=5)
        steps = sd.simulate(problem, sd.spectral_gd(0.05, method="svd"), key=jax.random.PRNGKey(0), steps=47,
                            record_every=5)
        every = sd.simulate(problem, sd.spectral_gd(0.05, method="svd"), key=jax.random.PRNGKey(0), steps=100,
                            record_every=1)  # 101 records: several program calls
        field = sd.simulate(dataclasses.replace(problem, noise=0.3, condition=3.0),
                            sd.spectral_gd(0.05, method="svd"), key=jax.random.PRNGKey(0), steps=30, record_every=5)
        data = sd.simulate(problem, sd.spectral_gd(0.05, method="svd"), key=jax.random.PRNGKey(0), steps=3,
                           data=other_data)
    assert compiles == []
    # and each of them computed what it was asked
    assert not np.allclose(lr["loss"], first["loss"]) and not np.allclose(seed["loss"], first["loss"])
    np.testing.assert_array_equal(steps["step"], [*range(0, 46, 5), 47])
    np.testing.assert_allclose(steps["loss"][:7], first["loss"], rtol=1e-6)
    np.testing.assert_allclose(every["loss"][::5][:7], first["loss"], rtol=1e-6)
    assert every["loss"].shape == (101,) and not np.allclose(field["loss"], first["loss"])
    params0 = problem.init(jax.random.split(jax.random.PRNGKey(0))[0])
    np.testing.assert_allclose(data["loss"][0], problem.loss(params0, other_data), rtol=1e-6)


def test_a_plain_optax_transformation_is_compiled_per_object():
    problem = sd.problems.MatrixLeastSquares(rows=7, cols=3, samples=10)
    tx = optax.sgd(0.1)
    a = sd.simulate(problem, tx, key=jax.random.PRNGKey(0), steps=6, record_every=2)
    with count_compiles() as compiles:
        b = sd.simulate(problem, tx, key=jax.random.PRNGKey(1), steps=9, record_every=3)
    assert compiles == []
    np.testing.assert_allclose(a["loss"], sd.simulate(problem, sd.gd(0.1), key=jax.random.PRNGKey(0), steps=6,
                                                      record_every=2)["loss"], rtol=1e-6)
    assert b["loss"].shape == (4,)


@pytest.mark.parametrize("name", sorted(sd.OPTIMIZERS))
def test_engine_rate_as_data_equals_the_float_rate_loop_in_float64(name):
    with jax.enable_x64(True):
        problem = sd.problems.MatrixLeastSquares(rows=5, cols=4, samples=12, noise=0.1)
        lr = {"gd": 0.3, "adam": 0.01, "shampoo": 0.1}.get(name, 0.02)
        key = jax.random.PRNGKey(3)
        out = sd.simulate(problem, sd.get_optimizer(name, lr), key=key, steps=20, record_every=4)
        ref = reference_loop(problem, sd.get_optimizer(name, lr), key, 20, 4)
        assert out["loss"].dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out["loss"]), ref, rtol=1e-6)


def test_simulate_under_jit_and_vmap_runs_as_traced_code():
    key = jax.random.PRNGKey(2)

    @jax.jit
    def losses(lrs):
        return jax.vmap(lambda lr: sd.simulate(PROBLEM, sd.gd(lr), key=key, steps=11, record_every=5)["loss"])(lrs)

    got = losses(jnp.asarray([0.1, 0.3]))
    for i, lr in enumerate([0.1, 0.3]):
        want = sd.simulate(PROBLEM, sd.gd(lr), key=key, steps=11, record_every=5)["loss"]
        np.testing.assert_allclose(got[i], want, rtol=1e-5)


# ------------------------------------------------------------------ stochastic minibatches


@sd.problem
class MiniBatchRegression:
    """Linear regression whose gradient steps see a random minibatch (``batch``)."""

    samples: int = sd.static(24)
    batch_size: int = sd.static(6)
    noise: float = 0.1

    def init(self, key):
        return {"w": jnp.zeros(3)}

    def sample(self, key):
        kx, ke = jax.random.split(key)
        x = jax.random.normal(kx, (self.samples, 3))
        return {"X": x, "y": x @ jnp.asarray([1.0, -2.0, 0.5]) + self.noise * jax.random.normal(ke, (self.samples,))}

    def batch(self, data, key):
        idx = jax.random.choice(key, self.samples, (self.batch_size,), replace=False)
        return {"X": data["X"][idx], "y": data["y"][idx]}

    def loss(self, params, data):
        r = data["X"] @ params["w"] - data["y"]
        return 0.5 * jnp.mean(r * r)


def test_minibatches_are_drawn_from_the_run_key_and_step():
    problem = MiniBatchRegression()
    key = jax.random.PRNGKey(5)
    out = sd.simulate(problem, sd.gd(0.1), key=key, steps=13, record_every=4)
    # the same run written the obvious way
    init_key, data_key = jax.random.split(key)
    data, params = problem.sample(data_key), problem.init(init_key)
    grad = jax.jit(jax.grad(problem.loss))
    want = []
    for t in range(14):
        if t in (0, 4, 8, 12, 13):
            want.append(float(problem.loss(params, data)))  # records use the full data
        batch = problem.batch(data, jax.random.fold_in(key, t))
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grad(params, batch))
    np.testing.assert_allclose(np.asarray(out["loss"]), want[:5], rtol=1e-5)
    full = sd.simulate(dataclasses.replace(problem, batch_size=24), sd.gd(0.1), key=key, steps=13, record_every=4)
    assert not np.allclose(out["loss"][1:], full["loss"][1:])  # the batches mattered
    ds = sd.sweep(problem, optimizers=["gd"], learning_rates=[0.1], seeds=[5], steps=13, record_every=4,
                  progress=False)
    np.testing.assert_allclose(ds["loss"].values.ravel(), np.asarray(out["loss"]), rtol=1e-5)
