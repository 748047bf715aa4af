"""Training data as the services check it, and the double's notion of similarity (how a
"fine-tuned" model answers)."""

from __future__ import annotations

import json
import re
from typing import Any

# ---------------------------------------------------------------- tokens and similarity

TOKEN = re.compile(r"\w+|[^\w\s]")
WORD = re.compile(r"\w+")


def count_tokens(text: str) -> int:
    """Tokens as this double counts them: runs of word characters and single punctuation."""
    return len(TOKEN.findall(text))


def words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in WORD.findall(text))


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def nearest_answer(query: str, pairs: list[tuple[str, str]]) -> str | None:
    """The answer of the pair whose prompt shares most words with ``query`` (first wins)."""
    q = words(query)
    best, best_score = None, 0.0
    for prompt, answer in pairs:
        p = words(prompt)
        union = q | p
        score = len(q & p) / len(union) if union else 0.0
        if score > best_score:
            best, best_score = answer, score
    return best


def truncate_tokens(text: str, limit: int) -> str:
    spans = list(TOKEN.finditer(text))
    return text if len(spans) <= limit else text[: spans[limit - 1].end()] if limit > 0 else ""


# ---------------------------------------------------------------- training data checks

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
SFT_KEYS = {"messages", "tools", "functions", "parallel_tool_calls"}
DPO_KEYS = {"input", "preferred_output", "non_preferred_output"}


class DataError(Exception):
    pass


def check_message(msg: Any, where: str) -> None:
    if not isinstance(msg, dict):
        raise DataError(f"{where}: each message must be an object")
    unknown = set(msg) - MESSAGE_KEYS
    if unknown:
        raise DataError(f"{where}: unrecognized key {sorted(unknown)[0]!r}")
    role = msg.get("role")
    if role not in ROLES:
        raise DataError(f"{where}: invalid role {role!r}")
    content = msg.get("content")
    calls = msg.get("tool_calls") or msg.get("function_call")
    if content is None and role == "assistant" and calls:
        pass
    elif isinstance(content, list):
        if not content or not all(isinstance(p, dict) and "type" in p for p in content):
            raise DataError(f"{where}: content parts must be a non-empty list of typed parts")
    elif not isinstance(content, str) or not content.strip():
        raise DataError(f"{where}: content must be a non-empty string")
    if "weight" in msg:
        if role != "assistant":
            raise DataError(f"{where}: weight is only allowed on assistant messages")
        if msg["weight"] not in (0, 1) or isinstance(msg["weight"], bool):
            raise DataError(f"{where}: weight must be 0 or 1")


def sft_pairs(messages: Any, where: str, *, need_assistant: bool) -> list[tuple[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    pairs: list[tuple[str, str]] = []
    last_user: str | None = None
    for i, msg in enumerate(messages, 1):
        check_message(msg, f"{where}, message {i}")
        text = content_text(msg.get("content"))
        if msg["role"] == "user":
            last_user = text
        elif msg["role"] == "assistant" and last_user is not None and text:
            pairs.append((last_user, text))
    if need_assistant and not any(m.get("role") == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message")
    return pairs


def dpo_pairs(row: dict[str, Any], where: str) -> list[tuple[str, str]]:
    inp = row.get("input")
    if not isinstance(inp, dict):
        raise DataError(f"{where}: 'input' must be an object with 'messages'")
    sft_pairs(inp.get("messages"), f"{where}, input", need_assistant=False)
    outputs = {}
    for key in ("preferred_output", "non_preferred_output"):
        out = row.get(key)
        if not isinstance(out, list) or len(out) != 1:
            raise DataError(f"{where}: {key!r} must be a list with one assistant message")
        check_message(out[0], f"{where}, {key}")
        if out[0].get("role") != "assistant":
            raise DataError(f"{where}: {key!r} must hold an assistant message")
        outputs[key] = content_text(out[0].get("content"))
    users = [m for m in inp["messages"] if m.get("role") == "user"]
    if not users:
        raise DataError(f"{where}: input has no user message")
    return [(content_text(users[-1].get("content")), outputs["preferred_output"])]


def parse_training_data(content: bytes, method: str, *, min_examples: int) -> tuple[list[tuple[str, str]], int, int]:
    """Check a JSONL file as the service does; return (prompt/answer pairs, examples, tokens).

    Raises ``DataError`` with a line-numbered message on the first problem.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"file is not valid UTF-8 (byte {exc.start})") from None
    pairs: list[tuple[str, str]] = []
    examples = tokens = 0
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"Line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{where}: not valid JSON") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: each line must be a JSON object")
        keys = DPO_KEYS if method == "dpo" else SFT_KEYS
        unknown = set(row) - keys
        if unknown:
            raise DataError(f"{where}: unrecognized key {sorted(unknown)[0]!r} for {method} data")
        if method == "dpo":
            pairs += dpo_pairs(row, where)
        else:
            pairs += sft_pairs(row.get("messages"), where, need_assistant=True)
        examples += 1
        tokens += count_tokens(line)
    if examples < min_examples:
        raise DataError(f"Training file has {examples} example(s), but must have at least {min_examples} examples")
    return pairs, examples, tokens
