"""Low-rank matrix sensing with an overparameterized factor (PAPERS.md §4).

Ground truth XXᵀ with X ∈ R^{n×r}; X = Q diag(s) with Q a random orthonormal n×r basis
(from the data key) and singular values s linearly spaced from 1 down to 1/condition
(so σ(XXᵀ) = s², and σ_min(X) = 1/condition). The model is UUᵀ with U ∈ R^{n×k}, r ≤ k ≤ n,
and the loss is

    f(U) = ¼‖𝒜(UUᵀ) − y‖²,     y = 𝒜(XXᵀ),

with one of two measurement operators (static field ``operator``):

* ``"gaussian"``: 𝒜(Z)_i = ⟨A_i, Z⟩/sqrt(m), i = 1..m, with A_i = (G_i + G_iᵀ)/2 and G_i
  i.i.d. N(0, 1) entries (diagonal variance 1, off-diagonal ½), so E⟨A_i, Z⟩² = ‖Z‖²_F and
  E[𝒜*𝒜] = identity on symmetric matrices. The gradient is ∇f(U) = 𝒜*(𝒜(UUᵀ) − y) U with
  𝒜*(v) = Σ_i v_i A_i / sqrt(m).
* ``"population"``: 𝒜*𝒜 = identity exactly, f(U) = ¼‖UUᵀ − XXᵀ‖²_F (``measurements`` unused).

Memory rule: the gaussian operator is stored as the dense (m, n, n) array ``A``, applied as one
(m, n²) × n² product; sizes with m·n² > ``MAX_OPERATOR_ENTRIES`` (2²⁵ ≈ 3.4·10⁷ entries,
128 MiB in float32 per run) are refused at construction with a message naming ``dim`` and
``measurements`` (use the population operator, or fewer measurements / a smaller dim).

Initialization: U₀ = α·U_rand (α = ``init_scale``), U_rand with i.i.d. N(0, 1/k) entries, so
each row of U₀ has expected squared norm α². ``init_type="spectral"`` starts instead from
U₀ = U_spec + α·U_rand with U_spec = [V_r diag(sqrt(max(λ, 0))), 0] (n×k): the top-r eigenpairs
(λ, V_r) of 𝒜*(y) (= XXᵀ for the population operator) in the first r columns and zeros in the
other k − r, so for k > r those columns start α-small like a random init (the fair comparison
with small random init: the same α-small part, plus the rank-r spectral estimate).
``init_type="spectral_topk"`` uses the top-k eigenpairs instead (k − r columns start on noise
eigenvectors of 𝒜*(y) with O(1) size). Since ``init(key)`` sees no data, U_spec is stored
in the data dict (key ``"U_spec"``) and the factor is U = U_spec + params["U"]
(:meth:`MatrixSensing.factor`): a fixed shift, so every gradient — and every optimizer that
acts on gradients only (GD, SpecGD, Muon, Adam; not weight decay) — is that of U itself.

Metrics (V_X: orthonormal basis of span X; V_X⊥ its complement):

* ``test_error`` = ‖UUᵀ − XXᵀ‖_F / ‖XXᵀ‖_F;
* ``angle`` — the largest principal angle (radians) between span(X) and the column space of
  U's signal part U·W, where V_XᵀU = P Σ Wᵀ is a thin SVD (W ∈ R^{k×r}, the paper's
  decomposition U = UWWᵀ + UW⊥W⊥ᵀ); computed as arcsin‖V_X⊥ᵀ Q‖₂ with Q an orthonormal basis
  of span(UW), accurate for small angles. Equals ``principal_angles(U W, X)[-1]``;
* ``sigma_min_signal`` = σ_min(V_Xᵀ U) (r-th singular value);
* ``noise_norm`` = ‖V_X⊥ᵀ U‖₂ = ‖(I − V_X V_Xᵀ) U‖₂, the part of U outside span X.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdyn.problem import problem, require, static, true_size

__all__ = ["MAX_OPERATOR_ENTRIES", "MatrixSensing"]

MAX_OPERATOR_ENTRIES = 2**25  # m·n² entries of the dense gaussian operator, per run
_OPERATORS = ("gaussian", "population")
_INITS = ("random", "spectral", "spectral_topk")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@problem
class MatrixSensing:
    """¼‖𝒜(UUᵀ) − 𝒜(XXᵀ)‖², U ∈ R^{n×k}, X ∈ R^{n×r}; see the module docstring."""

    # dim, width and measurements may be zero-padded (sd.static(..., pad=True)): padded
    # rows of X, U and A and padded measurements (A_i = 0, y_i = 0) add nothing, and the
    # one normalisation, 1/sqrt(m), uses the true count. rank does not pad: the metrics'
    # QR and SVD of X would see zero columns as rank deficiency.
    dim: int = static(20, pad=True)  # n
    rank: int = static(2)  # r
    width: int = static(5, pad=True)  # k, r <= k <= n
    measurements: int = static(400, pad=True)  # m (gaussian operator)
    operator: str = static("gaussian")
    init_type: str = static("random")
    condition: float = 2.0  # κ = σ_max(X)/σ_min(X)
    init_scale: float = 1e-3  # α

    def __check_init__(self):
        require(_is_int(self.dim) and self.dim >= 1, "dim", self.dim, "be a positive integer")
        require(_is_int(self.rank) and 1 <= self.rank <= self.dim, "rank", self.rank,
                f"be an integer in [1, dim={self.dim}]")
        require(_is_int(self.width) and self.width >= self.rank, "width", self.width,
                f"be an integer >= rank={self.rank} (k >= r)")
        require(self.width <= self.dim, "width", self.width, f"be <= dim={self.dim} (k <= n)")
        require(self.operator in _OPERATORS, "operator", self.operator, f"be one of {_OPERATORS}")
        require(self.init_type in _INITS, "init_type", self.init_type, f"be one of {_INITS}")
        require(_is_int(self.measurements) and self.measurements >= 1, "measurements",
                self.measurements, "be a positive integer")
        if self.operator == "gaussian":
            entries = self.measurements * self.dim**2
            require(
                entries <= MAX_OPERATOR_ENTRIES, "measurements", self.measurements,
                f"satisfy measurements·dim² <= {MAX_OPERATOR_ENTRIES} (the dense operator would "
                f"hold {entries} entries with dim={self.dim}); lower measurements or dim, "
                "or use operator='population'",
            )
        require(self.condition >= 1, "condition", self.condition, "be >= 1")
        require(self.init_scale >= 0, "init_scale", self.init_scale, "be >= 0")
        require(
            self.init_scale > 0 or self.init_type == "spectral", "init_scale", self.init_scale,
            "be > 0 for init_type='random' (U = 0 is a stationary point)",
        )

    # ---- operator -----------------------------------------------------------------
    def measure(self, z, data):
        """𝒜(Z) ∈ R^m for a symmetric n×n Z (gaussian operator)."""
        a = data["A"]
        return a.reshape(a.shape[0], -1) @ z.reshape(-1) / jnp.sqrt(true_size(self, "measurements"))

    def adjoint(self, v, data):
        """𝒜*(v) = Σ_i v_i A_i / sqrt(m) (gaussian); the identity's adjoint for population."""
        a = data["A"]
        n = self.dim
        return (v @ a.reshape(a.shape[0], -1)).reshape(n, n) / jnp.sqrt(true_size(self, "measurements"))

    def normal_operator(self, z, data):
        """𝒜*𝒜(Z); Z itself for the population operator."""
        if self.operator == "population":
            return z
        return self.adjoint(self.measure(z, data), data)

    def ground_truth(self, key):
        """X = Q diag(s), Q random orthonormal n×r, s linearly spaced from 1 to 1/condition."""
        q, _ = jnp.linalg.qr(jax.random.normal(key, (self.dim, self.rank)))
        s = jnp.linspace(1.0, 1.0 / self.condition, self.rank) if self.rank > 1 else jnp.ones(1)
        return q * s[None, :]

    def spectral_estimate(self, data):
        """U_spec (n×k): the top-r eigenpairs (λ, V) of 𝒜*(y) as V diag(sqrt(max(λ, 0))) then
        zero columns (``init_type="spectral"``), or the top-k eigenpairs (``"spectral_topk"``)."""
        if self.operator == "population":
            x = data["X"]
            mat = x @ x.T
        else:
            mat = self.adjoint(data["y"], data)
        lam, vec = jnp.linalg.eigh((mat + mat.T) / 2)
        top = self.width if self.init_type == "spectral_topk" else self.rank
        lam, vec = lam[::-1][:top], vec[:, ::-1][:, :top]
        u = vec * jnp.sqrt(jnp.maximum(lam, 0.0))[None, :]
        return jnp.pad(u, ((0, 0), (0, self.width - top)))

    # ---- problem protocol -----------------------------------------------------------
    def init(self, key):
        u = jax.random.normal(key, (self.dim, self.width)) / jnp.sqrt(self.width)
        return {"U": self.init_scale * u}

    def sample(self, key):
        kx, ka = jax.random.split(key)
        x = self.ground_truth(kx)
        data = {"X": x}
        if self.operator == "gaussian":
            g = jax.random.normal(ka, (self.measurements, self.dim, self.dim))
            data["A"] = (g + jnp.swapaxes(g, -1, -2)) / 2
            data["y"] = self.measure(x @ x.T, data)
        if self.init_type != "random":
            data["U_spec"] = self.spectral_estimate(data)
        return data

    def factor(self, params, data):
        """The factor U: params["U"], shifted by data["U_spec"] for the spectral init."""
        u = params["U"]
        return u + data["U_spec"] if "U_spec" in data else u

    def loss(self, params, data):
        u = self.factor(params, data)
        if self.operator == "population":
            x = data["X"]
            d = u @ u.T - x @ x.T
            return 0.25 * jnp.sum(d * d)
        r = self.measure(u @ u.T, data) - data["y"]
        return 0.25 * jnp.sum(r * r)

    def metrics(self, params, data):
        u = self.factor(params, data)
        x = data["X"]
        vx, _ = jnp.linalg.qr(x)
        xxt = x @ x.T
        test_error = jnp.linalg.norm(u @ u.T - xxt) / jnp.linalg.norm(xxt)
        proj = vx.T @ u  # r×k
        _, s, wt = jnp.linalg.svd(proj, full_matrices=False)  # wt: r×k
        noise = u - vx @ proj
        q, _ = jnp.linalg.qr(u @ wt.T)  # basis of span(U W), n×r
        sin = jnp.linalg.norm(q - vx @ (vx.T @ q), ord=2)
        return {
            "loss": self.loss(params, data),
            "test_error": test_error,
            "angle": jnp.arcsin(jnp.clip(sin, 0.0, 1.0)),
            "sigma_min_signal": s[-1],
            "noise_norm": jnp.linalg.norm(noise, ord=2),
        }
