"""The prepare step's normalised JSONL turned into the dataset shapes TRL trains on.

SFT on chat records trains on the answer only: a conversation that ends with an assistant
turn becomes TRL's conversational prompt/completion pair (earlier turns are the prompt), so
the loss counts the final answer's tokens, not the system prompt and question. If any
conversation does not end with an assistant turn, all are kept as ``messages`` and TRL
trains on whole conversations. ``text`` records train on the whole text.

Tool calls reach TRL as they are in the record (``tool_calls`` with JSON-string
arguments, ``tool`` messages); a record's ``tools`` become a ``tools`` column of JSON text,
which TRL passes to the chat template. KTO trains on prompt/completion/label records;
GRPO on prompts, with the reference answer in a ``reference`` column for the rewards.
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


def _with_tools(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if any(r.get("tools") for r in rows):
        for rec, row in zip(records, rows, strict=True):
            rec["tools"] = json.dumps(row["tools"]) if row.get("tools") else None
    return records


def sft_records(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    if all("messages" in r for r in rows):
        if all(len(r["messages"]) >= 2 and r["messages"][-1].get("role") == "assistant" for r in rows):
            return _with_tools([{"prompt": r["messages"][:-1], "completion": [r["messages"][-1]]} for r in rows], rows)
        return _with_tools([{"messages": r["messages"]} for r in rows], rows)
    if all("text" in r for r in rows):
        return [{"text": r["text"]} for r in rows]
    raise StepError(
        f"{path}: sft needs chat, instruction or text records (messages or text)",
        hint="preference data trains with trainer.method: dpo or orpo",
    )


def preference_records(rows: list[dict[str, Any]], path: Path, method: str) -> list[dict[str, Any]]:
    if not all({"prompt", "chosen", "rejected"} <= r.keys() for r in rows):
        raise StepError(
            f"{path}: {method} needs preference records (prompt, chosen, rejected)",
            hint="set dataset.format: preference, or train chat data with trainer.method: sft",
        )
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]


def kto_records(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    if not all({"prompt", "completion", "label"} <= r.keys() for r in rows):
        raise StepError(
            f"{path}: kto needs binary preference records (prompt, completion, label)",
            hint="set dataset.format: binary_preference",
        )
    return [{"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["label"])} for r in rows]


def grpo_records(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """The prompt (every turn before the last assistant answer) and that answer as the reference."""
    out = []
    for n, r in enumerate(rows, 1):
        messages = r.get("messages") or []
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            raise StepError(
                f"{path}:{n}: grpo needs a prompt and a reference answer (an assistant turn after it)",
                hint="use chat, instruction, sharegpt or alpaca data",
            )
        out.append({"prompt": messages[:last], "reference": messages[last].get("content") or ""})
    return out


def load_split(path: Path | None, method: str) -> Any | None:
    """A ``datasets.Dataset`` for one split file, or None if the file is missing or empty."""
    if path is None or not Path(path).exists():
        return None
    rows = read_jsonl(Path(path))
    if not rows:
        return None
    from datasets import Dataset

    if method == "sft":
        records = sft_records(rows, path)
    elif method == "kto":
        records = kto_records(rows, path)
    elif method == "grpo":
        records = grpo_records(rows, path)
    else:
        records = preference_records(rows, path, method)
    return Dataset.from_list(records)
