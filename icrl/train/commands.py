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


def _config(args: argparse.Namespace):
    from icrl.train.config import load_experiment

    overrides = list(args.overrides)
    if getattr(args, "name", None):
        overrides.append(f"name={args.name}")
    flags = {"coordinator_address": getattr(args, "coordinator", None),
             "num_processes": getattr(args, "num_processes", None), "process_id": getattr(args, "process_id", None)}
    if any(v is not None for v in flags.values()):  # explicit multi-host: the config check names what is missing
        overrides += ["distributed.mode=explicit"] + [f"distributed.{k}={v}" for k, v in flags.items() if v is not None]
    return load_experiment(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from icrl.train.loop import train

    return train(_config(args), resume=args.resume)


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
