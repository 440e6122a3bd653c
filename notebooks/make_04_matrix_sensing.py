"""Generate notebooks/04_matrix_sensing.ipynb (no outputs): python notebooks/make_04_matrix_sensing.py"""
from _notebook import write_notebook

cells = [
    ("md", "# 04 — Small random initialization ≈ spectral learning (PAPERS.md §4)\n"
           "GD on overparameterized matrix sensing ¼‖𝒜(UUᵀ) − y‖² from U₀ = α·U_rand: (I) an alignment "
           "phase where GD acts as the power method (I + μ𝒜*(y))ᵗU₀, (II) saddle avoidance, (III) local "
           "refinement; the final test error is polynomially small in α. `FULL = True` for full size."),
    ("code", "FULL = False"),
    ("code", "import jax, numpy as np, matplotlib.pyplot as plt\n"
             "import specdyn as sd\n"
             "from specdyn.problems.matrix_sensing import MatrixSensing\n"
             "from specdyn.experiments import matrix_sensing as ex\n"
             "from specdyn.results import log_log_slope\n"
             "jax.config.update('jax_enable_x64', True)\n"
             "n, r, k, m = (30, 3, 10, 2000) if FULL else (8, 2, 4, 200)\n"
             "base = MatrixSensing(dim=n, rank=r, width=k, measurements=m, condition=1.5, init_scale=1e-6)"),
    ("md", "## The three phases (GD, lr 0.25); dashed: the power-method prediction of the angle in phase I"),
    ("code", "ds = sd.sweep(base, optimizers=['gd'], learning_rates=[0.25], seeds=3 if FULL else 1,\n"
             "              steps=500 if FULL else 300, record_every=2 if FULL else 5, progress=False)\n"
             "print(ex.phase_ends(ds).isel(optimizer=0, lr=0).to_pandas())\n"
             "ex.phases(ds); plt.show()"),
    ("md", "## Final test error against the init scale α (slope of log error vs log α)"),
    ("code", "alphas = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6] if FULL else [1e-2, 1e-3, 1e-4, 1e-5]\n"
             "p = MatrixSensing(dim=n, rank=r, width=k, measurements=m, condition=2.0)\n"
             "ds_a = sd.sweep(p, optimizers=['gd'], learning_rates=[0.2], seeds=3 if FULL else 1,\n"
             "                steps=3000 if FULL else 600, record_every=50, grid={'init_scale': alphas}, progress=False)\n"
             "final = ds_a['test_error'].isel(step=-1).mean('seed').squeeze()\n"
             "print('fitted slope of log error vs log alpha:', round(log_log_slope(alphas, final.values), 3))\n"
             "ex.error_vs_init_scale(ds_a); plt.show()"),
    ("md", "## Final test error against the width k, from r to n (α = 1e-3)"),
    ("code", "widths = [r, 2 * r, k, 2 * k, n] if FULL else [r, n]\n"
             "p = MatrixSensing(dim=n, rank=r, width=r, measurements=m, condition=2.0, init_scale=1e-3)\n"
             "ds_k = sd.sweep(p, optimizers=['gd'], learning_rates=[0.2], seeds=3 if FULL else 1,\n"
             "                steps=3000 if FULL else 600, record_every=50, grid={'width': widths}, progress=False)\n"
             "print(ds_k['test_error'].isel(step=-1).mean('seed').squeeze().to_pandas())\n"
             "ex.error_vs_width(ds_k); plt.show()"),
    ("md", "## GD vs SpecGD, from small random init and from spectral init (same instances)"),
    ("code", "p = MatrixSensing(dim=n, rank=r, width=k, measurements=m, condition=2.0, init_scale=1e-3)\n"
             "ds_m = sd.sweep(p, optimizers={'gd': sd.gd, 'specgd': lambda lr: sd.spectral_gd(lr, method='svd')},\n"
             "                learning_rates={'gd': [0.2], 'specgd': [0.003]}, seeds=3 if FULL else 1,\n"
             "                steps=3000 if FULL else 400, record_every=20,\n"
             "                grid={'init_type': ['random', 'spectral']}, progress=False)\n"
             "print(ds_m['test_error'].isel(step=-1, lr=0).mean('seed').to_pandas())\n"
             "ex.methods(ds_m); plt.show()"),
]
write_notebook(cells, "notebooks/04_matrix_sensing.ipynb")
