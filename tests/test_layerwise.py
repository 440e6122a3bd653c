"""Layerwise criterion nr(G) vs st(A) against hand-computed activations and gradients (numpy SVD)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdyn as sd
from specdyn.layerwise import (
    incoming_activations,
    layerwise_criterion,
    layerwise_metrics,
    matrix_paths,
)


def np_stable_rank(a):
    s = np.linalg.svd(np.asarray(a, np.float64), compute_uv=False)
    return np.sum(s**2) / s[0] ** 2


def np_nuclear_rank(g):
    s = np.linalg.svd(np.asarray(g, np.float64), compute_uv=False)
    return np.sum(s) ** 2 / np.sum(s**2)


def test_linear_model_matches_stable_and_nuclear_rank():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((6, 40)) * np.linspace(3, 0.1, 6)[:, None]
        y = rng.standard_normal((4, 40))
        w = rng.standard_normal((4, 6))
        loss = lambda p, a, y: 0.5 * jnp.sum((p["W"] @ a - y) ** 2) / a.shape[1]
        out = layerwise_criterion(loss, {"W": jnp.asarray(w)}, jnp.asarray(a), jnp.asarray(y))
        grad = (w @ a - y) @ a.T / a.shape[1]
        r = out["['W']"]
        np.testing.assert_allclose(float(r["stable_rank"]), np_stable_rank(a), rtol=1e-10)
        np.testing.assert_allclose(float(r["nuclear_rank"]), np_nuclear_rank(grad), rtol=1e-10)
        np.testing.assert_allclose(float(r["ratio"]), np_nuclear_rank(grad) / np_stable_rank(a),
                                   rtol=1e-10)


@pytest.mark.parametrize("layout", ["W@x", "x@W"])
def test_two_layer_mlp_matches_hand_computed_reference(layout):
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        d, h, o, n = 5, 7, 3, 30
        x = rng.standard_normal((d, n))
        y = rng.standard_normal((o, n))
        w1 = rng.standard_normal((h, d)) / np.sqrt(d)
        w2 = rng.standard_normal((o, h)) / np.sqrt(h)
        if layout == "W@x":
            params = {"W1": jnp.asarray(w1), "W2": jnp.asarray(w2)}
            loss = lambda p, x, y: 0.5 * jnp.mean(
                jnp.sum((p["W2"] @ jax.nn.relu(p["W1"] @ x) - y) ** 2, 0))
            args = (jnp.asarray(x), jnp.asarray(y))
        else:  # row-major batches, weights (in, out)
            params = {"W1": jnp.asarray(w1.T), "W2": jnp.asarray(w2.T)}
            loss = lambda p, x, y: 0.5 * jnp.mean(
                jnp.sum((jax.nn.relu(x @ p["W1"]) @ p["W2"] - y) ** 2, 1))
            args = (jnp.asarray(x.T), jnp.asarray(y.T))
        out = layerwise_criterion(loss, params, *args)
        # explicit forward and backward pass
        pre = w1 @ x
        a2 = np.maximum(pre, 0)
        d2 = (w2 @ a2 - y) / n
        g2 = d2 @ a2.T
        g1 = ((w2.T @ d2) * (pre > 0)) @ x.T
        ref = {"['W1']": (np_nuclear_rank(g1), np_stable_rank(x)),
               "['W2']": (np_nuclear_rank(g2), np_stable_rank(a2))}
        assert set(out) == set(ref)
        for key, (nr, st) in ref.items():
            np.testing.assert_allclose(float(out[key]["nuclear_rank"]), nr, rtol=1e-10)
            np.testing.assert_allclose(float(out[key]["stable_rank"]), st, rtol=1e-10)


def test_works_under_jit_and_matches_eager():
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"W1": jax.random.normal(k1, (8, 4)), "b": jnp.zeros(8), "W2": jax.random.normal(k2, (1, 8))}
    x = jax.random.normal(k3, (4, 50))
    loss = lambda p, x: jnp.mean((p["W2"] @ jnp.tanh(p["W1"] @ x + p["b"][:, None])) ** 2)
    eager = layerwise_criterion(loss, params, x)
    jitted = jax.jit(lambda p, x: layerwise_criterion(loss, p, x))(params, x)
    assert set(eager) == {"['W1']", "['W2']"}  # the bias is skipped
    for k in eager:
        for m in ("nuclear_rank", "stable_rank", "ratio"):
            np.testing.assert_allclose(jitted[k][m], eager[k][m], rtol=1e-5)


def test_shared_matrix_concatenates_and_embedding_is_nan():
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        w = jnp.asarray(rng.standard_normal((3, 4)))
        emb = jnp.asarray(rng.standard_normal((10, 4)))
        x1, x2 = rng.standard_normal((4, 9)), rng.standard_normal((4, 5)) * 3
        tokens = jnp.array([1, 2, 2, 7])

        def loss(p, x1, x2, tokens):
            e = p["emb"][tokens]  # gathered: (4 tokens, 4 features)
            return jnp.sum((p["W"] @ x1) ** 2) + jnp.sum(jnp.sin(p["W"] @ x2)) + jnp.sum(e @ p["W"].T)

        params = {"W": w, "emb": emb}
        out = layerwise_criterion(loss, params, jnp.asarray(x1), jnp.asarray(x2), tokens)
        e = np.asarray(emb)[np.asarray(tokens)]
        a = np.concatenate([x1, x2, e.T], axis=1)  # three uses, all along W's input axis
        np.testing.assert_allclose(float(out["['W']"]["stable_rank"]), np_stable_rank(a), rtol=1e-10)
        assert np.isnan(float(out["['emb']"]["stable_rank"]))
        assert np.isfinite(float(out["['emb']"]["nuclear_rank"]))


def test_reports_every_matrix_of_a_transformer_block():
    from specdyn.experiments.networks import TransformerBlock

    block = TransformerBlock(width=16, heads=2, key=jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (12, 16))
    loss = lambda b, x: jnp.mean(b(x) ** 2)
    out = eqx.filter_jit(lambda b, x: layerwise_criterion(loss, b, x))(block, x)
    paths = matrix_paths(block)
    assert sorted(out) == sorted(paths) and len(paths) == 6  # W_Q, W_K, W_V, W_O, MLP in, MLP out
    for v in out.values():
        assert np.isfinite(float(v["stable_rank"])) and np.isfinite(float(v["nuclear_rank"]))
    # W_Q's incoming activation is LayerNorm(x) (features × tokens)
    acts = incoming_activations(loss, block, x)
    ln = jax.vmap(block.norm1)(x)
    q_path = next(p for p in paths if "query" in p)
    np.testing.assert_allclose(acts[q_path], ln.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(out[q_path]["stable_rank"]), np_stable_rank(ln), rtol=1e-4)


@sd.problem
class TinyMLP:
    """y = W2 relu(W1 x) regression on a fixed Gaussian data set, logging the criterion."""

    dim: int = sd.static(4)
    width: int = sd.static(8)
    samples: int = sd.static(32)
    metric_dims = {"nuclear_rank": ("layer",), "stable_rank": ("layer",),  # noqa: RUF012
                   "criterion_ratio": ("layer",)}

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {"W1": jax.random.normal(k1, (self.width, self.dim)) / jnp.sqrt(self.dim),
                "W2": jax.random.normal(k2, (1, self.width)) / jnp.sqrt(self.width)}

    def sample(self, key):
        x = jax.random.normal(key, (self.dim, self.samples))
        return {"x": x, "y": jnp.sin(x[:1])}

    def loss(self, params, data):
        out = params["W2"] @ jax.nn.relu(params["W1"] @ data["x"])
        return 0.5 * jnp.mean(jnp.sum((out - data["y"]) ** 2, 0))

    def metrics(self, params, data):
        return {"loss": self.loss(params, data), **layerwise_metrics(self.loss, params, data)}


def test_layerwise_metrics_inside_simulate():
    prob = TinyMLP()
    key = jax.random.PRNGKey(3)
    run = sd.simulate(prob, sd.gd(0.1), key=key, steps=6, record_every=3)
    assert run["nuclear_rank"].shape == (3, 2) and run["stable_rank"].shape == (3, 2)
    init_key, data_key = jax.random.split(key)
    params, data = prob.init(init_key), prob.sample(data_key)
    ref = layerwise_criterion(prob.loss, params, data)
    assert matrix_paths(params) == list(ref) == ["['W1']", "['W2']"]
    for i, k in enumerate(ref):
        np.testing.assert_allclose(run["nuclear_rank"][0, i], ref[k]["nuclear_rank"], rtol=1e-4)
        np.testing.assert_allclose(run["stable_rank"][0, i], ref[k]["stable_rank"], rtol=1e-4)
    # W1's input is the fixed data set, so its stable rank does not change during training
    np.testing.assert_allclose(run["stable_rank"][:, 0], np_stable_rank(data["x"]), rtol=1e-4)
