"""The prepare step's normalised JSONL turned into the dataset shapes TRL trains on.

SFT on chat records trains on the answer only: a conversation that ends with an assistant
turn becomes TRL's conversational prompt/completion pair (earlier turns are the prompt), so
the loss counts the final answer's tokens, not the system prompt and question. If any
conversation does not end with an assistant turn, all are kept as ``messages`` and TRL
trains on whole conversations. ``text`` records train on the whole text.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftpipe.errors import StepError


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise StepError(f"{path}:{n}: not JSON ({exc.msg})") from None
    return rows


def sft_records(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    if all("messages" in r for r in rows):
        if all(len(r["messages"]) >= 2 and r["messages"][-1].get("role") == "assistant" for r in rows):
            return [{"prompt": r["messages"][:-1], "completion": [r["messages"][-1]]} for r in rows]
        return [{"messages": r["messages"]} for r in rows]
    if all("text" in r for r in rows):
        return [{"text": r["text"]} for r in rows]
    raise StepError(f"{path}: sft needs chat, instruction or text records (messages or text)",
                    hint="preference data trains with trainer.method: dpo or orpo")


def preference_records(rows: list[dict[str, Any]], path: Path, method: str) -> list[dict[str, Any]]:
    if not all({"prompt", "chosen", "rejected"} <= r.keys() for r in rows):
        raise StepError(f"{path}: {method} needs preference records (prompt, chosen, rejected)",
                        hint="set dataset.format: preference, or train chat data with trainer.method: sft")
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def load_split(path: Path | None, method: str) -> Any | None:
    """A ``datasets.Dataset`` for one split file, or None if the file is missing or empty."""
    if path is None or not Path(path).exists():
        return None
    rows = read_jsonl(Path(path))
    if not rows:
        return None
    from datasets import Dataset

    records = sft_records(rows, path) if method == "sft" else preference_records(rows, path, method)
    return Dataset.from_list(records)
