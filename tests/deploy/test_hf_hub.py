"""The hf-hub deploy target against the loopback Hub, with the real huggingface_hub client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.errors import RemoteError
from tests.deploy.test_local_deploy import (
    TOKEN,
    front_matter,
    make_ctx,
    make_train_artifact,
    pipeline_doc,
)
from tests.fakes.hub_server import hub_fixture  # noqa: F401 - the `hub` fixture

REPO = "tester/recipes-model"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-artifacts")
    return {
        "full": make_train_artifact(root / "full", adapter=False),
        "adapter": make_train_artifact(root / "adapter", adapter=True),
    }


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.deploy import hf_hub

    monkeypatch.setattr(hf_hub, "RETRY_DELAY_S", 0.0)


def _deploy(
    tmp_path: Path, train: Path, *, step: str = "deploy.hf-hub", token: str = TOKEN, logs: list | None = None, **target
):
    from ftpipe.deploy.hf_hub import HubDeploy

    doc = pipeline_doc([{"type": "hf-hub", "repo": REPO, "token": token, **target}])
    ctx = make_ctx(tmp_path, doc, inputs={"train": train}, step_id=step, logs=logs)
    result = HubDeploy().deploy(ctx)
    return json.loads((ctx.out_dir / "deploy.json").read_text()), result


def _repo_files(hub, repo: str = REPO) -> dict[str, bytes]:
    return {k: v for k, v in hub.files(repo).items() if k != ".gitattributes"}


def test_push_private_repo_records_the_commit_and_reupload_makes_none(hub, tmp_path, artifacts):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    doc, result = _deploy(tmp_path, artifacts["full"])
    commits = hub.commits(REPO)
    assert len(commits) == 2  # the Hub's initial .gitattributes commit, then ours
    assert doc["commit"] == commits[0]["oid"] and doc["repo"] == REPO and doc["url"] == f"{hub.url}/{REPO}"
    assert REPO in result.summary and "private" in result.summary
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(REPO)  # private: invisible without the token
    files = _repo_files(hub)
    assert sorted(files) == doc["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "ftpipe.json"} <= set(files)
    assert "training_args.bin" not in files
    assert front_matter(files["README.md"].decode())["tags"][:2] == ["ftpipe", "fine-tuned"]
    assert all(TOKEN.encode() not in content for content in files.values())

    again, _ = _deploy(tmp_path, artifacts["full"], step="deploy.again")
    assert again["commit"] == doc["commit"] and len(hub.commits(REPO)) == 2


def test_a_changed_model_replaces_the_old_files_in_one_commit(hub, tmp_path, artifacts):
    _deploy(tmp_path, artifacts["full"])
    doc, _ = _deploy(tmp_path, artifacts["adapter"], step="deploy.adapter")
    assert len(hub.commits(REPO)) == 3 and doc["commit"] == hub.commits(REPO)[0]["oid"]
    files = _repo_files(hub)
    assert "model.safetensors" not in files and "adapter_model.safetensors" in files
    assert sorted(files) == doc["files"]
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "builtin:tiny"


def test_faults_during_the_push_lose_and_duplicate_nothing(hub, tmp_path, artifacts):
    # A rate limit on preupload (the client waits and retries), a failed LFS batch, and a
    # connection dropped before the commit is stored (retried by the target).
    hub.inject("POST", r"/preupload/", 429)
    hub.inject("POST", r"/info/lfs/objects/batch$", 500)
    hub.inject("POST", r"/commit/main$", "drop")
    logs: list[str] = []
    doc, _ = _deploy(tmp_path, artifacts["full"], logs=logs)
    assert sum("retrying" in line for line in logs) == 1
    assert sorted((f for _, _, f in hub.faults_fired), key=str) == sorted([429, 500, "drop"], key=str)
    assert len(hub.commits(REPO)) == 2 and doc["commit"] == hub.commits(REPO)[0]["oid"]
    assert sorted(_repo_files(hub)) == doc["files"]

    # The commit is stored but its answer is a 500: the retry finds every file there and
    # makes no second commit.
    hub.inject("POST", r"/commit/main$", 500, after_handling=True)
    logs.clear()
    doc2, _ = _deploy(tmp_path, artifacts["adapter"], step="deploy.adapter", logs=logs)
    assert sum("retrying" in line for line in logs) == 1
    commits = hub.commits(REPO)
    assert len(commits) == 3 and doc2["commit"] == commits[0]["oid"]
    files = _repo_files(hub)
    assert sorted(files) == doc2["files"]
    local = tmp_path / "check"
    from ftpipe.deploy.local import LocalDeploy

    ctx = make_ctx(
        tmp_path,
        pipeline_doc([{"type": "local", "path": str(local)}]),
        inputs={"train": artifacts["adapter"]},
        step_id="deploy.local",
    )
    LocalDeploy().deploy(ctx)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert files[name] == (local / name).read_bytes()


def test_merge_and_revision(hub, tmp_path, artifacts):
    doc, _ = _deploy(tmp_path, artifacts["adapter"], merge=True, revision="merged")
    assert doc["merged"] is True and doc["revision"] == "merged"
    files = hub.files(REPO, revision="merged")
    assert "adapter_config.json" not in files and "config.json" in files
    assert len(hub.commits(REPO)) == 1  # main keeps only the initial commit


@pytest.mark.parametrize(
    ("setup", "token", "repo", "status", "words"),
    [
        (None, "hf_wrong_token", REPO, 401, "HF_TOKEN"),
        (None, TOKEN, "someone-else/model", 403, "may not"),
        (("POST", r"/api/repos/create", 429, 3), TOKEN, REPO, 429, "rate limiting"),
        (("POST", r"/api/repos/create", 503, 3), TOKEN, REPO, 503, "server error"),
        (("POST", r"/commit/main$", 409, 1), TOKEN, REPO, 409, "concurrent commit"),
        (("POST", r"/api/repos/create", "drop", 3), TOKEN, REPO, None, "could not reach"),
    ],
)
def test_hub_errors_become_clear_messages(hub, tmp_path, artifacts, setup, token, repo, status, words):
    from ftpipe.deploy.hf_hub import HubDeploy

    if setup:
        method, path, fault, times = setup
        hub.inject(method, path, fault, times=times)
    doc = pipeline_doc([{"type": "hf-hub", "repo": repo, "token": token}])
    ctx = make_ctx(tmp_path, doc, inputs={"train": artifacts["full"]})
    with pytest.raises(RemoteError) as info:
        HubDeploy().deploy(ctx)
    err = info.value
    assert err.status == status and words in str(err)
    assert str(err).startswith("Hugging Face Hub: ") and repo in str(err)
    assert token not in str(err)


def test_missing_and_gated_repos_are_named(hub):
    from huggingface_hub import HfApi, hf_hub_download

    from ftpipe.remote.hf import hub_errors

    with pytest.raises(RemoteError) as info, hub_errors("model tester/nope"):
        HfApi().model_info("tester/nope")
    assert info.value.code == "RepoNotFound" and "repository not found" in str(info.value)
    assert "private repo" in str(info.value)
    hub.seed_repo("other-org/gated", {"a.txt": b"a"}, gated="auto")
    with pytest.raises(RemoteError) as info, hub_errors("model other-org/gated"):
        hf_hub_download("other-org/gated", "a.txt")
    assert info.value.code == "GatedRepo" and "gated" in str(info.value) and "access granted" in str(info.value)
