"""Phase retrieval with a quadratic (Gram) network under anisotropic Gaussian inputs.

Model f_W(x) = (1/m)‖Wx‖² = xᵀMx with W ∈ R^{m×d}, M = WᵀW/m. Target y = (θᵀx)² + ε,
x ~ N(0, Σ). With D = M − θθᵀ the per-sample loss is ¼(f_W(x) − y)² and, by Isserlis,
the population loss is

    L(W) = ¼[(tr DΣ)² + 2 tr(DΣDΣ)] + ¼σ²        (σ = label_noise).

Covariances (fixed by the fields, never by the key):

* ``"spiked"``: Σ = I + (λ−1) v vᵀ with θ = e₁ and v = e₂ (v ⟂ θ, variance λ = spike).
* ``"power_law"``: Σ = d·diag(k^{−α})/H, k = 1..d (α = exponent), normalised by
  H = Σ_k k^{−α} so that tr Σ = d (the average variance is 1, as for Σ = I; α = 0 is the
  identity). θ = e_i with i = 0 for
  ``signal_placement="top"``, d−1 for ``"bottom"``, the given int, or a fixed random unit
  vector (PRNGKey(0)) for ``"random"``. The competitor direction v is the top-variance
  eigenvector e₀ projected orthogonally to θ (e₁ when θ = e₀).

Metrics: a = ‖Wθ‖, b = ‖Wv‖, c = ‖WP‖_F/sqrt(d−2) with P an orthonormal basis of
span(θ, v)^⟂ (computed as sqrt((‖W‖²_F − a² − b²)/(d−2))), alignment θᵀMθ/‖M‖_F,
distance ‖M − θθᵀ‖_F, spike_ratio b/a.

``init_type="orthogonal"``: W₀ = α₀ U Qᵀ with U ∈ R^{m×d} random orthonormal columns and
Q = [θ, v, P] orthogonal, i.e. W₀ = α₀(u₁θᵀ + u₂vᵀ + U₃Pᵀ) is on the invariant manifold
with a = b = c = α₀ (needs m ≥ d). ``"gaussian"``: W₀ = α₀ G/sqrt(m), G i.i.d. N(0, 1),
so that a ≈ b ≈ c ≈ α₀.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdyn.problem import problem, require, size_mask, static, true_size

_COVARIANCES = ("spiked", "power_law")
_INITS = ("orthogonal", "gaussian")


@problem
class PhaseRetrieval:
    """¼E[(xᵀ(WᵀW/m)x − (θᵀx)² − ε)²], x ~ N(0, Σ); see the module docstring."""

    dim: int = static(32, pad=True)  # d
    width: int | None = static(None, pad=True)  # m (None: m = d)
    covariance: str = static("spiked")
    spike: float = 10.0  # λ: variance along v (spiked)
    exponent: float = 1.0  # α: power-law decay k^{-α} (normalised: tr Σ = d)
    signal_placement: str | int = static("top")  # power law only
    samples: int | None = static(None, pad=True)  # n (None: population loss)
    label_noise: float = 0.0
    init_scale: float = 0.1  # α₀
    init_type: str = static("orthogonal")

    def __check_init__(self):
        require(isinstance(self.dim, int) and self.dim >= 3, "dim", self.dim, "be an integer >= 3")
        require(
            self.width is None or (isinstance(self.width, int) and self.width >= 1),
            "width", self.width, "be None or a positive integer",
        )
        require(self.covariance in _COVARIANCES, "covariance", self.covariance, f"be one of {_COVARIANCES}")
        require(self.init_type in _INITS, "init_type", self.init_type, f"be one of {_INITS}")
        sp = self.signal_placement
        ok = sp in ("top", "bottom", "random") or (
            isinstance(sp, int) and not isinstance(sp, bool) and 0 <= sp < self.dim
        )
        require(ok, "signal_placement", sp, f"be 'top', 'bottom', 'random' or an int in [0, {self.dim})")
        require(
            self.covariance == "power_law" or sp == "top",
            "signal_placement", sp, "be 'top' for the spiked covariance (θ = e₁, v = e₂ fixed)",
        )
        require(
            self.samples is None or (isinstance(self.samples, int) and self.samples >= 1),
            "samples", self.samples, "be None (population) or a positive integer",
        )
        require(
            self.init_type != "orthogonal" or self.m >= self.dim,
            "width", self.width, f"be >= dim={self.dim} for init_type='orthogonal'",
        )
        require(self.spike > 0, "spike", self.spike, "be > 0")
        require(self.label_noise >= 0, "label_noise", self.label_noise, "be >= 0")
        require(self.init_scale >= 0, "init_scale", self.init_scale, "be >= 0")

    @property
    def m(self) -> int:
        return self.dim if self.width is None else self.width

    # Padding (sd.static(..., pad=True)): dim, width and samples may be zero-padded;
    # every normalisation below uses the true sizes (true_size), and padded coordinates
    # get zero variance, so padded rows/columns of W see zero gradient.
    def __can_pad__(self) -> bool:
        return self.signal_placement != "random"  # θ is drawn at the true length

    def _d(self):
        return true_size(self, "dim")

    def _m(self):
        return self._d() if self.width is None else true_size(self, "width")

    # ---- fixed geometry -------------------------------------------------------------
    def variances(self):
        """Eigenvalues of Σ in the standard basis (Σ is diagonal)."""
        d, live = self.dim, size_mask(self, "dim")
        if self.covariance == "spiked":
            return jnp.where(live, jnp.ones(d).at[1].set(self.spike), 0.0)
        k = jnp.where(live, jnp.arange(1, d + 1, dtype=jnp.result_type(float)) ** (-self.exponent), 0.0)
        return self._d() * k / jnp.sum(k)

    def covariance_matrix(self):
        """Σ (d×d)."""
        return jnp.diag(self.variances())

    def signal(self):
        """θ (unit vector, fixed by the fields)."""
        d = self.dim
        sp = self.signal_placement
        if self.covariance == "spiked" or sp == "top":
            return jnp.zeros(d).at[0].set(1.0)
        if sp == "bottom":
            return jnp.zeros(d).at[self._d() - 1].set(1.0)
        if sp == "random":
            t = jax.random.normal(jax.random.PRNGKey(0), (d,), dtype=jnp.result_type(float))
            return t / jnp.linalg.norm(t)
        return jnp.zeros(d).at[sp].set(1.0)

    def competitor(self):
        """v: the top-variance direction ⟂ θ (e₂ for spiked)."""
        d = self.dim
        if self.covariance == "spiked":
            return jnp.zeros(d).at[1].set(1.0)
        theta = self.signal()
        e0 = jnp.zeros(d).at[0].set(1.0)
        e1 = jnp.zeros(d).at[1].set(1.0)
        u = e0 - theta * (theta @ e0)
        # θ = e₀ exactly: fall back to e₁
        u = jnp.where(jnp.linalg.norm(u) < 1e-8, e1 - theta * (theta @ e1), u)
        return u / jnp.linalg.norm(u)

    def basis(self):
        """Q = [θ, v, P] (d×d orthogonal)."""
        theta, v = self.signal(), self.competitor()
        d = self.dim
        a = jnp.concatenate([theta[:, None], v[:, None], jnp.eye(d)], axis=1)
        q, _ = jnp.linalg.qr(a)
        q = q[:, :d]
        signs = jnp.sign(jnp.sum(q[:, :2] * a[:, :2], axis=0))
        return q.at[:, :2].set(q[:, :2] * signs)

    # ---- problem protocol -------------------------------------------------------------
    def init(self, key):
        m, d = self.m, self.dim
        if self.init_type == "orthogonal":
            u, _ = jnp.linalg.qr(jax.random.normal(key, (m, d)))
            w = u @ self.basis().T
        else:
            w = jax.random.normal(key, (m, d)) / jnp.sqrt(m)
        return {"W": self.init_scale * w}

    def sample(self, key):
        if self.samples is None:
            return {}
        kx, ke = jax.random.split(key)
        z = jax.random.normal(kx, (self.samples, self.dim))
        x = z * jnp.sqrt(self.variances())
        y = (x @ self.signal()) ** 2 + self.label_noise * jax.random.normal(ke, (self.samples,))
        return {"x": x, "y": y}

    def model(self, params, x):
        """f_W(x) = (1/m)‖Wx‖² for a batch x (n×d)."""
        wx = x @ params["W"].T
        return jnp.sum(wx * wx, axis=-1) / self._m()

    def population_loss(self, params):
        """¼[(tr DΣ)² + 2 tr(DΣDΣ)] + ¼σ², D = WᵀW/m − θθᵀ."""
        w = params["W"]
        theta = self.signal()
        s = self.variances()
        dmat = w.T @ w / self._m() - jnp.outer(theta, theta)
        ds = dmat * s[None, :]  # DΣ
        tr = jnp.trace(ds)
        return 0.25 * (tr**2 + 2.0 * jnp.sum(ds * ds.T)) + 0.25 * self.label_noise**2

    def loss(self, params, data):
        if self.samples is None:
            return self.population_loss(params)
        r = self.model(params, data["x"]) - data["y"]
        return 0.25 * jnp.sum(r * r) / true_size(self, "samples")  # padded samples: x = 0, y = 0

    def metrics(self, params, data):
        w = params["W"]
        theta, v = self.signal(), self.competitor()
        a = jnp.linalg.norm(w @ theta)
        b = jnp.linalg.norm(w @ v)
        rest = jnp.maximum(jnp.sum(w * w) - a**2 - b**2, 0.0)
        c = jnp.sqrt(rest / (self._d() - 2))
        mmat = w.T @ w / self._m()
        mnorm = jnp.linalg.norm(mmat)
        return {
            "loss": self.loss(params, data),
            "a": a,
            "b": b,
            "c": c,
            "alignment": (theta @ mmat @ theta) / jnp.maximum(mnorm, 1e-30),
            "distance": jnp.linalg.norm(mmat - jnp.outer(theta, theta)),
            "spike_ratio": b / jnp.maximum(a, 1e-30),
        }
