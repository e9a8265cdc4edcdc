"""Rollout rows over the local devices: evaluation is data parallel, one slice of rows per device.

A batch of R rollout rows (``icrl.eval.model_policy``) keeps everything per row on a leading axis:
the KV cache's keys and values [R, C, H, Dh] (or, with shared prefixes, [G, P, H, Dh] per level
and [R, W, H, Dh] per row, rows g·n … g·n + n − 1 on level g), lengths, timesteps, observations,
legal masks. ``RowSharding`` splits that axis over a 1-D mesh of the local devices and replicates
the parameters, so the jitted decoding step runs on every device at once on its own rows. A leaf
whose leading axis does not divide by the device count is replicated instead (correct, only
slower). With levels in contiguous blocks and G divisible by the device count, a device holds its
rows' prefixes too, so attention needs no communication.

Default: every local device on GPU and TPU; one device on CPU, whose "devices" share the same cores.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from icrl.errors import IcrlError


def default_devices() -> int:
    """Devices a rollout batch is split over when not told: all local ones on GPU / TPU, 1 on CPU."""
    return len(jax.local_devices()) if jax.default_backend() in ("gpu", "tpu") else 1


class RowSharding:
    """Puts pytrees on ``devices`` local devices: leading (row) axis split, or replicated."""

    def __init__(self, devices: int):
        local = jax.local_devices()
        if not 1 <= devices <= len(local):
            raise IcrlError(f"cannot split rollouts over {devices} devices: this process has {len(local)}")
        self.devices = devices
        self.mesh = Mesh(np.array(local[:devices]), ("rows",))
        self.split = NamedSharding(self.mesh, PartitionSpec("rows"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def rows(self, tree):
        """Every array leaf split along its leading axis where it divides, else replicated."""
        def put(x):
            shape = np.shape(x)
            split = len(shape) >= 1 and shape[0] % self.devices == 0 and shape[0] > 0
            return jax.device_put(x, self.split if split else self.replicated)

        return jax.tree.map(put, tree)

    def replicate(self, tree):
        """Every array leaf on every device (the parameters)."""
        return jax.tree.map(lambda x: jax.device_put(x, self.replicated), tree)
