"""Pipeline → AutoTrain Advanced: the config file and the training data it reads.

Pure functions (no AutoTrain, no torch) so the translation is unit-tested without the
environment. What AutoTrain cannot express is refused earlier, by
:mod:`ftpipe.spec.rules_autotrain`; nothing here drops a setting silently.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from ftpipe.errors import StepError
from ftpipe.spec import models as m

TASKS = {"sft": "llm-sft", "dpo": "llm-dpo", "orpo": "llm-orpo", "reward": "llm-reward"}
NAMED_TEMPLATES = ("chatml", "zephyr")
# AutoTrain expands ${VAR} in hub.token only: the token reaches it through the environment,
# so the config file on disk never holds it.
TOKEN_ENV = "FTPIPE_AUTOTRAIN_HF_TOKEN"
PROJECT_NAME = "ftpipe-autotrain"
DATA_SPLIT = "train"


def chat_template(p: Any) -> str:
    """The chat template AutoTrain applies: the trainer's choice, else the model block's
    named template, else the tokenizer's own for conversations and none for plain text."""
    t = p.trainer
    if t.chat_template is not None:
        return t.chat_template
    if p.model.chat_template in NAMED_TEMPLATES:
        return p.model.chat_template
    return "none" if p.dataset.format == "text" else "tokenizer"


def peft_params(peft: Any) -> dict[str, Any]:
    if isinstance(peft, m.NoPeft):
        return {"peft": False, "quantization": None}
    out: dict[str, Any] = {
        "peft": True,
        "quantization": {4: "int4", 8: "int8"}[peft.bits] if isinstance(peft, m.QLoraPeft) else None,
        "lora_r": peft.r,
        "lora_alpha": peft.alpha,
        "lora_dropout": peft.dropout,
        "target_modules": ",".join(peft.target_modules)
        if isinstance(peft.target_modules, list) and peft.target_modules
        else "all-linear",
    }
    return out


def training_params(p: Any) -> dict[str, Any]:
    """The ``params`` block: one AutoTrain key per pipeline setting."""
    t = p.trainer
    hp = t.hyperparameters
    params: dict[str, Any] = {
        "epochs": hp.epochs,
        "lr": hp.learning_rate,
        "batch_size": hp.batch_size,
        "block_size": hp.block_size,
        "model_max_length": hp.model_max_length,
        "gradient_accumulation": hp.gradient_accumulation,
        "mixed_precision": None if hp.mixed_precision == "no" else hp.mixed_precision,
        "optimizer": hp.optimizer,
        "scheduler": hp.scheduler,
        "warmup_ratio": hp.warmup_ratio,
        "weight_decay": hp.weight_decay,
        "padding": hp.padding,
        "logging_steps": hp.logging_steps,
        "seed": t.seed,
        # AutoTrain merges in float16 (lossy for float32 models, slow on a CPU); ftpipe merges
        # the adapter itself, in the base model's dtype (trainer.merge_adapter)
        "merge_adapter": False,
        **peft_params(t.peft),
    }
    if t.method in ("dpo", "orpo"):
        params["max_prompt_length"] = hp.max_prompt_length
        params["max_completion_length"] = hp.max_completion_length
    if t.method == "dpo":
        params["dpo_beta"] = hp.beta
    return params


def column_mapping(method: str, *, conversations: bool) -> dict[str, str]:
    """The column names of the file :func:`write_training_data` writes."""
    if method == "sft":
        return {"text_column": "messages" if conversations else "text"}
    mapping = {"text_column": "chosen", "rejected_text_column": "rejected"}
    if method in ("dpo", "orpo"):
        mapping["prompt_text_column"] = "prompt"
    return mapping


def _conversations(p: Any) -> bool:
    return p.dataset.format != "text" and chat_template(p) != "none"


def build_config(
    p: Any,
    *,
    base_model: str,
    data_dir: Path,
    project_name: str = PROJECT_NAME,
    backend: str = "local",
    with_token: bool = False,
) -> dict[str, Any]:
    """The AutoTrain config (``autotrain --config``) for pipeline ``p``."""
    t = p.trainer
    if not re.fullmatch(r"[A-Za-z0-9-]{1,50}", project_name):
        raise ValueError(f"AutoTrain project names are letters, digits and hyphens (≤50): {project_name!r}")
    return {
        "task": TASKS[t.method],
        "base_model": base_model,
        "project_name": project_name,
        "log": "none",
        "backend": backend,
        "data": {
            "path": str(data_dir),
            "train_split": DATA_SPLIT,
            # ftpipe's evaluate step scores the held-out splits; AutoTrain forces this to
            # none for LLM tasks anyway.
            "valid_split": None,
            "chat_template": chat_template(p),
            "column_mapping": column_mapping(t.method, conversations=_conversations(p)),
        },
        "params": training_params(p),
        # AutoTrain reads hub.username and hub.token unconditionally (KeyError without them);
        # ftpipe's deploy step publishes, never AutoTrain.
        "hub": {"username": "ftpipe", "token": f"${{{TOKEN_ENV}}}" if with_token else None, "push_to_hub": False},
    }


# --------------------------------------------------------------------------- data


def _plain(messages: list[dict]) -> str:
    return "\n\n".join(msg["content"] for msg in messages)


def _clean(messages: list[dict]) -> list[dict]:
    return [{"role": msg["role"], "content": msg["content"]} for msg in messages]


def convert_record(rec: dict, *, method: str, template: str) -> dict:
    """One normalised record (contracts.py) → one AutoTrain row for ``method``."""
    templated = template != "none"
    if method == "sft":
        if "text" in rec:
            return {"text": rec["text"]}
        return {"messages": _clean(rec["messages"])} if templated else {"text": _plain(rec["messages"])}
    prompt, chosen, rejected = _clean(rec["prompt"]), _clean(rec["chosen"]), _clean(rec["rejected"])
    if method == "reward":
        # the reward model scores whole conversations
        if templated:
            return {"chosen": prompt + chosen, "rejected": prompt + rejected}
        return {"chosen": _plain(prompt + chosen), "rejected": _plain(prompt + rejected)}
    if templated:
        # AutoTrain takes the prompt from the chosen conversation's first turns and
        # templates the last turn of each side; its prompt column is then overwritten.
        return {"prompt": _plain(prompt), "chosen": prompt + chosen, "rejected": prompt + rejected}
    return {"prompt": _plain(prompt), "chosen": _plain(chosen), "rejected": _plain(rejected)}


def _weighted(rec: dict) -> bool:
    return any("weight" in msg for key in ("messages", "chosen") for msg in rec.get(key, ()))


def write_training_data(records: Iterable[dict], dest: Path, *, method: str, template: str) -> int:
    """Write ``dest`` (``<data dir>/train.jsonl``) for AutoTrain; returns the row count."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(dest, "w", encoding="utf-8") as f:
        for i, rec in enumerate(records, 1):
            if _weighted(rec):
                raise StepError(
                    f"train.jsonl row {i} weights its messages ('weight'), which AutoTrain cannot express",
                    hint="remove the weights from the data, or train with backend: trl",
                )
            f.write(json.dumps(convert_record(rec, method=method, template=template), ensure_ascii=False) + "\n")
            n += 1
    if n == 0:
        raise StepError("the prepared training split is empty: nothing to train on")
    return n


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
