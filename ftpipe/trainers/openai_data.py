"""The prepared dataset in the JSONL the OpenAI / Azure OpenAI fine-tuning services read,
checked against their rules before anything is uploaded.

SFT lines are ``{"messages": [...]}`` (with the record's ``tools`` and its messages'
``tool_calls``/``tool_call_id`` kept, as the services accept them); DPO lines are ``{"input": {"messages": [...]},
"preferred_output": [...], "non_preferred_output": [...]}``. The checks are the public
cookbook's data-prep checks: a JSON object per line, roles from the allowed set, non-empty
string content, at least one assistant message, at least 10 training examples; examples
longer than the base model's context are counted and warned about (the service truncates
them). Every problem names its file, its 1-based line and the rule it breaks, and all of
them are reported at once: a dataset the service would reject is never uploaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.errors import StepError

ROLES = ("system", "user", "assistant", "tool")
MIN_TRAIN_EXAMPLES = 10
SHOW_PROBLEMS = 25
SPLITS = ("train", "validation")

# Tokens of context per training example, by fine-tunable snapshot (OpenAI and Azure names).
CONTEXT_LENGTHS: dict[str, int] = {
    "gpt-4.1-2025-04-14": 65_536,
    "gpt-4.1-mini-2025-04-14": 65_536,
    "gpt-4.1-nano-2025-04-14": 65_536,
    "gpt-4o-2024-08-06": 65_536,
    "gpt-4o-mini-2024-07-18": 65_536,
    "gpt-3.5-turbo-0125": 16_385,
    "gpt-3.5-turbo-1106": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-35-turbo-0125": 16_385,
    "gpt-35-turbo-1106": 16_385,
    "gpt-35-turbo-0613": 4_096,
}
_ALIASES = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
}


class _Problem(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, message


@dataclass(frozen=True)
class ServiceFile:
    split: str
    path: Path
    examples: int
    tokens: int  # estimated (4 characters a token, plus per-message overhead)
    too_long: tuple[int, ...]  # 1-based lines over the context length
    sha256: str


@dataclass(frozen=True)
class ServiceData:
    """The converted files (``validation`` is None when the split is empty)."""

    train: ServiceFile
    validation: ServiceFile | None
    context_length: int | None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def files(self) -> list[ServiceFile]:
        return [f for f in (self.train, self.validation) if f is not None]


def context_length_of(model: str, configured: int | None = None) -> int | None:
    """The context of ``model`` in tokens: the configured value, or the table's, or None."""
    if configured:
        return configured
    name = model
    if name.startswith("ft:"):  # ft:<base>:<org>:<suffix>:<id> (continued fine-tuning)
        name = name.split(":")[1]
    name = name.split(".ft-")[0]  # Azure: <base>.ft-<hex>
    name = _ALIASES.get(name, name)
    return CONTEXT_LENGTHS.get(name)


def estimate_tokens(line: dict) -> int:
    """The cookbook's count with a character estimate: 3 tokens a message, 3 for the reply."""

    def msgs(items: list[dict]) -> int:
        return sum(3 + math.ceil(len(m.get("content") or "") / 4) for m in items)

    if "messages" in line:
        return msgs(line["messages"]) + 3
    outputs = max(msgs(line.get("preferred_output", [])), msgs(line.get("non_preferred_output", [])))
    return msgs(line["input"]["messages"]) + outputs + 3


def to_service_line(record: Any, method: str) -> dict:
    """One normalised prepare record → one service line, or ``_Problem``."""
    if not isinstance(record, dict):
        raise _Problem("not an object", f"each line must be a JSON object, got {type(record).__name__}")
    if method == "dpo":
        if "messages" in record:
            raise _Problem(
                "wrong format",
                "method dpo trains on preference pairs (prompt/chosen/rejected); this row is a chat conversation",
            )
        if not all(k in record for k in ("prompt", "chosen", "rejected")):
            raise _Problem("wrong format", "a preference pair needs prompt, chosen and rejected")
        line: dict[str, Any] = {
            "input": {"messages": _messages(record["prompt"], "input")},
            "preferred_output": _one_reply(record["chosen"], "preferred_output"),
            "non_preferred_output": _one_reply(record["rejected"], "non_preferred_output"),
        }
        if not any(m["role"] == "user" for m in line["input"]["messages"]):
            raise _Problem("no user turn", "the input has no user message to answer")
        if line["preferred_output"][0]["content"] == line["non_preferred_output"][0]["content"]:
            raise _Problem("same outputs", "preferred and non-preferred outputs are the same")
        return line
    if "messages" not in record:
        what = "a text row" if "text" in record else "a preference pair" if "chosen" in record else "a row"
        raise _Problem("wrong format", f"method sft needs chat conversations ({{messages: [...]}}); this is {what}")
    messages = _messages(record["messages"], "messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise _Problem("no assistant turn", "no assistant message: there is nothing to learn from this example")
    line = {"messages": messages}
    if record.get("tools"):  # function schemas the conversation's tool calls use
        line["tools"] = record["tools"]
    return line


def _messages(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _Problem("empty conversation", f"'{where}' must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(value, 1):
        if not isinstance(msg, dict):
            raise _Problem("not an object", f"{where} message {i} must be an object with role and content")
        role = msg.get("role")
        if role not in ROLES:
            raise _Problem("unknown role", f"{where} message {i} has role {role!r} (allowed: {', '.join(ROLES)})")
        content = msg.get("content")
        calls = msg.get("tool_calls") if role == "assistant" else None
        if content is None and calls:
            clean: dict[str, Any] = {"role": role}  # a tool call with no text
        elif not isinstance(content, str):
            raise _Problem(
                "content not text",
                f"{where} message {i} ({role}) content must be a string, got {type(content).__name__}",
            )
        elif not content.strip():
            raise _Problem("empty content", f"{where} message {i} ({role}) has empty content")
        else:
            clean = {"role": role, "content": content}
        if calls:
            clean["tool_calls"] = calls
        if role == "tool":
            if not msg.get("tool_call_id"):
                raise _Problem("tool call", f"{where} message {i} (tool) has no tool_call_id")
            clean["tool_call_id"] = msg["tool_call_id"]
        if msg.get("name") and role in ("user", "system", "tool"):
            clean["name"] = msg["name"]
        if "weight" in msg:
            weight = msg["weight"]
            if role != "assistant":
                raise _Problem("weight", f"{where} message {i} ({role}): weight is allowed on assistant messages only")
            if isinstance(weight, bool) or weight not in (0, 1):
                raise _Problem("weight", f"{where} message {i}: weight must be 0 or 1, got {weight!r}")
            clean["weight"] = weight
        out.append(clean)
    return out


def _one_reply(value: Any, where: str) -> list[dict]:
    msgs = _messages(value, where)
    if len(msgs) != 1 or msgs[0]["role"] != "assistant":
        raise _Problem("wrong format", f"'{where}' must hold exactly one assistant message")
    if "content" not in msgs[0]:
        raise _Problem("wrong format", f"'{where}' must be a text answer, not a tool call")
    return [{"role": "assistant", "content": msgs[0]["content"]}]


def build_service_data(
    prepare_dir: Path,
    out_dir: Path,
    *,
    method: str,
    model: str,
    context_length: int | None = None,
    service: str = "OpenAI",
) -> ServiceData:
    """Convert and check the prepared splits; write ``out_dir/{train,validation}.jsonl``.

    Raises StepError listing every problem (file, line, rule) when the service would reject
    the data; returns the files and warnings otherwise."""
    context = context_length_of(model, context_length)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    counts: dict[str, int] = {}
    files: dict[str, ServiceFile] = {}
    for split in SPLITS:
        src = prepare_dir / f"{split}.jsonl"
        lines: list[str] = []
        too_long: list[int] = []
        tokens = 0
        if src.exists():
            with src.open(encoding="utf-8") as f:
                for n, raw in enumerate(f, 1):
                    if not raw.strip():
                        continue
                    try:
                        line = to_service_line(json.loads(raw), method)
                    except json.JSONDecodeError as exc:
                        problems.append(f"{src.name} line {n}: [not JSON] {exc.msg}")
                        continue
                    except _Problem as p:
                        problems.append(f"{src.name} line {n}: [{p.rule}] {p.message}")
                        continue
                    ntok = estimate_tokens(line)
                    tokens += ntok
                    if context and ntok > context:
                        too_long.append(n)
                    lines.append(json.dumps(line, ensure_ascii=False))
        counts[split] = len(lines)
        if split == "validation" and not lines:
            continue
        data = "".join(x + "\n" for x in lines).encode("utf-8")
        path = out_dir / f"{split}.jsonl"
        path.write_bytes(data)
        files[split] = ServiceFile(split, path, len(lines), tokens, tuple(too_long), hashlib.sha256(data).hexdigest())
    if counts["train"] < MIN_TRAIN_EXAMPLES and not any(p.startswith("train.jsonl") for p in problems):
        problems.append(
            f"train.jsonl: [too few examples] {counts['train']} training example"
            f"{'' if counts['train'] == 1 else 's'}; the service needs at least {MIN_TRAIN_EXAMPLES}"
        )
    if problems:
        shown = problems[:SHOW_PROBLEMS]
        more = len(problems) - len(shown)
        raise StepError(
            f"{service} would reject this training data, so nothing was uploaded "
            f"({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
            + "\n".join(f"  {p}" for p in shown)
            + (f"\n  ... and {more} more" if more else ""),
            hint=f"the line numbers are those of the prepared splits in {prepare_dir}; fix the source rows "
            "(or set dataset.skip_invalid) and run again",
        )
    warnings = []
    for sf in files.values():
        if sf.too_long:
            lines_s = ", ".join(map(str, sf.too_long[:10])) + (", ..." if len(sf.too_long) > 10 else "")
            warnings.append(
                f"{len(sf.too_long)} of {sf.examples} {sf.split} examples are longer than {model}'s "
                f"{context:,}-token context (estimated); the service truncates them "
                f"({sf.path.name} lines {lines_s})"
            )
    if context is None:
        warnings.append(
            f"the context length of {model} is not known: examples were not checked for length "
            "(set trainer.context_length to check them)"
        )
    return ServiceData(files["train"], files.get("validation"), context, tuple(warnings))
