"""Evaluation throughput: env steps/s of model rollouts with the shared-prefix KV cache vs full
recomputation of the context at every step, and N batched envs vs one env at a time, in one run;
plus the KV-cache bytes per level at the quickstart's context length.

The model is the quickstart's shape (1M preset, max_tokens 384, eval_tokens 512) with fresh weights:
speed does not depend on what the weights are. Demos are 2 synthetic MiniHack-like episodes of 60
steps; rollouts are on MiniHack-MazeWalk-15x15-v0, sampling actions.

    uv run python benchmarks/eval_throughput.py [--steps 32] [--envs 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

TASK = "MiniHack-MazeWalk-15x15-v0"


def rollout_rate(policy, num_envs: int, steps: int, demos, warmup: int = 2) -> float:
    """Env steps/s of ``steps`` steps of ``num_envs`` envs of one level (compile excluded)."""
    from icrl.envs import make_vector_env

    with make_vector_env(TASK, num_envs) as venv:
        rng = np.random.default_rng(0)
        policy.start(venv.spec, demos, num_envs, rng)
        obs = venv.reset([0] * num_envs)
        live = np.ones(num_envs, bool)
        start = None
        for t in range(warmup + steps):
            if t == warmup:
                start = time.perf_counter()
            actions = policy.act(obs, live)
            out = venv.step(actions)
            policy.record(actions, out.reward, out.done)
            obs = out.obs
            if out.done.any():  # keep every env busy: restart finished ones on the same level
                obs = venv.reset([0] * num_envs, mask=out.done)
        return steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32, help="measured steps per figure")
    parser.add_argument("--envs", type=int, default=5, help="batched envs (the protocol's 5 episodes)")
    args = parser.parse_args()

    import jax
    from flax import nnx

    from icrl.data.synthetic import nethack_episode
    from icrl.eval.model_policy import ModelPolicy
    from icrl.model.cache import tile
    from icrl.model.config import ModelConfig
    from icrl.model.decoding import Decoder
    from icrl.model.model import ICRLModel

    cfg = ModelConfig(preset="1M", max_tokens=384, eval_tokens=512, dropout=0.0)
    decoder = Decoder(ICRLModel(cfg, rngs=nnx.Rngs(0)))
    demos = [nethack_episode(i, task=TASK, level=0, length=60) for i in range(2)]
    print(f"device: {jax.devices()[0].platform}; 1M preset, evaluation context {cfg.eval_budget} tokens; "
          f"2 demos x 60 steps in context; {args.steps} measured steps")

    rates = {}
    for name, use_cache, n in (("KV cache, batched", True, args.envs), ("KV cache, one env", True, 1),
                               ("recompute, batched", False, args.envs), ("recompute, one env", False, 1)):
        rates[name] = rollout_rate(ModelPolicy(decoder, cfg, use_cache=use_cache), n, args.steps, demos)
    print(f"{'mode':24s} {'env steps/s':>12s}")
    for name, rate in rates.items():
        print(f"{name:24s} {rate:12.1f}")
    print(f"KV cache vs recomputation (batched {args.envs}): "
          f"{rates['KV cache, batched'] / rates['recompute, batched']:.1f}x")
    print(f"batched {args.envs} vs one env at a time (KV cache): "
          f"{rates['KV cache, batched'] / rates['KV cache, one env']:.1f}x")

    # The cache a level needs: the demos' prefix, tiled to the envs that roll out from it.
    policy = ModelPolicy(decoder, cfg)
    from icrl.envs import make_env

    env = make_env(TASK)
    policy.start(env.spec, demos, args.envs, np.random.default_rng(0))
    env.close()
    leaves = jax.tree.leaves(policy.cache)
    per_level = sum(x.nbytes for x in leaves)
    prefix = sum(x.nbytes for x in jax.tree.leaves(tile(jax.tree.map(lambda a: a[:1], policy.cache), 1)))
    print(f"KV cache per level ({args.envs} rollouts, capacity {cfg.eval_budget} tokens): "
          f"{per_level / 2**20:.2f} MiB ({prefix / 2**20:.2f} MiB per rollout)")


if __name__ == "__main__":
    main()
