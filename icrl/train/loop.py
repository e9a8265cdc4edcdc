"""``icrl train``: the training loop, top to bottom.

1. Join the other processes (``jax.distributed``: SLURM, TPU, Open MPI, explicit flags, or none).
2. Check everything that can be wrong with the input before any compilation: the run directory,
   the mesh against the devices, the batch against the batch axes, the stores and their domain.
3. Build the mesh; each process opens the data slice its devices hold (Grain, deterministic).
4. Abstract state (``jax.eval_shape``) → shardings from the rule table → parameters and optimizer
   state created already sharded (``jax.jit(init, out_shardings=...)``), or restored from the
   newest checkpoint with ``--resume`` (state, data position, and a check that the config agrees).
5. ``jax.jit(train_step, in_shardings, out_shardings, donate_argnums=0)``; each step's batch is the
   processes' slices assembled into one global array.
6. Every step: metrics of the previous step are fetched (one step behind, so the host never stalls
   the devices) and checked: a non-finite loss, gradient or parameter norm stops the run with a
   diagnostic and exit code 1, without saving, so the newest checkpoint stays the last good one.
   Every ``log_every`` steps: metrics.jsonl, TensorBoard, W&B, progress line. Every
   ``checkpoint_every`` steps and at the end: an asynchronous, atomic Orbax checkpoint.
7. SIGTERM or SIGUSR2 (preemption): all processes finish the same step, save a checkpoint, return 0
   (``PreemptionNotice`` tells a caller which signal came, e.g. to have submitit requeue the job).

Exit codes: 0 finished or preempted-and-saved, 1 non-finite loss, 2 bad input (``IcrlError``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from icrl.config import save_config
from icrl.data.layout import layout_of, save_layout
from icrl.errors import IcrlError
from icrl.train import distributed
from icrl.train.config import RESUMABLE_CHANGES, ExperimentConfig, forbidden_changes

EXIT_OK, EXIT_NONFINITE = 0, 1


# Signals that mean "you are about to be stopped": SLURM sends SIGTERM at preemption and before
# killing a job at its time limit; submitit asks SLURM for SIGUSR2 shortly before the time limit.
PREEMPTION_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR2)


@dataclasses.dataclass
class PreemptionNotice:
    """Filled in by ``train``: the preemption signal that stopped the run (None: none came).

    A caller that must act after the checkpoint is saved (``icrl.sweep.job`` hands the job back to
    submitit to be requeued) passes one in and reads it when ``train`` returns.
    """

    signum: int | None = None


class Preemption:
    """Has a preemption notice (SIGTERM or SIGUSR2) arrived? All processes answer alike at one step.

    One process: handlers for both signals set a flag; they replace the previous handlers (e.g.
    submitit's, which would requeue at once, before the state is saved) until ``close``, and the
    caller learns the signal from ``signum`` to hand it on afterwards. Several: JAX's preemption
    service (started by ``jax.distributed.initialize``) catches SIGTERM on any process and
    ``reached_preemption_sync_point`` turns True on every process at the same step, so they all
    save that step; it listens to SIGTERM only, so a SIGUSR2 is passed on to it as a SIGTERM.
    """

    def __init__(self, multiprocess: bool):
        self.multiprocess = multiprocess
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            # Several processes: SIGTERM is JAX's (its handler is installed below Python's).
            for sig in (signal.SIGUSR2,) if multiprocess else PREEMPTION_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self.multiprocess and signum != signal.SIGTERM:
            os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

    def reached(self, step: int) -> bool:
        if self.multiprocess:
            from jax.experimental import multihost_utils

            hit = multihost_utils.reached_preemption_sync_point(step)
            if hit and self.signum is None:  # the notice reached another process
                self.signum = signal.SIGTERM
            return hit
        return self.signum is not None

    def close(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous = {}


def _check_run_dir(run: Path, resume: bool) -> None:
    if resume or not run.exists() or not any(run.iterdir()):
        return
    raise IcrlError(f"run directory {run} already exists: pass --resume to continue it, "
                    f"or choose another name (--name NAME)")


def train(cfg: ExperimentConfig, *, resume: bool = False, notice: PreemptionNotice | None = None,
          profile: tuple[int, int] | None = None) -> int:
    """Run (or, with ``resume``, continue) the experiment ``cfg``. Returns the exit code.

    ``notice``, if given, receives the preemption signal that stopped the run (see ``Preemption``).
    ``profile`` (START, STOP): a ``jax.profiler`` trace of steps START+1 … STOP into
    ``<run>/profile`` (``metrics.ProfileWindow``).
    """
    # -- 1. processes ---------------------------------------------------------------------------
    proc = distributed.initialize(cfg.distributed)
    # From here on SIGTERM or SIGUSR2 is a preemption notice: the run saves after its next step and
    # returns 0; the caller's own handlers are back once it has returned.
    preemption = Preemption(proc.process_count > 1)
    try:
        return _train(cfg, resume, proc, preemption, profile)
    finally:
        preemption.close()
        if notice is not None:
            notice.signum = preemption.signum


def _train(cfg: ExperimentConfig, resume: bool, proc: distributed.ProcessInfo, preemption: Preemption,
           profile: tuple[int, int] | None) -> int:
    import jax
    from jax.experimental import multihost_utils

    from icrl.data.pipeline import SequenceSource
    from icrl.train.checkpoint import Checkpointer
    from icrl.train.mesh import build_mesh, check_batch
    from icrl.train.metrics import check_wandb

    run = cfg.path.absolute()
    tc = cfg.train
    if tc.compile_cache:
        jax.config.update("jax_compilation_cache_dir", str(Path(tc.compile_cache).expanduser()))

    # -- 2. input checks, before anything is compiled or written ---------------------------------
    _check_run_dir(run, resume)
    if profile is not None and profile[1] > tc.steps:
        raise IcrlError(f"--profile {profile[0]}:{profile[1]}: STOP is past the last step (train.steps={tc.steps})")
    mesh = build_mesh(cfg.mesh)
    check_batch(cfg.data.batch_size, tc.grad_accum, mesh, cfg.mesh.batch_axes)
    source = SequenceSource(cfg.data)
    if source.domain != cfg.model.domain:
        raise IcrlError(f"data.sources hold {source.domain} episodes but model.domain is {cfg.model.domain!r}")
    check_wandb(cfg.metrics)
    if proc.process_count > 1:  # every process has checked the run directory before any writes to it
        multihost_utils.sync_global_devices("icrl train: checks done")
    config_dict = cfg.model_dump(mode="json")
    checkpoints = Checkpointer(run / "checkpoints", keep=tc.keep, async_save=tc.async_checkpoint)
    try:
        start = checkpoints.latest_step() if resume else None
        if start is not None:
            changed = forbidden_changes(checkpoints.saved_config(start), config_dict)
            if changed:
                raise IcrlError(f"--resume: the config differs from checkpoint {start}'s in {', '.join(changed)}; "
                                f"a resumed run may change only {', '.join(RESUMABLE_CHANGES)}")
        return _run(cfg, proc, preemption, mesh, source, checkpoints, start, config_dict, profile)
    finally:
        checkpoints.close()


def _run(cfg: ExperimentConfig, proc: distributed.ProcessInfo, preemption: Preemption, mesh, source,
         checkpoints, start: int | None, config_dict: dict, profile: tuple[int, int] | None) -> int:
    import jax
    import numpy as np

    from icrl.data.pipeline import make_loader
    from icrl.train.checkpoint import abstract_with_shardings
    from icrl.train.mesh import activation_sharding, batch_sharding, data_slice, gathered, global_batch, param_shardings, replicated
    from icrl.model.info import train_flops_per_token
    from icrl.train.metrics import MetricsLogger, ProfileWindow, Throughput
    from icrl.train.mfu import peak_flops
    from icrl.train.state import ModelTemplate, init_state, learning_rate, make_optimizer, state_shardings
    from icrl.train.step import device_batch, make_train_step

    primary = jax.process_index() == 0
    run = cfg.path.absolute()
    tc = cfg.train

    # -- 3. data: this process's slice of every global batch -----------------------------------------
    slice_index, slice_count = data_slice(mesh, cfg.mesh.batch_axes)
    loader = make_loader(cfg.data, process_index=slice_index, process_count=slice_count, source=source)
    iterator = iter(loader)
    batch_sh = batch_sharding(mesh, cfg.mesh.batch_axes)

    # -- 4. state: abstract → shardings → created sharded, or restored ------------------------------
    template = ModelTemplate(cfg.model)
    tx = make_optimizer(tc)
    schedule = learning_rate(tc)
    init = functools.partial(init_state, template, tx)
    seed = np.int32(cfg.seed)
    abstract = jax.eval_shape(init, seed)
    params_sh, notes = param_shardings(template.abstract_params, cfg.mesh.rules, mesh)
    shardings = state_shardings(abstract, params_sh, tx, replicated(mesh))
    if start is not None:
        state = checkpoints.restore(start, abstract_with_shardings(abstract, shardings), iterator)
    else:
        state = jax.jit(init, out_shardings=shardings)(seed)
        start = 0
    if primary:
        save_config(cfg, run / "config.yaml")
        save_layout(layout_of(cfg.data, cfg.model), run)  # what `icrl eval` lays its contexts out by

    # -- 5. the jitted step ---------------------------------------------------------------------------
    step_fn = jax.jit(
        make_train_step(template, tx, schedule, tc.grad_accum, micro_sharding=batch_sh,
                        compute_shardings=gathered(params_sh),
                        activations=activation_sharding(mesh, cfg.mesh.rules, cfg.mesh.batch_axes)),
        in_shardings=(shardings, batch_sh),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )

    diagnose = _diagnostic(cfg, template, mesh)

    logger = MetricsLogger(run, cfg.metrics, enabled=primary, start_step=start, total_steps=tc.steps,
                           run_name=cfg.name, config=config_dict)
    devices = "x".join(f"{a}={n}" for a, n in mesh.shape.items())
    logger.message(f"icrl train {cfg.name}: {proc.process_count} process(es) ({proc.how}), {jax.device_count()} "
                   f"{jax.devices()[0].platform} devices, mesh {devices}; "
                   f"{'resuming at step ' + str(start) if start else 'starting'} → step {tc.steps}; run dir {run}")
    if notes:
        logger.message(f"sharding: {len(notes)} parameter dimensions replicated instead "
                       f"(first: {notes[0]})")
    # MFU: model FLOPs of a token in a row of context_steps steps, against the device kind's peak.
    row_tokens = cfg.data.context_steps * cfg.model.tokens_per_step
    flops_per_token = train_flops_per_token(cfg.model, context=row_tokens)
    device_kind = jax.devices()[0].device_kind
    peak = peak_flops(device_kind, cfg.model.compute_dtype)
    logger.message(f"model FLOPs: {flops_per_token / 1e6:,.1f} MFLOP per token (training); "
                   + (f"peak {peak / 1e12:,.1f} TFLOP/s per device ({device_kind}, {cfg.model.compute_dtype})" if peak
                      else f"no peak FLOP/s known for {device_kind!r} ({cfg.model.compute_dtype}): MFU not logged"))
    logger.event(start, "resume" if start else "start", processes=proc.process_count,
                 devices=jax.device_count(), mesh=dict(mesh.shape), flops_per_token=flops_per_token,
                 device_kind=device_kind, peak_flops=peak)

    # -- 6./7. the loop -----------------------------------------------------------------------------
    throughput = Throughput(cfg.data.batch_size * row_tokens, flops_per_token, peak, jax.device_count())
    profiler = None if profile is None else ProfileWindow(
        run / "profile" if proc.process_count == 1 else run / "profile" / f"process{jax.process_index()}", *profile)
    pending: tuple[int, Any, int, int] | None = None
    last_saved = start
    step = start

    def finish(entry: tuple[int, Any, int]) -> bool:
        """Fetch and check one step's metrics, log them; False if they are not finite."""
        s, device_metrics, first, tokens = entry
        m = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        if not all(np.isfinite(m[k]) for k in ("loss", "grad_norm", "param_norm")):
            logger.message(
                f"non-finite training at step {s}: loss={m['loss']}, grad_norm={m['grad_norm']}, "
                f"param_norm={m['param_norm']}, lr={m['lr']:.3g}; the batch holds sequences from index {first} "
                f"(data.seed={cfg.data.seed}). Stopped without saving; "
                + (f"the last good checkpoint is step {last_saved} in {run / 'checkpoints'}"
                   if checkpoints.all_steps() else "no checkpoint had been saved yet"))
            logger.event(s, "nonfinite", **m, first_sequence=first, last_good_checkpoint=last_saved)
            return False
        first_step = s == start + 1  # its time is mostly compilation: no rates
        if not first_step:
            throughput.add(tokens)
        if s % tc.log_every == 0 or s == tc.steps or first_step:
            rates = dict.fromkeys(("tokens_per_s", "seconds_per_step", "data_seconds", "compute_seconds",
                                   "padding", "mfu")) if first_step else throughput.rates()
            logger.log(s, {**m, **rates, "first_sequence": first})
            share = None if first_step else rates["data_seconds"] / rates["seconds_per_step"]
            logger.progress(s, m["loss"], rates["tokens_per_s"], rates["seconds_per_step"], rates["mfu"], share)
        return True

    code = EXIT_OK
    started = time.perf_counter()
    if start >= tc.steps:
        logger.message(f"checkpoint {start} already reaches train.steps={tc.steps}: nothing to do")
    try:
        while step < tc.steps:
            if profiler is not None:
                profiler.before_step(step)
            waited = time.perf_counter()
            local = next(iterator)
            batch = global_batch(device_batch(local), batch_sh, cfg.data.batch_size)
            waited = time.perf_counter() - waited
            # Real tokens: this process's non-padding steps, standing for every slice of the batch
            # (exact with one data slice; with several, each slice's share is taken to be alike).
            throughput.wait(waited)  # when it happens: each interval of rates holds its own waits
            tokens = int((np.asarray(local["episode_id"]) >= 0).sum()) * slice_count * cfg.model.tokens_per_step
            state, metrics = step_fn(state, batch)
            step += 1
            if profiler is not None:
                profiler.after_step(step, metrics)
            if pending is not None and not finish(pending):
                code = EXIT_NONFINITE
                break
            pending = (step, metrics, int(np.asarray(local["index"]).reshape(-1)[0]), tokens)
            if step == start + 1:  # the first step includes compilation: time from its end
                jax.block_until_ready(metrics)
                throughput.mark()
            if diagnose is not None and (step % cfg.diagnostic.every == 0 or step == tc.steps):
                logger.log(step, diagnose(state.params))
            preempted = preemption.reached(step)
            if step % tc.checkpoint_every == 0 or step == tc.steps or preempted:
                entry, pending = pending, None
                if not finish(entry):
                    code = EXIT_NONFINITE
                    break
                checkpoints.save(step, state, iterator.get_state(), config_dict)
                last_saved = step
            if preempted:
                logger.message(f"preemption notice: saved checkpoint {step}; exiting (resume with --resume)")
                logger.event(step, "preempted")
                break
        else:
            if pending is not None and not finish(pending):
                code = EXIT_NONFINITE
        if code == EXIT_OK and step >= tc.steps:
            logger.event(step, "done", seconds=round(time.perf_counter() - started, 3))
    finally:
        if profiler is not None:
            profiler.close()
        iterator.close()
        logger.close()
    return code


def _diagnostic(cfg: ExperimentConfig, template, mesh):
    """params -> the in-context diagnostic's figures (``icrl.eval.diagnostic``), or None when
    ``diagnostic.demos`` is not set. Its two batches are built once and replicated on the mesh."""
    if not cfg.diagnostic.demos:
        return None
    import jax

    from icrl.data.layout import layout_of
    from icrl.eval.diagnostic import diagnostic_batches, figures, query_loss
    from icrl.store.reader import TrajectoryStore
    from icrl.train.mesh import global_batch, replicated

    try:
        with TrajectoryStore(cfg.diagnostic.demos) as store:
            host = diagnostic_batches(store, layout_of(cfg.data, cfg.model), tasks=cfg.diagnostic.tasks,
                                      levels=cfg.diagnostic.levels)
    except IcrlError as err:
        raise IcrlError(f"diagnostic.demos: {err}") from None
    batches = {k: global_batch(b, replicated(mesh), b["actions"].shape[0]) for k, b in host.items()}
    loss = jax.jit(lambda params, batch: query_loss(template, params, batch))

    def diagnose(params) -> dict[str, float]:
        return figures(float(loss(params, batches["same"])), float(loss(params, batches["other"])))

    return diagnose
