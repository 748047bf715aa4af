"""The generated GitHub workflow runs unattended with the repository's secrets: it keeps
least-privilege permissions, is never triggered by pull_request_target, keeps the job token
out of .git/config, and gives secrets only to the step that runs the pipeline (not to pip,
whose build code is third-party, nor to the cache and upload actions)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ftpipe.engine import load_checked
from ftpipe.schedule import github_workflow

REPO = Path(__file__).resolve().parents[1]


def _scheduled_pipeline(tmp_path: Path) -> Path:
    folder = tmp_path / "pipelines"
    (folder / "data").mkdir(parents=True)
    for name in ("recipes.jsonl", "pantry-notes.md"):  # the data and the rag baseline's corpus
        (folder / "data" / name).write_bytes((REPO / "pipelines" / "data" / name).read_bytes())
    text = (REPO / "pipelines" / "quickstart.yaml").read_text()
    text = text.replace("  base: builtin:tiny\n", '  base: builtin:tiny\n  token: "${env:HUB_READ_TOKEN}"\n')
    text += '  - {type: hf-hub, repo: me/recipes, token: "${env:HF_TOKEN}"}\nschedule: {cron: "17 3 * * 1"}\n'
    path = folder / "recipes.yaml"
    path.write_text(text)
    return path


def _workflow(tmp_path: Path) -> tuple[str, dict]:
    path = _scheduled_pipeline(tmp_path)
    wf = github_workflow(path, load_checked(path), root=tmp_path)
    assert {"HUB_READ_TOKEN", "HF_TOKEN"} <= set(wf.secrets)
    return wf.text, yaml.safe_load(wf.text)


def test_triggers_are_schedule_and_manual_only(tmp_path: Path) -> None:
    text, doc = _workflow(tmp_path)
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(on) == {"schedule", "workflow_dispatch"}
    assert "pull_request_target" not in text and "pull_request" not in text


def test_permissions_are_read_only_and_the_token_is_not_persisted(tmp_path: Path) -> None:
    _, doc = _workflow(tmp_path)
    assert doc["permissions"] == {"contents": "read"}
    job = doc["jobs"]["run"]
    assert "permissions" not in job or set(job["permissions"].values()) <= {"read", "none"}
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False


def test_secrets_reach_only_the_step_that_runs_the_pipeline(tmp_path: Path) -> None:
    _, doc = _workflow(tmp_path)
    job = doc["jobs"]["run"]
    assert not any("secrets." in str(v) for v in job.get("env", {}).values())
    holders = [s.get("name") or s.get("uses") for s in job["steps"] if "secrets." in yaml.safe_dump(s)]
    assert holders == ["Run the pipeline"]
    run = next(s for s in job["steps"] if s.get("id") == "run")
    assert run["env"]["HUB_READ_TOKEN"] == "${{ secrets.HUB_READ_TOKEN }}"
    assert run["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    # and nowhere is a secret expanded into a shell script (it would be in the process list and the log)
    for step in job["steps"]:
        assert not re.search(r"\$\{\{\s*secrets\.", step.get("run", "")), step
