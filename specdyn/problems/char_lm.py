"""Character-level causal transformer language model (PAPERS.md §3) as a problem.

:class:`CharLM` trains :class:`CharTransformer` (equinox) on a token array with
stochastic minibatches through the engine's ``batch`` protocol: each step's gradient
is taken on random windows of the training split drawn with ``jax.random`` from
``fold_in(run_key, step)`` (so every optimizer of one seed sees the same batches).
Its data (:func:`char_lm_data`) holds the training tokens, a fixed validation set
and a fixed probe batch of training windows; records (which use the full data) give
the loss on the probe batch, the validation loss and nr(G)/st(A) of every matrix
(:func:`specdyn.layerwise.layerwise_criterion` on the probe batch).

Sizes do not pad (:mod:`specdyn.buckets`): LayerNorm means over the width and the
attention heads split it, so zero-padded units would change the model, and the random
training windows depend on ``seq`` and ``batch_size``.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdyn.layerwise import layerwise_criterion, matrix_paths
from specdyn.problem import problem, require, static
from specdyn.problems.activations import activate

__all__ = ["CharLM", "CharTransformer", "TransformerBlock", "char_lm_data", "lm_label"]


class TransformerBlock(eqx.Module):
    """Pre-norm causal transformer block: x + Attn(LN x), then + W_out GELU(W_in LN x).

    Takes one sequence (tokens × width); matrices: W_Q, W_K, W_V, W_O (in
    ``attention``), ``mlp_in`` (4·width × width) and ``mlp_out``; no biases.
    """

    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp_in: eqx.nn.Linear
    mlp_out: eqx.nn.Linear

    def __init__(self, width: int, heads: int, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(width)
        self.attention = eqx.nn.MultiheadAttention(heads, width, key=k1)
        self.norm2 = eqx.nn.LayerNorm(width)
        self.mlp_in = eqx.nn.Linear(width, 4 * width, use_bias=False, key=k2)
        self.mlp_out = eqx.nn.Linear(4 * width, width, use_bias=False, key=k3)

    def __call__(self, x):
        h = jax.vmap(self.norm1)(x)
        mask = jnp.tril(jnp.ones((x.shape[0], x.shape[0]), bool))
        x = x + self.attention(h, h, h, mask=mask)
        h = jax.vmap(self.norm2)(x)
        return x + jax.vmap(lambda t: self.mlp_out(activate("gelu", self.mlp_in(t))))(h)


class CharTransformer(eqx.Module):
    """Causal byte-level transformer: token + learned position embedding, pre-norm
    :class:`TransformerBlock` s, final LayerNorm, linear head to ``vocab`` logits."""

    embed: eqx.nn.Embedding
    position: jax.Array  # shape=(seq, width)
    blocks: list
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, *, layers: int, width: int, heads: int, seq: int, key, vocab: int = 256):
        ke, kp, kh, *kb = jax.random.split(key, 3 + layers)
        self.embed = eqx.nn.Embedding(vocab, width, key=ke)
        self.position = 0.02 * jax.random.normal(kp, (seq, width))
        self.blocks = [TransformerBlock(width, heads, key=k) for k in kb]
        self.norm = eqx.nn.LayerNorm(width)
        self.head = eqx.nn.Linear(width, vocab, use_bias=False, key=kh)

    def __call__(self, tokens):
        x = jax.vmap(self.embed)(tokens) + self.position[: tokens.shape[0]]
        for block in self.blocks:
            x = block(x)
        return jax.vmap(lambda t: self.head(self.norm(t)))(x)


def lm_loss(model, windows):
    """Mean next-token cross-entropy of ``model`` on windows (count × (seq + 1))."""
    logits = jax.vmap(model)(windows[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:]).mean()


_BLOCK_NAMES = (("query", "W_Q"), ("key_proj", "W_K"), ("value", "W_V"), ("output", "W_O"),
                ("mlp_in", "mlp_in"), ("mlp_out", "mlp_out"))


def block_matrix_name(path: str) -> str:
    for key, name in _BLOCK_NAMES:
        if key in path:
            return name
    return path


def lm_label(path: str) -> str:
    """Readable name of a matrix of :class:`CharTransformer` from its keystr path."""
    if ".blocks[" in path:
        layer = path.split(".blocks[")[1].split("]")[0]
        return f"L{layer}.{block_matrix_name(path)}"
    return {".embed.weight": "embedding", ".head.weight": "head", ".position": "position"}.get(
        path, path)


@functools.cache
def _static_model(layers, width, heads, seq, vocab):
    """The non-array part of a :class:`CharTransformer` (built abstractly: no compute)."""
    shapes = eqx.filter_eval_shape(
        lambda k: CharTransformer(layers=layers, width=width, heads=heads, seq=seq, vocab=vocab, key=k),
        jax.random.PRNGKey(0))
    return eqx.partition(shapes, eqx.is_inexact_array)


def windows_at(tokens, starts, seq: int):
    """``tokens[start : start + seq + 1]`` for each start: (len(starts), seq + 1)."""
    return tokens[starts[:, None] + jnp.arange(seq + 1)]


def char_lm_data(tokens, *, seq: int, batch_size: int, seed: int = 0, val_fraction: float = 0.1,
                 val_windows: int | None = None):
    """Data of :class:`CharLM` from a 1-D token array: the first ``1 - val_fraction``
    of it is the training split (``tokens``), ``val`` holds ``val_windows`` (default
    4 · batch_size) fixed windows of the rest and ``windows`` a fixed probe batch of
    ``batch_size`` training windows (the records' loss and criterion batch); both are
    drawn on the host with ``numpy.random.default_rng([seed, 0])`` and ``[seed, 1]``."""
    tokens = np.asarray(tokens).astype(np.int32)
    split = int((1.0 - val_fraction) * len(tokens))
    train, val = tokens[:split], tokens[split:]
    require(len(train) > seq + 1 and len(val) > seq + 1, "tokens", len(tokens),
            f"give both splits more than seq + 1 = {seq + 1} tokens")
    count = 4 * batch_size if val_windows is None else val_windows

    def draw(rng, source, n):
        start = rng.integers(0, source.shape[0] - seq - 1, size=n)
        return source[start[:, None] + np.arange(seq + 1)]

    return {"tokens": jnp.asarray(train),
            "val": jnp.asarray(draw(np.random.default_rng([seed, 0]), val, count)),
            "windows": jnp.asarray(draw(np.random.default_rng([seed, 1]), train, batch_size))}


@problem
class CharLM:
    """Causal character transformer language model with random-window minibatches.

    Data (:func:`char_lm_data`): ``tokens`` (training split, int32), ``val`` (fixed
    validation windows) and ``windows`` (the batch the loss is taken on: the fixed
    probe batch in the full data, a fresh minibatch from :meth:`batch` in each step).
    Parameters: the inexact arrays of a :class:`CharTransformer` (``eqx.filter``
    pytree; the static part is rebuilt from the static fields). ``batch_size`` is
    the minibatch size (named so as not to shadow the ``batch`` method).
    """

    layers: int = static(1)
    width: int = static(32)
    heads: int = static(2)
    seq: int = static(32)
    batch_size: int = static(8)
    vocab: int = static(256)

    def __check_init__(self):
        for name in ("layers", "width", "heads", "seq", "batch_size", "vocab"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, name, v, "be a positive integer")
        require(self.width % self.heads == 0, "width", self.width, "be divisible by heads")

    def _static(self):
        return _static_model(self.layers, self.width, self.heads, self.seq, self.vocab)[1]

    def model(self, params) -> CharTransformer:
        """The :class:`CharTransformer` with these parameters."""
        return eqx.combine(params, self._static())

    def init(self, key):
        model = CharTransformer(layers=self.layers, width=self.width, heads=self.heads, seq=self.seq,
                                vocab=self.vocab, key=key)
        return eqx.filter(model, eqx.is_inexact_array)

    def batch(self, data, key):
        n = data["tokens"].shape[0]
        starts = jax.random.randint(key, (self.batch_size,), 0, n - self.seq - 1)
        return {**data, "windows": windows_at(data["tokens"], starts, self.seq)}

    def loss(self, params, data):
        return lm_loss(self.model(params), data["windows"])

    def matrix_labels(self) -> list[str]:
        """Readable names (:func:`lm_label`) along the metrics' ``matrix`` axis."""
        flat, _ = jax.tree_util.tree_flatten_with_path(jax.eval_shape(self.init, jax.random.PRNGKey(0)))
        return [lm_label(jax.tree_util.keystr(p)) for p, leaf in flat
                if leaf.ndim == 2 and jnp.issubdtype(leaf.dtype, jnp.inexact)]

    def metrics(self, params, data):
        crit = layerwise_criterion(lambda p, w: lm_loss(self.model(p), w), params, data["windows"])
        paths = matrix_paths(params)  # the order of the ``matrix`` axis
        return {"val_loss": lm_loss(self.model(params), data["val"]),
                **{k: jnp.stack([crit[p][k] for p in paths]) for k in ("nuclear_rank", "stable_rank")}}

    metric_dims = {"nuclear_rank": ("matrix",), "stable_rank": ("matrix",)}  # noqa: RUF012
