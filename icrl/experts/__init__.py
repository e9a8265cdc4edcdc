"""Policies that make demonstrations: the MiniHack planning oracle and the Procgen search expert.

    from icrl.experts import make_expert, REQUIRED_KEYS
    expert = make_expert(task, native_actions, rng)   # MiniHack: REQUIRED_KEYS must be in the observations
    expert.reset(); native_index = expert.act(obs)    # Procgen: expert.act(obs, procgen_core(env).get_state())
"""

from icrl.experts.minihack_oracle import REQUIRED_KEYS, MiniHackOracle
from icrl.experts.registry import make_expert

__all__ = ["REQUIRED_KEYS", "MiniHackOracle", "make_expert"]
