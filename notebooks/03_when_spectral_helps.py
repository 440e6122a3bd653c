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
# # 03 — When spectral updates help (PAPERS.md §3)
# A spectral step beats GD's guaranteed decrease exactly when the gradient's nuclear rank
# nr(G) = ‖G‖²_*/‖G‖²_F exceeds the stable rank st(A) = ‖A‖²_F/‖A‖²_op of the block's incoming
# activations.
#
# **Size.** `SIZE` in the parameters cell below is `"smoke"` (small sizes, what the tests run) or
# `"full"` (the papers' sizes). The outputs committed in `03_when_spectral_helps.ipynb` are at smoke size;
# regenerate them with `python notebooks/execute.py 03_when_spectral_helps --size smoke` (`--size full` for
# the papers' sizes).

# %% tags=["parameters"]
SIZE = "smoke"  # or "full": the papers' sizes

# %%
if SIZE not in ("smoke", "full"):
    raise ValueError(f'SIZE must be "smoke" or "full", got {SIZE!r}')
import warnings

import matplotlib.pyplot as plt
from IPython.display import display

warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here
from specdyn.experiments import when_spectral_helps as wsh
from specdyn.problems.random_features import RandomFeatures

# %matplotlib inline


def show(fig):
    """Show a figure once, whether or not pyplot made it."""
    display(fig)
    plt.close(fig)


size = {"smoke": wsh.SMOKE, "full": wsh.FULL}[SIZE]

# %% [markdown]
# ## ReLU random features: both step rules, and the criterion along the way
# GD at rate n/‖A‖²_op, SpecGD (nuclear scaling) at rate n/‖A‖²_F, float64, from zero init.

# %%
relu = RandomFeatures(activation='relu', **size['relu']['problem'])
ds = wsh.compare_rules(relu, steps=size['relu']['steps'])
print(ds['loss'].isel(step=-1).to_series())
gd = ds.sel(optimizer='gd')
print('along GD: nr(G) >= st(A) at', float((gd.nuclear_rank >= gd.stable_rank_A).mean()) * 100, '% of steps')
show(wsh.rules_figure(ds))

# %% [markdown]
# Realized one-step decreases are never below their guarantees ‖G‖²_F/(2L_F) and ‖G‖²_*/(2L_op):

# %%
for rule in ('gd', 'spectral'):
    gap = (gd[f'{rule}_decrease'] - gd[f'{rule}_decrease_bound']) / gd[f'{rule}_decrease_bound']
    print(rule, 'min (realized - guaranteed) / guaranteed along GD:', float(gap.min()))

# %% [markdown]
# ## SpecGD restarted from GD's iterates

# %%
rs = wsh.restarts(relu, steps=size['relu']['steps'], every=size['relu']['every'], horizon=size['relu']['horizon'])
show(wsh.restarts_figure(rs))

# %% [markdown]
# ## SwiGLU features: nr(G) falls below st(A) and GD wins

# %%
swiglu = RandomFeatures(activation='swiglu', **size['swiglu']['problem'])
ds2 = wsh.compare_rules(swiglu, steps=size['swiglu']['steps'], record_every=size['swiglu']['record_every'])
print(ds2['loss'].isel(step=-1).to_series())
show(wsh.rules_figure(ds2))

# %% [markdown]
# ## Dimension scaling: nr(G) after one step grows like k, st(A) stays bounded

# %%
g = wsh.nuclear_rank_growth(size['growth']['ks'], seeds=size['growth']['seeds'])
print(g.mean('seed').to_dataframe().round(2))
print('fitted slope of log nr(one step) vs log k:', round(wsh.growth_slope(g), 3))
show(wsh.growth_figure(g))

# %% [markdown]
# ## Any network: the criterion layer by layer
# `sd.layerwise_criterion(loss_fn, params, *args)` finds every weight matrix's incoming activations
# (the other operand of each matrix product with it) and returns nr(G), st(A) and their ratio.
# Post-activation stable rank at Gaussian init: ≈ π for ReLU, 6 for ReLU², growing with width for
# zero-mean activations (tanh, SwiGLU).

# %%
from specdyn.experiments import networks as nw

ds4 = nw.init_stable_ranks(widths=(64, 128, 256, 512, 1024) if SIZE == "full" else (32, 64, 128), seeds=3 if SIZE == "full" else 1)
print(ds4['stable_rank'].mean('seed').to_pandas().round(2))
show(nw.init_stable_rank_figure(ds4))

# %% [markdown]
# ## Sparse regression y = x₁x₂x₃ with a ReLU² network: spectral steps on the middle layers

# %%
ds5 = nw.sparse_regression(**(dict(dim=128, samples=512, steps=1000) if SIZE == "full" else dict(dim=16, samples=64, steps=100)))
print(ds5['loss'].isel(step=-1).to_series())
show(nw.sparse_regression_figure(ds5))

# %% [markdown]
# ## A character-level transformer on the standard library's source: Muon vs AdamW, nr and st per block

# %%
ds6 = nw.char_lm(SIZE)   # 'full' is sized for a GPU; 'medium' takes minutes on a CPU
show(nw.char_lm_figure(ds6))
