"""What a task looks like from outside: its observation spec and its legal actions."""

from __future__ import annotations

import dataclasses

import numpy as np

from icrl.envs.actions import legal_mask

ObsSpec = dict[str, tuple[tuple[int, ...], np.dtype]]


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """Static description of one task.

    ``legal_actions`` [n] int32 are unified-vocabulary indices in the order of the task's native
    actions: native action i is unified action ``legal_actions[i]``.
    """

    task: str
    domain: str  # "nethack" | "procgen"
    obs_spec: ObsSpec  # key -> (shape without batch/time axes, dtype)
    legal_actions: np.ndarray
    max_steps: int | None = None  # time limit applied by icrl (None: the task's own)

    @property
    def legal_mask(self) -> np.ndarray:
        """[VOCAB_SIZE] bool, True at the task's legal actions."""
        return legal_mask(self.legal_actions)

    @property
    def num_actions(self) -> int:
        return int(self.legal_actions.shape[0])

    def native_index(self, action: int) -> int:
        """Position of unified ``action`` among the task's native actions; ValueError if illegal."""
        hits = np.flatnonzero(self.legal_actions == int(action))
        if hits.size == 0:
            raise ValueError(
                f"action {int(action)} is not legal in {self.task}; "
                f"legal unified actions: {self.legal_actions.tolist()}"
            )
        return int(hits[0])

    def check_observation(self, obs: dict[str, np.ndarray], batch_shape: tuple[int, ...] = ()) -> None:
        """Raise ValueError naming the key whose shape or dtype differs from the spec."""
        missing = set(self.obs_spec) - set(obs)
        if missing:
            raise ValueError(f"{self.task}: observation lacks {sorted(missing)}")
        for key, (shape, dtype) in self.obs_spec.items():
            arr = obs[key]
            want = (*batch_shape, *shape)
            if arr.shape != want or arr.dtype != dtype:
                raise ValueError(
                    f"{self.task}: observation {key!r} is {arr.dtype}{list(arr.shape)}, "
                    f"spec says {np.dtype(dtype)}{list(want)}"
                )
