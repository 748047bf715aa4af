from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftpipe.cli import main
from ftpipe.spec.interpolate import interpolate, redact
from ftpipe.spec.validate import load

DATA = Path(__file__).resolve().parents[2] / "pipelines" / "data" / "recipes.jsonl"


def _pipeline(tmp_path: Path, extra_trainer: str = "", deploy: str = "") -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(f"""version: 1
name: ${{env:PIPELINE_NAME:-interp}}
dataset: {{source: {{type: local, path: {DATA}}}}}
model: {{base: gpt-4o-mini-2024-07-18}}
trainer:
  backend: openai
  api_key: ${{env:OPENAI_API_KEY}}
  hyperparameters:
    n_epochs: ${{env:EPOCHS:-3}}
{extra_trainer}{deploy}""")
    return p


def test_validate_needs_no_variable_set(tmp_path: Path) -> None:
    loaded = load(_pipeline(tmp_path), env={})
    assert loaded.problems == []
    assert loaded.pipeline.name == "interp"
    assert loaded.pipeline.trainer.hyperparameters.n_epochs == 3
    assert loaded.pipeline.trainer.api_key == "${env:OPENAI_API_KEY}"


def test_environment_overrides_defaults(tmp_path: Path) -> None:
    loaded = load(_pipeline(tmp_path), env={"EPOCHS": "5", "PIPELINE_NAME": "other"})
    assert loaded.pipeline.trainer.hyperparameters.n_epochs == 5 and loaded.pipeline.name == "other"


def test_an_unset_variable_in_a_number_field_says_so(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    p.write_text(p.read_text().replace("${env:EPOCHS:-3}", "${env:EPOCHS}"))
    problems = load(p, env={}).problems
    assert len(problems) == 1, problems
    assert problems[0].path == "trainer.hyperparameters.n_epochs"
    assert "environment variable EPOCHS is not set" in problems[0].message


def test_secret_values_never_appear_in_plan_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    p = _pipeline(tmp_path)
    for args in (["plan", str(p)], ["plan", "--json", str(p)], ["validate", "--json", str(p)]):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
        assert "sk-very-secret-value" not in out.output
    plan = json.loads(CliRunner().invoke(main, ["plan", "--json", str(p)]).output)
    assert "api_key" not in json.dumps(plan["steps"])


def test_secret_keys_stay_references_and_values_are_collected() -> None:
    data = {"trainer": {"api_key": "${env:K}", "suffix": "x-${env:S:-d}"}, "deploy": [{"token": "${env:T}"}]}
    kept = interpolate(data, env={"K": "key1234", "T": "tok5678"}, resolve_secrets=False)
    assert kept.data["trainer"]["api_key"] == "${env:K}" and kept.data["trainer"]["suffix"] == "x-d"
    resolved = interpolate(data, env={"K": "key1234", "T": "tok5678"}, resolve_secrets=True)
    assert resolved.data["deploy"][0]["token"] == "tok5678"
    assert set(resolved.secrets) == {"key1234", "tok5678"}
    assert redact("a key1234 b tok5678", resolved.secrets) == "a *** b ***"


def test_an_unset_variable_in_a_shaped_field_still_validates(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(f"""version: 1
name: shaped
dataset: {{source: {{type: local, path: {DATA}}}}}
model: {{base: builtin:tiny}}
trainer: {{backend: trl}}
deploy:
  - {{type: hf-hub, repo: "${{env:HF_ORG}}/recipes"}}
""")
    assert load(p, env={}).problems == []
