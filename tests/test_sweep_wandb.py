"""W&B run ids: a uuid kept in the run directory, so a resumed run continues its W&B run and two
runs never merge, even under one name (offline mode, where the wandb extra is installed)."""

from __future__ import annotations

import re

import pytest

from icrl.errors import IcrlError
from icrl.train.config import MetricsConfig
from icrl.train.metrics import MetricsLogger, wandb_run_id


def test_the_run_id_is_made_once_per_run_directory(tmp_path):
    a, b = tmp_path / "runs" / "same-name", tmp_path / "other" / "same-name"
    first = wandb_run_id(a)
    assert re.fullmatch(r"[0-9a-f]{32}", first) and (a / "wandb_id").read_text() == first + "\n"
    assert wandb_run_id(a) == first  # a resume reads it back
    assert wandb_run_id(b) != first  # another run with the same name gets its own
    (b / "wandb_id").write_text("my-run\n")
    with pytest.raises(IcrlError, match=r"wandb_id: not a W&B run id"):
        wandb_run_id(b)


def _log(run_dir, start_step: int, steps: list[int], name: str = "same-name") -> str:
    cfg = MetricsConfig(tensorboard=False, wandb=True, wandb_project="icrl-test", progress=False)
    logger = MetricsLogger(run_dir, cfg, enabled=True, start_step=start_step, total_steps=4, run_name=name,
                           config={"name": name})
    try:
        for step in steps:
            logger.log(step, {"loss": 1.0 / step})
        return logger.wandb.id
    finally:
        logger.close()


@pytest.mark.slow
def test_a_resume_continues_its_wandb_run_and_other_runs_never_merge(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (uv sync --extra wandb)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    a, b = tmp_path / "a" / "same-name", tmp_path / "b" / "same-name"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    first = _log(a, 0, [1, 2])
    assert first == (a / "wandb_id").read_text().strip()
    assert _log(a, 2, [3, 4]) == first  # the resumed run logs to the same W&B run
    other = _log(b, 0, [1, 2])
    assert other != first  # same name, another run: another W&B run
    offline = sorted(p.name for p in (a / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(f"-{first}" in name for name in offline)  # (a "-1" suffix if in one second)
    assert [f"-{other}" in p.name for p in (b / "wandb").glob("offline-run-*")] == [True]
