"""DPO on Azure OpenAI and tool-calling data on OpenAI, end to end against the loopback
double (which checks the uploaded data as the services do), and the validation rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.engine import RunOutcome, execute
from ftpipe.progress import Reporter
from tests.fakes.hosted_data import FOODS
from tests.fakes.openai_server import (
    OpenAIServer,
    openai_server_fixture,  # noqa: F401
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIServer) -> OpenAIServer:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", openai_server.azure_api_key)
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    return openai_server


def _run(path: Path) -> RunOutcome:
    return execute(path, reporter=Reporter(quiet=True))


def _azure_dpo(
    folder: Path, server: OpenAIServer, *, base: str = "gpt-4o-mini-2024-07-18", api_version: str = "2025-02-01-preview"
) -> Path:
    rows = [
        {
            "prompt": f"How long do I cook the {w}?",
            "chosen": f"Cook the {w} for {i + 3} minutes.",
            "rejected": "No idea.",
        }
        for i, w in enumerate(FOODS)
    ]
    (folder / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "pipeline.yaml"
    path.write_text(f"""\
version: 1
name: azure-dpo
dataset:
  source: {{type: local, path: prefs.jsonl}}
  format: preference
  split: {{validation: 0.1, test: 0.1, seed: 1}}
model:
  base: {base}
trainer:
  backend: azure-openai
  method: dpo
  endpoint: {server.url}
  api_version: "{api_version}"
  api_key: ${{env:AZURE_OPENAI_API_KEY}}
  hyperparameters: {{n_epochs: 2, beta: 0.2}}
  suffix: prefs
  poll: {{interval: 0.01, max_interval: 0.05, timeout_minutes: 2}}
""")
    return path


def test_azure_dpo_job_on_a_preview_api_version(tmp_path: Path, env: OpenAIServer) -> None:
    path = _azure_dpo(tmp_path, env)
    outcome = _run(path)
    steps = outcome.record["steps"]
    assert outcome.exit_code == 0, {k: (v["status"], v.get("error")) for k, v in steps.items()}
    assert len(env.jobs) == 1
    job = next(iter(env.jobs.values()))
    # The double checked the uploaded file as DPO data when the job left "created".
    assert job["status"] == "succeeded" and job["method"]["type"] == "dpo"
    assert job["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    assert job["method"]["dpo"]["hyperparameters"]["n_epochs"] == 2
    assert "hyperparameters" not in json.loads(
        next(b for m, p, _, b in env.requests if m == "POST" and "/fine_tuning/jobs" in p)
    )
    lines = [json.loads(x) for x in env.file_content(job["training_file"]).decode().splitlines()]
    assert set(lines[0]) == {"input", "preferred_output", "non_preferred_output"}
    assert all(
        p.split("?")[1].startswith("api-version=2025-02-01-preview")
        for _, p, _, _ in env.requests
        if p.startswith("/openai/")
    )
    assert job["fine_tuned_model"].startswith("gpt-4o-mini-2024-07-18.ft-")


def test_azure_dpo_data_the_service_rejects_fails_the_job_with_its_message(tmp_path: Path, env: OpenAIServer) -> None:
    # Too few pairs for the service (it needs 10): our pre-upload check says so before any upload.
    path = _azure_dpo(tmp_path, env)
    rows = [json.loads(x) for x in (tmp_path / "prefs.jsonl").read_text().splitlines()][:9]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.write_text(
        path.read_text().replace(
            "split: {validation: 0.1, test: 0.1, seed: 1}", "split: {validation: 0, test: 0}\n  min_examples: 5"
        )
    )
    outcome = _run(path)
    assert outcome.exit_code == 1
    assert "Azure OpenAI would reject this training data" in outcome.record["steps"]["train"]["error"]
    assert "at least 10" in outcome.record["steps"]["train"]["error"] and not env.files


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftpipe", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_azure_dpo_needs_a_preview_api_version_and_a_dpo_model(tmp_path: Path) -> None:
    server = OpenAIServer()  # not started: validation touches no network
    server.url = "http://127.0.0.1:9"
    path = _azure_dpo(tmp_path, server, base="gpt-35-turbo-0613", api_version="2024-10-21")
    out = _validate(path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "trainer.api_version: Azure OpenAI accepts method dpo on preview api-versions only" in out.stderr
    assert "model.base: Azure OpenAI offers DPO on gpt-4o-2024-08-06" in out.stderr
    assert "Traceback" not in out.stderr


def test_openai_sft_uploads_tool_calls_and_tools(tmp_path: Path, env: OpenAIServer) -> None:
    rows = []
    for i, w in enumerate(FOODS):
        call = {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "cook_time", "arguments": json.dumps({"food": w})},
        }
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": f"How long for {w}?"}]},
                    {"role": "assistant", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": f"call_{i}", "content": f"{i + 3} minutes"},
                    {"role": "assistant", "content": f"Cook the {w} for {i + 3} minutes."},
                ],
                "tools": [{"type": "function", "function": {"name": "cook_time", "parameters": {"type": "object"}}}],
            }
        )
    (tmp_path / "tools.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"""\
version: 1
name: openai-tools
dataset:
  source: {{type: local, path: tools.jsonl}}
  split: {{validation: 0.1, test: 0.1, seed: 1}}
model:
  base: gpt-4o-mini-2024-07-18
trainer:
  backend: openai
  base_url: {env.url}/v1
  api_key: ${{env:OPENAI_API_KEY}}
  poll: {{interval: 0.01, max_interval: 0.05, timeout_minutes: 2}}
""")
    outcome = _run(path)
    steps = outcome.record["steps"]
    assert outcome.exit_code == 0, {k: (v["status"], v.get("error")) for k, v in steps.items()}
    job = next(iter(env.jobs.values()))
    assert job["status"] == "succeeded"
    line = json.loads(env.file_content(job["training_file"]).decode().splitlines()[0])
    assert line["tools"][0]["function"]["name"] == "cook_time"
    assert line["messages"][1]["tool_calls"][0]["function"]["name"] == "cook_time"
    assert "content" not in line["messages"][1]
    assert line["messages"][2]["role"] == "tool" and line["messages"][2]["tool_call_id"].startswith("call_")
    assert isinstance(line["messages"][0]["content"], str)  # text parts joined
