"""The hf-space deploy target: a Gradio chat demo Space on the loopback Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.errors import RemoteError
from tests.deploy.test_local_deploy import TOKEN, front_matter, make_ctx, pipeline_doc
from tests.fakes.hub_server import hub_fixture  # noqa: F401 - the `hub` fixture

SPACE = "tester/recipes-demo"
MODEL = "tester/recipes-model"


def _deploy(tmp_path: Path, step: str = "deploy.hf-space", **target):
    from ftpipe.deploy.hf_space import SpaceDeploy

    spec = {"type": "hf-space", "repo": SPACE, "model_repo": MODEL, "token": TOKEN, **target}
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    ctx = make_ctx(tmp_path, pipeline_doc([spec]), inputs={"train": train}, step_id=step)
    result = SpaceDeploy().deploy(ctx)
    return json.loads((ctx.out_dir / "deploy.json").read_text()), result


def test_space_files_hardware_and_token_as_secret_for_a_private_model(hub, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    hub.seed_repo(MODEL, {"config.json": b"{}"}, private=True)
    doc, result = _deploy(tmp_path, hardware="t4-small")
    files = {k: v.decode() for k, v in hub.files(SPACE, repo_type="space").items()}
    assert {"README.md", "app.py", "requirements.txt"} <= set(files)
    meta = front_matter(files["README.md"])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["models"] == [MODEL]
    assert "ftpipe" in meta["tags"]
    compile(files["app.py"], "app.py", "exec")
    assert repr(MODEL) in files["app.py"] and 'os.environ.get("HF_TOKEN")' in files["app.py"]
    assert "You are a recipe assistant." in files["app.py"]
    assert "transformers" in files["requirements.txt"] and "peft" in files["requirements.txt"]
    assert all(TOKEN not in text for text in files.values())
    # the token reaches the Space only as a secret (never a variable, never a file)
    assert hub.space_secrets(SPACE) == {"HF_TOKEN": TOKEN} and hub.space_variables(SPACE) == {}
    assert hub.space_runtime(SPACE)["hardware"]["requested"] == "t4-small"
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).space_info(SPACE)  # private by default
    assert doc["space"] == SPACE and doc["url"] == f"{hub.url}/spaces/{SPACE}" and doc["token_secret"] is True
    assert doc["commit"] == hub.commits(SPACE, repo_type="space")[0]["oid"]
    assert TOKEN not in json.dumps(doc) and SPACE in result.summary

    commits = len(hub.commits(SPACE, repo_type="space"))
    again, _ = _deploy(tmp_path, step="deploy.again", hardware="t4-small")
    assert again["commit"] == doc["commit"] and len(hub.commits(SPACE, repo_type="space")) == commits


def test_public_model_gets_no_secret_and_hardware_changes_are_requested(hub, tmp_path):
    hub.seed_repo(MODEL, {"config.json": b"{}"})
    doc, _ = _deploy(tmp_path, private=False)
    assert hub.space_secrets(SPACE) == {} and doc["token_secret"] is False and doc["private"] is False
    assert hub.space_runtime(SPACE)["hardware"]["requested"] == "cpu-basic"
    _deploy(tmp_path, step="deploy.bigger", private=False, hardware="cpu-upgrade")
    assert hub.space_runtime(SPACE)["hardware"]["requested"] == "cpu-upgrade"


def test_the_space_builds_and_runs_its_app(hub, tmp_path):
    import time

    from huggingface_hub import HfApi

    hub.seed_repo(MODEL, {"config.json": b"{}"})
    doc, _ = _deploy(tmp_path)
    assert doc["stage"] in ("BUILDING", "RUNNING")
    deadline = time.monotonic() + 120  # only catches a hang: a busy machine builds slowly
    while HfApi().get_space_runtime(SPACE).stage != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.02)
    runtime = HfApi().get_space_runtime(SPACE)
    assert runtime.stage == "RUNNING" and runtime.hardware == "cpu-basic"


def test_a_missing_model_repo_is_named(hub, tmp_path):
    with pytest.raises(RemoteError) as info:
        _deploy(tmp_path)
    assert MODEL in str(info.value) and "repository not found" in str(info.value)
    assert not hub.repo_exists(SPACE, repo_type="space")
