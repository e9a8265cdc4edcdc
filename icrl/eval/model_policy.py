"""The trained model as a policy: each level's k demos in its context, then rollouts of that level.

A batch holds R rollout rows over L levels (``icrl.eval.policies``: row r plays with the demos of
level ``row_demos[r]``). With ``use_cache`` (the default) the L levels' demos are prefilled once, as
one batch of L rows, into a KV cache that the R rollouts start from (``share_prefix``: each level's
demos stored once for its rollouts, when the rows come level by level as the evaluator orders
them; else ``take_rows``, a copy per rollout); the rollouts decode one step at a time:
observation token -> action logits -> action (and reward) token. Without it, every step recomputes
each row's whole context (its level's demos + its steps so far) with a full forward pass; both give
the same actions for the same seeds, which the tests check, and ``benchmarks/eval_throughput.py``
measures the difference.

Layout: the run's saved ``ContextLayout`` (``icrl.data.layout``), the one training used. The k demos
are laid out by the same function as training rows (``demo_row``: each demo its first W steps),
and a rollout may last W steps, for every k, so positions and windows are those of training while
k <= E - 1. A fixed rollout limit also matters on its own: a limit that grew as the demos shrank
would give fewer demos longer rollouts and more per-step penalties, a difference in return that
has nothing to do with learning from the demos.

Recall (layouts with ``recall``, ``icrl.data.recall``): each level's demo windows make one
``RecallTable`` (``demo_recall``: what a training row's query episode looks up in the episodes before
it); every rollout step looks its observation up there and hands the recalled action to the model.

Sampling: row r draws step t's action with key fold_in(key_r, t), key_r from the row's generator,
so its actions do not depend on the other rows of the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from icrl.data.layout import ContextLayout, demo_recall, demo_row
from icrl.data.recall import NO_RECALL
from icrl.envs.actions import PAD_ACTION
from icrl.errors import IcrlError
from icrl.eval.policies import Policy, check_batch, check_model_domain
from icrl.model.cache import share_prefix, take_rows
from icrl.store.episode import OBS_SPECS, Episode

# Keys of a packed row that the model reads (``icrl.model.model``'s batch format); "recall" only
# in layouts with recall (``icrl.data.recall``).
MODEL_KEYS = ("obs", "actions", "rewards", "episode_start", "timestep")


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in (*MODEL_KEYS, "recall") if k in batch}


def demo_batch(demos: Sequence[Sequence[Episode]], layout: ContextLayout, domain: str) -> dict | None:
    """The L demo sets as one padded batch: ``demo_row`` of each, stacked (L = len(demos)).

    Every set must hold the same k > 0 demos, so the rows share one shape: obs key -> [L, kW, ...],
    actions / rewards / episode_start / timestep / episode_id / loss_mask [L, kW], lengths [L] int32
    (steps filled). None when k = 0.
    """
    ks = sorted({len(d) for d in demos})
    if len(ks) > 1:
        raise ValueError(f"one batch needs the same number of demos for every level, got k in {ks}")
    if not ks or ks[0] == 0:
        return None
    rows = [demo_row(d, layout, domain) for d in demos]
    out = {k: np.concatenate([r[k] for r in rows]) for k in rows[0] if k != "obs"}
    out["obs"] = {o: np.concatenate([r["obs"][o] for r in rows]) for o in rows[0]["obs"]}
    return out


@functools.partial(jax.jit, static_argnames=("greedy",))
def sample_actions(keys: jax.Array, t: jax.Array, logits: jax.Array, temperature: float, greedy: bool) -> jax.Array:
    """keys [R, 2] uint32, t [R] int32 (row's step), logits [R, V] -> actions [R] int32."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    draw = lambda k, s, lg: jax.random.categorical(jax.random.fold_in(k, s), lg / temperature)  # noqa: E731
    return jax.vmap(draw)(keys, t, logits).astype(jnp.int32)


class ModelPolicy(Policy):
    """Samples actions from the model's (masked) logits; ``greedy`` takes the arg-max instead.

    ``decoder`` is an ``icrl.model.decoding.Decoder`` (or anything with its ``graphdef``, ``state``,
    ``prefill``, ``observe``, ``append_action`` and ``forward``).
    """

    def __init__(self, decoder, layout: ContextLayout, name: str = "icl", *, use_cache: bool = True,
                 greedy: bool = False, temperature: float = 1.0, devices: int | None = None):
        """``devices``: local devices the rollout rows are split over (``icrl.eval.devices``; None:
        all on GPU / TPU, one on CPU). Cached decoding only."""
        self.decoder, self.layout, self.name = decoder, layout, name
        self.use_cache, self.greedy, self.temperature = use_cache, greedy, temperature
        self.devices = devices
        self.sharding = None

    @property
    def max_rollout_steps(self) -> int:
        """Steps a rollout may take: one window, for every k."""
        return self.layout.window

    @functools.cached_property
    def domain(self) -> str:
        return nnx.merge(self.decoder.graphdef, self.decoder.state).config.domain

    @functools.cached_property
    def model_recall(self) -> str:
        return nnx.merge(self.decoder.graphdef, self.decoder.state).config.recall

    @functools.cached_property
    def reward_tokens(self) -> bool:
        """Whether the model has reward tokens: then an action is appended with its reward, after the step."""
        return nnx.merge(self.decoder.graphdef, self.decoder.state).config.reward_tokens

    def check(self, task):
        check_model_domain(self.name, self.domain, task)

    def start(self, spec, demos, row_demos, rngs):
        rows = check_batch(demos, row_demos, rngs)
        self.n = n = len(rows)
        k = len(demos[0]) if len(demos) else 0
        self.layout.check(k)
        if self.model_recall != self.layout.recall:
            raise IcrlError(f"method {self.name!r}: the model was built with recall {self.model_recall!r}, the run's "
                            f"layout says {self.layout.recall!r}")
        self.recall_tables = (None if self.layout.recall == "none"
                              else [demo_recall(d, self.layout, spec.domain) for d in demos])
        self.keys = jnp.stack([jax.random.PRNGKey(int(r.integers(1 << 31))) for r in rngs])
        self.legal = jnp.asarray(np.broadcast_to(spec.legal_mask, (n, spec.legal_mask.shape[0])))
        self.obs_keys = tuple(OBS_SPECS[spec.domain])  # extra env keys (the expert's) are not model inputs
        self.t = np.zeros(n, np.int32)
        self.step_limit = self.max_rollout_steps
        batch = demo_batch(demos, self.layout, spec.domain)
        self.rows = rows
        self._place()
        self.context = None if batch is None else model_inputs(batch)
        self.context_steps = np.zeros(n, np.int64) if batch is None else batch["lengths"][rows].astype(np.int64)
        capacity = self.layout.tokens(k)
        if self.use_cache:
            if batch is None:
                self.cache = nnx.merge(self.decoder.graphdef, self.decoder.state).init_cache(n, capacity)
            else:
                self.cache = self._prefix_cache(batch, rows, capacity)
            if self.sharding is not None:
                self.cache, self.legal = self.sharding.rows((self.cache, self.legal))
        else:
            self.history: list[dict] = []  # per step: obs [R, ...], actions [R], rewards [R]

    def _place(self) -> None:
        """Split the rows over the local devices (``icrl.eval.devices``) when more than one is used:
        the parameters are replicated once, the cache and each step's inputs split by row."""
        from icrl.eval.devices import RowSharding, default_devices

        devices = self.devices or default_devices()
        if not self.use_cache or devices == 1:
            self.sharding = None
            return
        if self.sharding is None or self.sharding.devices != devices:
            self.sharding = RowSharding(devices)
            self.decoder.state = self.sharding.replicate(self.decoder.state)

    def _prefix_cache(self, batch: dict, rows: np.ndarray, capacity: int):
        """The cache of R rollouts, rollout r starting from level ``rows[r]``'s demos (``batch``:
        ``demo_batch``'s L rows), with room for ``capacity`` tokens per row.

        Where the rows come level by level, the same number per level (the evaluator's order),
        each level's demos are stored once (``share_prefix``): decoding then reads them once per
        level rather than once per rollout. Otherwise every row gets its own copy (``take_rows``).
        """
        groups, context = len(batch["lengths"]), batch["actions"].shape[1] * self.layout.tokens_per_step
        lengths = jnp.asarray(batch["lengths"])
        per = len(rows) // groups
        if per * groups == len(rows) and np.array_equal(rows, np.repeat(np.arange(groups), per)):
            _, prefix = self.decoder.prefill(self.context, context, lengths)
            return share_prefix(prefix, per, capacity - context)
        _, prefix = self.decoder.prefill(self.context, capacity, lengths)
        return take_rows(prefix, rows)

    def _recall(self, obs) -> np.ndarray | None:
        """Each row's recalled action [R] int32 in its level's demo table (None without recall)."""
        if self.recall_tables is None:
            return None
        spec = OBS_SPECS[self.domain]
        keys = self.recall_tables[0].keys({k: np.asarray(v, spec[k][1]) for k, v in obs.items()})
        return np.array([self.recall_tables[self.rows[i]].get(key, NO_RECALL) for i, key in enumerate(keys)], np.int32)

    def act(self, obs, live):
        obs = {k: obs[k] for k in self.obs_keys}
        episode_start = self.t == 0
        recall = self._recall(obs)
        if self.use_cache:
            inputs = (obs, episode_start, self.t, recall)
            if self.sharding is not None:
                inputs = self.sharding.rows(inputs)
            logits, self.cache = self.decoder.observe(self.cache, inputs[0], inputs[1], inputs[2], self.legal, inputs[3])
        else:
            logits = self._recompute(obs, recall)
        self._pending_obs, self._pending_recall = obs, recall
        actions = np.asarray(sample_actions(self.keys, self.t, logits, self.temperature, self.greedy))
        if self.use_cache and not self.reward_tokens:
            # The action token needs no reward: append it now, so that XLA runs it (asynchronously)
            # while the caller steps the envs. Rows that are not live may be given another action
            # by the caller; their cache is never read again.
            self.cache = self.decoder.append_action(self.cache, actions)
        return actions

    def record(self, actions, rewards, done):
        if self.use_cache:
            if self.reward_tokens:
                self.cache = self.decoder.append_action(self.cache, np.asarray(actions, np.int32),
                                                        np.asarray(rewards, np.float32))
        else:
            self.history.append({"obs": self._pending_obs, "actions": np.asarray(actions, np.int32),
                                 "rewards": np.asarray(rewards, np.float32), "recall": self._pending_recall})
        self.t = self.t + 1  # a new array: the last one may still be read by a call in flight

    def _recompute(self, obs, recall: np.ndarray | None) -> jax.Array:
        """Logits [R, V] of the current step from a full forward pass over each row's context + history.

        Row r holds its level's first ``context_steps[r]`` demo steps, then its rollout, then
        padding to k windows + one window, so every step runs the same compiled function; causal
        attention makes everything after the current step irrelevant to its logits.
        """
        steps = self.history + [{"obs": obs, "actions": np.full(self.n, PAD_ACTION, np.int32),
                                 "rewards": np.zeros(self.n, np.float32), "recall": recall}]
        c = self.context
        kw = 0 if c is None else c["actions"].shape[1]
        total, at, rows = kw + self.max_rollout_steps, self.context_steps, np.arange(self.n)

        def lay(context: np.ndarray | None, rollout: list[np.ndarray]) -> np.ndarray:
            out = np.zeros((self.n, total, *rollout[0].shape[1:]), rollout[0].dtype)
            if context is not None:
                out[:, :kw] = np.asarray(context)[self.rows]
            for s, step in enumerate(rollout):  # step s of row r sits right after its demos
                out[rows, at + s] = step
            return out

        ctx = (lambda key, o=None: None) if c is None else (lambda key, o=None: c[key] if o is None else c[key][o])
        batch = {
            "obs": {k: lay(ctx("obs", k), [s["obs"][k] for s in steps]) for k in obs},
            "actions": lay(ctx("actions"), [s["actions"] for s in steps]),
            "rewards": lay(ctx("rewards"), [s["rewards"] for s in steps]),
            "episode_start": lay(ctx("episode_start"), [np.full(self.n, s == 0) for s in range(len(steps))]),
            "timestep": lay(ctx("timestep"), [np.full(self.n, s, np.int32) for s in range(len(steps))]),
            "legal_mask": self.legal,
        }
        if recall is not None:
            batch["recall"] = lay(ctx("recall"), [s["recall"] for s in steps])
        return self.decoder.forward(batch)[rows, at + len(steps) - 1]
