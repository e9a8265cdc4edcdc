"""Test-wide setup. Emulate 8 CPU devices so sharding code is tested as on a real mesh.

XLA reads the flag once, when jax first initialises a backend, so it is set before any test imports
jax. A test that needs one device uses ``jax.devices()[:1]``.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
