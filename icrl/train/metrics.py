"""Training metrics: ``metrics.jsonl`` (one JSON object per logged step), TensorBoard event files
under ``tb/``, optional Weights & Biases, and a live progress line (step, loss, tokens/s, ETA).

Only process 0 writes. When a run resumes from step s, lines and events of steps after s (written
by the interrupted run after its last checkpoint) are dropped, so every step appears once.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from icrl.errors import IcrlError
from icrl.train.config import MetricsConfig


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics file (a line cut by a kill is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_after(path: Path, step: int) -> None:
    """Keep only the records of ``path`` whose step is at most ``step`` (atomic rewrite)."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)


def check_wandb(cfg: MetricsConfig) -> None:
    """IcrlError now, before any compute, if W&B is asked for but not installed."""
    if cfg.wandb:
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise IcrlError("metrics.wandb=true but the wandb package is not installed "
                            "(the `wandb` extra: uv sync --extra wandb; or set metrics.wandb=false)")


WANDB_ID_FILE = "wandb_id"


def wandb_run_id(run_dir: str | Path) -> str:
    """The W&B run id of a run directory: a random uuid made on first use and kept in
    ``<run_dir>/wandb_id``, so every resume of the run logs to the same W&B run and no other run
    directory ever gets it (a name can be reused; a uuid is not)."""
    import uuid

    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        text = path.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return text
        raise IcrlError(f"{path}: not a W&B run id (32 hex digits); delete it to start a new W&B run")
    run_id = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(run_id + "\n")
    tmp.replace(path)  # atomic: a crash leaves no half-written id
    return run_id


def _format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class MetricsLogger:
    """Write metrics of logged steps; ``enabled=False`` (processes other than 0) writes nothing."""

    def __init__(self, run_dir: Path, cfg: MetricsConfig, *, enabled: bool, start_step: int, total_steps: int,
                 run_name: str, config: dict[str, Any]):
        self.enabled = enabled
        self.cfg = cfg
        self.total = total_steps
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        self._progress_shown = False
        self._tty = sys.stderr.isatty()
        if not enabled:
            return
        truncate_after(self.path, start_step)
        self.file = self.path.open("a")
        if cfg.tensorboard:
            from tensorboardX import SummaryWriter

            # purge_step hides events at or after it that an interrupted run left behind.
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1 if start_step else None)
        if cfg.wandb:
            import wandb

            # The id is the run directory's own (wandb_run_id), not its name: a resumed run continues
            # its W&B run, and two runs that share a name never merge.
            self.wandb = wandb.init(project=cfg.wandb_project, entity=cfg.wandb_entity, name=run_name,
                                    id=wandb_run_id(run_dir), resume="allow", config=config,
                                    dir=str(run_dir))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """One record: ``{"step": step, **metrics}`` to every sink."""
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in metrics.items() if v is not None}, step=step)

    def event(self, step: int, event: str, **fields: Any) -> None:
        """A non-metric record (``{"step", "event", ...}``) in metrics.jsonl only."""
        if self.enabled:
            self.file.write(json.dumps({"step": step, "event": event, **fields}) + "\n")
            self.file.flush()

    def progress(self, step: int, loss: float, tokens_per_s: float | None, seconds_per_step: float | None) -> None:
        """The live line: step, loss, tokens/s and ETA (rewritten in place on a terminal); None
        rates (the first step, which compiles) show as "compiled"."""
        if not (self.enabled and self.cfg.progress):
            return
        if tokens_per_s is None or seconds_per_step is None:
            rate, eta = "compiled", "?"
        else:
            rate, eta = f"{tokens_per_s:,.0f} tokens/s", _format_seconds((self.total - step) * seconds_per_step)
        line = f"step {step}/{self.total} ({100 * step / self.total:.1f}%)  loss {loss:.4f}  {rate}  ETA {eta}"
        if self._tty:
            sys.stderr.write("\r\033[K" + line)
            self._progress_shown = True
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def message(self, text: str) -> None:
        """A line for the user on stderr (process 0), below the progress line."""
        if not self.enabled:
            return
        if self._progress_shown:
            sys.stderr.write("\n")
            self._progress_shown = False
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._progress_shown:
            sys.stderr.write("\n")
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


class Throughput:
    """Tokens/s and seconds/step over the steps since the last report (compile excluded)."""

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.start: float | None = None
        self.steps = 0

    def mark(self) -> None:
        """Start (or restart) the clock now."""
        self.start = time.perf_counter()
        self.steps = 0

    def add(self, steps: int = 1) -> None:
        self.steps += steps

    def rates(self) -> tuple[float, float]:
        """(tokens/s, seconds/step) since ``mark``; then restarts the clock."""
        if self.start is None or self.steps == 0:
            return float("nan"), float("nan")
        elapsed = time.perf_counter() - self.start
        out = self.steps * self.tokens_per_step / elapsed, elapsed / self.steps
        self.mark()
        return out
