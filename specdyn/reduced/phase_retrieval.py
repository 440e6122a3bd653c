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
Past the first switching: the sliding (Filippov) solution. Write g_a = (a/m)h_a,
g_b = (λb/m)h_b, g_c = (c/m)h_c with the switching functions h_a = T + 2(p−1), h_b = T + 2λq,
h_c = T + 2r, so sign(g_i) = sign(x_i)·sign(h_i) for x = (a, b, c) ≥ 0. Each surface h_i = 0 is
attracting (∂h_a/∂a = 6a/m, ∂h_b/∂b = 6λb/m, ∂h_c/∂c = 2dc/m, all > 0 for x_i > 0), and so is x_i = 0
where h_i > 0; on such a surface the Filippov solution slides: the coefficient moves with the
velocity in [−1, 1] that keeps it on the surface (the equivalent control), and the sign map
chatters around it with amplitude η, its average following the sliding solution with an
O(η) error. :func:`sliding_flow` computes that solution by the boundary-layer
regularisation sign(s) → sat(s/ε) = clip(s/ε, −1, 1), i.e.

    ẋ_i = −sat(x_i/ε)·sat(h_i/ε),

a Lipschitz ODE whose solution converges to the Filippov solution as ε → 0 (error O(ε) on
the sliding surfaces, Utkin's boundary layer); it is solved with diffrax (Tsit5, PID).
The regularisation needs x_i ≫ ε at the start (α ≫ ε), else the start is slowed.

Note c is the coefficient of U₃Pᵀ, i.e. ‖WP‖_F/sqrt(d−2), and g_c is its per-direction
gradient (∂L/∂c = (d−2) g_c).
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp

from specdyn._compile import jit


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


@functools.partial(jit, static_argnames=("steps", "record_every", "sign"))
def _map(problem, lr, steps, record_every, sign):
    # one compiled program per (problem shapes, steps, record_every, sign); lr is data
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
    return _map(problem, lr, steps=steps, record_every=record_every, sign=False)


def spectral_map(problem, lr, steps, record_every=1):
    """SpecGD sign map (a,b,c) ← (a,b,c) − lr·sign(g); same recording as reduced_gd_map."""
    return _map(problem, lr, steps=steps, record_every=record_every, sign=True)


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
    """SpecGD flow (ȧ,ḃ,ċ) = −sign(g) taken literally (discontinuous): valid until a coefficient
    reaches a zero of its g; after that the solver chatters and stops at ``max_steps``. Use
    :func:`sliding_flow` to continue past that point."""
    return _flow(problem, t_save, True, rtol, atol, max_steps)


def switching_functions(problem, a, b, c):
    """(h_a, h_b, h_c) with g_a = (a/m)h_a, g_b = (λb/m)h_b, g_c = (c/m)h_c."""
    m, d, lam = _consts(problem)
    p, q, r = a**2 / m, b**2 / m, c**2 / m
    t = (p - 1.0) + lam * q + (d - 2) * r
    return t + 2 * (p - 1.0), t + 2 * lam * q, t + 2 * r


def sliding_flow(problem, t_save, eps=1e-4, rtol=1e-7, atol=1e-9, max_steps=100_000, solver=None):
    """The Filippov (sliding-mode) solution of the SpecGD flow ẋ = −sign(g(x)), x = (a, b, c),
    valid for all times: ẋ_i = −sat(x_i/ε)·sat(h_i/ε) (module docstring), solved with diffrax
    (default solver Kvaerno5, implicit: on a sliding surface the regularised ODE is stiff, with
    rate ~1/ε, and an explicit solver needs ~ε-sized steps there). Needs float64.

    Compare with :func:`spectral_map` at t = lr·step: the map chatters around the sliding
    solution with amplitude lr. Returns a, b, c, t, loss and alignment at ``t_save``.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps=}")
    t_save = jnp.asarray(t_save, dtype=jnp.result_type(float))
    sat = lambda s: jnp.clip(s / eps, -1.0, 1.0)  # noqa: E731

    def vf(t, y, args):
        h = switching_functions(problem, *y)
        return tuple(-sat(x) * sat(hx) for x, hx in zip(y, h))

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), diffrax.Kvaerno5() if solver is None else solver, t0=0.0,
        t1=t_save[-1], dt0=None, y0=_init(problem), saveat=diffrax.SaveAt(ts=t_save),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    out = {k: y for k, y in zip("abc", sol.ys)}
    out["t"] = t_save
    out["loss"] = reduced_loss(problem, out["a"], out["b"], out["c"])
    out["alignment"] = reduced_alignment(problem, out["a"], out["b"], out["c"])
    return out


def reduced_alignment(problem, a, b, c):
    """θᵀMθ/‖M‖_F on the manifold: a²/sqrt(a⁴ + b⁴ + (d−2)c⁴)."""
    d = problem.dim
    return a**2 / jnp.sqrt(a**4 + b**4 + (d - 2) * c**4)
