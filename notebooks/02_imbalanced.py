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
# # 02 — Imbalanced data: per-component learning rates (PAPERS.md §2)
# GD learns majority-class components first; SpecGD learns all at one rate.
#
# **Size.** `SIZE` in the parameters cell below is `"smoke"` (small sizes, what the tests run) or
# `"full"` (the papers' sizes). The outputs committed in `02_imbalanced.ipynb` are at smoke size;
# regenerate them with `python notebooks/execute.py 02_imbalanced --size smoke` (`--size full` for
# the papers' sizes).

# %% tags=["parameters"]
SIZE = "smoke"  # or "full": the papers' sizes

# %%
if SIZE not in ("smoke", "full"):
    raise ValueError(f'SIZE must be "smoke" or "full", got {SIZE!r}')
import warnings

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

warnings.filterwarnings('ignore', message='IProgress not found')  # tqdm's notebook bar wants ipywidgets; no bar is drawn here
import specdyn as sd
from specdyn.experiments import imbalanced as ex
from specdyn.problems.gaussian_mixture import GaussianMixture
from specdyn.reduced import imbalanced as red

# %matplotlib inline


def show(fig):
    """Show a figure once, whether or not pyplot made it."""
    display(fig)
    plt.close(fig)


jax.config.update('jax_enable_x64', True)

# %% [markdown]
# ## Closed forms vs simulation (d = k = 3, p = (0.5, 0.3, 0.2))

# %%
P = (0.5, 0.3, 0.2)
steps = 300 if SIZE == "full" else 80
prob = GaussianMixture(classes=3, dim=3, priors=P, mean_norm=1.0, noise=0.5)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for ax, (name, opt, f, lr) in zip(axes, [('gd', sd.gd(0.5), red.gd_alpha, 0.5),
                                      ('specgd', sd.spectral_gd(0.01, method='svd'), red.specgd_alpha, 0.01)]):
    out = sd.simulate(prob, opt, key=jax.random.PRNGKey(0), steps=steps)
    t = np.asarray(out['step'], float)[:, None]
    want = np.asarray(f(t, lr, jnp.asarray(P), 1.0, 0.5))
    print(name, 'max |sim - closed form| =', np.abs(np.asarray(out['alpha']) - want).max())
    ax.plot(t, out['alpha'])
    ax.plot(t, want, 'k--', lw=0.8)
    ax.set(title=name, xlabel='step')
axes[0].set_ylabel('alpha_c')
plt.show()

# %% [markdown]
# ## Depth: SpecGD saturation step vs α* (slope 1/L on log axes)

# %%
for L in ([1, 2, 4] if SIZE == "full" else [1, 2]):
    p = GaussianMixture(classes=8, dim=8, imbalance=1.5, depth=L, init_scale=1e-3 if L > 1 else 0.0, noise=0.3)
    out = sd.simulate(p, sd.spectral_gd(2e-3, method='svd'), key=jax.random.PRNGKey(0), steps=600)
    star = np.asarray(red.components(p.class_priors(), 1.0, 0.3)[2])
    T = np.argmax(np.asarray(out['alpha']) >= star, axis=0)
    print(f'depth {L}: fitted slope {sd.results.log_log_slope(star, T):.3f} (expected {1/L:.3f}); '
          f'T_minority/T_majority = {T[-1]/T[0]:.2f}')

# %% [markdown]
# ## Accuracy gap over training (long tail, cross-entropy), each optimizer at its best lr
# (`specdyn.experiments.imbalanced.RULE`: the lowest seed-mean balanced test loss reached during training)

# %%
k, d, n, steps = (20, 200, 2000, 2000) if SIZE == "full" else (5, 10, 200, 60)
prob = GaussianMixture(classes=k, dim=d, priors='power', samples=n, loss_type='cross_entropy',
                       mean_norm=3.0, noise=1.0, test_per_class=100 if SIZE == "full" else 20)
lrs = {'gd': [1.0, 3.0], 'ngd': [0.03, 0.1], 'specgd': [0.03, 0.1], 'adam': [0.003, 0.01]}
lrs = lrs if SIZE == "full" else {k: lrs[k] for k in ('gd', 'specgd')}
ds = sd.sweep(prob, optimizers=list(lrs), learning_rates=lrs, seeds=3 if SIZE == "full" else 1,
              steps=steps, record_every=max(1, steps // 40), progress=False)
print(ex.rule_text())  # the module's stated rule: peak balanced test loss
best = sd.results.best_learning_rate(ds, **ex.RULE)
print(best.learning_rate.to_series())
show(ex.best_lr_accuracy(ds))

# %% [markdown]
# ## Real data: long-tailed digits, MLP

# %%
r = ex.digits_experiment(full=(SIZE == "full"), seeds=None if SIZE == "full" else [0, 1], steps=None if SIZE == "full" else 30,
                         optimizers=('gd', 'muon', 'shampoo', 'adam') if SIZE == "full" else ('gd', 'muon'))
for name in r:
    if name != 'step':
        print(name, 'lr', r[name]['learning_rate'], 'final balanced', r[name]['balanced_accuracy'][:, -1].mean().round(3),
              'worst', r[name]['worst_accuracy'][:, -1].mean().round(3))
show(ex.digits_figure(r))
