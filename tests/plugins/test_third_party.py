"""A third-party hosted trainer and deploy target (tests/plugins/cloud_plugin.py), registered
by entry point, get the treatment a built-in gets — validation rules, plan order, cache keys,
`ftpipe cancel`, evaluation through its chat API, `schedule` extras, `backends list` —
from their declared caps alone, with no edit anywhere else."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ftpipe import registry
from tests.fakes.hosted_data import QA
from tests.fakes.openai_server import OpenAIServer, openai_server_fixture  # noqa: F401
from tests.plugins import cloud_plugin

BASE = "gpt-4o-mini-2024-07-18"


def _clear() -> None:
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The plugin installed as a distribution with entry points, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    cloud_plugin.install(site)
    monkeypatch.syspath_prepend(str(site))
    _clear()
    module = __import__(cloud_plugin.MODULE)
    yield module
    sys.modules.pop(cloud_plugin.MODULE, None)
    monkeypatch.undo()
    _clear()


def _pipeline(
    folder: Path, *, trainer: str, deploy: str = "", evaluate: str = "", fmt: str = "chat", base: str = BASE
) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = folder / "cloud.yaml"
    path.write_text(
        f"version: 1\nname: cloud\ndataset:\n  source: {{type: local, path: data.jsonl}}\n"
        f"  format: {fmt}\n  split: {{validation: 0.1, test: 0.2, seed: 1}}\n"
        f"model: {{base: {base}}}\ntrainer: {trainer}\n{evaluate}{deploy}"
    )
    return path


CLOUD = "{backend: cloudtune, base_url: 'http://127.0.0.1:9/v1'}"
SERVE = "deploy:\n  - {type: cloudserve, name: primary, slot: s1}\n  - {type: cloudserve, name: copy, slot: s2, mirror_of: s1}\n"


def _problems(path: Path) -> list[str]:
    from ftpipe.spec.validate import load

    return [str(p) for p in load(path).problems]


def test_validation_rules_follow_the_declared_caps(plugin: Any, tmp_path: Path) -> None:
    ok = _pipeline(tmp_path, trainer=CLOUD, deploy=SERVE, evaluate="evaluate: {metrics: [token_f1]}\n")
    assert _problems(ok) == []
    # formats: cloudtune trains on chat only
    assert any(
        "cloudtune backend does not train on format text" in p
        for p in _problems(_pipeline(tmp_path, trainer=CLOUD, fmt="text"))
    )
    # hosted: a target that needs local weights is refused, naming the alternatives from caps
    weights = _problems(_pipeline(tmp_path, trainer=CLOUD, deploy="deploy: [{type: local}]\n"))
    assert len(weights) == 1 and "a fine-tune made by cloudtune stays on the service" in weights[0]
    assert "or deploy cloudserve" in weights[0]
    # eval access: metrics that need weights are refused for a chat-api trainer
    loss = _problems(_pipeline(tmp_path, trainer=CLOUD, evaluate="evaluate: {metrics: [loss]}\n"))
    assert len(loss) == 1 and "loss needs the model's weights; a cloudtune fine-tune" in loss[0]
    # deploys_from/providers: cloudserve needs a cloudtune fine-tune
    trl = _problems(_pipeline(tmp_path, trainer="{backend: trl}", deploy=SERVE, base="builtin:tiny"))
    assert len(trl) == 2 and all("needs trainer.backend: cloudtune" in p for p in trl)
    # the plugin's own cross-block rule
    orphan = _problems(
        _pipeline(tmp_path, trainer=CLOUD, deploy="deploy: [{type: cloudserve, slot: b, mirror_of: a}]\n")
    )
    assert len(orphan) == 1 and "deploy[0].mirror_of: no cloudserve target fills slot 'a'" in orphan[0]
    # the peft hint for hosted backends
    peft = _problems(_pipeline(tmp_path, trainer=CLOUD.replace("}", ", peft: {type: lora}}")))
    assert len(peft) == 1 and "the cloudtune backend trains on CloudTune's service" in peft[0]


def _plan(path: Path) -> Any:
    from ftpipe.planner import build_plan
    from ftpipe.spec.validate import load

    loaded = load(path)
    assert loaded.ok, loaded.problems
    return build_plan(loaded.pipeline, path)


def test_plan_order_and_cache_keys_follow_the_declared_caps(
    plugin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftpipe.contracts import TrainerCaps
    from ftpipe.spec import models as m

    path = _pipeline(tmp_path, trainer=CLOUD, deploy=SERVE)
    plan = _plan(path)
    # the copy consumes the slot the primary publishes: it waits for it
    assert plan.step("deploy.copy").needs == ("train", "deploy.primary")
    assert plan.step("deploy.primary").needs == ("train",)
    keys = {s.id: s.key for s in plan.steps}
    # bumping another backend's cache version leaves this pipeline's keys alone
    monkeypatch.setattr(m.TrlTrainer, "caps", TrainerCaps(extras=("train",), torch=True, cache_version=99))
    assert {s.id: s.key for s in _plan(path).steps} == keys
    # bumping the plugin's own version re-keys its train step and what depends on it, not prepare
    bumped = TrainerCaps(**{**plugin.CloudTuneTrainer.caps.__dict__, "cache_version": cloud_plugin.CACHE_VERSION + 1})
    monkeypatch.setattr(plugin.CloudTuneTrainer, "caps", bumped)
    again = {s.id: s.key for s in _plan(path).steps}
    assert again["prepare"] == keys["prepare"]
    assert again["train"] != keys["train"] and again["deploy.primary"] != keys["deploy.primary"]


def test_schedule_extras_and_backends_list_come_from_caps(plugin: Any, tmp_path: Path) -> None:
    from ftpipe.cli import main
    from ftpipe.schedule import extras_for, needs_torch
    from ftpipe.spec.validate import load

    pipeline = load(_pipeline(tmp_path, trainer=CLOUD, deploy=SERVE)).pipeline
    assert extras_for(pipeline) == ["hub", "openai"]  # the trainer's and the target's declared extras
    assert needs_torch(pipeline) is False
    result = CliRunner().invoke(main, ["backends", "list", "--json"])
    assert result.exit_code == 0, result.output
    row = {r["backend"]: r for r in json.loads(result.output)["backends"]}["cloudtune"]
    assert row["hosted"] is True and row["can_cancel"] is True and row["extras"] == ["openai"]
    assert row["builtin"] is False and row["installed"] is True
    assert row["what"] == "CloudTune: fine-tuning on an OpenAI-compatible service"
    assert f"provides {cloud_plugin.MODULE}" in row["needs"] and 'pip install "ftpipe[openai]"' in row["needs"]


@pytest.fixture
def server(openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> OpenAIServer:
    monkeypatch.setenv("CLOUDTUNE_KEY", openai_server.api_key)
    return openai_server


def test_a_run_evaluates_through_the_plugins_chat_api_and_deploys_in_order(
    plugin: Any, tmp_path: Path, server: OpenAIServer
) -> None:
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    server.steps_per_state = 0
    trainer = f"{{backend: cloudtune, base_url: '{server.url}/v1'}}"
    path = _pipeline(
        tmp_path, trainer=trainer, deploy=SERVE, evaluate="evaluate: {metrics: [token_f1], baselines: [base]}\n"
    )
    store = tmp_path / "store"
    outcome = execute(path, store=store, reporter=Reporter(quiet=True))
    assert outcome.exit_code == 0, outcome.record["steps"]
    steps = outcome.record["steps"]
    assert list(steps) == ["prepare", "train", "evaluate", "deploy.primary", "deploy.copy"]
    report = json.loads((store / steps["evaluate"]["artifact"] / "report.json").read_text())
    finetuned, base = report["variants"]["finetuned"], report["variants"]["base"]
    assert finetuned["model"].startswith("cloudtune:ft:") and base["model"] == f"cloudtune:{BASE}"
    # the fine-tune (served by the double from its training file) beats the base model
    assert finetuned["metrics"]["token_f1"] > base["metrics"]["token_f1"]
    chats = [r for r in server.requests if r[1].endswith("/chat/completions")]
    assert len(chats) == finetuned["n"] + base["n"]  # every answer came through the plugin's client
    deployed = json.loads((store / steps["deploy.copy"]["artifact"] / "deploy.json").read_text())
    assert deployed == {"target": "cloudserve", "slot": "s2", "model_id": finetuned["model"].split(":", 1)[1]}


def test_ftpipe_cancel_asks_the_plugin(plugin: Any, tmp_path: Path, server: OpenAIServer) -> None:
    from ftpipe.cli import main
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    server.steps_per_state = 100_000  # the job stays queued
    path = _pipeline(tmp_path, trainer=f"{{backend: cloudtune, base_url: '{server.url}/v1', wait: false}}")
    store = tmp_path / "store"
    assert execute(path, store=store, reporter=Reporter(quiet=True)).exit_code == 0
    [job] = server.jobs.values()
    assert job["status"] != "cancelled"
    result = CliRunner().invoke(main, ["cancel", "latest", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["cancelled"] is True and out["provider"] == "cloudtune" and out["job_id"] == job["id"]
    assert server.jobs[job["id"]]["status"] == "cancelled"
    again = CliRunner().invoke(main, ["cancel", "latest", "--store", str(store)])
    assert again.exit_code == 0 and f"CloudTune job {job['id']} of run" in again.output
    assert "has already ended: cancelled" in again.output


def test_a_backend_that_cannot_cancel_says_so(
    plugin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: OpenAIServer
) -> None:
    from ftpipe.cli import main
    from ftpipe.contracts import TrainerCaps
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    server.steps_per_state = 100_000
    path = _pipeline(tmp_path, trainer=f"{{backend: cloudtune, base_url: '{server.url}/v1', wait: false}}")
    store = tmp_path / "store"
    assert execute(path, store=store, reporter=Reporter(quiet=True)).exit_code == 0
    no_cancel = TrainerCaps(**{**plugin.CloudTuneTrainer.caps.__dict__, "can_cancel": False})
    monkeypatch.setattr(plugin.CloudTuneTrainer, "caps", no_cancel)
    _clear()
    result = CliRunner().invoke(main, ["cancel", "latest", "--store", str(store)])
    assert result.exit_code == 2 and "the cloudtune backend runs none" in result.output
    assert "cancel works for azure-openai, openai" in result.output
