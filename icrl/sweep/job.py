"""One job of a sweep, as submitit runs it: train (resuming), then evaluate, then the job's report.

``SweepJob()(job_dir, cpus)`` reads everything from the sweep directory (the resolved config the launcher
saved, not the experiment file, which may have changed since), so a requeued job runs exactly
what was planned; ``cpus`` (local sweeps with ``resources.pin_cpus``) are the CPUs of its slot.

Preemption: SLURM (or submitit's local controller) sends SIGTERM or SIGUSR2. ``icrl.train.loop``
turns either into a checkpoint after the current step (all processes at the same step, through
JAX's preemption sync point, when there are several) and returns; then the job hands the signal
to submitit's own handler, which calls ``SweepJob.checkpoint`` (the same job again), requeues it
(``scontrol requeue``, or exit code 144 for the local controller) and exits. The requeued job
resumes from that checkpoint, so it ends with the parameters an uninterrupted job would have.
A job that was stopped without submitit to requeue it is left ``interrupted``: running the sweep
again resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Callable

import submitit

from icrl.errors import IcrlError
from icrl.sweep import state as st

EXIT_PREEMPTED = 3


def _submitit_requeue() -> Callable[[int, Any], None] | None:
    """submitit's checkpoint-and-requeue signal handler, if this process is a submitit job."""
    try:
        from submitit.core.job_environment import JobEnvironment, SignalHandler
    except ImportError:  # pragma: no cover
        return None
    handler = signal.getsignal(JobEnvironment._usr_sig())
    owner = getattr(handler, "__self__", None)
    return handler if isinstance(owner, SignalHandler) else None


def _global_rank() -> int:
    try:
        return submitit.JobEnvironment().global_rank
    except RuntimeError:  # not in a submitit job
        return 0


def check_accelerator(accelerator: str, name: str) -> None:
    """Before anything is built: a GPU job needs GPUs JAX can use; a CPU job uses the CPU only."""
    if accelerator == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"  # a GPU the node may have is not used
        return
    if accelerator != "gpu":
        return
    import jax

    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        found = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise IcrlError(f"job {name}: the sweep asks for GPUs (resources.accelerator=gpu) but JAX finds "
                        f"only {found} devices on {socket.gethostname()}; refusing to train on CPU "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')})")


def record_devices(run: Path, attempt: int) -> str:
    """Append this attempt's devices to ``<run>/devices.json``; returns them in a few words."""
    import jax

    local = jax.local_devices()
    entry = {"attempt": attempt, "host": socket.gethostname(), "platform": local[0].platform,
             "device_kind": local[0].device_kind, "process_index": jax.process_index(),
             "process_count": jax.process_count(), "local_devices": len(local), "devices": jax.device_count(),
             "cpus": sorted(os.sched_getaffinity(0))}
    path = run / "devices.json"
    entries = [e for e in st.read_json(path, []) if e.get("attempt") != attempt] + [entry]
    st.write_atomically(path, json.dumps(entries, indent=1) + "\n")
    return f"{entry['devices']} {entry['platform']} ({entry['device_kind']}) x {entry['process_count']} proc"


def _trained_to(run: Path) -> int:
    """The newest complete checkpoint's step (0 without one)."""
    from icrl.train.checkpoint import Checkpointer

    directory = run / "checkpoints"
    if not directory.is_dir():
        return 0
    checkpoints = Checkpointer(directory, read_only=True)
    try:
        return checkpoints.latest_step() or 0
    finally:
        checkpoints.close()


def _evaluate(run: Path, argv: list[str]) -> None:
    """``icrl eval`` exactly as the command line runs it (same checks, same outputs)."""
    from icrl.cli import build_parser

    args = build_parser().parse_args(argv)
    code = args.func(args)
    if code:
        raise IcrlError(f"icrl eval {run} exited with {code}")


def summary(run: Path, k: int, method: str = "icl") -> str:
    """``k``-shot success per task of an evaluated run, in a few words."""
    from icrl.eval.report import clustered

    rows = st.read_json(run / "eval" / "results.json", [])
    parts = []
    for task in sorted({r["task"] for r in rows}):
        sel = [r for r in rows if r["task"] == task and r["k"] == k and r["method"] == method]
        if sel:
            parts.append(f"{task.removeprefix('MiniHack-').removesuffix('-v0')} {100 * clustered(sel, 'success').mean:.0f}%")
    return f"{k}-shot success " + ", ".join(parts) if parts else ""


class SweepJob(submitit.helpers.Checkpointable):
    """Train → evaluate → report one job of a sweep; requeueable (``checkpoint`` repeats the call)."""

    def __call__(self, job_dir: str, cpus: list[int] | None = None) -> int:
        if cpus:  # before JAX starts: XLA sizes its CPU thread pool by the CPUs it may use
            os.sched_setaffinity(0, cpus)
        jdir = Path(job_dir)
        job = json.loads((jdir / "job.json").read_text())
        sweep_dir = jdir.parent.parent
        record = st.read_state(jdir)
        attempt = int(record.get("attempts", 0)) + 1
        st.update_state(jdir, "training", attempts=attempt, pid=os.getpid(), host=socket.gethostname(),
                        note=f"attempt {attempt}")
        st.write_table(sweep_dir)
        try:
            return self._run(jdir, job, attempt)
        except SystemExit:  # submitit requeueing the job (or a process exiting): the state is written
            raise
        except KeyboardInterrupt:
            st.update_state(jdir, "interrupted", note="interrupted (KeyboardInterrupt)")
            raise
        except BaseException as err:
            st.update_state(jdir, "failed", error=f"{type(err).__name__}: {err}".splitlines()[0])
            raise
        finally:
            st.write_table(sweep_dir)

    def _run(self, jdir: Path, job: dict[str, Any], attempt: int) -> int:
        from icrl.train.config import load_experiment
        from icrl.train.loop import PreemptionNotice, train

        check_accelerator(job["accelerator"], job["name"])
        requeue = _submitit_requeue()  # before train() puts its own handlers in place
        cfg = load_experiment(jdir / "config.yaml")
        run = cfg.path.absolute()
        notice = PreemptionNotice()
        code = train(cfg, resume=True, notice=notice)
        devices = record_devices(run, attempt)
        if code:
            st.update_state(jdir, "failed", devices=devices, error=f"icrl train exited with {code} "
                                                                     f"(non-finite loss: see {run}/metrics.jsonl)")
            return code
        step = _trained_to(run)
        st.update_state(jdir, devices=devices, step=step)
        if step < cfg.train.steps:
            name = signal.Signals(notice.signum).name if notice.signum else "no signal"
            if notice.signum is not None and requeue is not None:
                st.update_state(jdir, "preempted", note=f"{name}: saved step {step}, requeued")
                requeue(notice.signum, None)  # process 0: dumps this job again, requeues, exits
                return EXIT_PREEMPTED  # other processes: submitit leaves them to end
            st.update_state(jdir, "interrupted", note=f"{name}: saved step {step}; run the sweep again to resume")
            return EXIT_PREEMPTED
        if _global_rank() != 0 or not job.get("eval"):
            st.update_state(jdir, "done", note="trained" if job.get("eval") is None else "")
            return 0
        st.update_state(jdir, "evaluating", note="")
        st.write_table(jdir.parent.parent)
        _evaluate(run, job["eval"])
        st.update_state(jdir, "done", note=summary(run, int(job.get("primary_k", 1))))
        self._report_if_complete(jdir.parent.parent)
        return 0

    @staticmethod
    def _report_if_complete(sweep_dir: Path) -> None:
        """The last job to finish writes the sweep's report (SLURM sweeps have no launcher left)."""
        names = st.job_names(sweep_dir)
        if all(st.read_state(st.job_dir(sweep_dir, n))["state"] == "done" for n in names):
            from icrl.sweep.report import write_report

            try:
                write_report(sweep_dir)
            except Exception as err:  # noqa: BLE001 - the jobs are done all the same; `icrl report` retries
                print(f"sweep report not written: {type(err).__name__}: {err}", file=sys.stderr)
