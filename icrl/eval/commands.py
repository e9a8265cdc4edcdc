"""``icrl eval RUN_DIR ...`` (few-shot evaluation with baselines) and ``icrl report RUN_DIR ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from icrl.eval.methods import METHODS


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; methods: {', '.join(METHODS)}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="few-shot evaluation of a trained run, with baselines")
    p.add_argument("run", help="run directory of `icrl train`")
    p.add_argument("--demos", required=True, help="trajectory store with the held-out demos")
    p.add_argument("--suite", default="minihack", help="task suite (default minihack)")
    p.add_argument("--split", default="heldout", help="split of the suite (default heldout)")
    p.add_argument("--tasks", nargs="+", help="tasks to evaluate instead of the split's (any registered task)")
    p.add_argument("--shots", type=_ints, default=[0, 1, 3, 5, 7], help="k values, e.g. 0,1,3,5,7")
    p.add_argument("--levels", type=int, default=20, help="levels per task (default 20)")
    p.add_argument("--episodes", type=int, default=5, help="rollouts per level and k (default 5)")
    p.add_argument("--sticky", type=float, default=0.2, help="sticky-action probability (default 0.2)")
    p.add_argument("--max-steps", type=int, help="step limit per episode (default: the env's)")
    p.add_argument("--methods", type=_names, default=None,
                   help=f"subset of {','.join(METHODS)} (default: every one that applies to the tasks' domains)")
    p.add_argument("--bc0", metavar="RUN", help="single-trajectory run (data.mode=single): BC-0 at k=0")
    p.add_argument("--bc1", metavar="RUN", help="single-trajectory run: BC-1 at k=1 (default: --bc0's run)")
    p.add_argument("--finetune-steps", type=int, default=20, help="gradient steps of the fine-tuning baseline")
    p.add_argument("--finetune-lr", type=float, default=1e-4, help="learning rate of the fine-tuning baseline")
    p.add_argument("--greedy", action="store_true", help="arg-max actions instead of sampling")
    p.add_argument("--primary-k", type=int, default=1,
                   help="the k declared before evaluating as the headline result (one of --shots; default 1)")
    p.add_argument("--allow-train-levels", action="store_true",
                   help="evaluate even on levels the run's training stores hold (not held out)")
    p.add_argument("--level-batch", type=int,
                   help="levels rolled out together, level-batch x episodes env rows (default: all of a task's)")
    p.add_argument("--devices", type=int, metavar="N",
                   help="local devices the model's rollout rows are split over (default: all on GPU / TPU, 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="evaluate the N runs RUN-seed<i> of `icrl train --seeds N` with one plan (same levels, "
                        "sticky-action seeds and demos), each into its own eval/, and write RUN-seeds/report.md: "
                        "each seed and the mean ± 95%% CI over seeds")
    p.add_argument("--diagnostic", action="store_true",
                   help="only the in-context diagnostic: the demos' teacher-forced loss after same-level vs "
                        "other-level context (no rollouts)")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("report", help="compare the evaluations of several runs side by side, "
                                             "or report a whole sweep (icrl report SWEEP_DIR)")
    p.add_argument("runs", nargs="+", help="run directories with eval/results.json, or one sweep directory "
                                           "(writes its report.md and report.png across the grid)")
    p.add_argument("--method", default=None,
                   help="method to compare (default icl; for a sweep directory, the sweep file's report.method)")
    p.add_argument("--out", help="also write the table to this markdown file")
    p.set_defaults(func=cmd_report)


def cmd_eval(args: argparse.Namespace) -> int:
    from icrl.envs.suite import load_suite
    from icrl.errors import IcrlError
    from icrl.eval.evaluate import EvalConfig, plan_levels
    from icrl.eval.methods import (MODEL_METHODS, check_heldout, check_methods, check_same_layout, default_methods,
                                   method_shots, seed_runs)
    from icrl.eval.outputs import seeds_dir, write_seeds_report
    from icrl.store.reader import TrajectoryStore

    # Every check below comes before a model is loaded or anything is written.
    run = Path(args.run)
    for name, value in (("--levels", args.levels), ("--episodes", args.episodes),
                        ("--level-batch", 1 if args.level_batch is None else args.level_batch)):
        if value < 1:
            raise IcrlError(f"{name} must be >= 1, got {value}")
    if args.primary_k not in args.shots:
        raise IcrlError(f"--primary-k {args.primary_k} is not one of --shots {','.join(map(str, args.shots))}")
    if args.devices is not None:
        import jax

        if not 1 <= args.devices <= jax.local_device_count():
            raise IcrlError(f"--devices {args.devices}: this process has {jax.local_device_count()} local device(s)")
    if args.seeds is not None:
        evaluated = seed_runs(run, args.seeds)  # RUN itself need not exist: `icrl train --seeds` makes only these
    elif not run.is_dir():
        raise IcrlError(f"{run}: no such run directory")
    else:
        evaluated = [run]
    if args.diagnostic:
        from icrl.eval.diagnostic import run_diagnostic

        for one in evaluated:
            d = run_diagnostic(one, args.demos, args.step, levels=args.levels)
            print(f"in-context diagnostic of {one} step {d['step']} on {d['queries']} held-out queries: loss "
                  f"{d['diag_same_loss']:.4f} after same-level context, {d['diag_other_loss']:.4f} after "
                  f"other-level context; gap {d['diag_gap']:+.4f} (above 0: the model reads its context)")
        return 0
    cfg = EvalConfig(suite=args.suite, split=args.split, tasks=args.tasks, demos=args.demos, shots=args.shots,
                     levels=args.levels, episodes=args.episodes, sticky=args.sticky,
                     max_steps=args.max_steps, seed=args.seed, level_batch=args.level_batch)
    tasks = args.tasks or load_suite(args.suite).tasks(args.split)
    if args.methods is None:
        args.methods = default_methods(tasks)
    model = set(args.methods) & set(MODEL_METHODS)
    labels = ["run"] if args.seeds is None else [f"seed{i}" for i in range(args.seeds)]
    runs = {**({label: path for label, path in zip(labels, evaluated)} if model else {}),
            **{label: path for label, path in (("bc0", args.bc0), ("bc1", args.bc1 or args.bc0)) if path}}
    check_methods(runs, args.methods, tasks)
    if model and len(evaluated) > 1:
        check_same_layout(evaluated)
    demo_store = TrajectoryStore(args.demos)
    plays = method_shots(args.methods, cfg.shots, args.bc0, args.bc1)
    # One plan for every seed run: the same levels (and so demos), and cfg.seed gives them the same
    # common-random-number draws, so the seeds differ only in their weights.
    plan = plan_levels(cfg, tasks, demo_store, max((k for ks in plays.values() for k in ks), default=0), log=print)
    if not args.allow_train_levels:
        check_heldout(runs, plan)
    for i, one in enumerate(evaluated):
        report = _evaluate_run(args, cfg, plan, demo_store, one, warn=i == 0)
        if args.seeds is None:
            print(report)
        else:
            print(f"{one}: wrote eval/results.json, report.md, plots/", flush=True)
    if args.seeds is not None:
        print(write_seeds_report(run, evaluated, sorted(model, key=MODEL_METHODS.index) or args.methods))
        print(f"wrote {seeds_dir(run) / 'report.md'}")
    return 0


def _evaluate_run(args: argparse.Namespace, cfg, plan: dict[str, list[int]], demo_store, run: Path,
                  warn: bool = True) -> str:
    """Evaluate one run on ``plan`` (task -> levels) and write its eval/ outputs; the report's text.
    ``warn``: print the layout's warnings (once for seed runs, which share one layout)."""
    from icrl.eval.evaluate import evaluate
    from icrl.eval.methods import build_methods
    from icrl.eval.outputs import eval_meta, write_outputs

    methods, layout = build_methods(run, args.methods, cfg.shots, step=args.step, greedy=args.greedy, bc0=args.bc0,
                                    bc1=args.bc1, finetune_steps=args.finetune_steps,
                                    finetune_lr=args.finetune_lr, devices=args.devices)
    meta = eval_meta(layout, cfg.shots, args.primary_k)
    for k, warnings in meta["warnings"].items():
        for warning in warnings if warn else ():
            print(f"warning: k={k}: {warning}")
    print(f"evaluating {run}: {sum(len(v) for v in plan.values())} task-levels x {cfg.episodes} episodes, "
          f"k in {cfg.shots}, methods {', '.join(methods)}", flush=True)

    def progress(task, k, name, rows):
        mean = sum(r["return"] for r in rows) / len(rows)
        success = sum(r["success"] for r in rows) / len(rows)
        print(f"  {task} k={k} {name:9s} {len(rows)} episodes: return {mean:+.2f}, success {success:.0%}",
              flush=True)

    rows = evaluate(cfg, plan, methods, demo_store, on_batch=progress)
    return write_outputs(rows, run, cfg, meta)


def cmd_report(args: argparse.Namespace) -> int:
    from icrl.eval.outputs import compare_runs, read_results
    from icrl.sweep.report import is_sweep_dir, write_report

    if len(args.runs) == 1 and is_sweep_dir(args.runs[0]):  # `icrl sweep`'s directory: the grid's report
        text = write_report(args.runs[0], args.method)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    table = compare_runs(read_results(args.runs), args.method or "icl")
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0
