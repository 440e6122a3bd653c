"""Reduced (a, b, c) dynamics of phase retrieval with a spiked covariance.

Derivation (re-derived here; loss with the ¼). Σ = θθᵀ + λvvᵀ + PPᵀ with Q = [θ, v, P]
orthogonal, M = WᵀW/m, D = M − θθᵀ, L = ¼[(tr DΣ)² + 2 tr(DΣDΣ)]. Then
∂L/∂D = ½ T Σ + ΣDΣ with T = tr DΣ, and ∇_W L = (2/m) W (½TΣ + ΣDΣ) = (1/m) W (TΣ + 2ΣDΣ).

On the manifold W = a u₁θᵀ + b u₂vᵀ + c U₃Pᵀ (u₁, u₂, U₃ orthonormal columns),
with p = a²/m, q = b²/m, r = c²/m:

    D  = (p−1)θθᵀ + q vvᵀ + r PPᵀ,
    T  = (p−1) + λq + (d−2)r,
    L  = ¼[T² + 2((p−1)² + λ²q² + (d−2)r²)],
    ∇_W L = g_a u₁θᵀ + g_b u₂vᵀ + g_c U₃Pᵀ,
    g_a = (a/m)(T + 2(p−1)),  g_b = (λb/m)(T + 2λq),  g_c = (c/m)(T + 2r).

So the manifold is invariant under GD, W ← W − η∇L, which reads (a,b,c) ← (a,b,c) − η(g_a,g_b,g_c);
the gradient flow is (ȧ, ḃ, ċ) = −(g_a, g_b, g_c) (time t = η·step). The polar factor of
∇_W L is sign(g_a)u₁θᵀ + sign(g_b)u₂vᵀ + sign(g_c)U₃Pᵀ, so SpecGD is the sign map
(a,b,c) ← (a,b,c) − η sign(g_a, g_b, g_c); its flow is ȧ = −sign(g_a) etc. (a discontinuous ODE:
once a coefficient reaches a zero of its g it chatters with amplitude η in the map; the
full-matrix polar factor is then ill-conditioned, since that singular value of ∇L is ~0).
Note c is the coefficient of U₃Pᵀ, i.e. ‖WP‖_F/sqrt(d−2), and g_c is its per-direction
gradient (∂L/∂c = (d−2) g_c).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp


def _consts(problem):
    if problem.covariance != "spiked":
        raise ValueError(
            f"covariance={problem.covariance!r}: the reduced dynamics need covariance='spiked'"
        )
    return problem.m, problem.dim, problem.spike


def reduced_gradient(problem, a, b, c):
    """(g_a, g_b, g_c): coefficients of ∇_W L on u₁θᵀ, u₂vᵀ, U₃Pᵀ."""
    m, d, lam = _consts(problem)
    p, q, r = a**2 / m, b**2 / m, c**2 / m
    t = (p - 1.0) + lam * q + (d - 2) * r
    return (a / m) * (t + 2 * (p - 1.0)), (lam * b / m) * (t + 2 * lam * q), (c / m) * (t + 2 * r)


def reduced_loss(problem, a, b, c):
    """L on the manifold (population, without the ¼σ² noise floor)."""
    m, d, lam = _consts(problem)
    p, q, r = a**2 / m, b**2 / m, c**2 / m
    t = (p - 1.0) + lam * q + (d - 2) * r
    return 0.25 * (t**2 + 2 * ((p - 1.0) ** 2 + lam**2 * q**2 + (d - 2) * r**2))


def _init(problem):
    a0 = jnp.asarray(problem.init_scale, dtype=jnp.result_type(float))
    return a0, a0, a0


def _map(problem, lr, steps, record_every, sign):
    def step(abc, _):
        g = reduced_gradient(problem, *abc)
        if sign:
            g = tuple(jnp.sign(x) for x in g)
        return tuple(x - lr * gx for x, gx in zip(abc, g)), abc

    _, hist = jax.lax.scan(step, _init(problem), None, length=steps)
    idx = jnp.arange(0, steps, record_every)
    out = {k: h[idx] for k, h in zip("abc", hist)}
    out["step"] = idx
    out["loss"] = reduced_loss(problem, out["a"], out["b"], out["c"])
    return out


def reduced_gd_map(problem, lr, steps, record_every=1):
    """GD on (a, b, c): records at steps 0, r, 2r, ... < steps (before the update)."""
    return _map(problem, lr, steps, record_every, sign=False)


def spectral_map(problem, lr, steps, record_every=1):
    """SpecGD sign map (a,b,c) ← (a,b,c) − lr·sign(g); same recording as reduced_gd_map."""
    return _map(problem, lr, steps, record_every, sign=True)


def _flow(problem, t_save, sign, rtol, atol, max_steps):
    t_save = jnp.asarray(t_save, dtype=jnp.result_type(float))

    def vf(t, y, args):
        g = reduced_gradient(problem, *y)
        if sign:
            g = tuple(jnp.sign(x) for x in g)
        return tuple(-x for x in g)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), diffrax.Tsit5(), t0=0.0, t1=t_save[-1], dt0=None,
        y0=_init(problem), saveat=diffrax.SaveAt(ts=t_save),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    out = {k: y for k, y in zip("abc", sol.ys)}
    out["t"] = t_save
    out["loss"] = reduced_loss(problem, out["a"], out["b"], out["c"])
    return out


def gradient_flow(problem, t_save, rtol=1e-8, atol=1e-10, max_steps=100_000):
    """Gradient flow (ȧ,ḃ,ċ) = −g solved with Tsit5 + PID; compare with GD at t = lr·step."""
    return _flow(problem, t_save, False, rtol, atol, max_steps)


def spectral_flow(problem, t_save, rtol=1e-6, atol=1e-9, max_steps=100_000):
    """SpecGD flow (ȧ,ḃ,ċ) = −sign(g) (discontinuous; valid until a coefficient hits a zero of g)."""
    return _flow(problem, t_save, True, rtol, atol, max_steps)
