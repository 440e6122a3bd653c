# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 — The Newton–Schulz gap: approximate polar factors in the dynamics (issue 15)
# Every Muon implementation replaces the polar factor U Vᵀ by a few steps of a matrix polynomial
# (Newton–Schulz with Jordan's or Dion's quintics, or Polar Express). A polynomial p maps each
# singular value σ of the normalised input to p(σ): large ones land near 1, but **small ones stay
# small** — the update is U p(Σ) Vᵀ, not U Vᵀ. Here the same SpecGD runs with the exact SVD and
# with each approximation, on paper 1 (phase retrieval: escaping the spike, PAPERS.md §1) and
# paper 3 (random features: the nr/st criterion, PAPERS.md §3), and **spectral telemetry**
# (`sd.Telemetry`) records, at every record step, the singular values of the polar input and of
# the update, the orthogonality error ‖QᵀQ − I‖_F of the polar output Q and its distance
# ‖Q − U Vᵀ‖_F to the exact factor. A last section sweeps the spectral power p of U Σᵖ Vᵀ
# (`sd.spectral_power`, p = 0 SpecGD, p = 1 GD).
#
# **Fair rates.** Each method runs over the same log-spaced rate grid and is shown at its best
# rate by the rule printed below (time to accuracy in §1, final loss in §2).
#
# **Size.** `SIZE` in the parameters cell is `"smoke"` (what the tests run, seconds: the exact SVD
# against Muon's default, five Newton–Schulz steps with Jordan's quintic) or `"full"` (every method
# below, the numbers of REPRODUCTION.md, "Notebook 05"). The committed `05_newton_schulz_gap.ipynb` is at
# smoke size; regenerate it with `python notebooks/execute.py 05_newton_schulz_gap --size smoke`.

# %% tags=["parameters"]
SIZE = "smoke"  # or "full": the sizes of REPRODUCTION.md

# %%
import time
import warnings

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

import specdyn as sd
from specdyn.experiments import phase_retrieval as ex
from specdyn.problems.random_features import RandomFeatures, spectral_learning_rate

# %matplotlib inline

if SIZE not in ("smoke", "full"):
    raise ValueError(f'SIZE must be "smoke" or "full", got {SIZE!r}')
pd.set_option('display.width', 160)
pd.set_option('display.max_columns', 12)
warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here

FULL = SIZE == 'full'
# the polar methods compared (label -> options of sd.spectral_gd); smoke keeps a subset
METHODS = {
    'svd': dict(method='svd'),
    'ns-jordan-3': dict(method='newton_schulz', steps=3, coeffs='jordan'),
    'ns-jordan-5': dict(method='newton_schulz', steps=5, coeffs='jordan'),
    'ns-dion-5': dict(method='newton_schulz', steps=5, coeffs='dion'),
    'polar-express-5': dict(method='polar_express', steps=5),
}
if FULL:
    METHODS['ns-jordan-8'] = dict(method='newton_schulz', steps=8, coeffs='jordan')
    METHODS['polar-express-3'] = dict(method='polar_express', steps=3)
else:  # each method is a compiled program of seconds: smoke compares the exact factor with Muon's default
    METHODS = {k: METHODS[k] for k in ('svd', 'ns-jordan-5')}


def factories(**extra):
    """One SpecGD factory per polar method (each is its own compiled cell)."""
    return {name: (lambda lr, o=opts: sd.spectral_gd(lr, **o, **extra)) for name, opts in METHODS.items()}


def show(fig):
    display(fig)
    plt.close(fig)


t_start = time.perf_counter()

# %% [markdown]
# ## 1. Paper 1: the spike escape with approximate polar factors
# Phase retrieval under a spiked covariance (λ = 10), small init (α₀ = 0.01): GD amplifies the spike,
# SpecGD escapes it. Each method at its best rate by the accuracy rule (below). Telemetry records all
# min(m, n) = d singular values of the polar input G and of the update −lr·Q.

# %%
pr_size = dict(dim=16, steps=600, seeds=3) if FULL else dict(dim=8, steps=150, seeds=1)
pr = sd.problems.PhaseRetrieval(dim=pr_size['dim'], spike=10.0, init_scale=0.01)
lrs = [0.03, 0.1, 0.3, 1.0, 3.0] if FULL else [0.03, 0.1]
tel = sd.Telemetry(top_k=pr_size['dim'], quantiles=(0.0, 0.5, 1.0), of=('polar_input', 'update'))
ds1 = sd.sweep(pr, optimizers=factories(), learning_rates=lrs, seeds=pr_size['seeds'], steps=pr_size['steps'],
               record_every=2, progress=False, telemetry=tel)
best1 = ex.best_rate_by_accuracy(ds1)
print(ex.ESCAPE_RULE.format(thr=0.5, tol=0.1))
q = ds1['update_sv'] / ds1['learning_rate']  # the polar output's singular values (update = -lr Q)
live = ds1['polar_input_sv'].isel(sv=0) > 0
table1 = pd.DataFrame({
    'best lr': best1['learning_rate'].to_series(),
    'interior': best1['interior'].to_series(),
    'escape step': best1['escape'].to_series(),
    'time to accuracy': best1['score'].to_series(),
    'median ‖QᵀQ−I‖_F': ds1['polar_orthogonality_error'].where(live).isel(lr=best1['best_index'])
        .median(['seed', 'step', 'leaf']).to_series(),
    'median ‖Q−UVᵀ‖_F': ds1['polar_distance'].where(live).isel(lr=best1['best_index'])
        .median(['seed', 'step', 'leaf']).to_series(),
    'min σ(Q) over run': q.min('sv').where(live).isel(lr=best1['best_index']).min(['seed', 'step', 'leaf']).to_series(),
    'share of σ(Q) < 0.5': (q < 0.5).where(live).isel(lr=best1['best_index']).mean(['seed', 'step', 'leaf', 'sv'])
        .to_series(),
})
display(table1.round(4))

# %% [markdown]
# **Which singular values stay unorthogonalized.** Each point is one singular value at one record
# step: its size relative to the largest (σᵢ/σ₁ of the polar input, x) against the singular value
# of the polar output Q (y). The exact factor maps every σ > 0 to 1; a quintic maps σ/σ₁ below about
# 0.1 (Newton–Schulz normalises by ‖G‖_F, so by less than σ₁) to much less than 1. In phase
# retrieval the gradient's small singular values are the bulk directions, so an approximate factor
# simply takes smaller steps there.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
x = (ds1['polar_input_sv'] / ds1['polar_input_sv'].isel(sv=0))
for name in ds1['optimizer'].values:
    xs = x.sel(optimizer=name).values.ravel()
    ys = q.sel(optimizer=name).values.ravel()
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
    axes[0].scatter(xs[ok], ys[ok], s=4, alpha=0.4, label=name)
axes[0].set(xscale='log', xlabel='σᵢ/σ₁ of the polar input', ylabel='σᵢ of the polar output Q',
            title='the polynomial each method applies')
axes[0].legend(fontsize=7, loc='upper left')
steps = ds1['step'].values
for name in ds1['optimizer'].values:
    b = int(best1['best_index'].sel(optimizer=name))
    axes[1].plot(steps, ds1['alignment'].sel(optimizer=name).isel(lr=b).mean('seed'), label=name)
axes[1].set(xlabel='step', ylabel='alignment θᵀMθ/‖M‖_F', title='alignment at each best rate')
axes[1].legend(fontsize=7, loc='lower right')
fig.tight_layout()
show(fig)

# %% [markdown]
# ## 2. Paper 3: random features and the nr/st criterion
# SpecGD with the paper's step ‖G‖_*/L_op · polar(G) (`nuclear_scaling=True`, rate multiplier × 1/L_op).
# The exact spectral step beats GD's guaranteed decrease when nr(G) ≥ st(A) (notebook 03); with an
# approximate factor Q the step is ⟨Q, G⟩/L_op · Q, and the criterion is about a step nobody takes.
# (Full size: with the telemetry of the polar errors.)

# %%
rf_size = dict(dim=20, feature_dim=60, samples=240, steps=200, seeds=3) if FULL else \
    dict(dim=8, feature_dim=16, samples=48, steps=40, seeds=1)
rf = RandomFeatures(dim=rf_size['dim'], feature_dim=rf_size['feature_dim'], samples=rf_size['samples'])
multipliers = np.asarray([0.25, 0.5, 1.0, 2.0, 4.0] if FULL else [0.5, 1.0])
# sd.simulate under jax.jit/vmap runs as traced code: every method, seed and multiplier in one program
# (full size: with the telemetry of the polar errors; smoke without, to stay within seconds)
tel2 = sd.Telemetry(top_k=4, of=('polar_input',)) if FULL else None


def rf_runs(seed, mult):
    key = jax.random.PRNGKey(seed)
    data = rf.sample(jax.random.split(key)[1])  # the data sd.simulate draws from this key
    lr = mult * spectral_learning_rate(data)  # the paper's rate 1/L_op, times a multiplier
    return {name: sd.simulate(rf, factory(lr), key=key, steps=rf_size['steps'], record_every=4, data=data,
                              telemetry=tel2)
            for name, factory in factories(nuclear_scaling=True).items()}


over = jax.vmap(jax.vmap(rf_runs, in_axes=(None, 0)), in_axes=(0, None))  # (seed, multiplier)
runs2 = jax.jit(over)(np.arange(rf_size['seeds']), multipliers)
loss2 = {name: np.asarray(r['loss']) for name, r in runs2.items()}  # (seed, multiplier, record)
# a multiplier where any seed diverged (NaN) is never the best
score2 = {name: np.where(np.isfinite(loss[:, :, -1]).all(0), loss[:, :, -1].mean(0), np.inf)
          for name, loss in loss2.items()}
best2 = {name: int(np.argmin(score)) for name, score in score2.items()}
print('rule: each method at the rate multiplier (× 1/L_op) with the lowest seed-mean final loss among '
      'multipliers where no seed diverged')
table2 = pd.DataFrame({name: {
    'best multiplier': multipliers[b],
    'diverged multipliers': int(np.sum(~np.isfinite(score2[name]))),
    'final loss': loss2[name][:, b, -1].mean(),
    'loss at step 4': loss2[name][:, b, 1].mean(),
    'nr(G) at step 0': np.asarray(runs2[name]['nuclear_rank'])[:, b, 0].mean(),
    'st(A)': np.asarray(runs2[name]['stable_rank_A'])[:, b, 0].mean(),
    **({'median ‖QᵀQ−I‖_F': np.median(np.asarray(runs2[name]['polar_orthogonality_error'])[:, b])} if FULL else {}),
} for name, b in best2.items()}).T
display(table2.astype(float).round(5))
fig, ax = plt.subplots(figsize=(5, 3.4))
steps2 = np.asarray(runs2['svd']['step'])[0, 0]
for name, loss in loss2.items():
    ax.plot(steps2, loss[:, best2[name]].mean(0), label=name)
ax.set(yscale='log', xlabel='step', ylabel='loss', title='random features: SpecGD at ‖G‖_*/L_op')
ax.legend(fontsize=7, loc='upper right')
show(fig)

# %% [markdown]
# ## 3. Spectral powers U Σᵖ Vᵀ between SpecGD (p = 0) and GD (p = 1)
# `sd.spectral_power(lr, p)` with p as data: one compiled program for every (p, rate), run under
# `jax.vmap`. Phase retrieval as in §1; for each p the best rate of the grid by escape step.

# %%
ps = np.linspace(0.0, 1.0, 11 if FULL else 5)
rates = np.geomspace(0.01, 3.0, 8 if FULL else 4)
pp, rr = (a.ravel() for a in np.meshgrid(ps, rates, indexing='ij'))


def one(p, lr):
    return sd.simulate(pr, sd.spectral_power(lr, p), key=jax.random.PRNGKey(0), steps=pr_size['steps'],
                       record_every=2)['alignment']


alignment = np.asarray(jax.jit(jax.vmap(one))(pp, rr)).reshape(len(ps), len(rates), -1)
steps3 = np.arange(alignment.shape[-1]) * 2
escape = ex.escape_time(alignment, steps3, threshold=0.5, stay=True)  # (p, rate)
best_escape = np.nanmin(np.where(np.isfinite(escape), escape, np.nan), axis=1)
table3 = pd.DataFrame({'p': ps, 'best escape step': best_escape,
                       'at rate': [rates[np.nanargmin(e)] if np.isfinite(e).any() else np.nan for e in escape]})
display(table3.round(3))
fig, ax = plt.subplots(figsize=(5, 3.4))
ax.plot(ps, best_escape, 'o-')
ax.set(xlabel='spectral power p (0 = SpecGD, 1 = GD)', ylabel='escape step at the best rate',
       title=f'phase retrieval, d = {pr.dim}, λ = {pr.spike:g}')
show(fig)
print(f'notebook time: {time.perf_counter() - t_start:.1f} s')
