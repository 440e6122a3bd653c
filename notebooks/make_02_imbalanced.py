"""Generate notebooks/02_imbalanced.ipynb (no outputs): python notebooks/make_02_imbalanced.py"""
from _notebook import write_notebook

cells = [
    ("md", "# 02 — Imbalanced data: per-component learning rates (PAPERS.md §2)\n"
           "GD learns majority-class components first; SpecGD learns all at one rate. `FULL = True` for full size."),
    ("code", "FULL = False"),
    ("code", "import jax, jax.numpy as jnp, numpy as np, matplotlib.pyplot as plt\n"
             "import specdyn as sd\n"
             "from specdyn.problems.gaussian_mixture import GaussianMixture\n"
             "from specdyn.reduced import imbalanced as red\n"
             "from specdyn.experiments import imbalanced as ex\n"
             "jax.config.update('jax_enable_x64', True)"),
    ("md", "## Closed forms vs simulation (d = k = 3, p = (0.5, 0.3, 0.2))"),
    ("code", "P = (0.5, 0.3, 0.2); steps = 300 if FULL else 80\n"
             "prob = GaussianMixture(classes=3, dim=3, priors=P, mean_norm=1.0, noise=0.5)\n"
             "fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)\n"
             "for ax, (name, opt, f, lr) in zip(axes, [('gd', sd.gd(0.5), red.gd_alpha, 0.5),\n"
             "                                      ('specgd', sd.spectral_gd(0.01, method='svd'), red.specgd_alpha, 0.01)]):\n"
             "    out = sd.simulate(prob, opt, key=jax.random.PRNGKey(0), steps=steps)\n"
             "    t = np.asarray(out['step'], float)[:, None]\n"
             "    want = np.asarray(f(t, lr, jnp.asarray(P), 1.0, 0.5))\n"
             "    print(name, 'max |sim - closed form| =', np.abs(np.asarray(out['alpha']) - want).max())\n"
             "    ax.plot(t, out['alpha']); ax.plot(t, want, 'k--', lw=0.8); ax.set(title=name, xlabel='step')\n"
             "axes[0].set_ylabel('alpha_c'); plt.show()"),
    ("md", "## Depth: SpecGD saturation step vs α* (slope 1/L on log axes)"),
    ("code", "for L in ([1, 2, 4] if FULL else [1, 2]):\n"
             "    p = GaussianMixture(classes=8, dim=8, imbalance=1.5, depth=L, init_scale=1e-3 if L > 1 else 0.0, noise=0.3)\n"
             "    out = sd.simulate(p, sd.spectral_gd(2e-3, method='svd'), key=jax.random.PRNGKey(0), steps=600)\n"
             "    star = np.asarray(red.components(p.class_priors(), 1.0, 0.3)[2])\n"
             "    T = np.argmax(np.asarray(out['alpha']) >= star, axis=0)\n"
             "    print(f'depth {L}: fitted slope {sd.results.log_log_slope(star, T):.3f} (expected {1/L:.3f}); '\n"
             "          f'T_minority/T_majority = {T[-1]/T[0]:.2f}')"),
    ("md", "## Accuracy gap over training (long tail, cross-entropy), each optimizer at its best lr"),
    ("code", "k, d, n, steps = (20, 200, 2000, 2000) if FULL else (5, 10, 200, 60)\n"
             "prob = GaussianMixture(classes=k, dim=d, priors='power', samples=n, loss_type='cross_entropy',\n"
             "                       mean_norm=3.0, noise=1.0, test_per_class=100 if FULL else 20)\n"
             "lrs = {'gd': [1.0, 3.0], 'ngd': [0.03, 0.1], 'specgd': [0.03, 0.1], 'adam': [0.003, 0.01]}\n"
             "lrs = lrs if FULL else {k: lrs[k] for k in ('gd', 'specgd')}\n"
             "ds = sd.sweep(prob, optimizers=list(lrs), learning_rates=lrs, seeds=3 if FULL else 1,\n"
             "              steps=steps, record_every=max(1, steps // 40), progress=False)\n"
             "best = sd.results.best_learning_rate(ds, 'balanced_accuracy', mode='max', rule='peak')\n"
             "print(best.learning_rate.to_series())\n"
             "ex.best_lr_accuracy(ds); plt.show()"),
    ("md", "## Real data: long-tailed digits, MLP"),
    ("code", "r = ex.digits_experiment(full=FULL, seeds=None if FULL else [0, 1], steps=None if FULL else 30,\n"
             "                         optimizers=('gd', 'muon', 'shampoo', 'adam') if FULL else ('gd', 'muon'))\n"
             "for name in r:\n"
             "    if name != 'step':\n"
             "        print(name, 'lr', r[name]['learning_rate'], 'final balanced', r[name]['balanced_accuracy'][:, -1].mean().round(3),\n"
             "              'worst', r[name]['worst_accuracy'][:, -1].mean().round(3))\n"
             "ex.digits_figure(r); plt.show()"),
]
write_notebook(cells, "notebooks/02_imbalanced.ipynb")
