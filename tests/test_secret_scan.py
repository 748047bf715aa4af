"""A planted token never lands in any file a run writes (issue 20): a quickstart-like run,
in a real `ftpipe run` process, with the token in a secret field, in a plain field through
another variable holding the same value, and in the well-known variables of the
environment. Every file under the run store, the outputs, the cache and the home folder,
and the run's console output, is scanned for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_PlantedTokenValue0123456789abcdef"
OTHER = "sk-PlantedOpenAIKey0123456789abcdef"
pytestmark = pytest.mark.integration


def _pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "repo" / "pipelines"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "recipes.jsonl").write_bytes((REPO / "pipelines" / "data" / "recipes.jsonl").read_bytes())
    doc = yaml.safe_load((REPO / "pipelines" / "quickstart.yaml").read_text())
    doc["description"] = "By ${env:OWNER_NOTE}. " + doc["description"]  # a plain variable, secret value
    doc["model"]["token"] = "${env:HF_TOKEN}"
    doc["trainer"]["hyperparameters"].update(epochs=1, max_steps=2)
    ev = doc["evaluate"]  # one baseline, short answers, no gate
    for key in ("few_shot", "rag", "cost", "gate"):
        ev.pop(key, None)
    ev["baselines"] = ["base"]
    ev["generation"]["max_new_tokens"] = 6
    text = yaml.safe_dump(doc, sort_keys=False)
    path = folder / "quickstart.yaml"
    path.write_text(text)
    return path


def _leaks(root: Path, needles: tuple[str, ...]) -> list[str]:
    found = []
    for f in root.rglob("*"):
        if f.is_file() and not f.is_symlink():
            blob = f.read_bytes()
            found += [f"{f} holds {n[:8]}..." for n in needles if n.encode() in blob]
    return found


def test_a_planted_token_reaches_no_file_the_run_writes(tmp_path: Path) -> None:
    path = _pipeline(tmp_path)
    env = dict(
        os.environ,
        HF_TOKEN=TOKEN,
        OWNER_NOTE=TOKEN,
        OPENAI_API_KEY=OTHER,
        FTPIPE_CACHE=str(tmp_path / "cache"),
        FTPIPE_STORE=str(tmp_path / "repo" / ".ftpipe"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "run", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path / "repo",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"]["deploy.local"] == "done", summary

    # what was written: the run store (record, resolved pipeline, logs, artifacts), the
    # deployed model and its card, the cache, the home folder
    store = tmp_path / "repo" / ".ftpipe"
    card = path.parent / "outputs" / "quickstart" / "README.md"
    assert card.exists() and (store / "runs" / summary["run_id"] / "run.json").exists()
    assert any((store / "runs" / summary["run_id"] / "logs").iterdir())
    written = sum(1 for _ in tmp_path.rglob("*"))
    assert written > 20
    leaks = _leaks(tmp_path, (TOKEN, OTHER)) + _leaks(Path(os.environ["HOME"]), (TOKEN, OTHER))
    assert leaks == []
    assert TOKEN not in proc.stdout + proc.stderr and OTHER not in proc.stdout + proc.stderr

    stored = (store / "runs" / summary["run_id"] / "pipeline.yaml").read_text()
    assert "${env:HF_TOKEN}" in stored  # the secret field stays a reference
    assert "By ***. Extract" in stored  # the plain field that got a secret's value is redacted
    assert "By ***" in card.read_text()
