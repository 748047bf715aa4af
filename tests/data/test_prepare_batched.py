"""The prepare step renders, tokenizes and writes in chunks, on worker threads (issue 19);
it must write exactly what a row-by-row prepare writes. The reference here goes one row at
a time through the public transformers API (``apply_chat_template`` then the tokenizer),
de-duplicates on sorted-keys JSON and reports too-long rows at the end of each batch of
``BATCH`` kept rows, as the step always has; the step's files must equal it byte for byte."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from ftpipe.contracts import StepResult
from ftpipe.data import prepare
from ftpipe.data.formats import Invalid
from ftpipe.data.readers import RowError, read_local
from ftpipe.data.tokens import record_messages, record_text
from ftpipe.engine import execute
from ftpipe.progress import Reporter

pytest.importorskip("transformers")

MAX_LEN = 120
SYSTEM = "You are a helpful cook."
LONG = " ".join(["simmer the onions slowly with butter and thyme"] * 30)


# --------------------------------------------------------------------------- tricky rows


def _tools(i: int, reorder: bool = False) -> list[dict]:
    fn = {"name": "convert", "description": f"units {i % 3}", "parameters": {"type": "object", "properties": {}}}
    if reorder:  # the same schema, keys in another order: still a duplicate
        fn = dict(reversed(list(fn.items())))
    return [{"type": "function", "function": fn}]


def _chat_row(i: int) -> dict | str:
    # Problems are sparse, so the 30 shown span chunks: too-long rows of one chunk must come
    # before the invalid rows of the next, and "invalid JSON" first appears late.
    if i % 151 == 3 and i > 700:
        return '{"messages": [{"role": "user", "content": "cut sho'  # broken JSON
    if i % 89 == 5:
        return [
            {"messages": [{"role": "user", "content": f"q{i}"}]},  # no assistant turn
            {"messages": [{"role": "chef", "content": "x"}, {"role": "assistant", "content": "y"}]},
            {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]},
        ][i % 4]
    if i % 11 == 7:
        return _chat_row(i - 7)  # an exact duplicate
    if i % 19 == 2:
        # row 25 again (tools, no weights), its tool schema's keys in another order: a duplicate
        return {"messages": _chat_row(25)["messages"], "tools": _tools(25, reorder=True)}  # type: ignore[index]
    msgs: list[dict] = []
    if i % 3 == 0:
        msgs.append({"role": "system", "content": f"Answer briefly ({i % 4})."})
    msgs.append(
        {"role": "user", "content": f"Recipe {i}: crème brûlée for {i % 9} people" + (LONG if i % 97 == 1 else "")}
    )
    if i % 5 == 0:
        msgs += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": f"c{i}", "type": "function", "function": {"name": "convert", "arguments": {"cups": i % 4}}}
                ],
            },  # fmt: skip
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"{i % 4 * 240} ml"},
        ]
    if i % 29 == 4:
        msgs[-1] = {"role": "user", "content": [{"type": "text", "text": "parts "}, "and a \u0000 byte"]}
    msgs.append({"role": "assistant", "content": f"cream, sugar, eggs ({i})"})
    if i % 4 == 2:  # multi-turn, the last answer weighted
        msgs += [{"role": "user", "content": "and vegan?"}, {"role": "assistant", "content": "coconut", "weight": 1}]
    if i % 23 == 6:
        msgs[-1]["weight"] = {"b": 1, "a": 0.5}
    row: dict = {"messages": msgs}
    if i % 5 == 0:
        row["tools"] = _tools(i)
    return row


def _sharegpt_row(i: int) -> dict | str:
    if i % 13 == 5:
        return {"conversations": [{"from": "human", "value": f"q{i}"}]}
    if i % 11 == 7:
        return _sharegpt_row(i - 7)
    turns = [{"from": "human", "value": f"How long for egg {i}?" + (LONG if i % 7 == 1 else "")}]
    if i % 5 == 0:
        turns += [
            {"from": "function_call", "value": json.dumps({"name": "timer", "arguments": {"minutes": i % 8}})},
            {"from": "observation", "value": {"ok": True}},
        ]
    turns.append({"from": "gpt", "value": f"{i % 8} minutes"})
    row: dict = {"conversations": turns}
    if i % 3 == 0:
        row["system"] = "Be exact."
    return row


def _alpaca_row(i: int) -> dict | str:
    if i % 13 == 5:
        return {"instruction": "", "output": "x"}
    if i % 11 == 7:
        return _alpaca_row(i - 7)
    row = {"instruction": f"Scale recipe {i}", "input": "" if i % 2 else f"for {i % 6} people", "output": "ok"}
    if i % 7 == 1:
        row["output"] = LONG
    if i % 3 == 0:
        row["system"] = "Be exact."
    return row


def _preference_row(i: int) -> dict | str:
    if i % 13 == 5:
        return {"prompt": "same", "chosen": "a", "rejected": "a"}
    if i % 11 == 7:
        return _preference_row(i - 7)
    prompt: str | list = f"Which oil for recipe {i}?"
    if i % 2:
        prompt = [{"role": "user", "content": prompt}]
    return {"prompt": prompt, "chosen": "olive" + (LONG if i % 7 == 1 else ""), "rejected": f"motor oil {i}"}


ROWS = {"chat": _chat_row, "sharegpt": _sharegpt_row, "alpaca": _alpaca_row, "preference": _preference_row}
METHOD = {"preference": "dpo"}


# --------------------------------------------------------------------------- reference


def _reference_count(tok, rec: dict, per_message: int) -> int:
    if "messages" in rec:
        convs = [rec["messages"]]
    elif "chosen" in rec:
        convs = [rec["prompt"] + rec["chosen"], rec["prompt"] + rec["rejected"]]
    else:
        convs = []
    try:
        texts = [tok.apply_chat_template(c, tokenize=False) for c in convs]
    except Exception:  # noqa: BLE001 - counted without the template, as the step does
        texts = []
    if texts:
        return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return len(tok(record_text(rec), add_special_tokens=False)["input_ids"]) + per_message * record_messages(rec)


def _reference(tok, data: Path, fmt: str) -> tuple[str, dict]:
    """train.jsonl and the stats of a one-row-at-a-time prepare (no validation/test split)."""
    sample = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    templ = len(tok.apply_chat_template(sample, tokenize=True)["input_ids"])
    plain = sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) for m in sample)
    per_message = max(0, math.ceil((templ - plain) / len(sample)))
    problems: list[str] = []
    invalid: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[str] = []
    tokens: list[int] = []
    duplicates = too_long = 0
    longest: dict = {"tokens": 0}
    batch: list[tuple[int, dict]] = []

    def problem(n: int, rule: str, message: str) -> None:
        invalid[rule] += 1
        if len(problems) < prepare.SHOW_PROBLEMS:
            problems.append(f"data.jsonl row {n}: {message}")

    def flush() -> None:
        nonlocal too_long, longest
        for n, rec in batch:
            ntok = _reference_count(tok, rec, per_message)
            if ntok > MAX_LEN:
                too_long += 1
                problem(n, "too long", f"{ntok} tokens, longer than max_seq_length {MAX_LEN}")
                continue
            if ntok > longest["tokens"]:
                longest = {"tokens": ntok, "where": f"data.jsonl row {n}"}
            kept.append(json.dumps(rec, ensure_ascii=False) + "\n")
            tokens.append(ntok)
        batch.clear()

    for _, n, row in read_local(data, None, "data.jsonl"):
        if isinstance(row, RowError):
            problem(n, "invalid JSON" if "JSON" in row.message else "wrong type", row.message)
            continue
        try:
            rec = prepare.normalise(row, fmt, {}, None if fmt == "preference" else SYSTEM)
        except Invalid as exc:
            problem(n, exc.rule, exc.message)
            continue
        key = json.dumps(rec, sort_keys=True)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        batch.append((n, rec))
        if len(batch) >= prepare.BATCH:
            flush()
    flush()
    stats = {
        "kept": len(kept),
        "duplicates_removed": duplicates,
        "invalid": dict(invalid),
        "longest_example": longest,
        "problems_shown": problems,
        "train": {"rows": len(kept), "tokens": sum(tokens), "longest": max(tokens)},
        "too_long": too_long,
    }
    return "".join(kept), stats


# --------------------------------------------------------------------------- tests


def _only_prepare(step, ctx) -> StepResult:
    if step.kind == "prepare":
        return prepare.run_prepare(ctx)
    return StepResult()


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_chunked_prepare_writes_what_a_row_by_row_prepare_writes(tmp_path: Path, tokenizer, fmt: str) -> None:
    rows = [ROWS[fmt](i) for i in range(1, 2200)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    system = "" if fmt == "preference" else f"  system_prompt: {SYSTEM}\n"
    p = tmp_path / "p.yaml"
    p.write_text(
        f"version: 1\nname: batched\ndataset:\n  source: {{type: local, path: data.jsonl}}\n  format: {fmt}\n"
        f"{system}  split: {{validation: 0, test: 0}}\n  skip_invalid: true\n  max_seq_length: {MAX_LEN}\n"
        f"model: {{base: 'builtin:tiny'}}\ntrainer: {{backend: trl, method: {METHOD.get(fmt, 'sft')}}}\n"
    )
    out = execute(p, step_runner=_only_prepare, reporter=Reporter(quiet=True))
    assert out.exit_code == 0, out.record
    art = tmp_path / ".ftpipe" / out.record["steps"]["prepare"]["artifact"]
    stats = json.loads((art / "stats.json").read_text())

    want_train, want = _reference(tokenizer, data, fmt)
    assert want["kept"] > 2 * prepare.BATCH and want["duplicates_removed"] and want["too_long"]  # a fair test
    assert (art / "train.jsonl").read_text(encoding="utf-8") == want_train
    assert list(stats["invalid"].items()) == list(want["invalid"].items())  # same rules, same order
    for key in ("kept", "duplicates_removed", "longest_example", "problems_shown"):
        assert stats[key] == want[key], key
    assert stats["splits"]["train"] == want["train"]


def test_the_batch_renderer_renders_every_shipped_template_as_apply_chat_template_does(tokenizer) -> None:
    from ftpipe.data.template_tokens import BatchRenderer, conversations
    from ftpipe.models.chat_templates import CHAT_TEMPLATES

    records = [prepare.normalise(r, "chat", {}, SYSTEM) for r in map(_chat_row, range(1, 400)) if _valid(r)]
    convs = [c for rec in records for c in conversations(rec) or ()]
    # and one that tells a missing key from a None one (apply_chat_template drops None keys),
    # and whitespace at either end that trim_blocks/lstrip_blocks treat specially
    strict = "{% for m in messages %}{{ m.role }}{% if m.content is defined %}={{ m.content }}{% endif %};{% endfor %}"
    edges = {
        "none-aware": strict,
        "indented-start": "  {% for m in messages %}{{ m.role }}\n  {% endfor %}\n",
        "newline-start": "\n{% for m in messages %}{{ m.content }}{% endfor %}\n\n",
        "indented-end": "{% for m in messages %}{{ m.content }}{% endfor %}\n   ",
        "block-end": "{% for m in messages %}{{ m.content }}\n{% endfor %}\n  {% if true %}x{% endif %}\r\n",
    }
    own = tokenizer.chat_template
    try:
        for name, template in [*CHAT_TEMPLATES.items(), *edges.items()]:
            tokenizer.chat_template = template
            want = []
            for conv in convs:
                try:
                    want.append(tokenizer.apply_chat_template(conv, tokenize=False))
                except Exception:  # noqa: BLE001 - a template that rejects this conversation
                    want.append(None)
            renderer = BatchRenderer(tokenizer)
            got = [text for i in range(0, len(convs), 64) for text in renderer.render(convs[i : i + 64])]
            assert got == want, name
            assert renderer.macro is not None, f"{name}: rendered through apply_chat_template, not the macro"
    finally:
        tokenizer.chat_template = own


def _valid(row: dict | str) -> bool:
    try:
        prepare.normalise(json.loads(json.dumps(row)) if isinstance(row, dict) else {}, "chat", {}, SYSTEM)
    except Invalid:
        return False
    return True
