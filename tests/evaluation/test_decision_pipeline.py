"""Whole pipelines through the engine: the decision report's verdicts block deploying."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.engine import execute
from ftpipe.progress import Reporter
from tests.fakes.openai_server import OpenAIServer

REPO = Path(__file__).resolve().parents[2]
BASE = "gpt-35-turbo-0613"
pytestmark = pytest.mark.integration


def test_few_shot_as_good_as_the_fine_tune_means_do_not_fine_tune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Azure tutorial gated on few-shot prompting too, with 95% confidence: on the
    loopback double, few-shot examples chosen by similarity answer like the fine-tune, so
    the recommendation is not to fine-tune, and the gate blocks the deployment (exit 3)."""
    (tmp_path / "pipelines").mkdir()
    shutil.copytree(REPO / "pipelines" / "data", tmp_path / "pipelines" / "data")
    text = (REPO / "pipelines" / "azure-gpt35-tutorial.yaml").read_text()
    gate = "gate: {metric: token_f1, must_beat: [base]}"
    assert gate in text
    text = text.replace(
        gate,
        "gate: {metric: token_f1, must_beat: [base, few_shot], min_delta: 0.02, confidence: 0.95}\n"
        "  prices: {finetuned: {input: 1.65, output: 2.2}, default: {input: 0.5, output: 1.5}}",
    )
    path = tmp_path / "pipelines" / "azure-gpt35-tutorial.yaml"
    path.write_text(text)

    with OpenAIServer(steps_per_state=0) as server:
        for var, value in (
            ("AZURE_OPENAI_ENDPOINT", server.url),
            ("AZURE_OPENAI_API_KEY", server.azure_api_key),
            ("AZURE_MANAGEMENT_TOKEN", server.arm_token),
            ("AZURE_MANAGEMENT_ENDPOINT", server.url),
        ):
            monkeypatch.setenv(var, value)
        server.add_deployment("gpt-35-turbo-base", BASE)  # trainer.base_deployment
        outcome = execute(path, store=tmp_path / "store", reporter=Reporter(quiet=True))
        assert "gpt-35-turbo-recipes" not in server.deployments  # nothing was deployed

    steps = outcome.record["steps"]
    assert outcome.exit_code == 3, {k: (v["status"], v.get("error")) for k, v in steps.items()}
    assert steps["gate"]["status"] == "blocked" and steps["deploy.azure-openai"]["status"] == "skipped"
    report = json.loads((tmp_path / "store" / steps["evaluate"]["artifact"] / "report.json").read_text())
    rec = report["recommendation"]
    assert rec["variant"] == "few_shot" and not rec["fine_tune"]
    assert rec["line"].startswith("do not fine-tune: few_shot is as good (token_f1 ")
    few_cost = report["variants"]["few_shot"]["cost_per_1k_requests"]
    ft_cost = report["variants"]["finetuned"]["cost_per_1k_requests"]
    assert rec["line"].endswith(f"and costs ${few_cost:.4f} per 1k requests (fine-tuned: ${ft_cost:.4f})")
    gate = json.loads((tmp_path / "store" / steps["gate"]["artifact"] / "gate.json").read_text())
    assert gate["recommendation"] == rec
    assert "with 95% confidence" in gate["reason"] and gate["reason"].endswith(rec["line"])
    assert steps["deploy.azure-openai"]["reason"].endswith(rec["line"])
    md = (tmp_path / "store" / steps["evaluate"]["artifact"] / "report.md").read_text()
    assert f"**Recommendation: {rec['line']}**" in md.splitlines()[2]
    few = next(c for c in report["comparisons"] if c["baseline"] == "few_shot")
    iv = few["intervals"]["token_f1"]
    assert iv["n"] == 40 and iv["low"] < 0.02


def _quickstart(tmp_path: Path, epochs: str) -> Path:
    folder = tmp_path / "pipelines"
    if not folder.exists():
        shutil.copytree(REPO / "pipelines" / "data", folder / "data")
    text = (REPO / "pipelines" / "quickstart.yaml").read_text()
    for old, new in (
        ("epochs: 4, learning_rate: 5.0e-3", epochs),
        ("baselines: [base, few_shot, rag, deployed]", "baselines: [deployed]"),
        ("must_beat: [base, few_shot, rag, deployed], min_delta: 0.05", "must_beat: [deployed], min_delta: 0.0"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = folder / "quickstart.yaml"
    path.write_text(text)
    return path


def _run(path: Path) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "run", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    record = json.loads((path.parent / ".ftpipe" / "runs" / summary["run_id"] / "run.json").read_text())
    return proc.returncode, record, proc.stderr


def test_a_worse_model_does_not_replace_the_deployed_one(tmp_path: Path) -> None:
    """The quickstart's gate compares with the model deployed at outputs/quickstart now."""
    good = "epochs: 1, learning_rate: 5.0e-3"
    code, first, err = _run(_quickstart(tmp_path, good))
    assert code == 0, err[-3000:]
    gate = json.loads(
        (tmp_path / "pipelines" / ".ftpipe" / first["steps"]["gate"]["artifact"] / "gate.json").read_text()
    )
    assert gate["comparisons"][0]["skipped"] and "nothing deployed at" in gate["reason"]
    marker = tmp_path / "pipelines" / "outputs" / "quickstart" / "ftpipe.json"
    deployed_key = json.loads(marker.read_text())["train_key"]
    assert first["steps"]["train"]["artifact"].endswith(deployed_key)

    # a barely trained model: it must not overwrite the deployed one
    code, second, err = _run(_quickstart(tmp_path, "epochs: 1, max_steps: 1, learning_rate: 1.0e-9"))
    assert code == 3, err[-3000:]
    assert second["steps"]["gate"]["status"] == "blocked" and second["steps"]["deploy.local"]["status"] == "skipped"
    reason = second["steps"]["deploy.local"]["reason"]
    assert "did not beat deployed" in reason and "keep the deployed model" in reason
    assert json.loads(marker.read_text())["train_key"] == deployed_key
    report = json.loads(
        (tmp_path / "pipelines" / ".ftpipe" / second["steps"]["evaluate"]["artifact"] / "report.json").read_text()
    )
    assert report["variants"]["deployed"]["kind"] == "local"
    assert (
        report["variants"]["deployed"]["metrics"]["token_f1"] > report["variants"]["finetuned"]["metrics"]["token_f1"]
    )

    # a better model replaces it, and records which one it replaced
    better = "epochs: 2, learning_rate: 5.0e-3"
    code, third, err = _run(_quickstart(tmp_path, better))
    assert code == 0, err[-3000:]
    assert third["steps"]["deploy.local"]["status"] == "done"
    doc = json.loads(marker.read_text())
    assert third["steps"]["train"]["artifact"].endswith(doc["train_key"])
    assert doc["replaced_train_key"] == deployed_key
    # the same pipeline again: the deployed model is its own, so everything is cached
    code, fourth, err = _run(_quickstart(tmp_path, better))
    assert code == 0, err[-3000:]
    assert {s["status"] for s in fourth["steps"].values()} == {"cached"}, fourth["steps"]
