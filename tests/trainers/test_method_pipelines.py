"""KTO, GRPO and a two-format mixture as whole pipelines (prepare -> train -> evaluate) on
the built-in tiny model: the example pipelines' settings, cut to a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ftpipe.engine import execute
from ftpipe.progress import Reporter

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _example(tmp_path: Path, name: str, rows: dict[str, int], **trainer_hp: object) -> Path:
    """The example pipeline ``name`` with its data cut to ``rows`` lines per file and a
    couple of training steps."""
    doc = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
    (tmp_path / "data").mkdir(exist_ok=True)
    for file, n in rows.items():
        lines = (REPO / "pipelines" / "data" / file).read_text().splitlines()[:n]
        (tmp_path / "data" / file).write_text("\n".join(lines) + "\n")
    doc["trainer"]["hyperparameters"] |= {"max_steps": 2, "logging_steps": 1, **trainer_hp}
    doc["evaluate"]["limit"] = 4
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _run(path: Path) -> dict:
    outcome = execute(path, reporter=Reporter(quiet=True))
    steps = outcome.record["steps"]
    assert outcome.exit_code == 0, {k: (v["status"], v.get("error")) for k, v in steps.items()}
    return steps


def test_kto_pipeline(tmp_path: Path) -> None:
    steps = _run(_example(tmp_path, "kto-feedback", {"recipes-feedback.jsonl": 40}, batch_size=4))
    assert isinstance(steps["train"]["metrics"]["train_loss"], float)
    assert steps["train"]["metrics"]["global_step"] == 2
    assert "kto (lora)" in steps["train"]["summary"]
    assert steps["evaluate"]["status"] == "done"


def test_grpo_pipeline(tmp_path: Path) -> None:
    steps = _run(
        _example(
            tmp_path, "grpo-recipes", {"recipes.jsonl": 40}, batch_size=4, num_generations=2, max_completion_length=6
        )
    )
    metrics = steps["train"]["metrics"]
    assert isinstance(metrics["reward_last"], float) and 0.0 <= metrics["reward_last"] <= 1.5
    assert "reward" in steps["train"]["summary"]
    assert steps["evaluate"]["status"] == "done"


def test_mixture_pipeline(tmp_path: Path) -> None:
    path = _example(tmp_path, "mixture", {"recipes.jsonl": 70, "recipes-alpaca.jsonl": 60})
    steps = _run(path)
    stats = json.loads((tmp_path / ".ftpipe" / steps["prepare"]["artifact"] / "stats.json").read_text())
    assert set(stats["sources"]) == {"chat", "alpaca"}
    assert stats["sources"]["chat"]["rows_read"] == 70  # the 0.7 source runs out first
    assert isinstance(steps["train"]["metrics"]["train_loss"], float)
