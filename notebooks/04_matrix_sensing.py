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
# # 04 — Small random initialization ≈ spectral learning (PAPERS.md §4)
# GD on overparameterized matrix sensing ¼‖𝒜(UUᵀ) − y‖² from U₀ = α·U_rand: (I) an alignment
# phase where GD acts as the power method (I + μ𝒜*(y))ᵗU₀, (II) saddle avoidance, (III) local
# refinement; the final test error is polynomially small in α.
#
# **Size.** `SIZE` in the parameters cell below is `"smoke"` (small sizes, what the tests run) or
# `"full"` (the papers' sizes). The outputs committed in `04_matrix_sensing.ipynb` are at smoke size;
# regenerate them with `python notebooks/execute.py 04_matrix_sensing --size smoke` (`--size full` for
# the papers' sizes).

# %% tags=["parameters"]
SIZE = "smoke"  # or "full": the papers' sizes

# %%
if SIZE not in ("smoke", "full"):
    raise ValueError(f'SIZE must be "smoke" or "full", got {SIZE!r}')
import jax, numpy as np, matplotlib.pyplot as plt
import warnings
from IPython.display import display
warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here
import specdyn as sd
from specdyn.problems.matrix_sensing import MatrixSensing
from specdyn.experiments import matrix_sensing as ex
from specdyn.results import log_log_slope
# %matplotlib inline


def show(fig):
    """Show a figure once, whether or not pyplot made it."""
    display(fig)
    plt.close(fig)


jax.config.update('jax_enable_x64', True)
n, r, k, m = (30, 3, 10, 2000) if SIZE == "full" else (8, 2, 4, 200)
base = MatrixSensing(dim=n, rank=r, width=k, measurements=m, condition=1.5, init_scale=1e-6)

# %% [markdown]
# ## The three phases (GD, lr 0.25); dashed: the power-method prediction of the angle in phase I

# %%
ds = sd.sweep(base, optimizers=['gd'], learning_rates=[0.25], seeds=3 if SIZE == "full" else 1,
              steps=500 if SIZE == "full" else 300, record_every=2 if SIZE == "full" else 5, progress=False)
print(ex.phase_ends(ds).isel(optimizer=0, lr=0).to_pandas())
show(ex.phases(ds))

# %% [markdown]
# ## Final test error against the init scale α (slope of log error vs log α)

# %%
alphas = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6] if SIZE == "full" else [1e-2, 1e-3, 1e-4, 1e-5]
p = MatrixSensing(dim=n, rank=r, width=k, measurements=m, condition=2.0)
ds_a = sd.sweep(p, optimizers=['gd'], learning_rates=[0.2], seeds=3 if SIZE == "full" else 1,
                steps=3000 if SIZE == "full" else 600, record_every=50, grid={'init_scale': alphas}, progress=False)
final = ds_a['test_error'].isel(step=-1).mean('seed').squeeze()
print('fitted slope of log error vs log alpha:', round(log_log_slope(alphas, final.values), 3))
show(ex.error_vs_init_scale(ds_a))

# %% [markdown]
# ## Final test error against the width k, from r to n (α = 1e-3)

# %%
widths = [r, 2 * r, k, 2 * k, n] if SIZE == "full" else [r, n]
p = MatrixSensing(dim=n, rank=r, width=r, measurements=m, condition=2.0, init_scale=1e-3)
ds_k = sd.sweep(p, optimizers=['gd'], learning_rates=[0.2], seeds=3 if SIZE == "full" else 1,
                steps=3000 if SIZE == "full" else 600, record_every=50, grid={'width': widths}, progress=False)
print(ds_k['test_error'].isel(step=-1).mean('seed').squeeze().to_pandas())
show(ex.error_vs_width(ds_k))

# %% [markdown]
# ## GD vs SpecGD, from small random init and from spectral init (same instances)

# %%
p = MatrixSensing(dim=n, rank=r, width=k, measurements=m, condition=2.0, init_scale=1e-3)
ds_m = sd.sweep(p, optimizers={'gd': sd.gd, 'specgd': lambda lr: sd.spectral_gd(lr, method='svd')},
                learning_rates={'gd': [0.2], 'specgd': [0.003]}, seeds=3 if SIZE == "full" else 1,
                steps=3000 if SIZE == "full" else 400, record_every=20,
                grid={'init_type': ['random', 'spectral']}, progress=False)
print(ds_m['test_error'].isel(step=-1, lr=0).mean('seed').to_pandas())
show(ex.methods(ds_m))
