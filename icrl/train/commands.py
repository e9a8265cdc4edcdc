"""``icrl train CONFIG``: train on one CPU or a multi-host mesh; ``icrl sweep``: a grid of jobs.

    icrl train experiments/tiny.yaml [--set train.steps=200 ...] [--resume] [--profile 10:15]
    icrl train CONFIG --coordinator host0:1234 --num-processes 2 --process-id 0     # explicit multi-host
    icrl sweep experiments/ablations/burstiness-cpu.yaml [--executor local --parallel 1]   # icrl.sweep
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
    p.add_argument("--profile", metavar="START:STOP",
                   help="write a jax.profiler trace of steps START+1 to STOP into <run>/profile "
                        "(TensorBoard's profile plugin or Perfetto read it), e.g. --profile 10:15")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train N runs <name>-seed<i>, i = 0..N-1, one after another, with seed and data.seed "
                        "shifted by i (evaluate them with `icrl eval RUN --seeds N`)")
    g = p.add_argument_group("multi-host (default: detected from SLURM / TPU / Open MPI, else one process)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's id in [0, N)")
    p.set_defaults(func=cmd_train)

    s = subparsers.add_parser(
        "sweep", help="run a grid of train -> eval jobs on this machine or SLURM (submitit), then one report",
        description="Run every job of a sweep file (experiments/ablations/*.yaml: experiment, overrides, grid, "
                    "eval, report, resources), or of an experiment config and --grid flags (training only). "
                    "Jobs that are done are skipped, interrupted ones resume; preempted SLURM jobs save a "
                    "checkpoint and are requeued. The sweep directory lists the jobs and their states (jobs.md).")
    s.add_argument("config", help="sweep file, or experiment YAML with --grid")
    _add_overrides(s)
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="experiment configs only: a swept field and its values (repeatable: the grid is the product)")
    s.add_argument("--executor", choices=("local", "slurm"), default=None,
                   help="local: this machine, --parallel jobs at a time; slurm: SLURM job arrays "
                        "(default: the file's resources.executor, else local)")
    s.add_argument("--parallel", type=int, default=None, help="local executor: jobs at a time (default 1)")
    s.add_argument("--pin-cpus", action=argparse.BooleanOptionalAction, default=None,
                   help="local executor: each of the --parallel slots on its own share of the CPUs "
                        "(default: the file's resources.pin_cpus, else off)")
    s.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default=None,
                   help="gpu: GPUs required (a sweep that would run on CPU is refused); cpu: CPU only; "
                        "auto (default): gpu on SLURM, here whatever JAX finds")
    s.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs per node (default: the mesh's devices / nodes for a GPU sweep)")
    s.add_argument("--nodes", type=int, default=None, help="nodes per job (SLURM; default 1)")
    s.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per task")
    s.add_argument("--timeout-min", type=int, default=None, help="time limit per job in minutes (default 1440)")
    s.add_argument("--slurm-partition", dest="partition", default=None, help="SLURM partition")
    s.add_argument("--dry-run", action="store_true", help="check and print the jobs; run and write nothing")
    s.add_argument("--status", action="store_true", help="print the jobs and their states; run nothing")
    s.add_argument("--wait", action="store_true", help="slurm: wait for every job, then write the report")
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
    from icrl.train.metrics import parse_profile

    profile = None if args.profile is None else parse_profile(args.profile)
    if args.seeds is None:
        return train(_config(args), resume=args.resume, profile=profile)
    if args.seeds < 1:
        raise IcrlError(f"--seeds must be >= 1, got {args.seeds}")
    configs = [_config(args, i) for i in range(args.seeds)]  # every config checked before any training
    for cfg in configs:
        code = train(cfg, resume=args.resume, profile=profile)
        if code:
            return code
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from icrl.sweep.launch import run_sweep

    resources = {k: getattr(args, k) for k in ("executor", "parallel", "pin_cpus", "accelerator", "gpus_per_node", "nodes",
                                               "cpus_per_task", "timeout_min", "partition")}
    return run_sweep(args.config, grid=args.grid, overrides=args.overrides, resources=resources,
                     dry_run=args.dry_run, status=args.status, wait=args.wait)
