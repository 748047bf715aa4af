"""A field typed `Secret` is the one mark of a secret (issue 12 §2): a plugin's
`credentials: Secret` is kept a reference, left out of plans, exported as x-secret and
redacted, whatever its name; and a credential variable in a plain field is refused."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint, EntryPoints
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from ftpipe import registry
from ftpipe.cli import commands, main  # noqa: F401 - registers commands
from ftpipe.contracts import TrainerCaps
from ftpipe.spec.models import Secret
from ftpipe.spec.secrets import is_secret_var, secret_paths, without_secrets

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "pipelines" / "data" / "recipes.jsonl"
VALUE = "vault-0123456789abcdef"


class VaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["vault"]
    caps: ClassVar[TrainerCaps] = TrainerCaps()
    credentials: Secret = "${env:VAULT_CREDS}"
    backup: Secret | None = "${env:VAULT_BACKUP}"
    region: str = "eu"
    api_token_path: str = "/etc/token"  # a name that looks secret, but a plain field


class VaultTrainer:
    name = "vault"
    config_model = VaultConfig

    def train(self, ctx):  # pragma: no cover - not run here
        raise NotImplementedError


@pytest.fixture
def vault_plugin(monkeypatch: pytest.MonkeyPatch):
    eps = EntryPoints([EntryPoint(name="vault", value=f"{__name__}:VaultTrainer", group="ftpipe.trainers")])
    monkeypatch.setattr(registry, "entry_points", lambda: eps)
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()
    yield
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()


def _pipeline(tmp_path: Path, trainer: str, extra: str = "") -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(
        f"version: 1\nname: vault\n{extra}dataset: {{source: {{type: local, path: {DATA}}}}}\n"
        f"model: {{base: builtin:tiny}}\ntrainer: {trainer}\n"
    )
    return p


def test_a_plugin_secret_field_validates_as_a_reference_and_never_reaches_a_plan(
    vault_plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftpipe.spec.validate import load

    monkeypatch.setenv("VAULT_CREDS", VALUE)
    p = _pipeline(tmp_path, '{backend: vault, credentials: "${env:VAULT_CREDS}", api_token_path: /x}')
    loaded = load(p)
    assert loaded.problems == []
    assert loaded.pipeline.trainer.credentials == "${env:VAULT_CREDS}"
    plan = CliRunner().invoke(main, ["plan", "--json", str(p)])
    assert plan.exit_code == 0, plan.output
    steps = json.dumps(json.loads(plan.output)["steps"])
    assert "credentials" not in steps and VALUE not in steps and "VAULT_CREDS" not in steps
    assert '"api_token_path": "/x"' in steps  # a plain field is config, whatever its name


def test_a_plugin_secret_field_given_by_value_is_refused(vault_plugin, tmp_path: Path) -> None:
    from ftpipe.spec.validate import load

    problems = load(_pipeline(tmp_path, f"{{backend: vault, credentials: {VALUE}}}")).problems
    assert len(problems) == 1 and problems[0].path == "trainer.credentials"
    assert "secrets are given by reference" in problems[0].message


def test_a_plugin_secret_field_is_x_secret_in_the_schema(vault_plugin) -> None:
    from ftpipe.schema import schema_dict

    props = schema_dict()["$defs"]["VaultConfig"]["properties"]
    assert props["credentials"].get("x-secret") is True
    assert "x-secret" not in props["api_token_path"] and "x-secret" not in props["region"]


def test_a_run_redacts_a_plugin_secret_and_its_default(
    vault_plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftpipe.engine import prepare

    monkeypatch.setenv("VAULT_CREDS", VALUE)
    p = _pipeline(tmp_path, "{backend: vault}")  # credentials comes from the field's default
    prepared = prepare(p)
    assert VALUE in prepared.secrets
    assert VALUE not in json.dumps(prepared.redacted) and VALUE not in json.dumps(prepared.plan.to_json())
    assert prepared.resolved.trainer.credentials == VALUE  # the plugin gets the value, not the reference


def test_secret_defaults_are_resolved_for_a_run(vault_plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.engine import prepare

    monkeypatch.setenv("HF_TOKEN", "hf_FromTheEnvironment")
    monkeypatch.setenv("VAULT_CREDS", VALUE)
    monkeypatch.delenv("VAULT_BACKUP", raising=False)
    p = _pipeline(tmp_path, "{backend: vault}")
    p.write_text(p.read_text() + "deploy:\n  - {type: hf-hub, repo: me/m}\n")
    resolved = prepare(p).resolved
    assert resolved.deploy[0].token == "hf_FromTheEnvironment"
    assert resolved.trainer.backup is None  # unset and optional: None, not the text of the reference


def test_secret_paths_follow_the_models_not_the_key_names(vault_plugin) -> None:
    model = registry.pipeline_model()
    data = {
        "trainer": {"backend": "vault", "credentials": "${env:A}", "api_token_path": "x"},
        "model": {"base": "m", "token": "${env:B}"},
        "deploy": [{"type": "local", "path": "o"}, {"type": "hf-hub", "repo": "a/b", "token": "${env:C}"}],
        "executor": {"type": "hf-spaces", "token": "${env:D}"},
    }
    assert secret_paths(model, data) == {
        ("trainer", "credentials"),
        ("model", "token"),
        ("deploy", 1, "token"),
        ("executor", "token"),
    }
    assert ("trainer", "api_token_path") not in secret_paths(model, data)


def test_without_secrets_drops_secret_fields_only(vault_plugin, tmp_path: Path) -> None:
    from ftpipe.spec.validate import load

    loaded = load(_pipeline(tmp_path, '{backend: vault, credentials: "${env:VAULT_CREDS}"}'))
    dump = without_secrets(loaded.pipeline)
    assert "credentials" not in dump["trainer"] and dump["trainer"]["region"] == "eu"
    assert dump["model"]["base"] == "builtin:tiny" and "token" not in dump["model"]


@pytest.mark.parametrize(
    "field, var",
    [
        ('description: "model by ${env:HF_TOKEN}"\n', "HF_TOKEN"),
        ('description: "${env:MY_SERVICE_API_KEY}"\n', "MY_SERVICE_API_KEY"),
    ],
)
def test_a_credential_variable_in_a_plain_field_is_refused_naming_the_field(
    tmp_path: Path, field: str, var: str
) -> None:
    p = _pipeline(tmp_path, "{backend: trl}", extra=field)
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 2
    assert f"{p}:3:14  description: references ${{env:{var}}}, which holds a secret" in r.output, r.output


def test_a_variable_a_secret_field_uses_is_refused_in_a_plain_field(vault_plugin, tmp_path: Path) -> None:
    # VAULT_CREDS is not credential-named: it is secret because a Secret field (here, by its
    # default) references it
    p = _pipeline(tmp_path, '{backend: vault, region: "${env:VAULT_CREDS}"}')
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 2
    assert "trainer.region: references ${env:VAULT_CREDS}, which holds a secret" in r.output, r.output


def test_plain_variables_stay_allowed(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, "{backend: trl}", extra='description: "by ${env:TEAM_NAME:-us}"\n')
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "name, secret",
    [
        ("HF_TOKEN", True),
        ("OPENAI_API_KEY", True),
        ("MY_DB_PASSWORD", True),
        ("GITLAB_TOKEN", True),
        ("AZURE_CLIENT_SECRET", True),
        ("AZURE_OPENAI_ENDPOINT", False),
        ("RAY_ADDRESS", False),
        ("TOKENIZER_NAME", False),
        ("MONKEY", False),
        ("HF_TOKEN_PATH", False),
    ],
)
def test_credential_variable_names(name: str, secret: bool) -> None:
    assert is_secret_var(name) is secret


def test_secrets_inside_containers_are_found() -> None:
    class Headers(BaseModel):
        headers: dict[str, Secret] = {}
        keys: list[Secret] = []
        plain: dict[str, str] = {}

    data = {"headers": {"auth": "${env:A}"}, "keys": ["${env:B}"], "plain": {"b": "${env:C}"}}
    assert secret_paths(Headers, data) == {("headers", "auth"), ("keys", 0)}
