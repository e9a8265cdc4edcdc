"""Evaluation throughput: episodes/s of a quickstart-shaped few-shot evaluation, one level at a time
with envs built for every (level, method, k) as the evaluator did before batching (``old``), against
the batched evaluator (a task's envs built once, all L levels x N episodes of a (method, k) as one
batch: ``batched``), in one run; plus the batched evaluator one level at a time (``per-level``: envs
reused, N rows) and N levels at a time (``batch-N``), which separate the gains.

Shape (the quickstart's): the ``icl`` method (``--methods`` adds the baselines), a fresh 1M model
(weights do not change speed) with the quickstart's layout (E = 3 episodes of up to W = 64 steps in
T = 192, 2 tokens per step, ``action_sees_obs``), greedy; k in {0, 1, 2}; L levels x 5 episodes of
each task; episodes end at the env's end, W steps (the model) or 128 (``--max-steps``). Demos: a
store made by ``icrl collect`` (``--demos``), else synthetic episodes of 60 steps in a temporary
store. Each mode first plays 2-step rollouts of the same shapes so compilation is not timed (its
seconds are printed apart); then ``--repeats`` interleaved rounds, each mode's best reported, since
a shared machine's load changes from one minute to the next. It also says whether every mode
played the same episodes (it should: a row's randomness is its own).

    .venv/bin/python benchmarks/eval_throughput.py [--levels 16] [--tasks T ...] [--demos STORE]
    .venv/bin/python benchmarks/eval_throughput.py --modes old batched batch-4 \
        --methods icl,hashmap,random,expert,finetune
    .venv/bin/python benchmarks/eval_throughput.py --modes old batched --breakdown   # where the time goes
"""

from __future__ import annotations

import argparse
import tempfile
import time

TASKS = ("MiniHack-MazeWalk-15x15-v0", "MiniHack-Labyrinth-Small-v0")
MODES = ("old", "per-level", "batched")


def synthetic_store(path: str, tasks, levels: int, episodes: int = 3, length: int = 60) -> str:
    from icrl.data.synthetic import write_synthetic
    from icrl.store.reader import TrajectoryStore

    TrajectoryStore.create(path).close()
    write_synthetic(path, "bench", [("nethack", t, lv, ep, length) for t in tasks for lv in range(levels)
                                    for ep in range(episodes)])
    return path


def play(mode: str, cfg, plan, methods, store) -> list[dict]:
    """One evaluation in ``mode``: ``old`` calls the evaluator once per (level, method, k), so envs
    are built for each, as the evaluator before batching did; ``per-level`` reuses a task's envs and
    plays one level at a time; ``batched`` plays all of a task's levels at once; ``batch-N`` N levels
    at a time."""
    from icrl.eval.evaluate import Method, evaluate, shots_of

    if mode == "batched":
        return evaluate(cfg, plan, methods, store)
    if mode == "per-level" or mode.startswith("batch-"):
        size = 1 if mode == "per-level" else int(mode.split("-")[1])
        return evaluate(cfg.model_copy(update={"level_batch": size}), plan, methods, store)
    rows = []
    for task, levels in plan.items():
        for level in levels:
            for name, method in methods.items():
                for k in shots_of(method, cfg):
                    rows += evaluate(cfg, {task: [level]}, {name: Method(method.policy, shots=[k])}, store)
    return rows


class Breakdown:
    """Seconds spent, while on, in env steps, env resets, env construction and the policies' calls
    (``act`` + ``record`` + ``start``: the model's work, sampling and its host transfers included),
    by timing those calls; the rest of the wall time is the evaluator's own Python. XLA runs the
    model asynchronously: work still running when a call returns is counted where it is waited
    for (the model policy appends its action token while the envs step)."""

    def __init__(self, policies):
        import icrl.eval.evaluate as evaluate_module
        from icrl.envs.vector import SerialVectorEnv
        from icrl.envs.wrappers import StickyVectorEnv

        self.on, self.seconds = False, {}
        self._timed(StickyVectorEnv, "step", "env step")
        self._timed(SerialVectorEnv, "reset", "env reset")
        self._timed(evaluate_module, "make_vector_env", "env build")
        for policy in policies:
            for name in ("act", "record", "start"):
                self._timed(policy, name, "policy")

    def _timed(self, owner, name: str, key: str) -> None:
        inner = getattr(owner, name)

        def call(*args, **kwargs):
            if not self.on:
                return inner(*args, **kwargs)
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start

        setattr(owner, name, call)

    def line(self, wall: float) -> str:
        parts = [f"{k} {v:.1f} s ({100 * v / wall:.0f}%)" for k, v in self.seconds.items()]
        rest = wall - sum(self.seconds.values())
        return ", ".join(parts + [f"rest {rest:.1f} s ({100 * rest / wall:.0f}%)"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--levels", type=int, default=16, help="levels per task (quickstart: 16)")
    parser.add_argument("--episodes", type=int, default=5, help="rollouts per level and k (quickstart: 5)")
    parser.add_argument("--demos", help="demo store (icrl collect); default: synthetic demos")
    parser.add_argument("--modes", nargs="+", default=list(MODES), help=f"of {', '.join(MODES)}, batch-N")
    parser.add_argument("--methods", default="icl", help="comma-separated: icl (default) or any of "
                        "icl,hashmap,random,expert,finetune (the quickstart's evaluation)")
    parser.add_argument("--max-steps", type=int, default=128, help="episode step limit (quickstart: 128)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds over the modes, interleaved; each mode's best round is reported (a shared "
                             "machine's load varies from one minute to the next)")
    parser.add_argument("--breakdown", action="store_true",
                        help="after the rounds, play each mode once more timing env steps, resets, env "
                             "construction and the policies' calls")
    args = parser.parse_args()

    import jax
    from flax import nnx

    from icrl.data.layout import ContextLayout
    from icrl.eval.evaluate import EvalConfig, Method, plan_levels
    from icrl.eval.finetune import FinetunePolicy
    from icrl.eval.methods import method_shots
    from icrl.eval.model_policy import ModelPolicy
    from icrl.eval.policies import ExpertPolicy, HashmapPolicy, RandomPolicy
    from icrl.model.config import ModelConfig
    from icrl.model.decoding import Decoder
    from icrl.model.model import ICRLModel
    from icrl.store.reader import TrajectoryStore

    layout = ContextLayout(episodes=3, window=64, context_steps=192, tokens_per_step=2, positions="rope")
    model_cfg = ModelConfig(preset="1M", max_tokens=384, dropout=0.0, action_sees_obs=True)
    model = ICRLModel(model_cfg, rngs=nnx.Rngs(0))
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    make = {"icl": lambda: ModelPolicy(Decoder(model), layout, "icl", greedy=True), "hashmap": HashmapPolicy,
            "random": RandomPolicy, "expert": ExpertPolicy,
            "finetune": lambda: FinetunePolicy(model, model_cfg, layout, steps=20, greedy=True)}
    plays = method_shots(names, [0, 1, 2])
    methods = {m: Method(make[m](), shots=plays[m]) for m in names}
    with tempfile.TemporaryDirectory() as tmp:
        store = TrajectoryStore(args.demos or synthetic_store(f"{tmp}/demos", args.tasks, args.levels))
        cfg = EvalConfig(demos=str(store.root), shots=[0, 1, 2], levels=args.levels, episodes=args.episodes,
                         sticky=0.2, max_steps=args.max_steps)
        plan = plan_levels(cfg, args.tasks, store, max(cfg.shots), log=print)
        n = sum(len(v) for v in plan.values()) * args.episodes * sum(len(v) for v in plays.values())
        print(f"device: {jax.devices()[0].platform}; {', '.join(plan)}: {sum(len(v) for v in plan.values())} "
              f"task-levels x {args.episodes} episodes, {', '.join(f'{m} k={plays[m]}' for m in names)}: {n} "
              f"episodes (1M model, greedy, window {layout.window}, max {args.max_steps} steps); demos: "
              f"{'synthetic' if not args.demos else args.demos}; best of {args.repeats} interleaved rounds")
        warm, times, steps, results = {}, {m: [] for m in args.modes}, {}, {}
        for mode in args.modes:
            start = time.perf_counter()
            play(mode, cfg.model_copy(update={"max_steps": 2}), plan, methods, store)  # compile these shapes
            warm[mode] = time.perf_counter() - start
        for _ in range(args.repeats):
            for mode in args.modes:
                start = time.perf_counter()
                rows = play(mode, cfg, plan, methods, store)
                times[mode].append(time.perf_counter() - start)
                assert len(rows) == n
                steps[mode] = sum(r["length"] for r in rows)
                results[mode] = sorted((r["task"], r["level"], r["method"], r["k"], r["episode"], r["return"],
                                        r["length"]) for r in rows)
        rates = {m: n / min(t) for m, t in times.items()}
        for mode in args.modes:
            best = min(times[mode])
            print(f"{mode:10s} {n} episodes ({steps[mode]} env steps) in {best:6.1f} s (rounds: "
                  f"{', '.join(f'{t:.1f}' for t in times[mode])}): {rates[mode]:6.2f} episodes/s, "
                  f"{steps[mode] / best:7.1f} env steps/s; compile and warm-up {warm[mode]:.1f} s", flush=True)
        if args.breakdown:
            timer = Breakdown([m.policy for m in methods.values()])
            for mode in args.modes:
                timer.on, timer.seconds = True, {}
                start = time.perf_counter()
                play(mode, cfg, plan, methods, store)
                wall = time.perf_counter() - start
                timer.on = False
                print(f"{mode:10s} breakdown of a {wall:.1f} s round: {timer.line(wall)}", flush=True)
        same = len({tuple(r) for r in results.values()}) == 1
        print(f"same episodes in every mode: {'yes' if same else 'NO'}")
        for mode in args.modes:
            if mode != "old" and "old" in rates:
                print(f"{mode} vs old: {rates[mode] / rates['old']:.2f}x episodes/s")
        store.close()


if __name__ == "__main__":
    main()
