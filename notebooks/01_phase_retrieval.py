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
# # 01 — Phase retrieval under anisotropy: GD vs SpecGD (PAPERS.md §1)
# Inputs x ~ N(0, Σ) with a spiked covariance Σ = I + (λ−1)vvᵀ, spike direction v ⟂ θ; target
# y = (θᵀx)², model f_W(x) = (1/m)‖Wx‖² = xᵀMx with M = WᵀW/m. Population loss (exact, Isserlis)
# L(W) = ¼[(tr DΣ)² + 2 tr(DΣDΣ)], D = M − θθᵀ. Small init W₀ = α·(orthonormal).
#
# On the invariant manifold W = a u₁θᵀ + b u₂vᵀ + c U₃Pᵀ the dynamics reduce to (a, b, c)
# (a = ‖Wθ‖ signal, b = ‖Wv‖ spike, c bulk). GD amplifies the spike b in the escape stage when λ is
# large; SpecGD (polar factor of the gradient) is the sign map (a,b,c) ← (a,b,c) − η·sign(g), so all
# coefficients move at the same rate and its escape time does not depend on d.
# Alignment = θᵀMθ/‖M‖_F ∈ [0, 1].
#
# **Size.** `SIZE` in the parameters cell below is `"smoke"` (small sizes, what the tests run) or
# `"full"` (the papers' sizes). The outputs committed in `01_phase_retrieval.ipynb` are at smoke size;
# regenerate them with `python notebooks/execute.py 01_phase_retrieval --size smoke` (`--size full` for
# the papers' sizes).

# %% tags=["parameters"]
SIZE = "smoke"  # or "full": the papers' sizes

# %%
if SIZE not in ("smoke", "full"):
    raise ValueError(f'SIZE must be "smoke" or "full", got {SIZE!r}')
import time
import jax, numpy as np, matplotlib.pyplot as plt
import warnings
from IPython.display import display
warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here
import specdyn as sd
from specdyn.problems.phase_retrieval import PhaseRetrieval
from specdyn.reduced import phase_retrieval as red
from specdyn.experiments import phase_retrieval as ex
# %matplotlib inline


def show(fig):
    """Show a figure once, whether or not pyplot made it."""
    display(fig)
    plt.close(fig)


t_start = time.perf_counter()

# %% [markdown]
# ## One GD and one SpecGD run at a strong spike (λ = 30), reduced map overlaid
# (float32. SpecGD follows its sign map until b and c reach zeros of their gradients; there the
# singular values of ∇L are ~0, the polar factor is ill-conditioned and the full run parts from the
# map's chatter — the error below is measured until a reaches √m.)
# Dashed black: the reduced map on (a, b, c) (`reduced_gd_map`, `spectral_map`) at the same lr.

# %%
dim, steps, rec = (32, 3000, 10) if SIZE == "full" else (16, 600, 5)
prob = PhaseRetrieval(dim=dim, spike=30.0, init_scale=0.01)
lrs = {'gd': 0.05, 'specgd': 0.01}
opts = {'gd': (sd.gd(lrs['gd']), red.reduced_gd_map),
        'specgd': (sd.spectral_gd(lrs['specgd'], method='svd'), red.spectral_map)}
runs, reds = {}, {}
for name, (opt, fmap) in opts.items():
    out = sd.simulate(prob, opt, key=jax.random.PRNGKey(0), steps=steps, record_every=rec)
    runs[name] = {k: np.asarray(v) for k, v in out.items() if k != 'params'}
    reds[name] = {k: np.abs(np.asarray(v)) for k, v in fmap(prob, lrs[name], steps, rec).items()}
    r = runs[name]
    print(f"{name:7s} final alignment {r['alignment'][-1]:.3f}  escape step (align>0.5) "
          f"{ex.escape_time(r['alignment'], r['step']):.0f}  peak b/a at step {ex.peak_spike_step(r['spike_ratio'], r['step'])}")
fig, axes = plt.subplots(1, 3, figsize=(15, 4))
for name in opts:
    axes[0].plot(runs[name]['step'], runs[name]['alignment'], label=f"{name} (lr={lrs[name]})")
axes[0].set(xlabel='step', ylabel='alignment', title=f'λ=30, d={dim}'); axes[0].legend()
for ax, name in zip(axes[1:], opts):
    for k, col in zip('abc', ['C0', 'C1', 'C2']):
        ax.plot(runs[name]['step'], runs[name][k], color=col, label=f'{k} (full)')
        ax.plot(reds[name]['step'], reds[name][k], 'k--', lw=0.8, label='reduced map' if k == 'a' else None)
    ax.set(yscale='log', xlabel='step', ylabel='coefficient', title=name); ax.legend()
plt.tight_layout(); plt.show()
# full records include the final step; the reduced map records steps < `steps`
for name in opts:
    n = len(reds[name]['step'])
    rel = np.max([np.abs(runs[name][k][:n] - reds[name][k]) / np.maximum(np.abs(reds[name][k]), 1.0) for k in 'abc'], axis=0)
    hit = np.nonzero(reds[name]['a'] >= np.sqrt(prob.m) - lrs[name])[0]  # a reaches sqrt(m)
    upto = hit[0] if len(hit) else n
    print(f'{name}: max |full - reduced| / max(|reduced|, 1) until a reaches sqrt(m) (step {reds[name]["step"][upto - 1]}) = '
          f'{rel[:upto].max():.2e}; over the whole run = {rel.max():.2e}')

# %% [markdown]
# ## Spike sweep: λ ∈ {1, 3, 10, 30, 100}
# (`sweeps/phase_retrieval/spike.toml` is the same sweep as a file: `specdyn sweep sweeps/phase_retrieval/spike.toml`.)

# %%
dim, steps, rec, seeds = (32, 3000, 10, 2) if SIZE == "full" else (8, 300, 5, 1)
spikes = [1.0, 3.0, 10.0, 30.0, 100.0]
ds = sd.sweep(PhaseRetrieval(dim=dim, init_scale=0.01),
              optimizers={'gd': sd.gd, 'specgd': lambda lr: sd.spectral_gd(lr, method='svd')},
              learning_rates={'gd': [0.05], 'specgd': [0.01]}, seeds=seeds,
              grid={'spike': spikes}, steps=steps, record_every=rec, progress=False)
al = ds['alignment'].isel(lr=0).mean('seed')
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, opt in zip(axes, ds['optimizer'].values):
    for lam in spikes:
        ax.plot(ds['step'], al.sel(optimizer=opt, spike=lam), label=f'λ={lam:g}')
    ax.set(xlabel='step', title=f'{opt}, d={dim}'); ax.legend()
axes[0].set_ylabel('alignment'); plt.tight_layout(); plt.show()
print('escape step (alignment > 0.5):')
print(ex.escape_time(ds['alignment']).isel(lr=0).mean('seed').to_pandas())
print('final alignment:')
print(ds['alignment'].isel(lr=0, step=-1).mean('seed').to_pandas().round(3))

# %% [markdown]
# ## Escape time against d (λ = 10), fitted log-log slopes
# Smoke size uses the reduced maps (exact on the manifold; cheap in any d); SIZE = "full" runs the full
# simulations of `sweeps/phase_retrieval/dimension.toml` (d = 32 … 1024).

# %%
if SIZE == "full":
    ds_d = sd.sweep(PhaseRetrieval(spike=10.0, init_scale=0.01),
                    optimizers={'gd': sd.gd, 'specgd': lambda lr: sd.spectral_gd(lr, method='svd')},
                    learning_rates={'gd': [0.05], 'specgd': [0.01]}, seeds=1,
                    grid={'dim': [32, 64, 128, 256, 512, 1024]}, steps=50000, record_every=50, progress=False)
    show(ex.escape_time_vs_dim(ds_d))
else:
    dims, steps = [32, 64, 128, 256, 512, 1024], 50000
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, fmap, lr in [('gd', red.reduced_gd_map, 0.05), ('specgd', red.spectral_map, 0.01)]:
        T = []
        for d in dims:
            p = PhaseRetrieval(dim=d, spike=10.0, init_scale=0.01)
            r = fmap(p, lr, steps, 10)
            a, b, c = (np.abs(np.asarray(r[k], float)) for k in 'abc')
            A, B, C = a**2, b**2, c**2  # eigenvalues of m·M on θ, v and the d−2 bulk directions
            align = A / np.sqrt(A**2 + B**2 + (d - 2) * C**2)
            T.append(ex.escape_time(align, np.asarray(r['step'])))
        slope = sd.results.log_log_slope(dims, T)  # escape times that never came are left out
        print(name, dict(zip(dims, T)), f'slope {slope:.2f}')
        ax.loglog(dims, T, 'o-', label=f'{name} (slope {slope:.2f})')
    ax.set(xlabel='dimension d', ylabel='escape step (alignment > 0.5)', title='reduced maps, λ=10'); ax.legend()
    plt.show()
print(f'notebook time {time.perf_counter() - t_start:.1f} s')
