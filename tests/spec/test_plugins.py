"""Third-party plugins through entry points: their config joins validation and the schema;
a plugin that breaks its contract fails at load with a message naming it."""

from __future__ import annotations

from importlib.metadata import EntryPoint, EntryPoints
from typing import ClassVar, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from ftpipe import registry
from ftpipe.contracts import TrainerCaps
from ftpipe.errors import PluginError


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["echo"]
    caps: ClassVar[TrainerCaps] = TrainerCaps()
    loudness: int = 1


class NoCapsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["nocaps"]


class NoCapsTrainer:
    name = "nocaps"
    config_model = NoCapsConfig

    def train(self, ctx):  # pragma: no cover - not run here
        raise NotImplementedError


class WrongCapsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["wrongcaps"]
    caps: ClassVar[object] = {"hosted": True}


class WrongCapsTrainer:
    name = "wrongcaps"
    config_model = WrongCapsConfig

    def train(self, ctx):  # pragma: no cover - not run here
        raise NotImplementedError


class EchoTrainer:
    name = "echo"
    config_model = EchoConfig

    def train(self, ctx):  # pragma: no cover - not run here
        raise NotImplementedError


class NoTrain:
    name = "broken"
    config_model = EchoConfig


def shout(prediction: str, reference: str) -> float:
    return float(prediction.upper() == reference.upper())


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch):
    def install(group_map: dict[str, list[EntryPoint]]) -> None:
        everything = EntryPoints(ep for eps in group_map.values() for ep in eps)
        monkeypatch.setattr(registry, "entry_points", lambda: everything)
        registry.plugins.cache_clear()
        registry.pipeline_model.cache_clear()

    yield install
    registry.plugins.cache_clear()
    registry.pipeline_model.cache_clear()


def _ep(name: str, value: str, group: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=group)


def test_a_plugin_trainer_is_validated_and_in_the_schema(fake_entry_points, tmp_path) -> None:
    fake_entry_points(
        {
            "ftpipe.trainers": [_ep("echo", f"{__name__}:EchoTrainer", "ftpipe.trainers")],
            "ftpipe.metrics": [_ep("shout", f"{__name__}:shout", "ftpipe.metrics")],
        }
    )
    from ftpipe.schema import schema_dict
    from ftpipe.spec.validate import load

    assert "EchoConfig" in schema_dict()["$defs"]
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    p = tmp_path / "p.yaml"
    p.write_text(
        "version: 1\nname: x\ndataset: {source: {type: local, path: d.jsonl}}\nmodel: {base: m}\n"
        "trainer: {backend: echo, loudnes: 3}\nevaluate: {metrics: [shout]}\n"
    )
    problems = load(p).problems
    assert len(problems) == 1
    assert "trainer.loudnes: unknown key 'loudnes'. Did you mean 'loudness'?" in str(problems[0])
    p.write_text(p.read_text().replace("loudnes", "loudness"))
    assert load(p).problems == []
    assert registry.get("trainer", "echo").load().name == "echo"


def test_a_plugin_missing_its_method_fails_at_load_naming_it(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.trainers": [_ep("broken", f"{__name__}:NoTrain", "ftpipe.trainers")]})
    with pytest.raises(PluginError, match=r"plugin 'broken' .* missing train"):
        registry.plugins()


def test_a_plugin_without_caps_fails_at_registration_naming_itself(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.trainers": [_ep("nocaps", f"{__name__}:NoCapsTrainer", "ftpipe.trainers")]})
    with pytest.raises(
        PluginError,
        match=r"plugin 'nocaps' .* declares no capabilities: add `caps: "
        r"ClassVar\[TrainerCaps\]",
    ):
        registry.plugins()


def test_a_plugin_with_caps_of_the_wrong_type_fails(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.trainers": [_ep("wrongcaps", f"{__name__}:WrongCapsTrainer", "ftpipe.trainers")]})
    with pytest.raises(PluginError, match=r"plugin 'wrongcaps' .*`caps` must be a TrainerCaps"):
        registry.plugins()


def test_every_builtin_exposes_its_caps() -> None:
    for kind, table in registry.plugins().items():
        for plugin in table.values():
            assert isinstance(plugin.caps, registry.CAPS_TYPES[kind]), (kind, plugin.name)
    assert registry.trainer_caps("openai").hosted and not registry.trainer_caps("trl").hosted
    assert registry.metric_caps("loss").needs_weights and not registry.metric_caps("loss").higher_is_better
    assert registry.metric_caps("token_f1").higher_is_better


def test_a_plugin_whose_name_disagrees_with_its_config(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.trainers": [_ep("other", f"{__name__}:EchoTrainer", "ftpipe.trainers")]})
    with pytest.raises(PluginError, match="calls itself 'echo'"):
        registry.plugins()


def test_a_plugin_that_fails_to_import(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.targets": [_ep("gone", "no_such_module:Thing", "ftpipe.targets")]})
    with pytest.raises(PluginError, match=r"plugin 'gone' \(no_such_module:Thing\) failed to load"):
        registry.plugins()


def test_a_plugin_cannot_shadow_a_builtin(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.trainers": [_ep("trl", f"{__name__}:EchoTrainer", "ftpipe.trainers")]})
    with pytest.raises(PluginError, match="clashes with the built-in trainer"):
        registry.plugins()


def test_builtins_are_lazy() -> None:
    import subprocess
    import sys

    script = (
        "import sys\nfrom ftpipe import registry\np = registry.get('trainer', 'openai')\n"
        "assert isinstance(p.target, str)\nprint('ftpipe.trainers.openai_backend' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # looking a plugin up imports nothing; load() does


class CancellingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["promises"]
    caps: ClassVar[TrainerCaps] = TrainerCaps(hosted=True, provider="x", can_cancel=True, eval_access="chat-api")


class BrokenPromises:
    name = "promises"
    config_model = CancellingConfig

    def train(self, ctx):  # pragma: no cover - not run here
        raise NotImplementedError


def test_a_plugin_must_implement_what_its_caps_promise(fake_entry_points) -> None:
    fake_entry_points({"ftpipe.trainers": [_ep("promises", f"{__name__}:BrokenPromises", "ftpipe.trainers")]})
    with pytest.raises(PluginError, match=r"plugin 'promises' .* missing cancel \(caps\), chat_client \(caps\)"):
        registry.plugins()


def test_every_builtin_implements_what_its_caps_promise() -> None:
    for kind, table in registry.plugins().items():
        for plugin in table.values():
            if kind != "metric":
                assert registry.missing_for_caps(plugin.load(), plugin.caps) == [], (kind, plugin.name)


def test_a_builtins_own_cross_block_rules_run_through_its_config_model(tmp_path) -> None:
    from ftpipe.spec.validate import load

    (tmp_path / "d.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
    )
    p = tmp_path / "p.yaml"
    p.write_text(
        "version: 1\nname: x\ndataset: {source: {type: local, path: d.jsonl}}\n"
        "model: {base: builtin:tiny, revision: abc}\ntrainer: {backend: autotrain}\n"
    )
    problems = [str(x) for x in load(p).problems]
    assert len(problems) == 1 and "model.revision: AutoTrain always loads the newest revision" in problems[0]
