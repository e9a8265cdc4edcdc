"""The methods an evaluation compares, built by name: the in-context model and its baselines.

    methods = build_methods("runs/quickstart", ["icl", "hashmap"], shots=[0, 1, 2])
    rows = evaluate(cfg, tasks, methods, demo_store)

``icl`` and ``finetune`` load the run's checkpoint; BC-0 / BC-1 load single-trajectory runs
(``data.mode=single``) and play at k = 0 / 1; Hashmap plays every k > 0; random and the expert
play once, at k = 0, since they ignore demos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from icrl.eval.evaluate import Method

# Methods chosen by name (``icrl eval --methods``); BC-0 / BC-1 are chosen by their runs instead.
METHODS: tuple[str, ...] = ("icl", "hashmap", "random", "expert", "finetune")


def build_methods(run_dir: str | Path, names: Sequence[str], shots: Sequence[int], *, step: int | None = None,
                  greedy: bool = False, bc0: str | Path | None = None, bc1: str | Path | None = None,
                  finetune_steps: int = 20, finetune_lr: float = 1e-4,
                  log: Callable[[str], None] = print) -> dict[str, Method]:
    """The methods ``names`` (a subset of ``METHODS``) plus BC-0 / BC-1 when their runs are given.

    ``bc1`` defaults to ``bc0``'s run. ``log`` gets one line naming the checkpoint loaded.
    IcrlError for an unknown name, a run without a checkpoint, or a BC run that is not single-trajectory.
    """
    from icrl.errors import IcrlError
    from icrl.eval.evaluate import Method
    from icrl.eval.policies import ExpertPolicy, HashmapPolicy, RandomPolicy

    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise IcrlError(f"unknown method(s) {unknown}; methods: {', '.join(METHODS)}")
    methods: dict[str, Method] = {}
    wants = set(names)
    if wants & {"icl", "finetune"}:
        model, exp, loaded = _load(run_dir, step)
        log(f"model: {run_dir} step {loaded} ({exp.model.preset} preset, {exp.model.domain})")
        if "icl" in wants:
            methods["icl"] = Method(_model_policy(model, exp, "icl", greedy))
        if "finetune" in wants:
            from icrl.eval.finetune import FinetunePolicy

            methods["finetune"] = Method(FinetunePolicy(model, exp.model, steps=finetune_steps,
                                                        learning_rate=finetune_lr, greedy=greedy))
    for label, bc_run, k in (("bc0", bc0, 0), ("bc1", bc1 or bc0, 1)):
        if bc_run:
            bc_model, bc_exp, _ = _load(bc_run, None)
            if bc_exp.data.mode != "single":
                raise IcrlError(f"--{label} {bc_run}: trained with data.mode={bc_exp.data.mode!r}, "
                                "BC baselines are single-trajectory runs (data.mode=single)")
            methods[label] = Method(_model_policy(bc_model, bc_exp, label, greedy), shots=[k])
    if "hashmap" in wants:
        methods["hashmap"] = Method(HashmapPolicy(), shots=[k for k in shots if k > 0])
    if "random" in wants:
        methods["random"] = Method(RandomPolicy(), shots=[0])
    if "expert" in wants:
        methods["expert"] = Method(ExpertPolicy(), shots=[0])
    return methods


def _load(run_dir: str | Path, step: int | None):
    from icrl.eval.load import load_trained

    return load_trained(run_dir, step)


def _model_policy(model, exp, name: str, greedy: bool):
    from icrl.eval.model_policy import ModelPolicy
    from icrl.model.decoding import Decoder

    return ModelPolicy(Decoder(model), exp.model, name, greedy=greedy)
