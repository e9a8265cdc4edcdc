"""``icrl train CONFIG``: train on one CPU or a multi-host mesh; ``icrl sweep CONFIG``: a grid of runs.

    icrl train experiments/tiny.yaml [--set train.steps=200 ...] [--resume]
    icrl train CONFIG --coordinator host0:1234 --num-processes 2 --process-id 0     # explicit multi-host
    icrl sweep CONFIG --grid train.lr=1e-4,3e-4 --grid seed=0,1 [--executor slurm --slurm-partition gpu]

Exit codes: 0 done (or preempted after saving a checkpoint), 1 non-finite loss, 2 bad input.
"""

from __future__ import annotations

import argparse


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model: mesh-sharded, checkpointed, resumable",
                              description="Train the model an experiment config describes; the run directory "
                                          "<run_dir>/<name>/ gets config.yaml, metrics.jsonl, tb/ and checkpoints/.")
    p.add_argument("config", help="experiment YAML (sections data, model, train, mesh, distributed, metrics)")
    _add_overrides(p)
    p.add_argument("--name", help="run name (same as --set name=NAME)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's newest checkpoint (starts fresh if it has none)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train N runs <name>-seed<i>, i = 0..N-1, one after another, with seed and data.seed "
                        "shifted by i (evaluate them with `icrl eval RUN --seeds N`)")
    g = p.add_argument_group("multi-host (default: detected from SLURM / TPU / Open MPI, else one process)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's id in [0, N)")
    p.set_defaults(func=cmd_train)

    s = subparsers.add_parser("sweep", help="launch a grid of training runs (submitit: SLURM or local)",
                              description="One `icrl train` run per point of the grid, each in its own run "
                                          "directory <run_dir>/<name>-<point>/; preempted SLURM jobs requeue "
                                          "and resume from their newest checkpoint.")
    s.add_argument("config", help="experiment YAML")
    _add_overrides(s)
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a swept field and its values (repeatable: the grid is the product)")
    s.add_argument("--executor", choices=("auto", "slurm", "local", "debug"), default="auto",
                   help="submitit executor: auto (SLURM when available, else local processes), slurm, "
                        "local, or debug (in this process)")
    s.add_argument("--slurm-partition", help="SLURM partition")
    s.add_argument("--nodes", type=int, default=1, help="nodes per run (default 1)")
    s.add_argument("--gpus-per-node", type=int, default=0,
                   help="GPUs per node (default 0); one process per node drives them all")
    s.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task")
    s.add_argument("--timeout-min", type=int, default=60 * 24, help="time limit per job in minutes (default 1440)")
    s.add_argument("--folder", default=None, help="submitit logs folder (default <run_dir>/<name>-sweep/)")
    s.add_argument("--dry-run", action="store_true", help="print the runs of the grid without launching")
    s.add_argument("--wait", action="store_true",
                   help="wait for every job and exit non-zero if one failed (always so with --executor debug)")
    s.set_defaults(func=cmd_sweep)


def _config(args: argparse.Namespace, seed_index: int | None = None):
    """The experiment of the flags; with ``seed_index`` i, the i-th seed run of ``--seeds``."""
    from icrl.train.config import load_experiment

    # Flags are set as the values argparse made of them, not as `--set` text: `--name 2024` is the
    # run name "2024", not the number 2024, and errors name the flag.
    values: dict[str, tuple[str, object]] = {}
    if getattr(args, "name", None) is not None:
        values["name"] = (f"--name {args.name}", args.name)
    flags = {"coordinator_address": ("--coordinator", getattr(args, "coordinator", None)),
             "num_processes": ("--num-processes", getattr(args, "num_processes", None)),
             "process_id": ("--process-id", getattr(args, "process_id", None))}
    given = {k: (f"{flag} {v}", v) for k, (flag, v) in flags.items() if v is not None}
    if given:  # explicit multi-host: the config check names what is missing
        values["distributed.mode"] = (next(iter(given.values()))[0], "explicit")
        values.update({f"distributed.{k}": fv for k, fv in given.items()})
    cfg = load_experiment(args.config, args.overrides, values)
    if seed_index is None:
        return cfg
    flag = f"--seeds {args.seeds}"
    return load_experiment(args.config, args.overrides, {
        **values, "name": (flag, seed_run_name(cfg.name, seed_index)), "seed": (flag, cfg.seed + seed_index),
        "data.seed": (flag, cfg.data.seed + seed_index)})


def seed_run_name(name: str, i: int) -> str:
    """The run name of seed i of ``--seeds`` (``icrl eval --seeds`` finds the runs by it)."""
    return f"{name}-seed{i}"


def cmd_train(args: argparse.Namespace) -> int:
    from icrl.errors import IcrlError
    from icrl.train.loop import train

    if args.seeds is None:
        return train(_config(args), resume=args.resume)
    if args.seeds < 1:
        raise IcrlError(f"--seeds must be >= 1, got {args.seeds}")
    configs = [_config(args, i) for i in range(args.seeds)]  # every config checked before any training
    for cfg in configs:
        code = train(cfg, resume=args.resume)
        if code:
            return code
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from icrl.train.sweep import launch, parse_grid, sweep_runs

    base = _config(args)
    runs = sweep_runs(args.config, args.overrides, parse_grid(args.grid), base)
    for run in runs:
        print(f"{run.name}: {' '.join(run.overrides) or '(base config)'}")
    if args.dry_run:
        return 0
    jobs = launch(runs, args.config, base, executor=args.executor, partition=args.slurm_partition,
                  nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                  timeout_min=args.timeout_min, folder=args.folder)
    for run, job in zip(runs, jobs):
        print(f"{run.name}: job {job.job_id}")
    if not (args.wait or args.executor == "debug"):
        return 0
    failed = 0
    for run, job in zip(runs, jobs):
        try:
            code = job.result()
        except Exception as err:  # a job's own traceback is in its submitit log
            print(f"{run.name}: failed: {err}")
            failed += 1
            continue
        print(f"{run.name}: exit code {code}")
        failed += code != 0
    return 1 if failed else 0
