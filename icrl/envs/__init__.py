"""Every environment behind one small interface (see ``icrl.envs.base``).

    from icrl.envs import make_env, make_vector_env
    env = make_env("MiniHack-MazeWalk-9x9-v0", sticky_p=0.2)
    obs = env.reset(level=3)
    obs, reward, terminated, truncated, info = env.step(env.spec.legal_actions[0])
"""

from icrl.envs.base import Env, VectorEnv, VectorStep
from icrl.envs.registry import UnknownTaskError, domain_of, make_env, make_vector_env
from icrl.envs.spec import EnvSpec

__all__ = ["Env", "EnvSpec", "UnknownTaskError", "VectorEnv", "VectorStep", "domain_of", "make_env",
           "make_vector_env"]
