"""Test-suite setup: one OpenBLAS thread on few-core CPUs, before any test computes; the
longest test files first.

jaxlib's CPU SVD/eigh/QR run in OpenBLAS; beside XLA's own threads its threads
oversubscribe a 2-core machine (see specdyn/_cpu.py). sd.simulate and sd.sweep
limit it themselves; tests also call jnp.linalg directly.

`pytest -n 2 --dist loadfile` hands whole files to the workers in collection order:
a long file handed out last runs alone while the other worker idles. The files below
(each 40 s or more of one worker's time on 2 cores, 2026-12-03) therefore start first,
longest first; the order of tests inside a file, and of the other files, is unchanged.
"""

from specdyn._cpu import guard_cpu

LONGEST_FIRST = (
    "test_notebook_03_when_spectral_helps.py",
    "test_networks.py",
    "test_random_features.py",
    "test_sweep.py",
    "test_notebook_04_matrix_sensing.py",
    "test_notebook_02_imbalanced.py",
    "test_buckets.py",
    "test_matrix_sensing.py",
    "test_trust.py",
    "test_simulate.py",
    "test_imbalanced.py",
)


def pytest_configure(config):
    guard_cpu()


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: other files keep their order
