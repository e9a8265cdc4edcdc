"""Test-wide setup. Emulate 8 CPU devices so sharding code is tested as on a real mesh.

XLA reads the flags once, when jax first initialises a backend, so they are set before any test
imports jax. A test that needs one device uses ``jax.devices()[:1]``. Backend optimisation level 0
makes XLA compile about 3x faster; tests compile far more than they compute, and results stay
within the tests' float tolerances.
"""

import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
