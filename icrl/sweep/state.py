"""The sweep directory: what every job is and where it stands.

    <sweep_dir>/sweep.yaml              the sweep as launched (the file, validated, with the --set flags)
    <sweep_dir>/sweep.json              its axes, its jobs in grid order and their labels, the report's settings
    <sweep_dir>/jobs.md                 one table of the jobs and their states (rewritten on each change)
    <sweep_dir>/jobs/<job>/config.yaml  the job's resolved experiment config: what it trains
    <sweep_dir>/jobs/<job>/job.json     its grid point, evaluation arguments and accelerator
    <sweep_dir>/jobs/<job>/state.json   where it stands, written by the launcher and by the job
    <sweep_dir>/runs/<job>/             its run directory (``icrl train``, ``icrl eval``, devices.json)
    <sweep_dir>/submitit/<job id>/      submitit's pickles and the job's stdout / stderr
    <sweep_dir>/report.md, report.png   the report across the grid

States: ``planned`` → ``submitted`` → ``training`` (→ ``preempted`` → requeued: ``training`` again)
→ ``evaluating`` → ``done``; or ``failed`` (with the error) / ``interrupted``. Every file is
written atomically (temp file + rename).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any

STATES = ("planned", "submitted", "training", "preempted", "evaluating", "done", "failed", "interrupted")
ACTIVE = ("submitted", "training", "preempted", "evaluating")
# SLURM job states in which a job will still run (or is running): not to be submitted again.
SLURM_LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
              "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file, or ``default`` when it does not exist (or is being replaced)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def job_dir(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "jobs" / name


def run_dir(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "runs" / name


def read_state(jdir: Path) -> dict[str, Any]:
    """A job's state record (``{"state": "planned"}`` before anything happened)."""
    return read_json(jdir / "state.json", None) or {"state": "planned"}


def update_state(jdir: Path, state: str | None = None, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` (and the new ``state``) into the job's record; returns it."""
    assert state is None or state in STATES, state
    record = read_state(jdir)
    if state is not None:
        record["state"] = state
        if state != "failed":
            record.pop("error", None)
    record.update(fields)
    record["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
    write_atomically(jdir / "state.json", json.dumps(record, indent=1) + "\n")
    return record


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def still_running(record: dict[str, Any], submitit_folder: Path) -> str | None:
    """Why the job must not be submitted again (it is queued or running), or None.

    Local jobs: the job's process (or, before it started, submitit's controller) is alive on this
    host. SLURM jobs: ``sacct`` says the job is pending or running; when it cannot tell, the job
    counts as running, so a sweep is never run twice at once.
    """
    if record.get("state") not in ACTIVE:
        return None
    executor = record.get("executor")
    if executor == "slurm" and record.get("job_id"):
        try:
            import submitit

            state = submitit.SlurmJob(folder=submitit_folder / "%j", job_id=str(record["job_id"])).state
        except Exception as err:  # noqa: BLE001 - sacct missing or failing: assume it runs
            return f"SLURM job {record['job_id']} (its state is unknown: {err})"
        if state.split(" ")[0] in SLURM_LIVE or state == "UNKNOWN":
            return f"SLURM job {record['job_id']} is {state}"
        return None
    if record.get("host", socket.gethostname()) != socket.gethostname():
        return f"running on host {record['host']} (delete its state.json to run it here)"
    for key in ("pid", "controller_pid"):
        if record.get(key) and _pid_alive(record[key]):
            return f"process {record[key]} is alive"
    return None


def table(sweep_dir: Path, names: list[str]) -> str:
    """Markdown: every job with its state, attempts, step reached, devices, host and last update."""
    lines = ["| job | state | attempts | step | devices | host | updated | note |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        r = read_state(job_dir(sweep_dir, name))
        note = r.get("error") or r.get("note") or ""
        lines.append(f"| {name} | {r['state']} | {r.get('attempts', 0)} | {r.get('step', '')} | "
                     f"{r.get('devices', '')} | {r.get('host', '')} | {r.get('updated', '')} | "
                     f"{note.replace('|', '/')[:160]} |")
    return "\n".join(lines)


def job_names(sweep_dir: Path) -> list[str]:
    """The jobs of a sweep directory, in grid order (from sweep.json)."""
    plan = read_json(sweep_dir / "sweep.json", None)
    return [] if plan is None else [j["name"] for j in plan["jobs"]]


def write_table(sweep_dir: Path) -> str:
    """Rewrite ``jobs.md``; returns its table."""
    text = table(sweep_dir, job_names(sweep_dir))
    write_atomically(sweep_dir / "jobs.md", f"# Jobs of sweep {sweep_dir.name}\n\n{text}\n")
    return text
