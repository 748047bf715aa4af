"""The azure-openai deploy target against the loopback double's Azure Resource Manager:
PUT → poll → Succeeded → one smoke completion, idempotent redeploys, and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftpipe.contracts import ModelRef, StepContext
from ftpipe.deploy.azure import AzureDeploy, deployment_url
from ftpipe.errors import RemoteError, StepError
from ftpipe.spec.models import AzureDeployTarget, AzureOpenAITrainer
from tests.fakes.openai_server import (
    OpenAIServer,
    arm_deployment_url,
    azure_client,
    openai_server_fixture,  # noqa: F401
)

BASE = "gpt-35-turbo-0125"
ROWS = [
    (f"How long do I cook {w}?", f"Cook the {w} for {i + 3} minutes.")
    for i, w in enumerate(["rice", "beans", "eggs", "leeks", "pasta", "tofu", "lamb", "kale", "fish", "corn", "plums"])
]


def fine_tune(server: OpenAIServer) -> str:
    client = azure_client(server)
    data = "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in ROWS
    ).encode()
    file_id = client.files.create(file=("t.jsonl", data, "application/jsonl"), purpose="fine-tune").id
    client.files.wait_for_processing(file_id, poll_interval=0.01)
    job = client.fine_tuning.jobs.create(model=BASE, training_file=file_id)
    return server.advance_job(job.id)["fine_tuned_model"]


def make_ctx(
    tmp_path: Path, server: OpenAIServer, model_id: str, *, provider: str = "azure-openai", **target
) -> tuple[StepContext, list[str]]:
    train = tmp_path / "train"
    train.mkdir(exist_ok=True)
    ModelRef(kind="hosted", base=BASE, provider=provider, model_id=model_id, job_id="ftjob-x").write(train)
    trainer = AzureOpenAITrainer.model_validate(
        {
            "backend": "azure-openai",
            "endpoint": server.url,
            "api_key": server.azure_api_key,
            "poll": {"interval": 0.01, "max_interval": 0.05},
        },
        context={"resolved": True},
    )
    cfg = AzureDeployTarget.model_validate(
        {
            "type": "azure-openai",
            "subscription_id": "sub-123",
            "resource_group": "rg-ftpipe",
            "account": "aoai-ftpipe",
            "deployment": "recipes-ft",
            "management_endpoint": server.url,
            "management_token": server.arm_token,
            **target,
        },
        context={"resolved": True},
    )
    pipeline = SimpleNamespace(
        name="t",
        trainer=trainer,
        model=SimpleNamespace(base=BASE),
        dataset=SimpleNamespace(system_prompt="You are a cooking assistant."),
    )
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    out.mkdir()
    (tmp_path / "state").mkdir(exist_ok=True)
    logs: list[str] = []
    ctx = StepContext(
        run_id="r1",
        step_id="deploy.azure-openai",
        pipeline=pipeline,
        pipeline_path=tmp_path / "p.yaml",
        out_dir=out,
        inputs={"train": train},
        state_dir=tmp_path / "state",
        cache_dir=tmp_path,
        log=logs.append,
        progress=lambda *a: None,
        cache_key="d" * 64,
        options={"target": cfg},
    )
    return ctx, logs


def arm_calls(server: OpenAIServer, method: str) -> list[tuple[str, dict, bytes]]:
    return [(p, h, b) for m, p, h, b in server.requests if m == method and p.startswith("/subscriptions/")]


def test_put_poll_succeeded_then_smoke_completion(tmp_path: Path, openai_server: OpenAIServer) -> None:
    model_id = fine_tune(openai_server)
    ctx, logs = make_ctx(tmp_path, openai_server, model_id)
    result = AzureDeploy().deploy(ctx)

    puts = arm_calls(openai_server, "PUT")
    assert len(puts) == 1
    path, headers, body = puts[0]
    assert openai_server.url + path == arm_deployment_url(openai_server, "recipes-ft")
    assert deployment_url(ctx.options["target"]) == arm_deployment_url(openai_server, "recipes-ft")
    assert headers["authorization"] == f"Bearer {openai_server.arm_token}"
    assert json.loads(body) == {
        "sku": {"name": "standard", "capacity": 1},
        "properties": {"model": {"format": "OpenAI", "name": model_id, "version": "1"}},
    }
    assert len(arm_calls(openai_server, "GET")) >= 2  # read, then polled through Accepted → Creating → Succeeded
    assert any("deployment recipes-ft: Creating" in line for line in logs)
    assert openai_server.deployments["recipes-ft"]["properties"]["provisioningState"] == "Succeeded"

    deploy = json.loads((ctx.out_dir / "deploy.json").read_text())
    assert deploy["target"] == "azure-openai" and deploy["provisioningState"] == "Succeeded"
    assert deploy["resource_id"].endswith("/accounts/aoai-ftpipe/deployments/recipes-ft")
    assert deploy["smoke_test"]["ok"] is True and deploy["smoke_test"]["reply"]
    chats = [p for m, p, _, _ in openai_server.requests if p.startswith("/openai/deployments/recipes-ft/chat")]
    assert len(chats) == 1 and "api-version=2024-10-21" in chats[0]
    assert result.metrics["smoke_test_ok"] is True and result.metrics["changed"] is True
    assert openai_server.arm_token not in (ctx.out_dir / "deploy.json").read_text()


def test_unchanged_redeploy_is_a_no_op_and_a_new_model_updates(tmp_path: Path, openai_server: OpenAIServer) -> None:
    model_id = fine_tune(openai_server)
    AzureDeploy().deploy(make_ctx(tmp_path, openai_server, model_id)[0])
    ctx, logs = make_ctx(tmp_path, openai_server, model_id)
    result = AzureDeploy().deploy(ctx)
    assert any("unchanged" in line for line in logs)
    assert len(arm_calls(openai_server, "PUT")) == 1
    assert result.metrics["changed"] is False and "unchanged" in result.summary
    assert json.loads((ctx.out_dir / "deploy.json").read_text())["changed"] is False

    newer = fine_tune(openai_server)
    ctx, _ = make_ctx(tmp_path, openai_server, newer)
    assert AzureDeploy().deploy(ctx).metrics["changed"] is True
    assert len(arm_calls(openai_server, "PUT")) == 2
    assert openai_server.deployments["recipes-ft"]["properties"]["model"]["name"] == newer


def test_failed_provisioning_is_an_error(tmp_path: Path, openai_server: OpenAIServer) -> None:
    ctx, _ = make_ctx(tmp_path, openai_server, "gpt-35-turbo-0125.ft-0000-not-in-this-account")
    with pytest.raises(RemoteError, match="ended Failed") as err:
        AzureDeploy().deploy(ctx)
    assert "quota" in (err.value.hint or "")
    assert not (ctx.out_dir / "deploy.json").exists()


def test_arm_server_errors_are_retried(tmp_path: Path, openai_server: OpenAIServer) -> None:
    model_id = fine_tune(openai_server)
    openai_server.inject("PUT", r"/deployments/recipes-ft$", 500)
    openai_server.inject("GET", r"/deployments/recipes-ft$", 429, times=2)
    openai_server.inject("GET", r"/deployments/recipes-ft$", "drop")
    ctx, _ = make_ctx(tmp_path, openai_server, model_id)
    AzureDeploy().deploy(ctx)
    assert json.loads((ctx.out_dir / "deploy.json").read_text())["provisioningState"] == "Succeeded"
    assert list(openai_server.deployments) == ["recipes-ft"]


def test_bad_management_token_names_the_fix(tmp_path: Path, openai_server: OpenAIServer) -> None:
    ctx, _ = make_ctx(tmp_path, openai_server, "m", management_token="expired-token-123456")
    with pytest.raises(RemoteError) as err:
        AzureDeploy().deploy(ctx)
    e = err.value
    assert e.status == 401 and e.code == "InvalidAuthenticationToken" and "AZURE_MANAGEMENT_TOKEN" in (e.hint or "")
    assert "expired-token-123456" not in str(e)
    assert re.match(r"Azure Resource Manager: reading deployment recipes-ft", str(e))


def test_token_from_azure_identity_when_none_is_given(
    tmp_path: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.identity
    from azure.core.credentials import AccessToken

    scopes: list[str] = []

    class FakeCredential:
        def get_token(self, *wanted, **kwargs):
            scopes.extend(wanted)
            return AccessToken(openai_server.arm_token, 4102444800)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    model_id = fine_tune(openai_server)
    ctx, _ = make_ctx(tmp_path, openai_server, model_id, management_token="", smoke_test=False)
    AzureDeploy().deploy(ctx)
    assert set(scopes) == {"https://management.azure.com/.default"}
    assert "smoke_test" not in json.loads((ctx.out_dir / "deploy.json").read_text())
    assert not [p for _, p, _, _ in openai_server.requests if "/chat/completions" in p]


def test_only_an_azure_fine_tune_is_deployed(tmp_path: Path, openai_server: OpenAIServer) -> None:
    ctx, _ = make_ctx(tmp_path, openai_server, "ft:gpt-4o-mini:x", provider="openai")
    with pytest.raises(StepError, match="Azure OpenAI fine-tune"):
        AzureDeploy().deploy(ctx)
    assert not arm_calls(openai_server, "PUT")
