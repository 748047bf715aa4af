"""Rules for the training methods and data formats of issue 17: KTO and its binary
preference data, GRPO and its rewards (the batch arithmetic TRL requires, said before a
model is loaded), dataset mixtures, PEFT variants, and DPO on Azure OpenAI."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftpipe.spec import models as m
from ftpipe.spec.interpolate import ENV_REF
from ftpipe.spec.validate import did_you_mean

TEXT_METRICS = ("exact_match", "token_f1", "rouge_l", "json_valid")
# Azure OpenAI offers DPO on these base models (preview api-versions only).
AZURE_DPO_MODELS = (
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
)


def check(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    yield from _mixture(p, base_dir)
    yield from _kto(p)
    yield from _grpo(p)
    yield from _peft_and_speed(p)
    yield from _azure_dpo(p)


def _mixture(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ds = p.dataset
    if ds.sources is None:
        return
    if ds.columns:
        yield (
            ("dataset", "columns"),
            ("with dataset.sources each source maps its own columns: move columns into the sources"),
        )
    kind = m.RECORD_KIND[ds.format]
    for i, src in enumerate(ds.sources):
        where = ("dataset", "sources", i)
        fields = m.FORMAT_FIELDS[src.format]
        for key in src.columns:
            if key not in fields:
                yield (
                    where + ("columns", key),
                    (
                        f"'{key}' is not a field of format {src.format}."
                        f"{did_you_mean(key, fields)} (fields: {', '.join(fields)})"
                    ),
                )
        if m.RECORD_KIND[src.format] != kind:
            yield (
                where + ("format",),
                (
                    f"format {src.format} cannot be mixed into {ds.format} data (dataset.format); "
                    f"sources of a mixture must all become {kind} records"
                ),
            )
        s = src.source
        if isinstance(s, m.LocalSource):
            paths = s.path.items() if isinstance(s.path, dict) else [(None, s.path)]
            for split, rel in paths:
                if ENV_REF.search(rel):
                    continue
                full = (base_dir / rel).expanduser()
                if not (full.exists() or glob.glob(str(full))):
                    yield (
                        where + ("source", "path") + ((split,) if split else ()),
                        f"no data at '{rel}' (looked for {full}); the path is relative to the pipeline file",
                    )
    names = [s.name for s in ds.sources if s.name]
    for i, src in enumerate(ds.sources):
        if src.name and names.count(src.name) > 1:
            yield (("dataset", "sources", i, "name"), f"two sources are called '{src.name}'")


def _kto(p: Any) -> Iterator[tuple[tuple, str]]:
    method = getattr(p.trainer, "method", None)
    fmt = p.dataset.format
    if method == "kto" and fmt != "binary_preference":
        yield (
            ("trainer", "method"),
            (
                f"method kto trains on unpaired judgements: it needs dataset.format: "
                f"binary_preference (prompt, completion, label); this dataset's format is {fmt}"
            ),
        )
    hp = getattr(p.trainer, "hyperparameters", None)
    if method == "kto" and getattr(hp, "batch_size", 2) < 2:
        yield (
            ("trainer", "hyperparameters", "batch_size"),
            ("KTO estimates its KL term from the other examples of a batch: batch_size must be at least 2"),
        )
    if fmt == "binary_preference" and method != "kto":
        yield (
            ("dataset", "format"),
            (
                f"binary_preference data (one completion and a good/bad label) trains with "
                f"trainer.method: kto (backend trl), not {method}"
            ),
        )


def _grpo(p: Any) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    rewards = getattr(t, "rewards", None)
    if rewards is None:
        return
    if t.method != "grpo":
        if rewards:
            yield (
                ("trainer", "rewards"),
                (
                    f"rewards score GRPO's sampled completions; method {t.method} uses none "
                    "(remove them, or set method: grpo)"
                ),
            )
        return
    if m.RECORD_KIND[p.dataset.format] != "chat":
        yield (
            ("trainer", "method"),
            (
                f"method grpo samples answers to prompts and scores them against the reference "
                f"answer: it needs chat, instruction, sharegpt or alpaca data, not "
                f"{p.dataset.format}"
            ),
        )
    if not rewards:
        yield (
            ("trainer", "rewards"),
            (
                "method grpo needs at least one reward, e.g. rewards: [token_f1] "
                f"(text metrics: {', '.join(TEXT_METRICS)}; or package.module:function)"
            ),
        )
    for i, reward in enumerate(rewards):
        name = reward if isinstance(reward, str) else reward.metric
        where = ("trainer", "rewards", i) if isinstance(reward, str) else ("trainer", "rewards", i, "metric")
        if ":" in name or name in TEXT_METRICS:
            continue
        if name in ("loss", "perplexity"):
            yield (
                where,
                (
                    f"{name} is computed from a model's likelihood, not from a completion's text: a reward "
                    f"must be a text metric ({', '.join(TEXT_METRICS)}) or package.module:function"
                ),
            )
            continue
        from ftpipe import registry

        if name not in registry.plugins()["metric"]:
            yield (
                where,
                (
                    f"unknown reward '{name}'.{did_you_mean(name, TEXT_METRICS)} (text metrics: "
                    f"{', '.join(TEXT_METRICS)}; or a metric plugin, or package.module:function)"
                ),
            )
    hp = t.hyperparameters
    processes = max(1, int(t.resources.gpus_per_node)) * int(t.resources.nodes)
    per_step = hp.batch_size * hp.gradient_accumulation_steps * processes
    if per_step % hp.num_generations:
        fits = [n for n in range(2, per_step + 1) if per_step % n == 0]
        yield (
            ("trainer", "hyperparameters", "num_generations"),
            f"GRPO samples num_generations ({hp.num_generations}) completions per prompt, and each generation "
            f"batch (batch_size {hp.batch_size} x gradient_accumulation_steps {hp.gradient_accumulation_steps} x "
            f"{processes} process{'es' if processes > 1 else ''} = {per_step}) must hold whole groups: "
            + (f"use num_generations {' or '.join(map(str, fits[:4]))}, or " if fits else "")
            + f"make batch_size a multiple of {hp.num_generations}",
        )


def _peft_and_speed(p: Any) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    peft = getattr(t, "peft", None)
    if isinstance(t, m.AutoTrainTrainer) and p.dataset.format in ("sharegpt", "alpaca") and t.chat_template == "none":
        yield (
            ("trainer", "chat_template"),
            (
                f"{p.dataset.format} data becomes a list of messages: AutoTrain needs a "
                "chat template to turn it into text (use tokenizer, chatml or zephyr)"
            ),
        )
    if isinstance(t, m.AutoTrainTrainer) and isinstance(peft, (m.LoraPeft, m.QLoraPeft)):
        for key in ("use_dora", "use_rslora", "modules_to_save"):
            if getattr(peft, key):
                yield (
                    ("trainer", "peft", key),
                    (f"AutoTrain has no {key} setting (it would drop it): train with backend: trl, or remove it"),
                )
    if not isinstance(t, m.TrlTrainer):
        return
    if t.hyperparameters.padding_free and t.method != "sft":
        yield (("trainer", "hyperparameters", "padding_free"), f"padding_free applies to sft only, not {t.method}")
    if t.use_vllm is True and t.method != "grpo":
        yield (("trainer", "use_vllm"), f"use_vllm generates GRPO's completions; method {t.method} generates none")


def _azure_dpo(p: Any) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    if not isinstance(t, m.AzureOpenAITrainer):
        return
    if t.hyperparameters.beta is not None and t.method != "dpo":
        yield (("trainer", "hyperparameters", "beta"), "beta is a DPO setting; this job's method is sft")
    if t.method != "dpo":
        return
    if "preview" not in t.api_version and not ENV_REF.search(t.api_version):
        yield (
            ("trainer", "api_version"),
            (
                f"Azure OpenAI accepts method dpo on preview api-versions only; "
                f"{t.api_version} is GA: use api_version: 2025-02-01-preview"
            ),
        )
    base = p.model.base
    if not ENV_REF.search(base) and "." not in base and base not in AZURE_DPO_MODELS:
        yield (
            ("model", "base"),
            (f"Azure OpenAI offers DPO on {', '.join(AZURE_DPO_MODELS)}; '{base}' fine-tunes with sft only"),
        )
