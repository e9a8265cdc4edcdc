"""The trained model as a policy: k demos in its context, then N rollouts of the same level.

With ``use_cache`` (the default) the demos are prefilled once, with batch 1, into a KV cache that is
tiled to the N rollouts, which then decode one step at a time: observation token -> action logits
-> action (and reward) token. Without it, every step recomputes the whole context (demos + each
rollout's steps so far) with a full forward pass; both give the same actions for the same seeds,
which the tests check, and ``benchmarks/eval_throughput.py`` measures the difference.

Context budget: the demos and a rollout share ``eval_budget`` (the model config's ``eval_tokens``,
else ``max_tokens``): the demos get the first half (kept whole while they fit, else each cut to its
first ``window`` steps so the k demos fill it) and a rollout the second half, whatever k is. A fixed rollout limit matters: with a limit that
grew as the demos shrank, fewer demos would mean longer rollouts and more per-step penalties, a
difference in return that has nothing to do with learning from the demos.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from icrl.store.episode import Episode
from icrl.envs.actions import PAD_ACTION
from icrl.eval.policies import Policy
from icrl.model.cache import tile


def demo_context(demos: Sequence[Episode], max_steps: int) -> dict | None:
    """Pack demos end to end into one model batch row (leading axis 1), at most ``max_steps`` steps.

    Returns None when there are no demos. Keys as the model's batch format.
    """
    if not demos:
        return None
    window = max(1, max_steps // len(demos))
    whole = sum(d.length for d in demos) <= max_steps
    parts = [(d, d.length if whole else min(d.length, window)) for d in demos]
    obs = {k: np.concatenate([d.observations[k][:n] for d, n in parts])[None] for k in demos[0].observations}
    actions = np.concatenate([d.actions[:n] if d.has_actions else np.full(n, PAD_ACTION, np.int32)
                              for d, n in parts])
    return {
        "obs": obs,
        "actions": actions[None].astype(np.int32),
        "rewards": np.concatenate([d.rewards[:n] for d, n in parts])[None].astype(np.float32),
        "episode_start": np.concatenate([np.arange(n) == 0 for _, n in parts])[None],
        "timestep": np.concatenate([np.arange(n, dtype=np.int32) for _, n in parts])[None],
    }


def pad_steps(batch: dict, steps: int) -> dict:
    """Pad a one-row batch at the end to ``steps`` steps (zeros; PAD_ACTION for actions), so that
    every level's context has one shape and the jitted prefill compiles once."""
    n = batch["actions"].shape[1]

    def pad(a: np.ndarray, value=0) -> np.ndarray:
        widths = [(0, 0), (0, steps - n)] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, widths, constant_values=value)

    out = {k: pad(v, PAD_ACTION if k == "actions" else 0) for k, v in batch.items() if k != "obs"}
    out["obs"] = {k: pad(v) for k, v in batch["obs"].items()}
    return out


class ModelPolicy(Policy):
    """Samples actions from the model's (masked) logits; ``greedy`` takes the arg-max instead."""

    def __init__(self, decoder, model_config, name: str = "icl", *, use_cache: bool = True,
                 greedy: bool = False, temperature: float = 1.0):
        self.decoder, self.name = decoder, name
        self.tokens_per_step = model_config.tokens_per_step
        self.context_tokens = model_config.eval_budget
        self.use_cache, self.greedy, self.temperature = use_cache, greedy, temperature

    @property
    def demo_steps(self) -> int:
        """Steps the demos may fill: the first half of the context budget."""
        return self.context_tokens // self.tokens_per_step // 2

    @property
    def max_rollout_steps(self) -> int:
        """Steps a rollout may take: the second half of the context budget, for every k."""
        return self.context_tokens // self.tokens_per_step - self.demo_steps

    def start(self, spec, demos, num_envs, rng):
        self.n = num_envs
        self.key = jax.random.PRNGKey(int(rng.integers(1 << 31)))
        self.legal = jnp.asarray(np.broadcast_to(spec.legal_mask, (num_envs, spec.legal_mask.shape[0])))
        self.context = demo_context(demos, self.demo_steps)
        self.context_steps = 0 if self.context is None else int(self.context["actions"].shape[1])
        self.t = np.zeros(num_envs, np.int32)
        self.step_limit = self.max_rollout_steps
        if self.use_cache:
            if self.context is None:
                cache = nnx.merge(self.decoder.graphdef, self.decoder.state).init_cache(1, self.context_tokens)
            else:
                padded = pad_steps(self.context, self.demo_steps)
                _, cache = self.decoder.prefill(padded, self.context_tokens, jnp.array([self.context_steps]))
            self.cache = tile(cache, num_envs)
        else:
            self.history: list[dict] = []  # per step: obs [N, ...], actions [N], rewards [N]

    def _sample(self, logits: jax.Array) -> np.ndarray:
        if self.greedy:
            return np.asarray(jnp.argmax(logits, axis=-1), np.int32)
        self.key, sub = jax.random.split(self.key)
        return np.asarray(jax.random.categorical(sub, logits / self.temperature, axis=-1), np.int32)

    def act(self, obs, live):
        episode_start = self.t == 0
        if self.use_cache:
            logits, self.cache = self.decoder.observe(self.cache, obs, jnp.asarray(episode_start),
                                                      jnp.asarray(self.t), self.legal)
        else:
            logits = self._recompute(obs)
        self._pending_obs = obs
        return self._sample(logits)

    def record(self, actions, rewards, done):
        if self.use_cache:
            self.cache = self.decoder.append_action(self.cache, jnp.asarray(actions, jnp.int32),
                                          jnp.asarray(rewards, jnp.float32))
        else:
            self.history.append({"obs": self._pending_obs, "actions": np.asarray(actions, np.int32),
                                 "rewards": np.asarray(rewards, np.float32)})
        self.t += 1

    def _recompute(self, obs) -> jax.Array:
        """Logits [N, V] of the current step from a full forward pass over context + history.

        The rollout is padded to the whole budget so every step runs the same compiled function;
        causal attention makes the padding after the current step irrelevant to its logits.
        """
        steps = self.history + [{"obs": obs, "actions": np.full(self.n, PAD_ACTION, np.int32),
                                 "rewards": np.zeros(self.n, np.float32)}]
        now, T = len(steps) - 1, self.max_rollout_steps
        pad = T - len(steps)
        padded = lambda a: np.concatenate([a, np.zeros((self.n, pad, *a.shape[2:]), a.dtype)], axis=1)  # noqa: E731
        rollout = {
            "obs": {k: padded(np.stack([s["obs"][k] for s in steps], axis=1)) for k in obs},
            "actions": padded(np.stack([s["actions"] for s in steps], axis=1)),
            "rewards": padded(np.stack([s["rewards"] for s in steps], axis=1)),
            "episode_start": np.broadcast_to(np.arange(T) == 0, (self.n, T)),
            "timestep": np.broadcast_to(np.arange(T, dtype=np.int32), (self.n, T)),
        }
        if self.context is not None:
            c = self.context
            tilen = lambda a: np.repeat(a, self.n, axis=0)  # noqa: E731
            rollout = {
                "obs": {k: np.concatenate([tilen(c["obs"][k]), rollout["obs"][k]], axis=1) for k in obs},
                **{k: np.concatenate([tilen(c[k]), rollout[k]], axis=1)
                   for k in ("actions", "rewards", "episode_start", "timestep")},
            }
        rollout["legal_mask"] = self.legal
        return self.decoder.forward(rollout)[:, self.context_steps + now]
