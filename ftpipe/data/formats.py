"""How each source format becomes a normalised record (the shapes in ``ftpipe.contracts``).

Formats: ``chat`` (OpenAI-style ``messages``), ``instruction`` (prompt/completion),
``preference`` (prompt/chosen/rejected), ``binary_preference`` (prompt/completion/label,
KTO's unpaired data), ``sharegpt`` (``conversations`` of ``from``/``value`` turns),
``alpaca`` (instruction/input/output/system) and ``text``.

Messages keep OpenAI's tool-calling fields: an assistant turn may carry ``tool_calls``
(``[{id, type: function, function: {name, arguments}}]``, content then optional), a
``tool`` turn answers one with ``tool_call_id``; a row's ``tools`` column (function
schemas) is kept as ``tools`` on the record. Content given as a list of text parts
(``[{type: text, text: ...}]``) is joined into one string.

Every problem raises ``Invalid(rule, message)``; the prepare step adds file and row.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
_PLAIN_ROLES = ("system", "user", "assistant")  # roles a message of role and text alone may have
# ShareGPT speaker names (``from``) and the role each becomes; LLaMA-Factory's
# function_call/observation turns are a tool call and its result.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
    "observation": "tool",
    "function_call": "assistant",
}
TRUE_LABELS = (True, 1, "true", "True", "1", "desirable", "good")
FALSE_LABELS = (False, 0, "false", "False", "0", "undesirable", "bad")


class Invalid(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, message


# --------------------------------------------------------------------------- message parts


def content_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content, 1):
            if isinstance(part, str):
                texts.append(part)
                continue
            if (
                not isinstance(part, dict)
                or part.get("type", "text") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise Invalid(
                    "content part",
                    f"{where} content part {j} must be {{type: text, text: ...}}, "
                    f"got {kind!r} (only text parts can be trained on)",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise Invalid("wrong type", f"{where} content must be text, got {type(content).__name__}")


def tool_calls(value: Any, where: str) -> list[dict]:
    """OpenAI ``tool_calls``, checked; ``arguments`` kept as a JSON string (as OpenAI sends it)."""
    if not isinstance(value, list) or not value:
        raise Invalid("tool call", f"{where} tool_calls must be a non-empty list")
    out = []
    for j, call in enumerate(value, 1):
        at = f"{where} tool call {j}"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise Invalid("tool call", f"{at} needs function: {{name, arguments}}")
        args = fn.get("arguments", "{}")
        if isinstance(args, dict):
            args = json.dumps(args, ensure_ascii=False)
        if not isinstance(args, str):
            raise Invalid("tool call", f"{at}: arguments must be a JSON object or a JSON string")
        try:
            parsed = json.loads(args)
        except json.JSONDecodeError as exc:
            raise Invalid("tool call", f"{at}: arguments are not valid JSON ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise Invalid("tool call", f"{at}: arguments must be a JSON object")
        out.append(
            {
                "id": str(call.get("id") or f"call_{j}"),
                "type": "function",
                "function": {"name": fn["name"], "arguments": args},
            }
        )
    return out


def messages(value: Any, field_name: str, *, need_assistant: bool) -> list[dict]:
    """A list of OpenAI-style messages, checked and cleaned."""
    if not isinstance(value, list):
        raise Invalid(
            "wrong type", f"'{field_name}' must be a list of {{role, content}} messages, got {type(value).__name__}"
        )
    if not value:
        raise Invalid("empty conversation", f"'{field_name}' is an empty list")
    out = []
    for i, msg in enumerate(value, 1):
        if type(msg) is dict and len(msg) == 2:  # the common {role, content}: what _message makes of it
            role, content = msg.get("role"), msg.get("content")
            if role in _PLAIN_ROLES and type(content) is str and content.strip():
                out.append({"role": role, "content": content})
                continue
        if not isinstance(msg, dict):
            raise Invalid(
                "wrong type", f"message {i} must be an object with role and content, got {type(msg).__name__}"
            )
        role = msg.get("role")
        if role is None:
            raise Invalid("missing role", f"message {i} has no 'role'")
        if role not in ROLES:
            raise Invalid("unknown role", f"message {i} has unknown role {role!r} (allowed: {', '.join(ROLES)})")
        out.append(_message(msg, role, f"message {i}"))
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise Invalid("no assistant turn", "no assistant message: there is nothing to learn from this example")
    return out


def _message(msg: dict, role: str, at: str) -> dict:
    calls = tool_calls(msg["tool_calls"], at) if msg.get("tool_calls") and role == "assistant" else None
    if msg.get("tool_calls") and role != "assistant":
        raise Invalid("tool call", f"{at} ({role}): only assistant messages make tool calls")
    content = msg.get("content")
    if content is None and calls:
        clean: dict[str, Any] = {"role": role, "content": None}
    else:
        text = content_text(content, f"{at} ({role})")
        if not text.strip():
            raise Invalid("empty content", f"{at} ({role}) has empty content")
        clean = {"role": role, "content": text}
    if calls:
        clean["tool_calls"] = calls
    if role == "tool":
        if not isinstance(msg.get("tool_call_id"), str) or not msg["tool_call_id"]:
            raise Invalid("tool call", f"{at} (tool) needs the tool_call_id of the call it answers")
        clean["tool_call_id"] = msg["tool_call_id"]
    if isinstance(msg.get("name"), str) and role in ("tool", "user", "system"):
        clean["name"] = msg["name"]
    if "weight" in msg and role == "assistant":
        clean["weight"] = msg["weight"]
    return clean


def check_tool_ids(msgs: list[dict]) -> None:
    """Each tool result answers a call made earlier in the conversation."""
    made: set[str] = set()
    for i, m in enumerate(msgs, 1):
        for call in m.get("tool_calls") or ():
            made.add(call["id"])
        if m["role"] == "tool" and m["tool_call_id"] not in made:
            raise Invalid(
                "tool call",
                f"message {i} (tool) answers tool_call_id {m['tool_call_id']!r}, "
                "which no earlier assistant message called",
            )


def tools_column(value: Any, name: str) -> list[dict] | None:
    """The row's function schemas (OpenAI ``tools``), or None when the column is empty."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise Invalid("tools", f"'{name}' is not valid JSON ({exc.msg})") from None
    if not isinstance(value, list):
        raise Invalid("tools", f"'{name}' must be a list of tool definitions, got {type(value).__name__}")
    out = []
    for j, tool in enumerate(value, 1):
        if isinstance(tool, dict) and "function" not in tool and "name" in tool:
            tool = {"type": "function", "function": tool}  # a bare function schema
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise Invalid("tools", f"'{name}' item {j} must be {{type: function, function: {{name, parameters}}}}")
        out.append({"type": "function", "function": fn})
    return out


# --------------------------------------------------------------------------- formats


def get(row: dict, fmt_field: str, columns: dict[str, str], *, optional: bool = False) -> Any:
    col = columns.get(fmt_field, fmt_field)
    if col not in row:
        if optional:
            return None
        mapped = f" (mapped from dataset.columns.{fmt_field})" if fmt_field in columns else ""
        have = ", ".join(sorted(map(str, row))[:8])
        raise Invalid("missing column", f"missing column '{col}'{mapped}; the row has: {have}")
    return row[col]


def text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise Invalid("wrong type", f"'{name}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise Invalid("empty content", f"'{name}' is empty")
    return value


def with_system(msgs: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt and (not msgs or msgs[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *msgs]
    return msgs


def chat(row: dict, columns: dict[str, str], system_prompt: str | None) -> dict:
    name = columns.get("messages", "messages")
    msgs = messages(get(row, "messages", columns), name, need_assistant=True)
    check_tool_ids(msgs)
    record: dict[str, Any] = {"messages": with_system(msgs, system_prompt)}
    tools = tools_column(get(row, "tools", columns, optional=True), columns.get("tools", "tools"))
    if tools:
        record["tools"] = tools
    return record


def sharegpt(row: dict, columns: dict[str, str], system_prompt: str | None) -> dict:
    """``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}``; the
    keys are configurable (``columns: {conversations: ..., from: role, value: content}``)."""
    conv_col = columns.get("conversations", "conversations")
    role_key, value_key = columns.get("from", "from"), columns.get("value", "value")
    turns = get(row, "conversations", columns)
    if not isinstance(turns, list):
        raise Invalid(
            "wrong type",
            f"'{conv_col}' must be a list of {{{role_key}, {value_key}}} turns, got {type(turns).__name__}",
        )
    if not turns:
        raise Invalid("empty conversation", f"'{conv_col}' is an empty list")
    msgs: list[dict] = []
    pending: list[str] = []  # ids of function calls not yet answered
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise Invalid(
                "wrong type",
                f"turn {i} must be an object with {role_key!r} and {value_key!r}, got {type(turn).__name__}",
            )
        speaker = turn.get(role_key)
        if speaker is None:
            raise Invalid("missing role", f"turn {i} has no {role_key!r}")
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise Invalid(
                "unknown role", f"turn {i} has unknown {role_key} {speaker!r} (allowed: {', '.join(SHAREGPT_ROLES)})"
            )
        if value_key not in turn:
            raise Invalid("missing content", f"turn {i} ({speaker}) has no {value_key!r}")
        value = turn[value_key]
        if speaker == "function_call":
            call = _function_call(value, f"turn {i} (function_call)", len(msgs) + 1)
            pending.append(call["id"])
            msgs.append({"role": "assistant", "content": None, "tool_calls": [call]})
            continue
        if role == "tool":
            if not pending and not turn.get("tool_call_id"):
                raise Invalid("tool call", f"turn {i} ({speaker}) answers no earlier function_call")
            value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            msg = {"role": "tool", "content": value, "tool_call_id": turn.get("tool_call_id") or pending.pop(0)}
        else:
            msg = {"role": role, "content": value}
            if role == "assistant" and turn.get("tool_calls"):
                msg["tool_calls"] = turn["tool_calls"]
        msgs.append(_message(msg, role, f"turn {i}"))
    if not any(m["role"] == "assistant" for m in msgs):
        raise Invalid("no assistant turn", "no gpt turn: there is nothing to learn from this example")
    record: dict[str, Any] = {"messages": with_system(msgs, system_prompt)}
    extra_system = get(row, "system", columns, optional=True)
    if isinstance(extra_system, str) and extra_system.strip() and msgs[0]["role"] != "system":
        record["messages"] = [{"role": "system", "content": extra_system}, *msgs]
    tools = tools_column(get(row, "tools", columns, optional=True), columns.get("tools", "tools"))
    if tools:
        record["tools"] = tools
    return record


def _function_call(value: Any, at: str, n: int) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise Invalid("tool call", f"{at} must be JSON {{name, arguments}} ({exc.msg})") from None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise Invalid("tool call", f"{at} must be {{name, arguments}}")
    return tool_calls([{"id": f"call_{n}", "function": value}], at)[0]


def alpaca(row: dict, columns: dict[str, str], system_prompt: str | None) -> dict:
    """instruction (+ optional input, appended after a blank line) → output; an optional
    per-row ``system`` wins over ``dataset.system_prompt``."""
    instruction = text(get(row, "instruction", columns), columns.get("instruction", "instruction"))
    extra = get(row, "input", columns, optional=True)
    if extra is not None and not isinstance(extra, str):
        raise Invalid("wrong type", f"'{columns.get('input', 'input')}' must be text, got {type(extra).__name__}")
    output = text(get(row, "output", columns), columns.get("output", "output"))
    system = get(row, "system", columns, optional=True)
    if system is not None and not isinstance(system, str):
        raise Invalid("wrong type", f"'{columns.get('system', 'system')}' must be text, got {type(system).__name__}")
    prompt = instruction + (f"\n\n{extra}" if extra and extra.strip() else "")
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": with_system(msgs, system if system and system.strip() else system_prompt)}


def binary_preference(row: dict, columns: dict[str, str], system_prompt: str | None) -> dict:
    """KTO's unpaired data: a prompt, one completion and whether it is desirable."""
    raw_prompt = get(row, "prompt", columns)
    if isinstance(raw_prompt, str):
        prompt = [{"role": "user", "content": text(raw_prompt, columns.get("prompt", "prompt"))}]
    else:
        prompt = messages(raw_prompt, columns.get("prompt", "prompt"), need_assistant=False)
    raw = get(row, "completion", columns)
    if isinstance(raw, str):
        completion = [{"role": "assistant", "content": text(raw, columns.get("completion", "completion"))}]
    else:
        msgs = messages(raw, columns.get("completion", "completion"), need_assistant=True)
        completion = [m for m in msgs if m["role"] == "assistant"][-1:]
    label = get(row, "label", columns)
    if label in TRUE_LABELS and not isinstance(label, float):
        value = True
    elif label in FALSE_LABELS and not isinstance(label, float):
        value = False
    else:
        raise Invalid(
            "label", f"'{columns.get('label', 'label')}' must be true or false (desirable or not), got {label!r}"
        )
    return {"prompt": with_system(prompt, system_prompt), "completion": completion, "label": value}


NORMALISERS = {"chat": chat, "sharegpt": sharegpt, "alpaca": alpaca, "binary_preference": binary_preference}
