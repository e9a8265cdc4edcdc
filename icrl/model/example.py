"""Random batches in the model's input format, for tests, benchmarks and shape checks."""

from __future__ import annotations

import numpy as np

from icrl.envs.actions import NUM_PROCGEN_ACTIONS, PROCGEN_OFFSET, VOCAB_SIZE


def legal_actions(domain: str) -> np.ndarray:
    """Indices of a typical task's legal actions: MiniHack's 8 compass moves, or Procgen's 15."""
    if domain == "nethack":
        return np.arange(8, dtype=np.int32)  # NLE enumerates the 8 compass directions first
    return np.arange(PROCGEN_OFFSET, PROCGEN_OFFSET + NUM_PROCGEN_ACTIONS, dtype=np.int32)


def example_batch(domain: str, batch_size: int, steps: int, *, episodes: int = 2, seed: int = 0) -> dict:
    """A random batch (format in ``icrl.model.model``) of ``steps`` steps per row, each row split
    into ``episodes`` consecutive episodes of near-equal length; actions are legal."""
    rng = np.random.default_rng(seed)
    b, t = batch_size, steps
    if domain == "nethack":
        obs = {
            "tty_chars": rng.integers(32, 128, (b, t, 24, 80), dtype=np.uint8),
            "tty_colors": rng.integers(0, 16, (b, t, 24, 80), dtype=np.uint8),
            "tty_cursor": np.stack([rng.integers(1, 22, (b, t)), rng.integers(0, 80, (b, t))], -1).astype(np.uint8),
        }
    elif domain == "procgen":
        obs = {"rgb": rng.integers(0, 256, (b, t, 64, 64, 3), dtype=np.uint8)}
    else:
        raise ValueError(f"unknown domain {domain!r}; expected 'nethack' or 'procgen'")
    starts = np.linspace(0, t, episodes, endpoint=False).astype(int)
    episode_start = np.zeros((b, t), bool)
    episode_start[:, starts] = True
    timestep = np.arange(t) - starts[np.searchsorted(starts, np.arange(t), side="right") - 1]
    legal = legal_actions(domain)
    mask = np.zeros((b, VOCAB_SIZE), bool)
    mask[:, legal] = True
    return {
        "obs": obs,
        "actions": rng.choice(legal, (b, t)).astype(np.int32),
        "rewards": rng.normal(size=(b, t)).astype(np.float32),
        "episode_start": episode_start,
        "timestep": np.broadcast_to(timestep.astype(np.int32), (b, t)).copy(),
        "legal_mask": mask,
    }
