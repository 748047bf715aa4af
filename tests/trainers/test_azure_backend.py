"""The azure-openai trainer backend (and its deploy target, end to end) against the
loopback double: Azure's 201 answers, pending files, its job states, no metadata on GA
api-versions, Entra ID auth, and the tutorial pipeline."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from ftpipe.contracts import ModelRef
from ftpipe.engine import RunOutcome, execute
from ftpipe.errors import MissingDependency
from ftpipe.progress import Reporter
from tests.fakes.hosted_data import QA
from tests.fakes.openai_server import (
    OpenAIServer,
    openai_server_fixture,  # noqa: F401
)

REPO = Path(__file__).resolve().parents[2]
BASE = "gpt-35-turbo-0613"


def write_pipeline(folder: Path, server: OpenAIServer, *, deploy: bool = True, auth: str = "api-key") -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    deploy_block = (
        f"""\
deploy:
  - type: azure-openai
    subscription_id: sub-123
    resource_group: rg-ftpipe
    account: aoai-ftpipe
    deployment: recipes-ft
    management_endpoint: {server.url}
    management_token: ${{env:AZURE_MANAGEMENT_TOKEN}}
"""
        if deploy
        else ""
    )
    auth_block = "  auth: entra\n  api_key: null\n" if auth == "entra" else "  api_key: ${env:AZURE_OPENAI_API_KEY}\n"
    text = f"""\
version: 1
name: azure-test
dataset:
  source: {{type: local, path: data.jsonl}}
  format: chat
  system_prompt: You are a cooking assistant.
  split: {{validation: 0.1, test: 0.1, seed: 1}}
model:
  base: {BASE}
trainer:
  backend: azure-openai
  endpoint: {server.url}
  api_version: "2024-10-21"
{auth_block}  hyperparameters: {{n_epochs: 2}}
  suffix: recipes
  seed: 105
  poll: {{interval: 0.01, max_interval: 0.05, timeout_minutes: 2}}
{deploy_block}"""
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIServer) -> OpenAIServer:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", openai_server.azure_api_key)
    monkeypatch.setenv("AZURE_MANAGEMENT_TOKEN", openai_server.arm_token)
    return openai_server


def run(path: Path, **kw) -> RunOutcome:
    return execute(path, reporter=Reporter(quiet=True), **kw)


def artifact(path: Path, outcome: RunOutcome, step: str) -> Path:
    return path.parent / ".ftpipe" / outcome.record["steps"][step]["artifact"]


def log_of(path: Path, outcome: RunOutcome, step: str = "train") -> str:
    return (path.parent / ".ftpipe" / outcome.record["steps"][step]["log"]).read_text()


def only_job(server: OpenAIServer) -> dict:
    assert len(server.jobs) == 1, f"expected exactly one job, got {list(server.jobs)}"
    return next(iter(server.jobs.values()))


def requests(server: OpenAIServer, method: str, pattern: str) -> list[str]:
    return [unquote(p) for m, p, _, _ in server.requests if m == method and re.search(pattern, p.split("?")[0])]


def test_fine_tune_then_deploy_and_smoke_test(tmp_path: Path, env: OpenAIServer) -> None:
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    steps = outcome.record["steps"]
    assert outcome.exit_code == 0, {k: (v["status"], v.get("error")) for k, v in steps.items()}
    job = only_job(env)
    assert job["status"] == "succeeded" and job["suffix"] == "recipes" and job["seed"] == 105
    assert "metadata" not in job and "method" not in job  # GA api-version: neither is sent
    assert job["hyperparameters"]["n_epochs"] == 2
    ref = ModelRef.read(artifact(path, outcome, "train"))
    assert (ref.kind, ref.provider, ref.base) == ("hosted", "azure-openai", BASE)
    assert ref.model_id == job["fine_tuned_model"] and ref.model_id.startswith(f"{BASE}.ft-")
    # every data-plane call carried the api-version; pending files were waited on
    data_plane = [p for _, p, _, _ in env.requests if p.startswith("/openai/")]
    assert data_plane and all("api-version=2024-10-21" in p for p in data_plane)
    assert requests(env, "GET", rf"/openai/files/{job['training_file']}$")
    assert all(env.files[f]["status"] == "processed" for f in (job["training_file"], job["validation_file"]))
    assert "[azure-openai info] Fine-tuning job started" in log_of(path, outcome)

    deploy = json.loads((artifact(path, outcome, "deploy.azure-openai") / "deploy.json").read_text())
    assert deploy["provisioningState"] == "Succeeded" and deploy["model"] == ref.model_id
    assert deploy["deployment"] == "recipes-ft" and deploy["changed"] is True
    assert deploy["url"] == f"{env.url}/openai/deployments/recipes-ft/chat/completions?api-version=2024-10-21"
    assert deploy["smoke_test"]["ok"] is True and deploy["smoke_test"]["reply"]
    dep = env.deployments["recipes-ft"]
    assert dep["properties"]["model"] == {"format": "OpenAI", "name": ref.model_id, "version": "1"}
    assert dep["sku"] == {"name": "standard", "capacity": 1}
    assert requests(env, "POST", r"/openai/deployments/recipes-ft/chat/completions$")

    # --force: the finished job is re-attached (no second job) and the deployment is left alone
    again = run(path, force=True)
    assert again.exit_code == 0
    assert len(env.jobs) == 1
    assert len(requests(env, "PUT", r"/deployments/recipes-ft$")) == 1
    deploy2 = json.loads((artifact(path, again, "deploy.azure-openai") / "deploy.json").read_text())
    assert deploy2["changed"] is False and "unchanged" in again.record["steps"]["deploy.azure-openai"]["summary"]


@pytest.mark.parametrize("fault", [500, "drop"])
def test_create_that_failed_after_the_job_was_stored_makes_no_duplicate(
    tmp_path: Path, env: OpenAIServer, fault
) -> None:
    env.inject("POST", r"/openai/fine_tuning/jobs$", fault, after_handling=True)
    path = write_pipeline(tmp_path, env, deploy=False)
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    job = only_job(env)
    assert ModelRef.read(artifact(path, outcome, "train")).model_id == job["fine_tuned_model"]
    assert "had stored it: re-attached" in log_of(path, outcome)


def test_rate_limits_and_dropped_polls(tmp_path: Path, env: OpenAIServer) -> None:
    env.inject("POST", r"/openai/files$", 429)
    env.inject("POST", r"/openai/fine_tuning/jobs$", 429, times=2)
    env.inject("GET", r"/openai/fine_tuning/jobs/[^/]+$", "drop", times=4)
    path = write_pipeline(tmp_path, env, deploy=False)
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    assert ModelRef.read(artifact(path, outcome, "train")).model_id == only_job(env)["fine_tuned_model"]


def test_failed_job_reports_azure_code_and_message(tmp_path: Path, env: OpenAIServer) -> None:
    env.set_job_outcome("failed", code="internalFailure", message="The training run hit an internal failure.")
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 1
    error = outcome.record["steps"]["train"]["error"]
    assert "Azure OpenAI" in error and "internalFailure" in error and "internal failure" in error
    assert outcome.record["steps"]["deploy.azure-openai"]["status"] == "not-run"


def test_wrong_key_is_a_clear_error(tmp_path: Path, env: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "not-the-key-0123456789")
    path = write_pipeline(tmp_path, env, deploy=False)
    from ftpipe.preflight import PreflightFailed

    with pytest.raises(PreflightFailed) as refused:  # found before anything is uploaded (exit 2)
        run(path)
    assert "status 401" in str(refused.value) and "AZURE_OPENAI_API_KEY" in str(refused.value)
    assert env.files == {} and "not-the-key-0123456789" not in str(refused.value)
    outcome = run(path, preflight=False)  # the train step says the same when the checks are skipped
    error = outcome.record["steps"]["train"]["error"]
    assert outcome.exit_code == 1 and "status 401" in error and "AZURE_OPENAI_API_KEY" in error
    assert re.search(r"request req_[0-9a-f]+", error)


def test_entra_auth_uses_azure_identity(tmp_path: Path, env: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.identity
    from azure.core.credentials import AccessToken

    scopes = []

    class FakeCredential:
        def get_token(self, *wanted, **kwargs):
            scopes.extend(wanted)
            return AccessToken(env.azure_ad_token, 4102444800)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", FakeCredential)
    path = write_pipeline(tmp_path, env, deploy=False, auth="entra")
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    assert scopes and set(scopes) == {"https://cognitiveservices.azure.com/.default"}
    assert all(
        h.get("authorization") == f"Bearer {env.azure_ad_token}"
        for _, p, h, _ in env.requests
        if p.startswith("/openai/")
    )


def test_entra_without_azure_identity_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.spec.models import AzureOpenAITrainer
    from ftpipe.trainers.azure_backend import make_client

    monkeypatch.setitem(sys.modules, "azure.identity", None)
    trainer = AzureOpenAITrainer.model_validate(
        {"backend": "azure-openai", "endpoint": "http://127.0.0.1:9", "auth": "entra", "api_key": None},
        context={"resolved": True},
    )
    with pytest.raises(MissingDependency) as err:
        make_client(trainer)
    assert "azure-identity" in str(err.value) and 'pip install "ftpipe[azure]"' in str(err.value)


def test_secrets_never_reach_the_run_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, token = "azure-secret-key-5e1f0a9b3c7d", "arm-secret-token-9d2c4e6f8a0b"
    with OpenAIServer(azure_api_key=key, arm_token=token) as server:
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", key)
        monkeypatch.setenv("AZURE_MANAGEMENT_TOKEN", token)
        path = write_pipeline(tmp_path, server)
        assert run(path).exit_code == 0
    files = [p for p in (tmp_path / ".ftpipe").rglob("*") if p.is_file()]
    assert any(p.name == "deploy.json" for p in files)
    for f in files:
        data = f.read_bytes()
        assert key.encode() not in data and token.encode() not in data, f


@pytest.mark.integration
def test_azure_tutorial_example_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipelines/azure-gpt35-tutorial.yaml pointed at the double, as committed: the account
    has a deployment of the base model under the name the example gives in
    trainer.base_deployment (how the base and few_shot variants are called). The fine-tune is
    scored through a temporary deployment that evaluate creates and removes."""
    (tmp_path / "pipelines").mkdir()
    shutil.copytree(REPO / "pipelines" / "data", tmp_path / "pipelines" / "data")
    path = tmp_path / "pipelines" / "azure-gpt35-tutorial.yaml"
    shutil.copy(REPO / "pipelines" / "azure-gpt35-tutorial.yaml", path)  # as committed

    with OpenAIServer(steps_per_state=0) as server:
        for var, value in (
            ("AZURE_OPENAI_ENDPOINT", server.url),
            ("AZURE_OPENAI_API_KEY", server.azure_api_key),
            ("AZURE_MANAGEMENT_TOKEN", server.arm_token),
            ("AZURE_MANAGEMENT_ENDPOINT", server.url),
        ):
            monkeypatch.setenv(var, value)
        server.add_deployment("gpt-35-turbo-base", BASE)

        outcome = execute(path, store=tmp_path / "store", reporter=Reporter(quiet=True))
        steps = outcome.record["steps"]
        # the tutorial's gate is "beat the base model": the double's fine-tune does, so it deploys
        assert outcome.exit_code == 0, {k: (v["status"], v.get("error")) for k, v in steps.items()}
        job = only_job(server)
        ref = ModelRef.read(tmp_path / "store" / steps["train"]["artifact"])
        assert ref.model_id == job["fine_tuned_model"] and job["suffix"] == "recipes"
        assert steps["evaluate"]["status"] == "done"
        puts = [p for m, p, _, _ in server.requests if m == "PUT" and "/deployments/" in p]
        deletes = [p for m, p, _, _ in server.requests if m == "DELETE" and "/deployments/" in p]
        assert any("gpt-35-turbo-recipes-eval" in p for p in puts)
        assert any("gpt-35-turbo-recipes-eval" in p for p in deletes)
        assert "gpt-35-turbo-recipes-eval" not in server.deployments
        if outcome.exit_code == 0:
            deploy = json.loads(
                (tmp_path / "store" / steps["deploy.azure-openai"]["artifact"] / "deploy.json").read_text()
            )
            assert deploy["provisioningState"] == "Succeeded" and deploy["smoke_test"]["ok"]
            assert server.deployments["gpt-35-turbo-recipes"]["properties"]["model"]["name"] == ref.model_id
        else:
            assert steps["deploy.azure-openai"]["status"] == "skipped"
