"""Procgen search expert against random play: return, level-complete rate, seconds per episode,
steps searched per step played, action-change rate and action entropy (docs/experts.md).

    python benchmarks/procgen_expert.py --games coinrun ninja --levels 4 --sticky 0.2 [--budget 40000]

One episode per level (train level seeds 0 .. levels-1 unless --heldout), through icrl.envs.make_env
(200-step limit) and StickyActions seeded per level, one process, one core. Random play: uniform over
Procgen's 15 actions, 4 episodes per level.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from icrl.collect.levels import level_seed
from icrl.envs import make_env
from icrl.envs.actions import PROCGEN_OFFSET
from icrl.envs.procgen import PROCGEN_GAMES, procgen_core
from icrl.envs.wrappers import StickyActions
from icrl.experts.procgen_search import (ProcgenSearchExpert, SearchSettings, game_settings, plan_statistics,
                                         play_episode)


def play_expert(env, game: str, level: int, sticky: float, settings: SearchSettings, seed: int = 0) -> dict:
    """One episode of the search expert on ``env`` (made once per game, without sticky actions)."""
    played = StickyActions(env, sticky, seed=(seed, level))
    core = procgen_core(env)
    expert = ProcgenSearchExpert(game, np.random.default_rng((seed, level)), settings=settings)
    start = time.perf_counter()
    actions, ret, success = play_episode(expert, played, core, level)
    seconds = time.perf_counter() - start
    return {"return": ret, "complete": success, "length": len(actions), "seconds": seconds,
            "searched": expert.stats["searched"], "searches": expert.stats["searches"],
            "repairs": expert.stats["repairs"], **plan_statistics(actions)}


def completable(env, game: str, level: int, budget: int) -> bool:
    """Whether a search of ``budget`` steps without sticky actions finds a completion within 200 steps:
    a lower bound on "the level can be completed within 200 steps"."""
    obs = env.reset(level)
    expert = ProcgenSearchExpert(game, np.random.default_rng(level))
    expert.reset()
    state = procgen_core(env).get_state()
    found = expert._search(state, obs["rgb"], 200, budget)
    return bool(found) and expert._replay(state, [found])[0].complete


def play_random(env, level: int, sticky: float, episodes: int = 4, seed: int = 0) -> list[dict]:
    out = []
    for e in range(episodes):
        played = StickyActions(env, sticky, seed=(seed, level, e))
        rng = np.random.default_rng((seed, level, e, 1))
        played.reset(level)
        ret = 0.0
        while True:
            _, r, term, trunc, info = played.step(PROCGEN_OFFSET + int(rng.integers(15)))
            ret += r
            if term or trunc:
                break
        out.append({"return": ret, "complete": bool(info["success"])})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--games", nargs="+", default=list(PROCGEN_GAMES))
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--first", type=int, default=0, help="index of the first level (levels first .. first+levels-1)")
    p.add_argument("--heldout", action="store_true", help="held-out level seeds instead of train ones")
    p.add_argument("--sticky", type=float, default=0.2)
    p.add_argument("--no-random", action="store_true")
    p.add_argument("--completable", type=int, default=0, metavar="BUDGET",
                   help="for each level the expert did not complete, in games where it completed one: search "
                        "BUDGET steps without sticky actions to see if it can be completed within 200 steps")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="SearchSettings fields")
    p.add_argument("-v", action="store_true", help="one line per episode")
    args = p.parse_args()
    changes = {k: type(getattr(SearchSettings(), k))(v) for k, v in (x.split("=") for x in args.set)}
    print(f"settings: {changes or 'defaults'} over game_settings(game); sticky {args.sticky}; {args.levels} levels per game from index {args.first}")
    print("| game | expert return | expert complete | random return | random complete | s / episode | "
          "searched / played | planner steps/s | action changes | entropy (bits) | complete, completable levels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for game in args.games:
        levels = [level_seed("heldout" if args.heldout else "train", i) for i in range(args.first, args.first + args.levels)]
        settings = game_settings(game, **changes)
        env = make_env(f"procgen:{game}")  # one env per game: making one costs more than an episode
        rows = [play_expert(env, game, lv, args.sticky, settings) for lv in levels]
        if args.v:
            for lv, r in zip(levels, rows):
                print(f"  {game} level {lv}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in r.items()))
        rand = [] if args.no_random else [x for lv in levels for x in play_random(env, lv, args.sticky)]
        done = [r["complete"] for r in rows]
        can = list(done)
        if args.completable and any(done):
            can = [d or completable(env, game, lv, args.completable) for d, lv in zip(done, levels)]
        env.close()
        on_completable = (f"{sum(d for d, c in zip(done, can) if c)}/{sum(can)}" if args.completable and any(done)
                          else "")
        mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else float("nan")  # noqa: E731
        played = sum(r["length"] for r in rows)
        print(f"| {game} | {mean(rows, 'return'):.2f} | {mean(rows, 'complete'):.0%} | {mean(rand, 'return'):.2f} | "
              f"{mean(rand, 'complete'):.0%} | {mean(rows, 'seconds'):.2f} | "
              f"{sum(r['searched'] for r in rows) / played:.0f} | "
              f"{sum(r['searched'] for r in rows) / sum(r['seconds'] for r in rows):,.0f} | {mean(rows, 'change_rate'):.2f} | "
              f"{mean(rows, 'entropy_bits'):.2f} | {on_completable} |", flush=True)


if __name__ == "__main__":
    main()
