"""``EpisodeRecorder``: the steps an agent played, as a validated ``Episode``."""

from __future__ import annotations

import numpy as np

from icrl.store.episode import OBS_SPECS, Episode


class EpisodeRecorder:
    """Accumulates (observation, chosen action, reward) steps into an ``Episode``.

    Only the domain's stored observation keys (``OBS_SPECS``) are kept: extra keys an expert needs
    (glyphs, blstats, message) are dropped here.
    """

    def __init__(self, domain: str):
        self.domain = domain
        self.keys = tuple(OBS_SPECS[domain])
        self.frames: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        self.actions: list[int] = []
        self.rewards: list[float] = []

    def add(self, obs: dict[str, np.ndarray], action: int, reward: float) -> None:
        """Record one step: ``obs`` is the observation ``action`` was chosen from."""
        for k in self.keys:
            self.frames[k].append(np.asarray(obs[k]))
        self.actions.append(int(action))
        self.rewards.append(float(reward))

    def __len__(self) -> int:
        return len(self.actions)

    def finish(self, *, task: str, level: int, episode: int, source: str, terminated: bool,
               truncated: bool) -> Episode:
        """The recorded steps as a validated ``Episode``."""
        spec = OBS_SPECS[self.domain]
        ep = Episode(
            domain=self.domain, task=task, level=int(level), source=source,  # type: ignore[arg-type]
            observations={k: np.stack(self.frames[k]).astype(spec[k][1], copy=False) for k in self.keys},
            actions=np.asarray(self.actions, np.int32), rewards=np.asarray(self.rewards, np.float32),
            terminated=bool(terminated), truncated=bool(truncated), episode=int(episode),
        )
        ep.validate()
        return ep
