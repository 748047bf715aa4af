"""End to end against the loopback Hub: `ftpipe run` trains the tiny model (trl backend,
a few steps), evaluates it and deploys it to a local folder, a private Hub repo and an
Inference Endpoint; an unchanged second run makes no new commit; a pipeline loads its base
model and its dataset from the Hub by repo id; the token is nowhere on disk or on the Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.deploy.test_local_deploy import tiny_model_dir
from tests.fakes.hub_server import hub_fixture  # noqa: F401 - the `hub` fixture

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPO = "tester/e2e-model"
ROWS = 48

TRAINER = """\
trainer:
  backend: trl
  method: sft
  peft: {peft}
  hyperparameters: {{max_steps: 2, batch_size: 4, max_seq_length: 256, learning_rate: 3.0e-3, logging_steps: 1}}
  checkpoint: {{every_steps: 50, keep: 1}}
"""


def _rows() -> list[str]:
    lines = (REPO_ROOT / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()
    return [line for line in lines if line.strip()][:ROWS]


def _write(folder: Path, text: str, data: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if data:
        (folder / "data.jsonl").write_text("\n".join(_rows()) + "\n")
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


def deploy_pipeline(folder: Path) -> Path:
    return _write(
        folder,
        f"""\
# Run it:  ftpipe run pipeline.yaml
version: 1
name: e2e-hub
dataset:
  source: {{type: local, path: data.jsonl}}
  format: chat
  split: {{validation: 0.1, test: 0.1, seed: 42}}
model:
  base: builtin:tiny
{TRAINER.format(peft="{type: lora, r: 4, alpha: 8}")}evaluate:
  metrics: [token_f1]
  baselines: [base]
  limit: 4
  generation: {{max_new_tokens: 8, batch_size: 4}}
deploy:
  - {{type: local, path: "outputs/{{pipeline}}", merge: true}}
  - {{type: hf-hub, repo: {MODEL_REPO}, private: true, token: "${{env:HF_TOKEN}}"}}
  - {{type: hf-endpoint, repo: {MODEL_REPO}, endpoint: e2e-ep, token: "${{env:HF_TOKEN}}"}}
""",
    )


def hub_sources_pipeline(folder: Path) -> Path:
    return _write(
        folder,
        f"""\
# Run it:  ftpipe run pipeline.yaml
version: 1
name: e2e-hub-sources
dataset:
  source: {{type: hub, repo: tester/recipes, split: train, token: "${{env:HF_TOKEN}}"}}
  format: chat
  split: {{validation: 0.1, test: 0.1, seed: 42}}
model:
  base: tester/tiny-base
  token: ${{env:HF_TOKEN}}
{TRAINER.format(peft="{type: none}")}deploy:
  - {{type: local, path: outputs/model}}
""",
        data=False,
    )


def ftpipe(*args: str) -> tuple[int, str, dict | None]:
    """`ftpipe ARGS` in this process (the loopback Hub lives here); (exit code, output, --json summary)."""
    from click.testing import CliRunner

    from ftpipe.cli import commands, main, more  # noqa: F401 - registers the commands

    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    summary = None
    for line in reversed(result.output.splitlines()):
        if line.startswith("{"):
            summary = json.loads(line)
            break
    return result.exit_code, result.output, summary


def _all_files(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


def test_train_evaluate_deploy_local_hub_endpoint_then_rerun_makes_no_commit(hub, tmp_path):
    hub.inference_responder = lambda name, prompt: "lemon juice, flour, eggs"
    path = deploy_pipeline(tmp_path / "project")
    code, output, summary = ftpipe("run", str(path), "--json")
    assert code == 0, output
    assert summary["status"] == "succeeded"
    assert set(summary["steps"]) == {
        "prepare",
        "train",
        "evaluate",
        "deploy.local",
        "deploy.hf-hub",
        "deploy.hf-endpoint",
    }
    assert set(summary["steps"].values()) == {"done"}

    store = tmp_path / "project" / ".ftpipe"
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())

    def deployed(step: str) -> dict:
        return json.loads((store / record["steps"][step]["artifact"] / "deploy.json").read_text())

    # local: merged full weights and a model card with the evaluation
    local = tmp_path / "project" / "outputs" / "e2e-hub"
    assert (local / "config.json").is_file() and not (local / "adapter_config.json").exists()
    card = (local / "README.md").read_text()
    assert "## Evaluation" in card and "token_f1" in card and "ftpipe run pipeline.yaml" in card

    # hf-hub: the adapter in a private repo, the commit recorded
    hub_doc = deployed("deploy.hf-hub")
    commits = hub.commits(MODEL_REPO)
    assert hub_doc["commit"] == commits[0]["oid"] and len(commits) == 2
    files = hub.files(MODEL_REPO)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= set(files)
    hub_card = files["README.md"].decode()
    assert "library_name: peft" in hub_card and "## Evaluation" in hub_card and MODEL_REPO in hub_card

    # hf-endpoint: serving exactly that commit, smoke-tested
    ep_doc = deployed("deploy.hf-endpoint")
    assert ep_doc["state"] == "running" and ep_doc["revision"] == hub_doc["commit"]
    assert ep_doc["revision_source"] == "hf-hub step"
    assert ep_doc["smoke_test"]["response"] == "lemon juice, flour, eggs"
    assert hub.inference_endpoint("e2e-ep")["model"]["revision"] == hub_doc["commit"]

    # nothing changed: every step is a cache hit, and no commit is made
    code, output, again = ftpipe("run", str(path), "--json")
    assert code == 0 and again["up_to_date"], output
    assert len(hub.commits(MODEL_REPO)) == 2
    # deploying the same model again (the deploy step re-executed) makes no commit either
    code, output, redo = ftpipe("run", str(path), "--json", "--from", "deploy.hf-hub")
    assert code == 0 and redo["steps"]["deploy.hf-hub"] == "done", output
    assert len(hub.commits(MODEL_REPO)) == 2

    # the token is nowhere: run store (records, logs, artifacts), outputs, the Hub's files, the CLI output
    token = hub.token.encode()
    leaked = [p for p in _all_files(tmp_path / "project") if token in p.read_bytes()]
    assert leaked == []
    assert all(token not in content for content in hub.files(MODEL_REPO).values())
    assert all(token not in json.dumps(c).encode() for c in hub.commits(MODEL_REPO))
    assert token.decode() not in output and token.decode() not in json.dumps(hub.inference_endpoint("e2e-ep"))
    logs = list((store / "runs").rglob("*.log"))
    assert logs and all(token not in p.read_bytes() for p in logs)


def test_base_model_and_dataset_by_hub_repo_id(hub, tmp_path):
    model_files = {p.relative_to(tiny_model_dir()).as_posix(): p for p in tiny_model_dir().rglob("*") if p.is_file()}
    hub.seed_repo("tester/tiny-base", model_files, private=True)
    hub.seed_repo("tester/recipes", {"data/train.jsonl": "\n".join(_rows()) + "\n"}, repo_type="dataset", private=True)
    path = hub_sources_pipeline(tmp_path / "project")
    code, output, summary = ftpipe("run", str(path), "--json")
    assert code == 0, output
    assert summary["steps"] == {"prepare": "done", "train": "done", "deploy.local": "done"}
    store = tmp_path / "project" / ".ftpipe"
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())
    stats = json.loads((store / record["steps"]["prepare"]["artifact"] / "stats.json").read_text())
    assert sum(s["rows"] for s in stats["splits"].values()) > 0
    paths = [path for method, path, _ in hub.requests if method == "GET"]
    assert any(p.startswith("/tester/tiny-base/resolve/") and "model.safetensors" in p for p in paths)
    assert any(p.startswith("/datasets/tester/recipes/resolve/") for p in paths)
    out = tmp_path / "project" / "outputs" / "model"
    assert (out / "config.json").is_file()
    marker = json.loads((out / "ftpipe.json").read_text())
    assert marker["base"] == "tester/tiny-base"
    card = (out / "README.md").read_text()
    assert "base_model: tester/tiny-base" in card and "- tester/recipes" in card
    token = hub.token.encode()
    assert [p for p in _all_files(tmp_path / "project") if token in p.read_bytes()] == []
