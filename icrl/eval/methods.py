"""The methods an evaluation compares, built by name: the in-context model and its baselines, and
the checks that come before any model is loaded.

    check_methods(runs, names, tasks)                    # known tasks, domains, methods apply
    check_heldout(runs, plan)                            # no evaluation level is a training level
    methods, layout = build_methods("runs/quickstart", ["icl", "hashmap"], shots=[0, 1, 2])
    rows = evaluate(cfg, plan, methods, demo_store)

``icl`` and ``finetune`` load the run's checkpoint; BC-0 / BC-1 load single-trajectory runs
(``data.mode=single``) and play at k = 0 / 1; Hashmap and R&P (``rnp``, REGENT's retrieve and
play) and ``hashmap-cell`` (Hashmap keyed on the agent's cell) play every k > 0; random and the expert play once, at k = 0, since they ignore demos.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from icrl.errors import IcrlError

if TYPE_CHECKING:
    from icrl.data.layout import ContextLayout
    from icrl.eval.evaluate import Method

# Methods chosen by name (``icrl eval --methods``); BC-0 / BC-1 are chosen by their runs instead.
METHODS: tuple[str, ...] = ("icl", "hashmap", "hashmap-cell", "rnp", "random", "expert", "finetune")
MODEL_METHODS: tuple[str, ...] = ("icl", "finetune")  # the ones that load the evaluated run


NETHACK_ONLY: tuple[str, ...] = ("hashmap-cell",)  # methods that read the tty cursor


def default_methods(tasks: Sequence[str]) -> list[str]:
    """The methods ``icrl eval`` plays without ``--methods``: every one in METHODS that applies to
    all the tasks' domains (``hashmap-cell`` only where every task is NetHack / MiniHack)."""
    from icrl.envs.registry import domain_of

    nethack = all(domain_of(t) == "nethack" for t in tasks)
    return [m for m in METHODS if nethack or m not in NETHACK_ONLY]


def method_shots(names: Sequence[str], shots: Sequence[int], bc0: object = None,
                 bc1: object = None) -> dict[str, list[int]]:
    """The k values each method plays at, by name (BC-1 defaults to BC-0's run)."""
    demo_shots = [k for k in shots if k > 0]
    table = {"icl": list(shots), "finetune": list(shots), "hashmap": demo_shots, "hashmap-cell": demo_shots,
             "rnp": demo_shots, "random": [0], "expert": [0]}
    out = {name: table[name] for name in names}
    if bc0:
        out["bc0"] = [0]
    if bc1 or bc0:
        out["bc1"] = [1]
    return out


def run_config(run_dir: str | Path):
    """The experiment config of a run (``<run>/config.yaml``); IcrlError if it has none."""
    from icrl.train.config import load_experiment

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise IcrlError(f"{run_dir}: not a run directory (no config.yaml)")
    return load_experiment(path)


def seed_runs(run: str | Path, seeds: int) -> list[Path]:
    """The run directories ``<run>-seed<i>``, i < ``seeds``, that ``icrl train --seeds`` made
    (``run``: the base run directory, e.g. runs/quickstart); IcrlError naming a missing one."""
    from icrl.train.commands import seed_run_name

    if seeds < 1:
        raise IcrlError(f"--seeds must be >= 1, got {seeds}")
    run = Path(run)
    out = [run.parent / seed_run_name(run.name, i) for i in range(seeds)]
    for path in out:
        if not path.is_dir():
            raise IcrlError(f"--seeds {seeds}: {path}: no such run directory (`icrl eval {run} --seeds {seeds}` "
                            f"evaluates {out[0].name} .. {out[-1].name}, made by `icrl train CONFIG --seeds {seeds}`)")
    return out


def check_same_layout(runs: Sequence[str | Path]) -> None:
    """IcrlError naming the first run whose context layout (``layout.json``, else its config's)
    differs from the first run's: seeds of one experiment must read the same contexts."""
    import dataclasses

    from icrl.data.layout import load_layout

    layouts = [load_layout(run, run_config(run)) for run in runs]
    for run, layout in zip(runs[1:], layouts[1:]):
        if layout != layouts[0]:
            a, b = dataclasses.asdict(layouts[0]), dataclasses.asdict(layout)
            diff = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
            raise IcrlError(f"{run}: its context layout differs from {runs[0]}'s ({diff}); the seed runs of one "
                            "evaluation must share one layout")


def check_methods(runs: Mapping[str, str | Path], names: Sequence[str], tasks: Sequence[str]) -> None:
    """IcrlError, before any model is loaded, when a task is unknown, when a method does not apply
    to a task's domain, or when a run's model reads another domain than a task's.

    ``runs``: label (``icl``, ``bc0``, ...) -> run directory, for the runs whose models are evaluated.
    """
    from icrl.envs.registry import domain_of
    from icrl.eval.policies import expert_applies

    domains = {task: domain_of(task) for task in tasks}  # UnknownTaskError names a bad task
    if "expert" in names:
        for task in tasks:
            why = expert_applies(task)
            if why:
                raise IcrlError(f"method 'expert' does not apply to {task} ({domains[task]}): {why}; "
                                "leave it out of --methods")
    for name in set(names) & set(NETHACK_ONLY):
        for task, domain in domains.items():
            if domain != "nethack":
                raise IcrlError(f"method {name!r} does not apply to {task} ({domain}): it matches the tty "
                                "cursor's cell; leave it out of --methods")
    for label, run in runs.items():
        exp = run_config(run)
        for task, domain in domains.items():
            if domain != exp.model.domain:
                raise IcrlError(f"{run} ({label}): the model reads {exp.model.domain} observations "
                                f"(model.domain), {task} is a {domain} task")


def check_heldout(runs: Mapping[str, str | Path], plan: Mapping[str, Sequence[int]]) -> None:
    """IcrlError naming the task and levels when evaluation levels (``plan``: task -> levels) are in
    a training store of one of ``runs`` (its ``data.sources``), or when a store cannot be read."""
    from icrl.store.reader import TrajectoryStore

    for label, run in runs.items():
        for i, source in enumerate(run_config(run).data.sources):
            try:
                store = TrajectoryStore(source.path)
            except IcrlError as err:
                raise IcrlError(f"{run} ({label}): cannot check that the demo levels are held out: training "
                                f"store data.sources.{i}.path: {err}; --allow-train-levels skips the check") from None
            try:
                for task, levels in plan.items():
                    shared = sorted(set(levels) & set(store.levels(task)))
                    if shared:
                        shown = ", ".join(map(str, shared[:10])) + (f" (+{len(shared) - 10} more)"
                                                                    if len(shared) > 10 else "")
                        raise IcrlError(f"{task}: {len(shared)} of the {len(levels)} evaluation levels are in "
                                        f"the training store {source.path} of {run} ({label}): levels {shown}; "
                                        "evaluate on held-out levels, or pass --allow-train-levels")
            finally:
                store.close()


def build_methods(run_dir: str | Path, names: Sequence[str], shots: Sequence[int], *, step: int | None = None,
                  greedy: bool = False, bc0: str | Path | None = None, bc1: str | Path | None = None,
                  finetune_steps: int = 20, finetune_lr: float = 1e-4, devices: int | None = None,
                  log: Callable[[str], None] = print) -> tuple[dict[str, Method], ContextLayout | None]:
    """The methods ``names`` (a subset of ``METHODS``) plus BC-0 / BC-1 when their runs are given,
    and the context layout of ``run_dir`` (None when no method loads it).

    ``bc1`` defaults to ``bc0``'s run; ``devices``: local devices the model policies split their rows
    over (``icrl.eval.devices``; None: the default). ``log`` gets one line naming the checkpoint loaded.
    IcrlError for an unknown name, a run without a checkpoint, or a BC run that is not single-trajectory.
    """
    from icrl.eval.evaluate import Method
    from icrl.eval.policies import ExpertPolicy, HashmapCellPolicy, HashmapPolicy, RandomPolicy, RetrievePlayPolicy

    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise IcrlError(f"unknown method(s) {unknown}; methods: {', '.join(METHODS)}")
    plays = method_shots(names, shots, bc0, bc1)
    methods: dict[str, Method] = {}
    layout = None
    wants = set(names)
    if wants & set(MODEL_METHODS):
        model, exp, loaded, layout = _load(run_dir, step)
        log(f"model: {run_dir} step {loaded} ({exp.model.preset} preset, {exp.model.domain}); layout: "
            f"{layout.episodes} episodes of up to {layout.window} steps in {layout.context_steps}")
        if "icl" in wants:
            methods["icl"] = Method(_model_policy(model, layout, "icl", greedy, devices))
        if "finetune" in wants:
            from icrl.eval.finetune import FinetunePolicy

            methods["finetune"] = Method(FinetunePolicy(model, exp.model, layout, steps=finetune_steps,
                                                        learning_rate=finetune_lr, greedy=greedy))
    for label, bc_run in (("bc0", bc0), ("bc1", bc1 or bc0)):
        if bc_run:
            bc_model, bc_exp, _, bc_layout = _load(bc_run, None)
            if bc_exp.data.mode != "single":
                raise IcrlError(f"--{label} {bc_run}: trained with data.mode={bc_exp.data.mode!r}, "
                                "BC baselines are single-trajectory runs (data.mode=single)")
            methods[label] = Method(_model_policy(bc_model, bc_layout, label, greedy, devices), shots=plays[label])
    if "hashmap" in wants:
        methods["hashmap"] = Method(HashmapPolicy(), shots=plays["hashmap"])
    if "hashmap-cell" in wants:
        methods["hashmap-cell"] = Method(HashmapCellPolicy(), shots=plays["hashmap-cell"])
    if "rnp" in wants:
        methods["rnp"] = Method(RetrievePlayPolicy(), shots=plays["rnp"])
    if "random" in wants:
        methods["random"] = Method(RandomPolicy(), shots=plays["random"])
    if "expert" in wants:
        methods["expert"] = Method(ExpertPolicy(), shots=plays["expert"])
    return methods, layout


def _load(run_dir: str | Path, step: int | None):
    """(model, experiment config, step, context layout) of a run's checkpoint."""
    from icrl.data.layout import load_layout
    from icrl.eval.load import load_trained

    model, exp, loaded = load_trained(run_dir, step)
    return model, exp, loaded, load_layout(run_dir, exp)


def _model_policy(model, layout, name: str, greedy: bool, devices: int | None = None):
    from icrl.eval.model_policy import ModelPolicy
    from icrl.model.decoding import Decoder

    return ModelPolicy(Decoder(model), layout, name, greedy=greedy, devices=devices)
