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

    def progress(self, step: int, loss: float, tokens_per_s: float | None, seconds_per_step: float | None,
                 mfu: float | None = None, data_share: float | None = None) -> None:
        """The live line: step, loss, tokens/s (real tokens), MFU where known, the share of step time
        spent waiting for data, and ETA (rewritten in place on a terminal); None rates (the first
        step, which compiles) show as "compiled"."""
        if not (self.enabled and self.cfg.progress):
            return
        if tokens_per_s is None or seconds_per_step is None:
            rate, eta = "compiled", "?"
        else:
            rate, eta = f"{tokens_per_s:,.0f} tokens/s", _format_seconds((self.total - step) * seconds_per_step)
            if mfu is not None:
                rate += f"  MFU {100 * mfu:.1f}%"
            if data_share is not None:
                rate += f"  data wait {100 * data_share:.0f}%"
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
    """Rates over the steps since the last report (the compiling first step excluded).

    ``add(tokens)`` per finished step: its real tokens (non-padding steps × tokens per step);
    ``wait(seconds)`` when the loop has waited for a batch (counted in the interval it happened in,
    so the data wait never exceeds the interval's time). ``rates()`` gives

    - ``tokens_per_s``: real tokens per second;
    - ``seconds_per_step``, split into ``data_seconds`` (waiting for the loader's next batch and
      assembling it into global arrays) and ``compute_seconds`` (the rest: dispatching the step and
      waiting for the devices, and the loop's logging, checkpoints and diagnostics);
    - ``padding``: the share of the batches' tokens that are padding;
    - ``mfu``: model FLOPs utilisation (``icrl.train.mfu``), None without a peak for the device.
    """

    def __init__(self, tokens_per_step: int, flops_per_token: float | None = None, peak_flops: float | None = None,
                 devices: int = 1):
        self.tokens_per_step = tokens_per_step  # all tokens of one training step, padding included
        self.flops_per_token, self.peak_flops, self.devices = flops_per_token, peak_flops, devices
        self.start: float | None = None
        self.steps = 0
        self.tokens = 0
        self.data_seconds = 0.0

    def mark(self) -> None:
        """Start (or restart) the clock now."""
        self.start = time.perf_counter()
        self.steps, self.tokens, self.data_seconds = 0, 0, 0.0

    def add(self, tokens: int | None = None) -> None:
        """One finished step with ``tokens`` real tokens (None: all ``tokens_per_step`` count)."""
        self.steps += 1
        self.tokens += self.tokens_per_step if tokens is None else tokens

    def wait(self, seconds: float) -> None:
        """The loop waited ``seconds`` for a batch (since the last ``mark``)."""
        if self.start is not None:
            self.data_seconds += seconds

    def rates(self) -> dict[str, float | None]:
        """The figures since ``mark`` (NaN before any step); then restarts the clock."""
        from icrl.train.mfu import mfu

        if self.start is None or self.steps == 0:
            nan = float("nan")
            return {"tokens_per_s": nan, "seconds_per_step": nan, "data_seconds": nan, "compute_seconds": nan,
                    "padding": nan, "mfu": None}
        elapsed = time.perf_counter() - self.start
        tokens_per_s = self.tokens / elapsed
        out = {
            "tokens_per_s": tokens_per_s,
            "seconds_per_step": elapsed / self.steps,
            "data_seconds": self.data_seconds / self.steps,
            "compute_seconds": (elapsed - self.data_seconds) / self.steps,
            "padding": 1.0 - self.tokens / (self.steps * self.tokens_per_step),
            "mfu": None if self.flops_per_token is None else mfu(tokens_per_s, self.flops_per_token,
                                                                 self.peak_flops, self.devices),
        }
        self.mark()
        return out


class ProfileWindow:
    """``icrl train --profile START:STOP``: a ``jax.profiler`` trace of steps START+1 … STOP.

    The trace starts before the step after START runs and stops once step STOP's results are
    ready, into ``directory`` (TensorBoard's profile plugin and Perfetto read it:
    ``plugins/profile/<time>/<host>.xplane.pb``). A run resumed past START traces from its first
    step, if that is before STOP.
    """

    def __init__(self, directory: Path, start: int, stop: int):
        self.directory, self.start, self.stop = directory, start, stop
        self.active = self.done = False

    def before_step(self, done: int) -> None:
        """``done`` steps are done; the next one is about to run."""
        if not (self.active or self.done) and self.start <= done < self.stop:
            import jax

            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after_step(self, done: int, outputs: Any) -> None:
        """Step ``done`` was dispatched with ``outputs``; stop after step STOP."""
        if self.active and done >= self.stop:
            self.close(outputs)

    def close(self, outputs: Any = None) -> None:
        if self.active:
            import jax

            jax.block_until_ready(outputs)  # the trace holds the last step's device work too
            jax.profiler.stop_trace()
            self.active, self.done = False, True


def parse_profile(text: str) -> tuple[int, int]:
    """``START:STOP`` (``icrl train --profile``) -> (START, STOP), 0 <= START < STOP."""
    parts = text.split(":")
    try:
        start, stop = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        start = stop = None
    if start is None or stop is None or not 0 <= start < stop:
        raise IcrlError(f"--profile {text!r}: expected START:STOP, two step numbers with 0 <= START < STOP "
                        f"(e.g. --profile 10:15 traces steps 11 to 15)")
    return start, stop
