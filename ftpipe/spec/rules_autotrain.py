"""Pipeline settings AutoTrain Advanced (0.8.36) cannot express, refused at validation.

AutoTrain drops keys it does not know with at most a warning, so the backend never hands
it a setting it would ignore: each such setting is an error here, with what to do instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ftpipe.spec import models as m
from ftpipe.spec.validate import did_you_mean

NAMED_TEMPLATES = ("chatml", "zephyr")
# transformers 4.48 (AutoTrain's pin): TrainingArguments.optim values
OPTIMIZERS = (
    "adamw_hf",
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "adamw_apex_fused",
    "adafactor",
    "adamw_anyprecision",
    "adamw_torch_4bit",
    "ademamix",
    "sgd",
    "adagrad",
    "adamw_bnb_8bit",
    "adamw_8bit",
    "ademamix_8bit",
    "lion_8bit",
    "lion_32bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "paged_ademamix_32bit",
    "paged_ademamix_8bit",
    "paged_lion_32bit",
    "paged_lion_8bit",
    "rmsprop",
    "rmsprop_bnb",
    "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit",
    "galore_adamw",
    "galore_adamw_8bit",
    "galore_adafactor",
    "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise",
    "lomo",
    "adalomo",
    "grokadamw",
    "schedule_free_adamw",
    "schedule_free_sgd",
)
# which hyperparameters each AutoTrain trainer reads (the others it ignores)
METHOD_ONLY = {
    "beta": ("dpo",),
    "max_prompt_length": ("dpo", "orpo"),
    "max_completion_length": ("dpo", "orpo"),
}


def check(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    if not isinstance(t, m.AutoTrainTrainer):
        return
    yield from _template(p)
    yield from _model(p)
    yield from _hyperparameters(p)
    if t.method == "reward" and p.evaluate is not None:
        yield (
            ("evaluate",),
            "a reward model (method reward) scores text and generates none; evaluate compares "
            "generations: remove the evaluate block, or train with sft, dpo or orpo",
        )


def _template(p: Any) -> Iterator[tuple[tuple, str]]:
    t, fmt = p.trainer, p.dataset.format
    mt = p.model.chat_template
    if mt is not None and mt not in NAMED_TEMPLATES:
        yield (
            ("model", "chat_template"),
            "AutoTrain applies its named templates (chatml, zephyr) or the tokenizer's own, not a template "
            "given here: use one of those, or train with backend: trl",
        )
    elif mt is not None and t.chat_template is not None and t.chat_template != mt:
        yield (
            ("trainer", "chat_template"),
            f"trainer.chat_template {t.chat_template} contradicts model.chat_template {mt}: keep one of them",
        )
    if fmt == "text" and t.chat_template not in (None, "none"):
        yield (
            ("trainer", "chat_template"),
            f"format text is plain text: a chat template ({t.chat_template}) applies to conversations; "
            "use chat_template: none, or dataset.format: chat",
        )
    if fmt in ("chat", "instruction") and t.chat_template == "none":
        yield (
            ("trainer", "chat_template"),
            f"{fmt} data is a list of messages: AutoTrain needs a chat template to turn it into text "
            "(tokenizer, chatml or zephyr)",
        )


def _model(p: Any) -> Iterator[tuple[tuple, str]]:
    if p.model.revision is not None:
        yield (
            ("model", "revision"),
            "AutoTrain always loads the newest revision of the base model; it cannot pin one: remove revision, "
            "or point model.base at a local copy of that revision",
        )


def _hyperparameters(p: Any) -> Iterator[tuple[tuple, str]]:
    t = p.trainer
    hp = t.hyperparameters
    where = ("trainer", "hyperparameters")
    for key, methods in METHOD_ONLY.items():
        if key in hp.model_fields_set and t.method not in methods:
            yield (
                where + (key,),
                f"AutoTrain's {t.method} trainer ignores {key} (it applies to {' and '.join(methods)}): remove it",
            )
    if hp.logging_steps == 0 or hp.logging_steps < -1:
        yield (
            where + ("logging_steps",),
            f"must be -1 (AutoTrain chooses) or a positive number of steps, got {hp.logging_steps}",
        )
    if hp.optimizer not in OPTIMIZERS:
        yield (
            where + ("optimizer",),
            f"unknown optimizer {hp.optimizer!r}.{did_you_mean(hp.optimizer, OPTIMIZERS)} "
            "(AutoTrain passes it to transformers' TrainingArguments.optim; e.g. "
            "adamw_torch, adafactor, sgd, paged_adamw_8bit)",
        )
    if hp.scheduler == "cosine_warmup":
        yield (
            where + ("scheduler",),
            "AutoTrain's transformers has no 'cosine_warmup' schedule (its UI offers it, "
            "training then fails): use cosine, which warms up for warmup_ratio first",
        )
    if hp.block_size != -1 and hp.block_size > hp.model_max_length:
        yield (
            where + ("block_size",),
            f"block_size {hp.block_size} exceeds model_max_length {hp.model_max_length}; "
            "AutoTrain would cut it down silently: lower it or raise model_max_length",
        )
