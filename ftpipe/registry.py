"""Plugins by name: trainers, executors, deploy targets and metrics.

Built-ins are registered as import strings so that validating or planning imports none of
their heavy dependencies. Third parties register through entry points
(``ftpipe.trainers``, ``ftpipe.executors``, ``ftpipe.targets``, ``ftpipe.metrics``); each
entry point loads an object with ``name``, ``config_model`` (a pydantic model whose
discriminator field is ``Literal[name]``) and the contract's method. A plugin that breaks
its contract fails here, when it loads, with a message that names it.

Every plugin declares its capabilities (``ftpipe.contracts``): trainers, executors and
targets as ``caps: ClassVar[TrainerCaps | ExecutorCaps | TargetCaps]`` on their config model
(so validate and plan read them without importing the implementation); a metric as a
``caps`` attribute of type ``MetricCaps`` on its function (optional: the default is a text
metric where higher is better). ``Plugin.caps`` is what the core reads.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, create_model

from ftpipe.contracts import ExecutorCaps, MetricCaps, TargetCaps, TrainerCaps
from ftpipe.errors import PluginError
from ftpipe.spec import models as m

KINDS = {
    # kind: (entry point group, discriminator field, contract method)
    "trainer": ("ftpipe.trainers", "backend", "train"),
    "executor": ("ftpipe.executors", "type", "execute"),
    "target": ("ftpipe.targets", "type", "deploy"),
    "metric": ("ftpipe.metrics", None, None),
}
CAPS_TYPES: dict[str, type] = {
    "trainer": TrainerCaps,
    "executor": ExecutorCaps,
    "target": TargetCaps,
    "metric": MetricCaps,
}
Caps = Union[TrainerCaps, ExecutorCaps, TargetCaps, MetricCaps]


@dataclass(frozen=True)
class Plugin:
    kind: str
    name: str
    config_model: type[BaseModel] | None
    target: str | Any  # "module:attr" (built-in, imported on first use) or the loaded object
    builtin: bool = True
    caps: Any = None  # TrainerCaps | ExecutorCaps | TargetCaps | MetricCaps, checked at registration

    def load(self) -> Any:
        """The implementation object (imports it on first use)."""
        if not isinstance(self.target, str):
            return self.target
        module, _, attr = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        return obj() if isinstance(obj, type) else obj


_BUILTIN: dict[str, dict[str, tuple[type[BaseModel] | None, str]]] = {
    "trainer": {
        "trl": (m.TrlTrainer, "ftpipe.trainers.trl_backend:TrlBackend"),
        "autotrain": (m.AutoTrainTrainer, "ftpipe.trainers.autotrain_backend:AutoTrainBackend"),
        "openai": (m.OpenAITrainer, "ftpipe.trainers.openai_backend:OpenAIBackend"),
        "azure-openai": (m.AzureOpenAITrainer, "ftpipe.trainers.azure_backend:AzureOpenAIBackend"),
    },
    "executor": {
        "local": (m.LocalExecutor, "ftpipe.executors.local:LocalExecutorImpl"),
        "ray": (m.RayExecutor, "ftpipe.executors.ray_executor:RayExecutorImpl"),
        "hf-spaces": (m.SpacesExecutor, "ftpipe.executors.spaces:SpacesExecutorImpl"),
        "hf-jobs": (m.HfJobsExecutor, "ftpipe.executors.jobs:HfJobsExecutorImpl"),
    },
    "target": {
        "local": (m.LocalTarget, "ftpipe.deploy.local:LocalDeploy"),
        "hf-hub": (m.HubTarget, "ftpipe.deploy.hf_hub:HubDeploy"),
        "hf-endpoint": (m.EndpointTarget, "ftpipe.deploy.hf_endpoint:EndpointDeploy"),
        "hf-space": (m.SpaceTarget, "ftpipe.deploy.hf_space:SpaceDeploy"),
        "azure-openai": (m.AzureDeployTarget, "ftpipe.deploy.azure:AzureDeploy"),
        "gguf": (m.GgufTarget, "ftpipe.deploy.gguf:GgufDeploy"),
    },
    "metric": {name: (None, f"ftpipe.evaluation.metrics:{name}") for name in m.BUILTIN_METRICS},
}
# the built-in metrics' declarations (their functions live in ftpipe.evaluation.metrics)
_BUILTIN_METRIC_CAPS = {
    "loss": MetricCaps(needs_weights=True, higher_is_better=False),
    "perplexity": MetricCaps(needs_weights=True, higher_is_better=False),
}


def declared_caps(kind: str, name: str, holder: Any, *, label: str | None = None) -> Any:
    """The ``caps`` a plugin declares (on its config model; on the function for a metric),
    checked for type. A trainer, executor or target without one fails, naming itself."""
    expected = CAPS_TYPES[kind]
    caps = getattr(holder, "caps", None)
    label = label or f"{kind} plugin '{name}'"
    if caps is None:
        if kind == "metric":
            return MetricCaps()
        raise PluginError(
            f"{label} declares no capabilities: add `caps: ClassVar[{expected.__name__}] = "
            f"{expected.__name__}(...)` to its config model (see ftpipe.contracts)"
        )
    if not isinstance(caps, expected):
        raise PluginError(
            f"{label}: `caps` must be a {expected.__name__} (ftpipe.contracts), not {type(caps).__name__}"
        )
    return caps


def _check_plugin(kind: str, name: str, obj: Any) -> Plugin:
    group, disc, method = KINDS[kind]
    label = f"plugin '{name}' (entry point group {group})"
    if kind == "metric":
        if not callable(obj):
            raise PluginError(f"{label} is not callable: a metric is a function (prediction, reference) -> float")
        return Plugin(kind, name, None, obj, builtin=False, caps=declared_caps(kind, name, obj, label=label))
    assert disc is not None and method is not None  # every kind but metric has both
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001 - report any constructor failure
            raise PluginError(f"{label} could not be constructed: {exc}") from None
    missing = [a for a in ("name", "config_model", method) if not hasattr(obj, a)]
    if missing:
        raise PluginError(f"{label} does not satisfy the {kind} contract: missing {', '.join(missing)}")
    if obj.name != name:
        raise PluginError(f"{label} calls itself {obj.name!r}; the entry point name and `name` must match")
    cm = obj.config_model
    if not (isinstance(cm, type) and issubclass(cm, BaseModel)):
        raise PluginError(f"{label}: config_model must be a pydantic model class")
    field = cm.model_fields.get(disc)
    if field is None or get_origin(field.annotation) is not Literal or get_args(field.annotation) != (name,):
        raise PluginError(f"{label}: config_model needs a field `{disc}: Literal[{name!r}]`")
    if not callable(getattr(obj, method)):
        raise PluginError(f"{label}: `{method}` is not callable")
    caps = declared_caps(kind, name, cm, label=label)
    missing = missing_for_caps(obj, caps)
    if missing:
        raise PluginError(f"{label} declares capabilities it does not implement: missing {', '.join(missing)}")
    return Plugin(kind, name, cm, obj, builtin=False, caps=caps)


def missing_for_caps(obj: Any, caps: Any) -> list[str]:
    """The methods a plugin's declared capabilities promise that ``obj`` lacks."""
    wanted: list[str] = []
    if isinstance(caps, TrainerCaps):
        if caps.can_cancel:
            wanted.append("cancel")
        if caps.eval_access == "chat-api":
            wanted.append("chat_client")
        if caps.managed_env:
            wanted += ["environment_status", "install_environment"]
    return [f"{m} (caps)" for m in wanted if not callable(getattr(obj, m, None))]


# a group header of ours in an entry_points.txt (importlib.metadata strips the line first)
_OUR_GROUP = re.compile(rb"^[ \t]*\[ftpipe\.", re.MULTILINE)


def _plugins_may_be_installed() -> bool:
    """False when no installed distribution declares an ftpipe entry point. A quick look at
    each ``entry_points.txt`` on ``sys.path``: importing and running importlib.metadata's full
    scan costs more than the rest of ``ftpipe validate``, and almost always finds nothing.
    Anything this look cannot see through (a zip on ``sys.path``, a custom distribution
    finder) answers True, and the full scan decides."""
    from importlib.machinery import PathFinder

    if any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path):
        return True
    for entry in sys.path:
        if not isinstance(entry, str):
            return True
        try:
            names = os.listdir(entry or ".")
        except OSError:
            if os.path.isfile(entry):
                return True
            continue
        infos = [os.path.join(entry, n) for n in names if n.endswith((".dist-info", ".egg-info"))]
        if entry.endswith(".egg"):
            infos.append(os.path.join(entry, "EGG-INFO"))
        for info in infos:
            try:
                with open(os.path.join(info, "entry_points.txt"), "rb") as f:
                    if _OUR_GROUP.search(f.read()):
                        return True
            except OSError:
                continue
    return False


class _NoEntryPoints:
    def select(self, **_: Any) -> tuple:
        return ()


def entry_points() -> Any:
    """The installed distributions' entry points (``importlib.metadata.entry_points()``)."""
    if not _plugins_may_be_installed():
        return _NoEntryPoints()
    from importlib.metadata import entry_points as scan

    return scan()


@lru_cache(maxsize=1)
def plugins() -> dict[str, dict[str, Plugin]]:
    """All plugins by kind and name: built-ins, then entry points."""
    table: dict[str, dict[str, Plugin]] = {
        kind: {
            name: Plugin(
                kind,
                name,
                cm,
                target,
                caps=(
                    _BUILTIN_METRIC_CAPS.get(name, MetricCaps())
                    if cm is None
                    else declared_caps(kind, name, cm, label=f"built-in {kind} '{name}'")
                ),
            )
            for name, (cm, target) in entries.items()
        }
        for kind, entries in _BUILTIN.items()
    }
    everything = entry_points()  # one scan of the installed distributions, not one per group
    for kind, (group, _, _) in KINDS.items():
        for ep in everything.select(group=group):
            if ep.name in table[kind]:
                raise PluginError(f"plugin '{ep.name}' ({ep.value}) clashes with the built-in {kind} of that name")
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from None
            table[kind][ep.name] = _check_plugin(kind, ep.name, obj)
    return table


def get(kind: str, name: str) -> Plugin:
    table = plugins()[kind]
    if name not in table:
        raise PluginError(f"no {kind} named {name!r} (available: {', '.join(sorted(table))})")
    return table[name]


def caps(kind: str, name: str) -> Any:
    """The declared capabilities of the ``kind`` plugin ``name`` (PluginError if unknown)."""
    return get(kind, name).caps


def trainer_caps(name: str) -> TrainerCaps:
    caps: TrainerCaps = get("trainer", name).caps
    return caps


def target_caps(name: str) -> TargetCaps:
    caps: TargetCaps = get("target", name).caps
    return caps


def executor_caps(name: str) -> ExecutorCaps:
    caps: ExecutorCaps = get("executor", name).caps
    return caps


def metric_caps(name: str) -> MetricCaps:
    """A metric's declaration; a ``module:function`` metric (not registered) declares
    itself through a ``caps`` attribute, else it is a text metric, higher is better."""
    table = plugins()["metric"]
    if name in table:
        caps: MetricCaps = table[name].caps
        return caps
    return MetricCaps()


def _union(kind: str, models: tuple[type[BaseModel], ...]) -> Any:
    return Annotated[Union[models], Field(discriminator=KINDS[kind][1])]


def _models(kind: str, names: Any) -> tuple[type[BaseModel], ...]:
    table = plugins()[kind]
    return tuple(m for n in names if (m := table[n].config_model) is not None)


@lru_cache(maxsize=1)
def pipeline_model() -> type[BaseModel]:
    """The Pipeline model with every registered trainer, target and executor."""
    return _pipeline_model(*(_models(kind, plugins()[kind]) for kind in ("trainer", "target", "executor")))


@lru_cache(maxsize=32)
def _pipeline_model(
    trainers: tuple[type[BaseModel], ...], targets: tuple[type[BaseModel], ...], executors: tuple[type[BaseModel], ...]
) -> type[BaseModel]:
    target_list: Any = list[_union("target", targets)]  # type: ignore[misc]
    return create_model(
        "Pipeline",
        __base__=m.PipelineBase,
        trainer=(_union("trainer", trainers), ...),
        deploy=(target_list, []),
        executor=(
            _union("executor", executors),
            Field(default_factory=lambda: {"type": "local"}, validate_default=True),
        ),
    )


def pipeline_model_for(data: Any) -> type[BaseModel]:
    """A Pipeline model that validates ``data`` (the raw file) exactly as :func:`pipeline_model`
    does, with only the trainer, targets and executor that ``data`` names in its unions.
    Building the model is most of ``ftpipe validate``'s time, and a discriminated union
    validates a block by its tag alone, so the other members change nothing. When a block's
    tag is missing, unknown or not text, the errors list every member: the full model."""
    table = plugins()

    def tag(block: Any, kind: str) -> str | None:
        disc = KINDS[kind][1]
        name = block.get(disc) if isinstance(block, dict) else None
        return name if isinstance(name, str) and name in table[kind] else None

    trainer = tag(data.get("trainer"), "trainer") if isinstance(data, dict) else None
    executor = tag(data.get("executor", {"type": "local"}), "executor") if isinstance(data, dict) else None
    deploy = data.get("deploy", []) if isinstance(data, dict) else None
    targets = [tag(t, "target") for t in deploy] if isinstance(deploy, list) else [None]
    if trainer is None or executor is None or None in targets:
        return pipeline_model()
    # with no deploy entries the target union validates nothing: any one member will do
    used = [n for n in table["target"] if n in targets] or [next(iter(table["target"]))]
    return _pipeline_model(_models("trainer", [trainer]), _models("target", used), _models("executor", [executor]))
