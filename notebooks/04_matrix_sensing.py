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
# # 04 — Small random initialization ≈ spectral learning (PAPERS.md §4, REPRODUCTION.md §4)
# GD on overparameterized matrix sensing ¼‖𝒜(UUᵀ) − y‖² from U₀ = α·U_rand: (I) an alignment
# phase where GD acts as the power method (I + μ𝒜*(y))ᵗU₀, (II) saddle avoidance, (III) local
# refinement; the test error is polynomially small in α.
#
# **Regime.** Underdetermined: m measurements well below n(n+1)/2 (full size n = 20, r = 2,
# m = 120 < 210), so the measurements do not determine XXᵀ and the init scale matters at the
# plateau, not only at a fixed step. **Plateau rule:** a run has reached its plateau at its horizon
# T when err(T/2)/err(T) ≤ 1.1; other errors are errors at T (upper bounds, drawn hollow).
# **Spectral init** for k > r: the rank-r spectral estimate [V_r diag(√λ_r), 0] plus the same
# α-small random part as small random init (`init_type="spectral"`); `"spectral_topk"` is the old
# top-k version whose k − r noise columns start at O(1). The sweeps are the repository's sweep
# files (`sweeps/matrix_sensing/*.toml`), read here at the notebook's size.
#
# **Size.** `SIZE` in the parameters cell below is `"smoke"` (each sweep file's `[smoke]` sizes,
# what the tests run: n = 8–10) or `"full"` (the sweep files' full sizes, those of REPRODUCTION.md;
# minutes each). The outputs committed in `04_matrix_sensing.ipynb` are at smoke size; regenerate
# them with `python notebooks/execute.py 04_matrix_sensing --size smoke` (`--size full` for the full
# sizes).

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
import pandas as pd
from IPython.display import display

warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here
import specdyn as sd
from specdyn.config import load_sweep_file
from specdyn.experiments import matrix_sensing as ex
from specdyn.results import log_log_slope

# %matplotlib inline

SWEEPS = Path('..') / 'sweeps' / 'matrix_sensing'  # the kernel runs in notebooks/


def show(fig):
    """Show a figure once, whether or not pyplot made it."""
    display(fig)
    plt.close(fig)


def run(name):
    """The sweep file sweeps/matrix_sensing/<name>.toml at this notebook's size."""
    spec = load_sweep_file(SWEEPS / f'{name}.toml', smoke=SIZE == 'smoke')
    p = spec.problem
    print(f'{name}.toml ({SIZE}): {spec.description}')
    print(f'  n={p.dim}, r={p.rank}, m={p.measurements} (n(n+1)/2 = {p.dim * (p.dim + 1) // 2}), '
          f'{spec.runs} runs of {spec.steps} steps, grid {spec.grid}')
    with jax.enable_x64(spec.x64):
        return sd.sweep(p, **spec.sweep_kwargs(), progress=False)


def at_horizon(ds, dim):
    """Seed-mean test error at the horizon T against ``dim``, with the plateau rule."""
    err = ds['test_error'].isel(optimizer=0, lr=0).mean('seed')
    reached, ratio = ex.plateau(err.values, ds['step'].values)
    return pd.DataFrame({f'error at T={int(ds["step"][-1])}': err.isel(step=-1).values,
                         'err(T/2)/err(T)': ratio, 'plateau reached': reached},
                        index=pd.Index(ds[dim].values, name=dim))


t_start = time.perf_counter()

# %% [markdown]
# ## Test error against the init scale α: plateau rule and log-log slope
# (`sweeps/matrix_sensing/init_scale.toml`, k = n.) The slope of log error against log α is
# fitted over every α and over the plateaued α only (errors still falling at T mix a plateau with a
# horizon).

# %%
ds_a = run('init_scale')
tab = at_horizon(ds_a, 'init_scale')
display(tab)
alphas, err, ok = tab.index.values, tab.iloc[:, 0].values, tab['plateau reached'].values
print(f'log-log slope: {log_log_slope(alphas, err):.2f} (all α), '
      f'{log_log_slope(alphas[ok], err[ok]) if ok.sum() >= 2 else float("nan"):.2f} (plateaued α only)')
show(ex.error_vs_init_scale(ds_a))

# %% [markdown]
# ## Test error against the width k, from r to n (α = 1e-3)
# (`sweeps/matrix_sensing/width.toml`.) k = r recovers exactly; at the horizon the error of k > r is
# still falling (slower sublinear convergence for larger k) — the paper's claim about width concerns
# the alignment phase, next.

# %%
ds_k = run('width')
display(at_horizon(ds_k, 'width'))
show(ex.error_vs_width(ds_k))

# %% [markdown]
# ## The alignment phase against the width k
# (`sweeps/matrix_sensing/alignment.toml`, condition 1, α = 1e-4.) The power-method regime ends at
# the first step where σ_min(V_XᵀU) ≥ 0.1·σ_min(X); its length and the largest principal angle at its
# end, and the first step with angle ≤ 0.25 (end of phase I), per k (seed means).

# %%
ds_al = run('alignment')
ph = ex.alignment_phase(ds_al).isel(optimizer=0, lr=0).mean('seed')
ends = ex.phase_ends(ds_al).sel(phase='I').isel(optimizer=0, lr=0).mean('seed')
display(pd.DataFrame({'power-method phase length': ph['length'].values,
                      'angle at its end (rad)': ph['angle'].values,
                      'phase I end (angle ≤ 0.25)': ends.values},
                     index=pd.Index(ds_al['width'].values, name='k')).round(3))
show(ex.alignment_vs_width(ds_al))

# %% [markdown]
# ## The three phases (GD, condition 1, α = 1e-6); dashed: the power-method prediction of the angle

# %%
ds = run('phases')
print(ex.phase_ends(ds).isel(optimizer=0, lr=0).to_pandas())
show(ex.phases(ds))

# %% [markdown]
# ## Spectral init vs small random init vs SpecGD, like with like
# (`sweeps/matrix_sensing/methods.toml`.) Same instances; each (optimizer, init) at its best rate
# from a 5-rate log grid by the smallest seed-mean final test error (`sd.results.best_learning_rate`,
# rule "final"); the legend says whether the best rate is interior.

# %%
ds_m = run('methods')
best = sd.results.best_learning_rate(ds_m, 'test_error', mode='min', rule='final')
display(pd.DataFrame({'best lr': best['learning_rate'].to_series(),
                      'final test error': best['test_error'].isel(step=-1).mean('seed').to_series()}))
show(ex.methods(ds_m))
print(f'notebook time {time.perf_counter() - t_start:.1f} s')
