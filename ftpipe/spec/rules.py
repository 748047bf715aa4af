"""Rules that relate several blocks of a pipeline. Each returns (path, message) pairs;
the validator turns paths into file positions."""
from __future__ import annotations

import glob
import importlib
from pathlib import Path
from typing import Any, Iterator

from ftpipe.spec import models as m
from ftpipe.spec.interpolate import ENV_REF
from ftpipe.spec.validate import did_you_mean

LOCAL_BACKENDS = ("trl", "autotrain")
HOSTED_BACKENDS = ("openai", "azure-openai")
PREFERENCE_METHODS = ("dpo", "orpo", "reward")
MODEL_TARGETS = ("local", "hf-hub", "hf-endpoint", "hf-space")  # need the weights


def check(p: Any, *, base_dir: Path, raw: dict) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    for rule in (_dataset, _method_vs_format, _peft, _hosted, _evaluate, _deploy, _executor):
        out.extend(rule(p, base_dir))
    for name in RULE_MODULES:  # backend-specific rules live beside their backend's knowledge
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        out.extend(module.check(p, base_dir))
    return out


RULE_MODULES = ("ftpipe.spec.rules_autotrain", "ftpipe.spec.rules_decision")


def _looks_like_path(s: str) -> bool:
    return s.startswith(("./", "../", "/", "~")) or s.endswith((".jsonl", ".json", ".csv", ".parquet"))


def _dataset(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ds = p.dataset
    fields = m.FORMAT_FIELDS[ds.format]
    for key in ds.columns:
        if key not in fields:
            yield (("dataset", "columns", key),
                   f"'{key}' is not a field of format {ds.format}.{did_you_mean(key, fields)} "
                   f"(map these onto your column names: {', '.join(fields)})")
    if ds.split.validation + ds.split.test >= 1:
        yield (("dataset", "split"), f"validation ({ds.split.validation}) + test ({ds.split.test}) leave nothing to train on")
    src = ds.source
    if isinstance(src, m.LocalSource):
        paths = src.path.items() if isinstance(src.path, dict) else [(None, src.path)]
        for split, rel in paths:
            if ENV_REF.search(rel):
                continue
            where = ("dataset", "source", "path") + ((split,) if split else ())
            full = (base_dir / rel).expanduser()
            if not (full.exists() or glob.glob(str(full))):
                yield (where, f"no data at '{rel}' (looked for {full}); the path is relative to the pipeline file")
    if ds.format == "text" and ds.system_prompt:
        yield (("dataset", "system_prompt"), "a system prompt applies to chat and instruction data, not to format text")


def _method_vs_format(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    t, fmt = p.trainer, p.dataset.format
    method = getattr(t, "method", None)
    if method in PREFERENCE_METHODS and fmt != "preference":
        yield (("trainer", "method"),
               f"method {method} trains on preference pairs: it needs dataset.format: preference "
               f"(prompt/chosen/rejected); this dataset's format is {fmt}")
    if method == "sft" and fmt == "preference":
        yield (("trainer", "method"), "method sft needs chat, instruction or text data; preference data trains with dpo or orpo")
    if getattr(t, "backend", None) in HOSTED_BACKENDS and fmt == "text":
        yield (("dataset", "format"), f"the {t.backend} backend fine-tunes chat models: use format chat or instruction")
    base = p.model.base
    if not ENV_REF.search(base) and _looks_like_path(base) and not base.startswith("builtin:"):
        if not (base_dir / base).expanduser().exists():
            yield (("model", "base"), f"no model folder at '{base}' (looked for {(base_dir / base).resolve()})")


def _peft(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    peft = getattr(t, "peft", None)
    if isinstance(peft, m.QLoraPeft) and t.backend == "trl" and peft.bits != 4:
        yield (("trainer", "peft", "bits"), "the trl backend quantizes QLoRA to 4 bits: set bits: 4 (8-bit is autotrain's int8)")
    if isinstance(t, m.TrlTrainer):
        hp = t.hyperparameters
        if hp.packing and t.method != "sft":
            yield (("trainer", "hyperparameters", "packing"), f"packing applies to sft only, not {t.method}")
        if t.resources.workers > 1 and p.executor.type != "ray":
            yield (("trainer", "resources", "workers"), "workers > 1 trains on a Ray cluster: set executor.type: ray "
                                                         "(or use gpus_per_node/nodes for one machine)")


def _hosted(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    if isinstance(t, m.OpenAITrainer) and t.hyperparameters.beta is not None and t.method != "dpo":
        yield (("trainer", "hyperparameters", "beta"), "beta is a DPO setting; this job's method is sft")
    if isinstance(t, m.AzureOpenAITrainer):
        if "." in p.model.base and not ENV_REF.search(p.model.base):
            yield (("model", "base"), f"Azure OpenAI model names have no dots: write "
                                      f"'{p.model.base.replace('.', '')}' (e.g. gpt-35-turbo-0613)")
        if t.auth == "api-key" and not t.api_key:
            yield (("trainer", "api_key"), "auth api-key needs api_key: ${env:AZURE_OPENAI_API_KEY} (or auth: entra)")


def _evaluate(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ev = p.evaluate
    if ev is None:
        return
    hosted = p.trainer.backend in HOSTED_BACKENDS
    for i, metric in enumerate(ev.metrics):
        if ":" in metric:
            continue
        if metric not in m.BUILTIN_METRICS:
            from ftpipe import registry

            if metric in registry.plugins()["metric"]:
                continue
            yield (("evaluate", "metrics", i),
                   f"unknown metric '{metric}'.{did_you_mean(metric, m.BUILTIN_METRICS)} "
                   f"(built-in: {', '.join(m.BUILTIN_METRICS)}; or 'package.module:function')")
        elif metric in ("loss", "perplexity") and hosted:
            yield (("evaluate", "metrics", i), f"{metric} needs the model's weights; a {p.trainer.backend} fine-tune "
                                               "is scored on its generations (token_f1, exact_match, rouge_l, ...)")
    names = ev.baseline_names()
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen or name == "finetuned":
            yield (("evaluate", "baselines", i), f"baseline name '{name}' is used twice (or is reserved)")
        seen.add(name)
    variants = ["finetuned", *names]
    for key in ev.prices:
        if key not in variants and key != "default":
            yield (("evaluate", "prices", key), f"no variant '{key}'.{did_you_mean(key, variants)} "
                                                f"(variants: {', '.join(variants)}, or default)")
    if ev.gate is not None:
        g = ev.gate
        if g.metric not in ev.metrics:
            yield (("evaluate", "gate", "metric"), f"the gate's metric '{g.metric}' is not computed: add it to "
                                                   f"evaluate.metrics ({', '.join(ev.metrics)}).{did_you_mean(g.metric, ev.metrics)}")
        for i, name in enumerate(g.must_beat):
            if name not in names:
                yield (("evaluate", "gate", "must_beat", i),
                       f"'{name}' is not a baseline of this pipeline.{did_you_mean(name, names)} "
                       f"(baselines: {', '.join(names) or 'none'})")


def _deploy(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    backend = p.trainer.backend
    seen: dict[str, int] = {}
    for i, target in enumerate(p.deploy):
        sid = target.name or target.type
        if sid in seen:
            yield (("deploy", i, "name"), f"two deploy targets are called '{sid}': give each a distinct name")
        seen[sid] = i
        if target.type in MODEL_TARGETS and backend in HOSTED_BACKENDS and target.type != "hf-space":
            yield (("deploy", i, "type"), f"a fine-tune made by {backend} stays on the service; deploy target {target.type} "
                                          "needs local weights (use trl or autotrain, or deploy azure-openai)")
        if target.type == "azure-openai" and backend != "azure-openai":
            yield (("deploy", i, "type"), "the azure-openai target deploys an Azure OpenAI fine-tune: "
                                          "it needs trainer.backend: azure-openai")
    if p.evaluate is not None and p.evaluate.gate is None and p.deploy:
        pass  # deploying without a gate is allowed; plan shows it


def _executor(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ex = p.executor
    if ex.type == "ray" and ex.resources.gpus and p.trainer.backend in HOSTED_BACKENDS:
        yield (("executor", "resources", "gpus"), f"a {p.trainer.backend} job trains on the service: ask for no GPUs")
