"""Rules that relate several blocks of a pipeline. Each returns (path, message) pairs;
the validator turns paths into file positions."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Iterator

from ftpipe import registry
from ftpipe.contracts import TargetCaps, TrainerCaps
from ftpipe.spec import models as m
from ftpipe.spec.interpolate import ENV_REF
from ftpipe.spec.validate import did_you_mean

PREFERENCE_METHODS = ("dpo", "orpo", "reward")


def _trainer_caps(p: Any) -> TrainerCaps:
    """The trainer plugin's declaration (what it trains on, where its model lives): the
    ``caps`` of its config model, which the registry checked when it loaded the plugin."""
    caps: TrainerCaps = type(p.trainer).caps
    return caps


def _trainers(*, hosted: bool) -> list[str]:
    return sorted(n for n, pl in registry.plugins()["trainer"].items() if pl.caps.hosted == hosted)


def check(p: Any, *, base_dir: Path, raw: dict) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    for rule in (_dataset, _method_vs_format, _peft, _hosted, _evaluate, _deploy, _executor):
        out.extend(rule(p, base_dir))
    from ftpipe.spec import rules_decision, rules_methods

    out.extend(rules_methods.check(p, base_dir))  # methods, formats and mixtures (GRPO, KTO, sources)
    out.extend(rules_decision.check(p, base_dir))  # rag corpus, deployed baseline, judge, forgetting gate
    # rules a plugin brings for its own block against the rest (a classmethod
    # ``pipeline_rules(pipeline, base_dir)`` on its config model), once per model class
    models = dict.fromkeys(type(block) for block in (p.trainer, *p.deploy, p.executor))
    for model in models:
        rules = getattr(model, "pipeline_rules", None)
        if callable(rules):
            out.extend(rules(p, base_dir))
    return out


def _looks_like_path(s: str) -> bool:
    return s.startswith(("./", "../", "/", "~")) or s.endswith((".jsonl", ".json", ".csv", ".parquet"))


def _dataset(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ds = p.dataset
    fields = m.FORMAT_FIELDS[ds.format]
    for key in ds.columns:
        if key not in fields:
            yield (
                ("dataset", "columns", key),
                f"'{key}' is not a field of format {ds.format}.{did_you_mean(key, fields)} "
                f"(map these onto your column names: {', '.join(fields)})",
            )
    if ds.split.validation + ds.split.test >= 1:
        yield (
            ("dataset", "split"),
            f"validation ({ds.split.validation}) + test ({ds.split.test}) leave nothing to train on",
        )
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
        yield (
            ("trainer", "method"),
            f"method {method} trains on preference pairs: it needs dataset.format: preference "
            f"(prompt/chosen/rejected); this dataset's format is {fmt}",
        )
    if method == "sft" and fmt == "preference":
        yield (
            ("trainer", "method"),
            "method sft needs chat, instruction or text data; preference data trains with dpo or orpo",
        )
    formats = _trainer_caps(p).formats
    if formats is not None and fmt not in formats and not (method == "sft" and fmt == "preference"):
        yield (
            ("dataset", "format"),
            f"the {t.backend} backend does not train on format {fmt}: use format {' or '.join(formats)}",
        )
    base = p.model.base
    from ftpipe.models.sources import base_problem

    problem = None if ENV_REF.search(base) else base_problem(base, base_dir)
    if problem:
        yield (("model", "base"), problem)
    elif (
        not ENV_REF.search(base)
        and _looks_like_path(base)
        and not base.startswith("builtin:")
        and not (base_dir / base).expanduser().exists()
    ):
        yield (("model", "base"), f"no model folder at '{base}' (looked for {(base_dir / base).resolve()})")


def _peft(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    peft = getattr(t, "peft", None)
    if isinstance(peft, m.QLoraPeft) and isinstance(t, m.TrlTrainer) and peft.bits != 4:
        yield (
            ("trainer", "peft", "bits"),
            "the trl backend quantizes QLoRA to 4 bits: set bits: 4 (8-bit is autotrain's int8)",
        )
    if isinstance(t, m.TrlTrainer):
        hp = t.hyperparameters
        if hp.packing and t.method != "sft":
            yield (("trainer", "hyperparameters", "packing"), f"packing applies to sft only, not {t.method}")
        if t.resources.workers > 1 and not type(p.executor).caps.multi_worker:
            yield (
                ("trainer", "resources", "workers"),
                "workers > 1 trains on a Ray cluster: set executor.type: ray "
                "(or use gpus_per_node/nodes for one machine)",
            )
        yield from _distributed(t)


def _hosted(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    if isinstance(t, m.OpenAITrainer) and t.hyperparameters.beta is not None and t.method != "dpo":
        yield (("trainer", "hyperparameters", "beta"), "beta is a DPO setting; this job's method is sft")
    if isinstance(t, m.AzureOpenAITrainer):
        if "." in p.model.base and not ENV_REF.search(p.model.base):
            yield (
                ("model", "base"),
                f"Azure OpenAI model names have no dots: write "
                f"'{p.model.base.replace('.', '')}' (e.g. gpt-35-turbo-0613)",
            )
        if t.auth == "api-key" and not t.api_key:
            yield (("trainer", "api_key"), "auth api-key needs api_key: ${env:AZURE_OPENAI_API_KEY} (or auth: entra)")


def _evaluate(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ev = p.evaluate
    if ev is None:
        return
    weights = _trainer_caps(p).eval_access == "weights"
    metrics = registry.plugins()["metric"]
    for i, metric in enumerate(ev.metrics):
        if ":" in metric:
            continue
        if metric not in metrics:
            yield (
                ("evaluate", "metrics", i),
                f"unknown metric '{metric}'.{did_you_mean(metric, sorted(metrics))} "
                f"(available: {', '.join(sorted(metrics))}; or 'package.module:function')",
            )
        elif metrics[metric].caps.needs_weights and not weights:
            text = ", ".join(n for n, pl in sorted(metrics.items()) if not pl.caps.needs_weights)
            yield (
                ("evaluate", "metrics", i),
                f"{metric} needs the model's weights; a {p.trainer.backend} fine-tune "
                f"is scored on its generations ({text})",
            )
    names = ev.baseline_names()
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen or name == "finetuned":
            yield (("evaluate", "baselines", i), f"baseline name '{name}' is used twice (or is reserved)")
        seen.add(name)
    variants = ["finetuned", *names]
    for key in ev.prices:
        if key not in variants and key != "default":
            yield (
                ("evaluate", "prices", key),
                f"no variant '{key}'.{did_you_mean(key, variants)} (variants: {', '.join(variants)}, or default)",
            )
    if ev.gate is not None:
        g = ev.gate
        known = _known_metrics()
        if g.metric not in ev.metrics and ":" not in g.metric and g.metric not in known:
            # name the valid metrics now, not after the user has added an unknown one to evaluate.metrics
            yield (
                ("evaluate", "gate", "metric"),
                f"unknown metric '{g.metric}'.{did_you_mean(g.metric, known)} "
                f"(available: {', '.join(known)}; add the one you choose to "
                "evaluate.metrics too)",
            )
        elif g.metric not in ev.metrics:
            yield (
                ("evaluate", "gate", "metric"),
                f"the gate's metric '{g.metric}' is not computed: add it to "
                f"evaluate.metrics ({', '.join(ev.metrics)}).{did_you_mean(g.metric, ev.metrics)}",
            )
        for i, name in enumerate(g.must_beat):
            if name not in names:
                yield (
                    ("evaluate", "gate", "must_beat", i),
                    f"'{name}' is not a baseline of this pipeline.{did_you_mean(name, names)} "
                    f"(baselines: {', '.join(names) or 'none'})",
                )


def _known_metrics() -> list[str]:
    """Built-in metrics and those registered by plugins."""
    from ftpipe import registry

    return sorted(set(m.BUILTIN_METRICS) | set(registry.plugins()["metric"]))


def _deploy(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    backend = p.trainer.backend
    tcaps = _trainer_caps(p)
    seen: dict[str, int] = {}
    for i, target in enumerate(p.deploy):
        sid = target.name or target.type
        if sid in seen:
            yield (("deploy", i, "name"), f"two deploy targets are called '{sid}': give each a distinct name")
        seen[sid] = i
        caps: TargetCaps = type(target).caps
        if caps.deploys_from == "weights" and tcaps.hosted:
            hosted_targets = sorted(
                n for n, pl in registry.plugins()["target"].items() if tcaps.provider in pl.caps.providers
            )
            alt = f", or deploy {' or '.join(hosted_targets)}" if hosted_targets else ""
            yield (
                ("deploy", i, "type"),
                f"a fine-tune made by {backend} stays on the service; deploy target {target.type} "
                f"needs local weights (use {' or '.join(_trainers(hosted=False))}{alt})",
            )
        if caps.deploys_from == "hosted" and (not tcaps.hosted or tcaps.provider not in caps.providers):
            makers = sorted(
                n
                for n, pl in registry.plugins()["trainer"].items()
                if pl.caps.hosted and pl.caps.provider in caps.providers
            )
            yield (
                ("deploy", i, "type"),
                f"the {target.type} target deploys a fine-tune hosted at "
                f"{' or '.join(caps.providers) or 'a provider'}: it needs trainer.backend: "
                f"{' or '.join(makers) or '(no installed backend makes one)'}",
            )
    if p.evaluate is not None and p.evaluate.gate is None and p.deploy:
        pass  # deploying without a gate is allowed; plan shows it


def _executor(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    gpus = getattr(getattr(p.executor, "resources", None), "gpus", None)
    if gpus and _trainer_caps(p).hosted:
        yield (("executor", "resources", "gpus"), f"a {p.trainer.backend} job trains on the service: ask for no GPUs")


def _distributed(t: Any) -> Iterator[tuple[tuple, str]]:
    """Sharding strategies that cannot work with these resources."""
    d, res = t.distributed, t.resources
    processes = max(1, res.gpus_per_node) * res.nodes if res.workers == 1 else res.workers
    where = ("trainer", "distributed", "strategy")
    offloads = (d.strategy == "fsdp" and d.fsdp.cpu_offload) or (
        d.strategy == "deepspeed" and (d.deepspeed.offload_optimizer or d.deepspeed.offload_params)
    )
    if d.strategy != "ddp" and processes < 2 and not offloads:
        yield (
            where,
            f"{d.strategy} shards the model across training processes, and this job has one: set "
            "trainer.resources.workers (Ray) or gpus_per_node/nodes (torchrun) above 1, offload to CPU "
            "(one GPU), or use ddp",
        )
    if d.strategy == "deepspeed":
        if res.gpus_per_node == 0:
            yield (
                where,
                "DeepSpeed trains on GPUs: set trainer.resources.gpus_per_node (or use fsdp, which "
                "also runs on CPU processes)",
            )
        if d.deepspeed.stage == 3 and isinstance(t.peft, m.QLoraPeft):
            yield (
                ("trainer", "distributed", "deepspeed", "stage"),
                "ZeRO-3 cannot shard a quantised (QLoRA) base: use stage 2, or fsdp with QLoRA, or peft lora",
            )
        if d.deepspeed.offload_params and d.deepspeed.stage != 3:
            yield (
                ("trainer", "distributed", "deepspeed", "offload_params"),
                "parameter offload is a ZeRO-3 feature: set stage: 3, or offload_optimizer instead",
            )
    if d.strategy == "fsdp" and isinstance(t.peft, m.QLoraPeft) and res.gpus_per_node == 0:
        yield (where, "FSDP with QLoRA shards a 4-bit base on GPUs: set trainer.resources.gpus_per_node")
