"""Plan a sweep (every job's config resolved, validated and saved) and run it through submitit.

- ``local``: submitit's ``LocalExecutor`` on this machine, ``parallel`` jobs at a time; the
  launcher stays until every job has ended, then writes the report.
- ``slurm``: one SLURM job array per GPU count; the launcher returns once they are queued (the
  last job to finish writes the report).

Running a sweep again skips jobs that are done, leaves alone those still queued or running, and
submits the rest, which resume from their newest checkpoint. A job's saved config may differ from
the new plan only where a resumed run may change (``RESUMABLE_CHANGES``); a done job whose plan
changed in such a key (or in its evaluation) runs again, resuming, so it matches the new plan.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import time
from pathlib import Path

import submitit

from icrl.config import save_config
from icrl.errors import IcrlError
from icrl.sweep import state as st
from icrl.sweep.job import SweepJob
from icrl.sweep.spec import ResourcesSpec, SweepSpec, job_config, points
from icrl.train.config import RESUMABLE_CHANGES, ExperimentConfig, config_differences, forbidden_changes


@dataclasses.dataclass
class PlannedJob:
    """One job of the plan: its point, resolved config, hardware and evaluation arguments."""

    name: str
    labels: dict[str, str]
    config: ExperimentConfig
    accelerator: str  # "cpu" or "gpu"
    gpus_per_node: int
    eval_argv: list[str] | None


def local_gpus() -> int:
    """GPUs JAX can use on this machine (0 when none, or when JAX_PLATFORMS excludes them).

    Asked in a child process: JAX in the launcher would hold GPU memory the jobs need.
    """
    import os
    import subprocess
    import sys

    probe = "import jax\ntry:\n    print(len(jax.devices('gpu')))\nexcept RuntimeError:\n    print(0)"
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise IcrlError(f"could not ask JAX for this machine's GPUs: {out.stderr.strip()[-300:]}") from None


def resolve_accelerator(res: ResourcesSpec) -> str:
    """``auto`` made concrete: GPUs on SLURM; on this machine, GPUs if JAX sees any."""
    if res.accelerator != "auto":
        return res.accelerator
    if res.executor == "slurm":
        return "gpu"
    return "gpu" if local_gpus() else "cpu"


def gpus_per_node(res: ResourcesSpec, cfg: ExperimentConfig, accelerator: str) -> int:
    """GPUs per node of a job: ``resources.gpus_per_node``, else the mesh's devices over the nodes."""
    if accelerator != "gpu":
        if res.gpus_per_node:
            raise IcrlError(f"resources.gpus_per_node={res.gpus_per_node} but resources.accelerator is "
                            f"{accelerator}: set accelerator: gpu, or drop gpus_per_node")
        return 0
    sizes = cfg.mesh.sizes()
    total = math.prod(sizes.values()) if -1 not in sizes.values() else None
    if res.gpus_per_node is not None:
        if res.gpus_per_node < 1:
            raise IcrlError("resources.accelerator=gpu with resources.gpus_per_node=0 would train on CPU")
        if total is not None and total != res.gpus_per_node * res.nodes:
            raise IcrlError(f"job {cfg.name}: the mesh {sizes} holds {total} devices but the resources give "
                            f"{res.nodes} node(s) x {res.gpus_per_node} GPUs")
        return res.gpus_per_node
    if total is None:
        raise IcrlError(f"job {cfg.name}: a GPU sweep takes its GPUs per node from the mesh, but mesh {sizes} "
                        f"has an axis of -1: give every mesh axis a size (e.g. --set mesh.data=8) or set "
                        f"resources.gpus_per_node (--gpus-per-node)")
    if total % res.nodes:
        raise IcrlError(f"job {cfg.name}: the mesh's {total} devices do not split over {res.nodes} nodes")
    return total // res.nodes


def plan(spec: SweepSpec, source: str, sweep_dir: Path, cli_overrides: list[str],
         res: ResourcesSpec) -> list[PlannedJob]:
    """Every job of the grid, its config validated (the error names the job) before anything runs."""
    accelerator = resolve_accelerator(res)
    if res.executor == "local" and res.nodes != 1:
        raise IcrlError(f"resources.nodes={res.nodes} needs --executor slurm (local runs one node)")
    if res.executor == "local":
        slot_cpus(res.parallel, res.pin_cpus)  # enough CPUs for the slots, before anything is written
    jobs = []
    for point in points(spec, source):
        cfg = job_config(spec, source, point, sweep_dir.absolute(), cli_overrides)
        jobs.append(PlannedJob(point.name, point.labels, cfg, accelerator, gpus_per_node(res, cfg, accelerator),
                               spec.eval.argv(st.run_dir(sweep_dir.absolute(), point.name)) if spec.eval else None))
    if accelerator == "gpu" and res.executor == "local":
        have, need = local_gpus(), max(j.gpus_per_node for j in jobs) * res.parallel
        if have == 0:
            raise IcrlError("resources.accelerator=gpu, but JAX finds no GPU on this machine: refusing to run a "
                            "GPU sweep on CPU (--executor slurm to run it on a cluster, or --accelerator cpu)")
        if have < need:
            raise IcrlError(f"{res.parallel} GPU job(s) at a time need {need} GPUs; this machine has {have}")
    return jobs


def _job_record(job: PlannedJob, spec: SweepSpec) -> dict:
    return {"name": job.name, "labels": job.labels, "accelerator": job.accelerator,
            "gpus_per_node": job.gpus_per_node, "eval": job.eval_argv,
            "primary_k": spec.eval.primary_k if spec.eval else None}


def write_plan(sweep_dir: Path, spec: SweepSpec, jobs: list[PlannedJob], cli_overrides: list[str]) -> None:
    """sweep.yaml, sweep.json and each job's config.yaml / job.json; refuses to change a job's
    config where a resumed run may not change (the error names the job and the keys)."""
    for job in jobs:  # every check before anything is written
        saved = sweep_dir / "jobs" / job.name / "config.yaml"
        if saved.is_file():
            from icrl.train.config import load_experiment

            changed = forbidden_changes(load_experiment(saved).model_dump(mode="json"),
                                        job.config.model_dump(mode="json"))
            if changed:
                raise IcrlError(f"job {job.name} of sweep {sweep_dir} was planned with other {', '.join(changed)}; "
                                f"a sweep run again may change only {', '.join(RESUMABLE_CHANGES)} (and its eval): "
                                f"give the sweep another name, or delete {sweep_dir}")
    import yaml

    st.write_atomically(sweep_dir / "sweep.yaml", yaml.safe_dump(
        {**spec.model_dump(mode="json"), "cli_overrides": list(cli_overrides)}, sort_keys=False))
    axes = {axis: list(dict.fromkeys(j.labels[axis] for j in jobs)) for axis in spec.grid}
    st.write_atomically(sweep_dir / "sweep.json", json.dumps(
        {"name": spec.name, "axes": axes, "report": spec.report.model_dump(mode="json"),
         "primary_k": spec.eval.primary_k if spec.eval else None,
         "jobs": [{"name": j.name, "labels": j.labels} for j in jobs]}, indent=1) + "\n")
    for job in jobs:
        jdir = st.job_dir(sweep_dir, job.name)
        record = _job_record(job, spec)
        old_cfg = jdir / "config.yaml"
        if old_cfg.is_file():
            from icrl.train.config import load_experiment

            differs = config_differences(load_experiment(old_cfg).model_dump(mode="json"),
                                         job.config.model_dump(mode="json"))
            old = st.read_json(jdir / "job.json", {})
            differs += ["eval"] * (old.get("eval") != record["eval"])
            if differs and st.read_state(jdir)["state"] == "done":
                st.update_state(jdir, "planned", note=f"plan changed ({', '.join(differs)}): runs again")
        save_config(job.config, jdir / "config.yaml")
        st.write_atomically(jdir / "job.json", json.dumps(record, indent=1) + "\n")
        if not (jdir / "state.json").exists():
            st.update_state(jdir, "planned")
    st.write_table(sweep_dir)


def _to_run(sweep_dir: Path, jobs: list[PlannedJob], say) -> list[PlannedJob]:
    """The jobs to submit: not done and not queued or running."""
    todo = []
    for job in jobs:
        record = st.read_state(st.job_dir(sweep_dir, job.name))
        if record["state"] == "done":
            say(f"{job.name}: done, skipped")
            continue
        busy = st.still_running(record, sweep_dir / "submitit")
        if busy:
            say(f"{job.name}: {record['state']} ({busy}), left alone")
            continue
        if record["state"] != "planned":
            say(f"{job.name}: was {record['state']} ({record.get('error') or record.get('note', '')}): resuming")
        todo.append(job)
    return todo


def slot_cpus(parallel: int, pin: bool) -> list[list[int] | None]:
    """The CPUs of each local slot: the launcher's CPUs split into ``parallel`` contiguous shares
    (``pin``), else None (every job may use every CPU)."""
    if not pin:
        return [None] * parallel
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < parallel:
        raise IcrlError(f"resources.pin_cpus: {parallel} jobs at a time need at least {parallel} CPUs; "
                        f"this process may use {len(cpus)} ({', '.join(map(str, cpus))})")
    return [cpus[i * len(cpus) // parallel:(i + 1) * len(cpus) // parallel] for i in range(parallel)]


def run_local(sweep_dir: Path, todo: list[PlannedJob], res: ResourcesSpec, say, poll_s: float = 1.0) -> None:
    """Run ``todo`` through submitit's LocalExecutor, ``res.parallel`` at a time, until all end."""
    folder = sweep_dir.absolute() / "submitit" / "%j"
    cpus = slot_cpus(res.parallel, res.pin_cpus)
    pending, running = list(todo), {}  # name -> (job, slot)
    try:
        while pending or running:
            while pending and len(running) < res.parallel:
                job = pending.pop(0)
                slot = min(set(range(res.parallel)) - {s for _, s in running.values()})
                g = job.gpus_per_node
                ex = submitit.LocalExecutor(folder=folder)
                # Each slot its own GPUs (submitit sets CUDA_VISIBLE_DEVICES to them).
                ex.update_parameters(timeout_min=res.timeout_min, gpus_per_node=g, tasks_per_node=1,
                                     visible_gpus=tuple(range(slot * g, slot * g + g)))
                jdir = st.job_dir(sweep_dir, job.name)
                st.update_state(jdir, "submitted", executor="local", host=socket.gethostname(), pid=None,
                                note="")
                handle = ex.submit(SweepJob(), str(jdir.absolute()), cpus[slot])
                st.update_state(jdir, job_id=handle.job_id, controller_pid=int(handle.job_id))
                st.write_table(sweep_dir)
                running[job.name] = (handle, slot)
                on = f"; CPUs {','.join(map(str, cpus[slot]))}" if cpus[slot] else ""
                say(f"{job.name}: started (submitit job {handle.job_id}{on}; log {handle.paths.stderr})")
            time.sleep(poll_s)
            for name, (handle, _) in list(running.items()):
                if handle.done():
                    del running[name]
                    record = st.read_state(st.job_dir(sweep_dir, name))
                    if record["state"] in st.ACTIVE:  # killed before it could say so
                        record = st.update_state(st.job_dir(sweep_dir, name), "failed",
                                                 error=f"the job's process ended ({handle.state}); "
                                                       f"see {handle.paths.stderr}")
                    say(f"{name}: {record['state']} {record.get('error') or record.get('note', '')}".rstrip())
                    st.write_table(sweep_dir)
    except KeyboardInterrupt:
        for name, (handle, _) in running.items():
            handle.cancel()  # SIGINT to its controller, which stops the job
            st.update_state(st.job_dir(sweep_dir, name), "interrupted", note="the launcher was interrupted")
        st.write_table(sweep_dir)
        raise


def run_slurm(sweep_dir: Path, todo: list[PlannedJob], res: ResourcesSpec, name: str, say) -> list:
    """Queue ``todo`` on SLURM (one job array per GPU count); returns the submitit jobs."""
    if shutil.which("sbatch") is None:
        raise IcrlError("--executor slurm: sbatch is not on PATH (this is not a SLURM login node)")
    handles = []
    for g in sorted({j.gpus_per_node for j in todo}):
        group = [j for j in todo if j.gpus_per_node == g]
        ex = submitit.AutoExecutor(folder=sweep_dir.absolute() / "submitit" / "%j", cluster="slurm")
        params = dict(name=f"icrl-{name}", timeout_min=res.timeout_min, nodes=res.nodes, tasks_per_node=1,
                      gpus_per_node=g, cpus_per_task=res.cpus_per_task, slurm_partition=res.partition,
                      **{f"slurm_{k}": v for k, v in res.slurm.items()})
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        for job in group:
            st.update_state(st.job_dir(sweep_dir, job.name), "submitted", executor="slurm", pid=None, note="")
        with ex.batch():  # one SLURM job array
            batch = [ex.submit(SweepJob(), str(st.job_dir(sweep_dir, j.name).absolute())) for j in group]
        for job, handle in zip(group, batch):
            st.update_state(st.job_dir(sweep_dir, job.name), job_id=handle.job_id)
            say(f"{job.name}: queued as SLURM job {handle.job_id} ({res.nodes} node(s) x {g} GPUs)")
        handles += batch
    st.write_table(sweep_dir)
    return handles


def _check_inputs(spec: SweepSpec, source: str, jobs: list[PlannedJob]) -> None:
    """The stores every job reads exist (before anything is queued)."""
    paths = {s.path for j in jobs for s in j.config.data.sources}
    if spec.eval:
        paths.add(spec.eval.demos)
    for path in sorted(paths):
        if not Path(path).is_dir():
            raise IcrlError(f"{source}: store {path} does not exist (collect it first: see the file's header)")


def run_sweep(config: str | Path, *, grid: list[str] = (), overrides: list[str] = (), resources: dict | None = None,
              dry_run: bool = False, status: bool = False, wait: bool = False, say=None) -> int:
    """``icrl sweep``: plan, then run what is not done; returns 0 when every job is done (local,
    or SLURM with ``wait``), 1 when one is not; SLURM without ``wait``: 0 once queued."""
    from icrl.config import validate
    from icrl.sweep.report import write_report
    from icrl.sweep.spec import default_sweep_dir, is_sweep_file, load_sweep, parse_grid, spec_from_grid

    if say is None:
        def say(text: str) -> None:  # flushed: a long local sweep's log shows each job as it goes
            print(text, flush=True)
    source = str(config)
    if is_sweep_file(config):
        if grid:
            raise IcrlError(f"--grid: {source} is a sweep file, whose grid is its `grid:` section")
        spec = load_sweep(config)
    else:
        spec = spec_from_grid(config, parse_grid(list(grid)))
    res = validate(ResourcesSpec, {**spec.resources.model_dump(),
                                   **{k: v for k, v in (resources or {}).items() if v is not None}},
                   f"{source} resources (with the command line's flags)")
    sweep_dir = default_sweep_dir(spec)
    if status:
        if not (sweep_dir / "sweep.json").is_file():
            raise IcrlError(f"{sweep_dir}: this sweep has not been launched yet")
        say(st.write_table(sweep_dir))
        return 0
    jobs = plan(spec, source, sweep_dir, list(overrides), res)
    say(f"sweep {spec.name}: {len(jobs)} jobs in {sweep_dir}; executor {res.executor}, accelerator "
        f"{jobs[0].accelerator}" + (f", {res.nodes} node(s) x {jobs[0].gpus_per_node} GPUs" if jobs[0].gpus_per_node
                                    else "") + (f", {res.parallel} at a time" if res.executor == "local" else "")
        + (", each slot on its own CPUs" if res.executor == "local" and res.pin_cpus else ""))
    if dry_run:
        for job in jobs:
            say(f"{job.name}: " + " ".join(f"{k}={v!r}" for k, v in
                                           {k: v for k, (_, v) in points_values(spec, source, job.name).items()}.items()))
        return 0
    _check_inputs(spec, source, jobs)
    write_plan(sweep_dir, spec, jobs, list(overrides))
    todo = _to_run(sweep_dir, jobs, say)
    if res.executor == "slurm":
        handles = run_slurm(sweep_dir, todo, res, spec.name, say) if todo else []
        if not wait:
            say(f"queued {len(handles)} job(s); `icrl sweep {source} --status` shows where they stand")
            return 0
        for handle in handles:
            try:
                handle.result()
            except Exception as err:  # noqa: BLE001 - the job's own error is in its state and log
                say(f"SLURM job {handle.job_id}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    elif todo:
        run_local(sweep_dir, todo, res, say)
    say(st.write_table(sweep_dir))
    states = [st.read_state(st.job_dir(sweep_dir, j.name))["state"] for j in jobs]
    if spec.eval and any(s == "done" for s in states):
        write_report(sweep_dir)
        say(f"report: {sweep_dir / 'report.md'} and {sweep_dir / 'report.png'}")
    done = states.count("done")
    say(f"{done} of {len(jobs)} jobs done")
    return 0 if done == len(jobs) else 1


def points_values(spec: SweepSpec, source: str, name: str) -> dict:
    """The values a job's grid point sets (for --dry-run)."""
    return next(p.values for p in points(spec, source) if p.name == name)
