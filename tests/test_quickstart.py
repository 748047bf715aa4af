"""The README's main job, as a new user runs it: `ftpipe run pipelines/quickstart.yaml`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _copy_quickstart(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    folder = tmp_path / "pipelines"
    (folder / "data").mkdir(parents=True)
    for name in ("recipes.jsonl", "pantry-notes.md"):  # the training data and the rag baseline's corpus
        (folder / "data" / name).write_bytes((REPO / "pipelines" / "data" / name).read_bytes())
    text = (REPO / "pipelines" / "quickstart.yaml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    (folder / "quickstart.yaml").write_text(text)
    return folder / "quickstart.yaml"


def _run(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", "run", str(path), "--json", *args], capture_output=True, text=True, timeout=900
    )


def test_quickstart_trains_beats_the_baselines_deploys_and_reruns_as_cached(tmp_path: Path) -> None:
    path = _copy_quickstart(tmp_path)
    first = _run(path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and not summary["up_to_date"]
    store = path.parent / ".ftpipe"
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())
    report = json.loads((store / record["steps"]["evaluate"]["artifact"] / "report.json").read_text())
    f1 = {name: v["metrics"]["token_f1"] for name, v in report["variants"].items()}
    assert f1["finetuned"] > f1["base"] + 0.05 and f1["finetuned"] > f1["few_shot"] + 0.05, f1
    out = path.parent / "outputs" / "quickstart"
    assert (out / "README.md").exists() and (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert "token_f1" in (out / "README.md").read_text()
    assert (store / record["steps"]["train"]["artifact"] / "loss.png").exists()

    # an unchanged rerun is all cache hits and never imports torch
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom ftpipe.engine import execute\n"
        "from ftpipe.progress import Reporter\n"
        f"o = execute(Path({str(path)!r}), reporter=Reporter(quiet=True))\n"
        "print(json.dumps({'summary': o.summary(), 'torch': 'torch' in sys.modules}))"
    )
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    result = json.loads(again.stdout.strip().splitlines()[-1])
    assert result["summary"]["up_to_date"] and result["summary"]["exit_code"] == 0
    assert result["torch"] is False


def test_a_deliberately_untrained_model_is_blocked_by_the_gate(tmp_path: Path) -> None:
    path = _copy_quickstart(
        tmp_path, ("epochs: 4, learning_rate: 5.0e-3", "epochs: 4, max_steps: 1, learning_rate: 1.0e-9")
    )
    out = _run(path)
    assert out.returncode == 3, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"]["gate"] == "blocked" and summary["steps"]["deploy.local"] == "skipped"
    record = json.loads((path.parent / ".ftpipe" / "runs" / summary["run_id"] / "run.json").read_text())
    reason = record["steps"]["deploy.local"]["reason"]
    assert "did not beat base" in reason and "missed by" in reason
    assert "the evaluation gate blocked deployment" in out.stderr
    assert not (path.parent / "outputs" / "quickstart").exists()
