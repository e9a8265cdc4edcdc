"""Batched stepping of single envs: in this process, or spread over worker subprocesses.

NetHack-family envs are single-threaded C; on a machine with C cores, ``SubprocVectorEnv`` with up
to C workers steps them in parallel. Worker processes are started with ``spawn`` so that a parent
that has already started JAX's threads is never forked.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from icrl.envs.base import Env, Obs, VectorEnv, VectorStep, stack_obs


class SerialVectorEnv(VectorEnv):
    """N single envs stepped one after another in this process."""

    def __init__(self, envs: Sequence[Env]):
        if not envs:
            raise ValueError("a vector env needs at least one env")
        self.envs = list(envs)
        self.spec = self.envs[0].spec
        self.num_envs = len(self.envs)
        self._obs: list[Obs | None] = [None] * self.num_envs
        self._terminated = np.zeros(self.num_envs, bool)
        self._truncated = np.zeros(self.num_envs, bool)
        self._success = np.zeros(self.num_envs, bool)
        self._reset_once = np.zeros(self.num_envs, bool)

    def reset(self, levels: Sequence[int], mask: np.ndarray | None = None) -> Obs:
        if len(levels) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} levels, got {len(levels)}")
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        if not (mask | self._reset_once).all():
            raise ValueError("every env must be reset once before a partial reset")
        for i in np.flatnonzero(mask):
            self._obs[i] = self.envs[i].reset(int(levels[i]))
            self._terminated[i] = self._truncated[i] = self._success[i] = False
            self._reset_once[i] = True
        return stack_obs(self._obs)

    def step(self, actions: np.ndarray) -> VectorStep:
        actions = np.asarray(actions).reshape(self.num_envs)
        reward = np.zeros(self.num_envs, np.float32)
        for i in np.flatnonzero(~(self._terminated | self._truncated)):
            obs, r, term, trunc, info = self.envs[i].step(int(actions[i]))
            self._obs[i], reward[i] = obs, r
            self._terminated[i], self._truncated[i] = term, trunc
            self._success[i] = bool(info.get("success", False))
        return VectorStep(obs=stack_obs(self._obs), reward=reward, terminated=self._terminated.copy(),
                          truncated=self._truncated.copy(), success=self._success.copy())

    def close(self) -> None:
        for env in self.envs:
            env.close()


@dataclasses.dataclass(frozen=True)
class EnvFactory:
    """A picklable recipe for one env: ``icrl.envs.make_env(task, **kwargs)``."""

    task: str
    kwargs: dict[str, Any]

    def __call__(self) -> Env:
        from icrl.envs.registry import make_env

        return make_env(self.task, **self.kwargs)


def _worker(conn, factories: list[Callable[[], Env]]) -> None:
    venv = SerialVectorEnv([f() for f in factories])
    conn.send(("ok", venv.spec))
    while True:
        cmd, payload = conn.recv()
        try:
            if cmd == "reset":
                out: Any = venv.reset(*payload)
            elif cmd == "step":
                out = venv.step(payload)
            elif cmd == "close":
                venv.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", out))
        except Exception as err:  # sent to the parent, which re-raises it
            conn.send(("error", err))


class SubprocVectorEnv(VectorEnv):
    """N envs split into contiguous chunks, one chunk per worker process."""

    def __init__(self, factories: Sequence[Callable[[], Env]], workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.num_envs = len(factories)
        workers = min(workers, self.num_envs)
        bounds = np.linspace(0, self.num_envs, workers + 1).astype(int)
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        for s in self._slices:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, list(factories[s])), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.spec = [self._receive(conn) for conn in self._conns][0]

    def _receive(self, conn) -> Any:
        status, payload = conn.recv()
        if status == "error":
            raise payload
        return payload

    def reset(self, levels: Sequence[int], mask: np.ndarray | None = None) -> Obs:
        levels = list(levels)
        if len(levels) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} levels, got {len(levels)}")
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        for conn, s in zip(self._conns, self._slices):
            conn.send(("reset", (levels[s], mask[s])))
        parts = [self._receive(conn) for conn in self._conns]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def step(self, actions: np.ndarray) -> VectorStep:
        actions = np.asarray(actions).reshape(self.num_envs)
        for conn, s in zip(self._conns, self._slices):
            conn.send(("step", actions[s]))
        parts: list[VectorStep] = [self._receive(conn) for conn in self._conns]
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return VectorStep(obs={k: np.concatenate([p.obs[k] for p in parts]) for k in parts[0].obs},
                          reward=cat("reward"), terminated=cat("terminated"),
                          truncated=cat("truncated"), success=cat("success"))

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()

