"""Test-suite setup: one OpenBLAS thread on few-core CPUs, before any test computes.

jaxlib's CPU SVD/eigh/QR run in OpenBLAS; beside XLA's own threads its threads
oversubscribe a 2-core machine (see specdyn/_cpu.py). sd.simulate and sd.sweep
limit it themselves; tests also call jnp.linalg directly.
"""

from specdyn._cpu import guard_cpu


def pytest_configure(config):
    guard_cpu()
