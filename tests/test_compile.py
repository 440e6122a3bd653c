"""specdyn/_compile.py: -O1 on CPU unless the user chose a level; usable under transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specdyn._compile import compiler_options, jit


def test_options_on_cpu_and_the_users_level_wins(monkeypatch):
    monkeypatch.delenv("SPECDYN_CPU_OPT_LEVEL", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    assert jax.default_backend() == "cpu"
    assert compiler_options() == {"xla_backend_optimization_level": 1}
    monkeypatch.setenv("SPECDYN_CPU_OPT_LEVEL", "3")
    assert compiler_options() == {"xla_backend_optimization_level": 3}
    monkeypatch.setenv("SPECDYN_CPU_OPT_LEVEL", "default")
    assert compiler_options() is None
    monkeypatch.setenv("SPECDYN_CPU_OPT_LEVEL", "1")
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    assert compiler_options() is None
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv("SPECDYN_CPU_OPT_LEVEL", "fast")
    with pytest.raises(ValueError, match="SPECDYN_CPU_OPT_LEVEL='fast'"):
        compiler_options()


def test_jit_at_top_level_and_under_transformations_gives_the_same_values():
    @jit
    def f(x):
        return jnp.linalg.svd(x, compute_uv=False) + jnp.sum(jnp.tanh(x) ** 2)

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 4))
    want = np.stack([np.linalg.svd(np.asarray(a), compute_uv=False) + np.sum(np.tanh(np.asarray(a)) ** 2) for a in x])
    np.testing.assert_allclose(f(x[0]), want[0], rtol=1e-5)  # top level: compiled with the options
    np.testing.assert_allclose(jax.vmap(f)(x), want, rtol=1e-5)  # under vmap and an outer jit: traced in
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(x), want, rtol=1e-5)
    assert f.__name__ == "f"
    np.testing.assert_allclose(f.lower(x[0]).compile()(x[0]), want[0], rtol=1e-5)  # ahead of time: the same program
