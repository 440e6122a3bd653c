"""Generate notebooks/03_when_spectral_helps.ipynb (no outputs): python notebooks/make_03_when_spectral_helps.py"""
from _notebook import write_notebook

cells = [
    ("md", "# 03 — When spectral updates help (PAPERS.md §3)\n"
           "A spectral step beats GD's guaranteed decrease exactly when the gradient's nuclear rank\n"
           "nr(G) = ‖G‖²_*/‖G‖²_F exceeds the stable rank st(A) = ‖A‖²_F/‖A‖²_op of the block's incoming\n"
           "activations. `FULL = True` runs the paper's sizes."),
    ("code", "FULL = False"),
    ("code", "import jax, numpy as np, matplotlib.pyplot as plt\n"
             "import specdyn as sd\n"
             "from specdyn.problems.random_features import RandomFeatures\n"
             "from specdyn.experiments import when_spectral_helps as wsh\n"
             "size = wsh.FULL if FULL else wsh.SMOKE"),
    ("md", "## ReLU random features: both step rules, and the criterion along the way\n"
           "GD at rate n/‖A‖²_op, SpecGD (nuclear scaling) at rate n/‖A‖²_F, float64, from zero init."),
    ("code", "relu = RandomFeatures(activation='relu', **size['relu']['problem'])\n"
             "ds = wsh.compare_rules(relu, steps=size['relu']['steps'])\n"
             "print(ds['loss'].isel(step=-1).to_series())\n"
             "gd = ds.sel(optimizer='gd')\n"
             "print('along GD: nr(G) >= st(A) at', float((gd.nuclear_rank >= gd.stable_rank_A).mean()) * 100, '% of steps')\n"
             "wsh.rules_figure(ds); plt.show()"),
    ("md", "Realized one-step decreases are never below their guarantees ‖G‖²_F/(2L_F) and ‖G‖²_*/(2L_op):"),
    ("code", "for rule in ('gd', 'spectral'):\n"
             "    gap = (gd[f'{rule}_decrease'] - gd[f'{rule}_decrease_bound']) / gd[f'{rule}_decrease_bound']\n"
             "    print(rule, 'min (realized - guaranteed) / guaranteed along GD:', float(gap.min()))"),
    ("md", "## SpecGD restarted from GD's iterates"),
    ("code", "rs = wsh.restarts(relu, steps=size['relu']['steps'], every=size['relu']['every'], horizon=size['relu']['horizon'])\n"
             "wsh.restarts_figure(rs); plt.show()"),
    ("md", "## SwiGLU features: nr(G) falls below st(A) and GD wins"),
    ("code", "swiglu = RandomFeatures(activation='swiglu', **size['swiglu']['problem'])\n"
             "ds2 = wsh.compare_rules(swiglu, steps=size['swiglu']['steps'], record_every=size['swiglu']['record_every'])\n"
             "print(ds2['loss'].isel(step=-1).to_series())\n"
             "wsh.rules_figure(ds2); plt.show()"),
    ("md", "## Dimension scaling: nr(G) after one step grows like k, st(A) stays bounded"),
    ("code", "g = wsh.nuclear_rank_growth(size['growth']['ks'], seeds=size['growth']['seeds'])\n"
             "print(g.mean('seed').to_dataframe().round(2))\n"
             "print('fitted slope of log nr(one step) vs log k:', round(wsh.growth_slope(g), 3))\n"
             "wsh.growth_figure(g); plt.show()"),
    ("md", "## Any network: the criterion layer by layer\n"
           "`sd.layerwise_criterion(loss_fn, params, *args)` finds every weight matrix's incoming activations\n"
           "(the other operand of each matrix product with it) and returns nr(G), st(A) and their ratio.\n"
           "Post-activation stable rank at Gaussian init: ≈ π for ReLU, 6 for ReLU², growing with width for\n"
           "zero-mean activations (tanh, SwiGLU)."),
    ("code", "from specdyn.experiments import networks as nw\n"
             "ds4 = nw.init_stable_ranks(widths=(64, 128, 256, 512, 1024) if FULL else (32, 64, 128), seeds=3 if FULL else 1)\n"
             "print(ds4['stable_rank'].mean('seed').to_pandas().round(2))\n"
             "nw.init_stable_rank_figure(ds4); plt.show()"),
    ("md", "## Sparse regression y = x₁x₂x₃ with a ReLU² network: spectral steps on the middle layers"),
    ("code", "ds5 = nw.sparse_regression(**(dict(dim=128, samples=512, steps=1000) if FULL else dict(dim=16, samples=64, steps=100)))\n"
             "print(ds5['loss'].isel(step=-1).to_series())\n"
             "nw.sparse_regression_figure(ds5); plt.show()"),
    ("md", "## A character-level transformer on the standard library's source: Muon vs AdamW, nr and st per block"),
    ("code", "ds6 = nw.char_lm('full' if FULL else 'smoke')   # 'full' is sized for a GPU; 'medium' takes minutes on a CPU\n"
             "nw.char_lm_figure(ds6); plt.show()"),
]
write_notebook(cells, "notebooks/03_when_spectral_helps.ipynb")
