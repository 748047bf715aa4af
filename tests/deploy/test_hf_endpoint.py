"""The hf-endpoint deploy target against the loopback Inference Endpoints API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.errors import RemoteError, StepError
from tests.deploy.test_local_deploy import TOKEN, make_ctx, pipeline_doc
from tests.fakes.hub_server import hub_fixture  # noqa: F401 - the `hub` fixture

REPO = "tester/recipes-model"
RUN_ID = "20240101-000001-beef"


def _train(tmp_path: Path) -> Path:
    # The endpoint target reads nothing from the train artifact; it only has to exist.
    folder = tmp_path / "train"
    folder.mkdir(exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"kind": "local", "base": "builtin:tiny", "path": "model"}))
    return folder


def _deploy(tmp_path: Path, step: str = "deploy.hf-endpoint", **target):
    from ftpipe.deploy.hf_endpoint import EndpointDeploy

    spec = {"type": "hf-endpoint", "repo": REPO, "endpoint": "recipes-ep", "token": TOKEN, **target}
    ctx = make_ctx(tmp_path, pipeline_doc([spec]), inputs={"train": _train(tmp_path)}, step_id=step, run_id=RUN_ID)
    result = EndpointDeploy().deploy(ctx)
    return json.loads((ctx.out_dir / "deploy.json").read_text()), result


def _record_hub_step(tmp_path: Path, commit: str) -> None:
    """This run's record, holding an hf-hub deploy step that pushed ``commit``."""
    store = tmp_path / "store"
    art = store / "cache" / "hubkey"
    art.mkdir(parents=True)
    (art / "deploy.json").write_text(json.dumps({"target": "hf-hub", "repo": REPO, "commit": commit}))
    run = store / "runs" / RUN_ID
    run.mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps(
            {
                "run_id": RUN_ID,
                "steps": {"deploy.hf-hub": {"kind": "deploy", "status": "done", "artifact": "cache/hubkey"}},
            }
        )
    )


def test_create_wait_running_and_smoke_test(hub, tmp_path):
    head = hub.seed_repo(REPO, {"config.json": b"{}"}, private=True)
    prompts = []
    hub.inference_responder = lambda name, prompt: prompts.append(prompt) or "Tomatoes, onion and stock."
    doc, result = _deploy(tmp_path, instance_size="x4", max_replica=2)
    assert doc["state"] == "running" and doc["action"] == "created"
    assert doc["url"].startswith(hub.url) and doc["revision"] == head and doc["revision_source"] == "repo head"
    assert doc["smoke_test"]["ok"] and doc["smoke_test"]["response"] == "Tomatoes, onion and stock."
    assert prompts[0][0] == {"role": "system", "content": "You are a recipe assistant."}
    raw = hub.inference_endpoint("recipes-ep")
    assert raw["model"]["repository"] == REPO and raw["model"]["revision"] == head
    assert raw["compute"]["instanceSize"] == "x4" and raw["compute"]["scaling"]["maxReplica"] == 2
    assert raw["type"] == "authenticated"
    assert "recipes-ep" in result.summary


def test_uses_the_commit_the_hub_step_pushed_then_updates_only_on_change(hub, tmp_path):
    pushed = hub.seed_repo(REPO, {"config.json": b"{}"})
    hub.seed_repo(REPO, {"later.txt": b"a commit the pipeline did not push"})
    _record_hub_step(tmp_path, pushed)
    doc, _ = _deploy(tmp_path)
    assert doc["revision"] == pushed and doc["revision_source"] == "hf-hub step"
    assert hub.inference_endpoint("recipes-ep")["model"]["revision"] == pushed

    again, _ = _deploy(tmp_path, step="deploy.again")
    assert again["action"] == "unchanged" and again["state"] == "running"

    newer = hub.seed_repo(REPO, {"config.json": b'{"v": 2}'})
    (tmp_path / "store" / "cache" / "hubkey" / "deploy.json").write_text(
        json.dumps({"target": "hf-hub", "repo": REPO, "commit": newer})
    )
    updated, _ = _deploy(tmp_path, step="deploy.update")
    assert updated["action"] == "updated" and updated["revision"] == newer and updated["state"] == "running"
    assert hub.inference_endpoint("recipes-ep")["model"]["revision"] == newer


def test_a_paused_endpoint_is_resumed(hub, tmp_path):
    from huggingface_hub import HfApi

    hub.seed_repo(REPO, {"config.json": b"{}"})
    _deploy(tmp_path)
    HfApi().pause_inference_endpoint("recipes-ep")
    doc, _ = _deploy(tmp_path, step="deploy.resume")
    assert doc["action"] == "resumed" and doc["state"] == "running"


def test_a_failed_endpoint_fails_the_step(hub, tmp_path):
    hub.seed_repo(REPO, {"config.json": b"{}"})
    hub.endpoint_final_state = "failed"
    with pytest.raises(RemoteError) as info:
        _deploy(tmp_path)
    assert "recipes-ep is failed" in str(info.value) and "logs" in str(info.value)


def test_an_endpoint_that_never_starts_times_out(hub, tmp_path):
    hub.seed_repo(REPO, {"config.json": b"{}"})
    hub.endpoint_steps = ("pending",) + ("initializing",) * 200 + ("running",)
    with pytest.raises(StepError, match="not running after 1s"):
        _deploy(tmp_path, timeout_s=1)


def test_a_missing_model_repo_is_named(hub, tmp_path):
    with pytest.raises(RemoteError) as info:
        _deploy(tmp_path)
    assert info.value.status == 404 and REPO in str(info.value) and "repository not found" in str(info.value)


def test_a_failing_smoke_test_fails_the_step(hub, tmp_path):
    hub.seed_repo(REPO, {"config.json": b"{}"})

    def broken(name, prompt):
        raise RuntimeError("model crashed")

    hub.inference_responder = broken
    with pytest.raises(StepError, match="smoke test failed"):
        _deploy(tmp_path)
    hub.errors.clear()  # the fake reports the responder's exception as its own error
