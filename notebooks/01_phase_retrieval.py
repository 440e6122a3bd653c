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
# # 01 — Phase retrieval under anisotropy: GD vs SpecGD (PAPERS.md §1, REPRODUCTION.md §1)
# Inputs x ~ N(0, Σ) with a spiked covariance Σ = I + (λ−1)vvᵀ, spike direction v ⟂ θ; target
# y = (θᵀx)², model f_W(x) = (1/m)‖Wx‖² = xᵀMx with M = WᵀW/m, population loss (exact, Isserlis).
# Small init W₀ = α·(orthonormal). On the invariant manifold W = a u₁θᵀ + b u₂vᵀ + c U₃Pᵀ the
# dynamics reduce to (a, b, c) (a = ‖Wθ‖ signal, b = ‖Wv‖ spike, c bulk); SpecGD's reduced dynamics
# is the sign map (a, b, c) ← (a, b, c) − η·sign(g). Alignment = θᵀMθ/‖M‖_F ∈ [0, 1].
#
# **Fair rates.** Every comparison runs each optimizer over a log-spaced rate grid and shows it at
# its best rate by the rule of REPRODUCTION.md §1 (printed below and on every figure): the
# smallest seed-mean *time to accuracy* (first step from which ‖M − θθᵀ‖_F stays ≤ 0.1). Claims
# that hold at every rate (GD's spike amplification and misalignment, SpecGD's stable alignment)
# are shown over the whole grid. The sweeps are the repository's sweep files
# (`sweeps/phase_retrieval/*.toml`), read here at the notebook's size.
#
# **Size.** `SIZE` in the parameters cell below is `"smoke"` (each sweep file's `[smoke]` sizes,
# what the tests run) or `"full"` (the sweep files' full sizes, those of REPRODUCTION.md). The outputs
# committed in `01_phase_retrieval.ipynb` are at smoke size; regenerate them with
# `python notebooks/execute.py 01_phase_retrieval --size smoke` (`--size full` for the full sizes).

# %% tags=["parameters"]
SIZE = "smoke"  # or "full": the sweep files' full sizes

# %%
if SIZE not in ("smoke", "full"):
    raise ValueError(f'SIZE must be "smoke" or "full", got {SIZE!r}')
import time
import warnings
from pathlib import Path

import jax
import matplotlib.pyplot as plt
from IPython.display import display

warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here
import specdyn as sd
from specdyn.config import load_sweep_file
from specdyn.experiments import phase_retrieval as ex

# %matplotlib inline

SWEEPS = Path('..') / 'sweeps' / 'phase_retrieval'  # the kernel runs in notebooks/


def show(fig):
    """Show a figure once, whether or not pyplot made it."""
    display(fig)
    plt.close(fig)


def run(name):
    """The sweep file sweeps/phase_retrieval/<name>.toml at this notebook's size."""
    spec = load_sweep_file(SWEEPS / f'{name}.toml', smoke=SIZE == 'smoke')
    print(f'{name}.toml ({SIZE}): {spec.description}')
    print(f'  {spec.runs} runs of {spec.steps} steps, fields {spec.problem}')
    with jax.enable_x64(spec.x64):
        return sd.sweep(spec.problem, **spec.sweep_kwargs(), progress=False)


def table(best, ds):
    """Each optimizer at its best rate (accuracy rule), and what holds over the whole grid."""
    div = (ds['diverged_at'] >= 0).any('seed')
    min_al = ds['alignment'].min('step').mean('seed').where(~div)
    peak = ds['spike_ratio'].max('step').mean('seed').where(~div)
    cols = {'best lr': best['learning_rate'], 'interior': best['interior'],
            'time to accuracy': best['score'], 'escape step': best['escape'],
            'min alignment: lowest over rates': min_al.min('lr'),
            'min alignment: highest over rates': min_al.max('lr'),
            'peak b/a: lowest over rates': peak.min('lr'),
            'diverged rates': div.sum('lr')}
    import pandas as pd
    return pd.DataFrame({k: v.to_series() for k, v in cols.items()})


t_start = time.perf_counter()
print(ex.ESCAPE_RULE.format(thr=0.5, tol=0.1))

# %% [markdown]
# ## Spike strength λ: each optimizer at its best rate per λ; min alignment over every rate
# (`sweeps/phase_retrieval/spike.toml`; `specdyn sweep sweeps/phase_retrieval/spike.toml` writes the same
# figure.) The table gives, per (optimizer, λ), the best rate, whether it is interior to the grid, its
# time to accuracy and escape step, and over **every** non-diverged rate of the grid the range of the
# run's minimum alignment and the smallest peak b/a: GD's alignment collapses and b/a grows at every
# rate once λ > 3; SpecGD's stays at its start (0.18 at d = 32, 0.35 at d = 8) with b/a = 1.

# %%
ds = run('spike')
print('alignment at step 0:', float(ds['alignment'].isel(step=0).mean()))
best = ex.best_rate_by_accuracy(ds)
display(table(best, ds).round(4))
show(ex.spike_strengths(ds))

# %% [markdown]
# ## Learning-rate regimes at λ = 10: every rate of the grid
# (`sweeps/phase_retrieval/lr_regimes.toml`.) Left: time to accuracy (solid, best rate circled) and
# escape step (dashed) against the rate; middle: the minimum alignment over the run at **every** rate
# against its start; right: the peak spike ratio b/a. x = diverged.

# %%
ds_lr = run('lr_regimes')
display(table(ex.best_rate_by_accuracy(ds_lr), ds_lr).round(4))
show(ex.lr_regimes(ds_lr))

# %% [markdown]
# ## SpecGD past chattering: the sliding (Filippov) flow overlaid (float64)
# The full SpecGD run, its sign map and the sliding flow of the reduced (a, b, c) dynamics
# (`specdyn.reduced.phase_retrieval.sliding_flow`) against t = lr·step. Full size is the figure of
# REPRODUCTION.md (d = 16, λ = 10, lr 0.01, 1500 steps); smoke size a shorter run at d = 8.

# %%
kw = dict(dim=16, steps=1500, record_every=10) if SIZE == 'full' else dict(dim=8, steps=600, record_every=10)
fig, summary = ex.sliding_figure(spike=10.0, lr=0.01, **kw)
for key, val in summary.items():
    print(f'{key}: {val}')
show(fig)

# %% [markdown]
# ## Escape time against d (λ = 10), each optimizer's rate tuned per d
# (`sweeps/phase_retrieval/dimension.toml`, the largest CPU size; `dimension_full.toml` goes to
# d = 1024 on an accelerator.) At a fixed rate GD's escape step grows ∝ d because f_W carries a 1/m
# with m = d; tuned per d it does not (REPRODUCTION.md §1). Full size only: at smoke size the two
# dimensions 8 and 16 fit no slope.

# %%
if SIZE == 'full':
    ds_d = run('dimension')
    display(table(ex.best_rate_by_accuracy(ds_d), ds_d).round(4))
    show(ex.escape_time_vs_dim(ds_d))
print(f'notebook time {time.perf_counter() - t_start:.1f} s')
