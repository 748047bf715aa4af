"""ShareGPT, Alpaca, binary preference (KTO), tool calls, content parts and mixtures,
through the real prepare step: each malformed row is reported with its row number and
what is wrong; a 0.7/0.3 mixture comes out in those proportions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ftpipe.contracts import StepResult
from ftpipe.engine import execute
from ftpipe.progress import Reporter


def _only_prepare(step, ctx) -> StepResult:
    if step.kind == "prepare":
        from ftpipe.data.prepare import run_prepare

        return run_prepare(ctx)
    return StepResult()


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _pipeline(tmp_path: Path, dataset: str, *, backend: str = "trl", method: str = "sft") -> Path:
    p = tmp_path / "p.yaml"
    model = "gpt-4o-mini" if backend == "openai" else "builtin:tiny"
    p.write_text(
        f"version: 1\nname: fmt\ndataset:\n{dataset}  min_examples: 3\nmodel:\n  base: {model}\n"
        f"trainer:\n  backend: {backend}\n  method: {method}\n"
    )
    return p


def _prepare(p: Path) -> tuple[int, dict, Path | None]:
    out = execute(p, step_runner=_only_prepare, reporter=Reporter(quiet=True))
    step = out.record["steps"]["prepare"]
    art = p.parent / ".ftpipe" / step["artifact"] if step.get("artifact") else None
    return out.exit_code, step, art


def _records(art: Path, split: str = "train") -> list[dict]:
    return [json.loads(line) for line in (art / f"{split}.jsonl").read_text().splitlines()]


def _all_records(art: Path) -> list[dict]:
    return [r for s in ("train", "validation", "test") for r in _records(art, s)]


def _sg(i: int, **extra: Any) -> dict:
    return {
        "conversations": [
            {"from": "system", "value": "Be kind."},
            {"from": "human", "value": f"q{i}"},
            {"from": "gpt", "value": f"a{i}"},
        ],
        **extra,
    }


# --------------------------------------------------------------------------- sharegpt


def test_sharegpt_becomes_chat_messages(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "d.jsonl", [_sg(i) for i in range(12)])
    code, step, art = _prepare(_pipeline(tmp_path, "  source: {type: local, path: d.jsonl}\n  format: sharegpt\n"))
    assert code == 0, step
    recs = _all_records(art)
    assert len(recs) == 12
    assert {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "q3"},
            {"role": "assistant", "content": "a3"},
        ]
    } in recs


def test_sharegpt_with_configured_keys_and_function_calls(tmp_path: Path) -> None:
    rows = []
    for i in range(10):
        rows.append(
            {
                "chat": [
                    {"role": "human", "text": f"weather in town {i}?"},
                    {"role": "function_call", "text": json.dumps({"name": "weather", "arguments": {"town": i}})},
                    {"role": "observation", "text": "sunny"},
                    {"role": "gpt", "text": f"It is sunny in town {i}."},
                ],
                "tools": json.dumps([{"name": "weather", "parameters": {"type": "object"}}]),
            }
        )
    _write_jsonl(tmp_path / "d.jsonl", rows)
    ds = (
        "  source: {type: local, path: d.jsonl}\n  format: sharegpt\n"
        "  columns: {conversations: chat, from: role, value: text}\n"
    )
    code, step, art = _prepare(_pipeline(tmp_path, ds))
    assert code == 0, step
    rec = next(r for r in _all_records(art) if "town 4" in r["messages"][0]["content"])
    call = rec["messages"][1]
    assert call["role"] == "assistant" and call["content"] is None
    assert call["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"town": 4}'}
    assert rec["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": call["tool_calls"][0]["id"]}
    assert rec["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"conversations": "hi"}, "row 3: 'conversations' must be a list of {from, value} turns, got str"),
        ({"conversations": []}, "row 3: 'conversations' is an empty list"),
        ({"conversations": [{"from": "bot", "value": "x"}]}, "row 3: turn 1 has unknown from 'bot'"),
        ({"conversations": [{"value": "x"}]}, "row 3: turn 1 has no 'from'"),
        ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "y"}]}, "row 3: turn 1 (human) has no 'value'"),
        ({"conversations": [{"from": "human", "value": "x"}]}, "row 3: no gpt turn"),
        (
            {"conversations": [{"from": "human", "value": " "}, {"from": "gpt", "value": "y"}]},
            "row 3: turn 1 (user) has empty content",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "x"},
                    {"from": "observation", "value": "y"},
                    {"from": "gpt", "value": "z"},
                ]
            },
            "row 3: turn 2 (observation) answers no earlier function_call",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "x"},
                    {"from": "function_call", "value": "{oops"},
                    {"from": "gpt", "value": "z"},
                ]
            },
            "row 3: turn 2 (function_call) must be JSON {name, arguments}",
        ),
        ({"messages": []}, "row 3: missing column 'conversations'"),
    ],
)
def test_sharegpt_malformed_rows(tmp_path: Path, bad: Any, message: str) -> None:
    _write_jsonl(tmp_path / "d.jsonl", [_sg(1), _sg(2), bad, *[_sg(i) for i in range(3, 10)]])
    code, step, _ = _prepare(_pipeline(tmp_path, "  source: {type: local, path: d.jsonl}\n  format: sharegpt\n"))
    assert code == 1
    assert f"d.jsonl {message}" in step["error"], step["error"]


# --------------------------------------------------------------------------- alpaca


def test_alpaca_instruction_input_output_system(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"Add {i} and 1.", "input": "" if i % 2 else f"Show the sum of {i}.", "output": f"{i + 1}"}
        for i in range(10)
    ]
    rows.append({"instruction": "Greet.", "output": "Hello!", "system": "You are terse."})
    _write_jsonl(tmp_path / "d.jsonl", rows)
    ds = "  source: {type: local, path: d.jsonl}\n  format: alpaca\n  system_prompt: You add numbers.\n"
    code, step, art = _prepare(_pipeline(tmp_path, ds))
    assert code == 0, step
    recs = {r["messages"][-1]["content"]: r["messages"] for r in _all_records(art)}
    assert recs["4"] == [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "Add 3 and 1."},
        {"role": "assistant", "content": "4"},
    ]  # an empty input adds nothing
    assert recs["1"][1]["content"] == "Add 0 and 1.\n\nShow the sum of 0."
    assert recs["Hello!"][0] == {"role": "system", "content": "You are terse."}  # the row's system wins


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"input": "x", "output": "y"}, "row 2: missing column 'instruction'"),
        ({"instruction": "x", "input": "y"}, "row 2: missing column 'output'"),
        ({"instruction": "  ", "output": "y"}, "row 2: 'instruction' is empty"),
        ({"instruction": "x", "input": 5, "output": "y"}, "row 2: 'input' must be text, got int"),
        ({"instruction": "x", "output": ["y"]}, "row 2: 'output' must be text, got list"),
    ],
)
def test_alpaca_malformed_rows(tmp_path: Path, bad: dict, message: str) -> None:
    good = [{"instruction": f"i{i}", "output": f"o{i}"} for i in range(10)]
    _write_jsonl(tmp_path / "d.jsonl", [good[0], bad, *good[1:]])
    code, step, _ = _prepare(_pipeline(tmp_path, "  source: {type: local, path: d.jsonl}\n  format: alpaca\n"))
    assert code == 1
    assert f"d.jsonl {message}" in step["error"], step["error"]


# --------------------------------------------------------------------------- binary preference


def test_binary_preference_records(tmp_path: Path) -> None:
    rows = [{"q": f"p{i}", "answer": f"c{i}", "ok": i % 3 != 0} for i in range(10)]
    rows.append(
        {"q": [{"role": "user", "content": "hi"}], "answer": [{"role": "assistant", "content": "yo"}], "ok": "false"}
    )
    _write_jsonl(tmp_path / "d.jsonl", rows)
    ds = (
        "  source: {type: local, path: d.jsonl}\n  format: binary_preference\n"
        "  columns: {prompt: q, completion: answer, label: ok}\n"
    )
    code, step, art = _prepare(_pipeline(tmp_path, ds, method="kto"))
    assert code == 0, step
    recs = _all_records(art)
    assert {
        "prompt": [{"role": "user", "content": "p3"}],
        "completion": [{"role": "assistant", "content": "c3"}],
        "label": False,
    } in recs
    assert {
        "prompt": [{"role": "user", "content": "hi"}],
        "completion": [{"role": "assistant", "content": "yo"}],
        "label": False,
    } in recs
    assert sum(r["label"] for r in recs) == 6


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"prompt": "p", "completion": "c", "label": "maybe"}, "row 2: 'label' must be true or false"),
        ({"prompt": "p", "completion": "c", "label": 0.5}, "row 2: 'label' must be true or false"),
        ({"prompt": "p", "completion": "c"}, "row 2: missing column 'label'"),
        ({"prompt": "p", "completion": " ", "label": True}, "row 2: 'completion' is empty"),
        ({"prompt": 3, "completion": "c", "label": True}, "row 2: 'prompt' must be a list of {role, content} messages"),
    ],
)
def test_binary_preference_malformed_rows(tmp_path: Path, bad: dict, message: str) -> None:
    good = [{"prompt": f"p{i}", "completion": f"c{i}", "label": bool(i % 2)} for i in range(10)]
    _write_jsonl(tmp_path / "d.jsonl", [good[0], bad, *good[1:]])
    ds = "  source: {type: local, path: d.jsonl}\n  format: binary_preference\n"
    code, step, _ = _prepare(_pipeline(tmp_path, ds, method="kto"))
    assert code == 1
    assert f"d.jsonl {message}" in step["error"], step["error"]


# --------------------------------------------------------------------------- tool calls, content parts


def _tool_row(i: int) -> dict:
    return {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": f"town {i}?"}],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": "weather", "arguments": json.dumps({"town": i})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": f"c{i}", "content": "sunny"},
            {"role": "assistant", "content": f"Sunny in town {i}."},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }


def test_tool_calls_and_content_parts_are_kept(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "d.jsonl", [_tool_row(i) for i in range(10)])
    code, step, art = _prepare(_pipeline(tmp_path, "  source: {type: local, path: d.jsonl}\n"))
    assert code == 0, step
    rec = next(r for r in _all_records(art) if r["messages"][0]["content"] == "Weather in town 5?")
    assert rec["messages"][1]["tool_calls"] == [
        {"id": "c5", "type": "function", "function": {"name": "weather", "arguments": '{"town": 5}'}}
    ]
    assert rec["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "c5"}
    assert rec["tools"][0]["function"]["name"] == "weather"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["messages"][2].pop("tool_call_id"), "message 3 (tool) needs the tool_call_id"),
        (lambda r: r["messages"][2].update(tool_call_id="zz"), "message 3 (tool) answers tool_call_id 'zz', which no"),
        (
            lambda r: r["messages"][1]["tool_calls"][0]["function"].update(arguments="{bad"),
            "message 2 tool call 1: arguments are not valid JSON",
        ),
        (lambda r: r["messages"][1]["tool_calls"][0].pop("function"), "message 2 tool call 1 needs function"),
        (
            lambda r: r["messages"][0].update(content=[{"type": "image_url", "image_url": {"url": "x"}}]),
            "message 1 (user) content part 1 must be {type: text, text: ...}, got 'image_url'",
        ),
        (lambda r: r.update(tools={"name": "weather"}), "'tools' must be a list of tool definitions, got dict"),
        (
            lambda r: r["messages"][0].update(tool_calls=r["messages"][1]["tool_calls"]),
            "message 1 (user): only assistant messages make tool calls",
        ),
    ],
)
def test_tool_call_malformed_rows(tmp_path: Path, mutate: Any, message: str) -> None:
    bad = _tool_row(99)
    mutate(bad)
    _write_jsonl(tmp_path / "d.jsonl", [_tool_row(0), _tool_row(1), bad, *[_tool_row(i) for i in range(2, 10)]])
    code, step, _ = _prepare(_pipeline(tmp_path, "  source: {type: local, path: d.jsonl}\n"))
    assert code == 1
    assert f"d.jsonl row 3: {message}" in step["error"], step["error"]


# --------------------------------------------------------------------------- mixtures


def test_mixture_of_two_formats_has_the_weighted_proportions(tmp_path: Path) -> None:
    n = 600
    _write_jsonl(
        tmp_path / "sg.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": f"sg question {i}"},
                    {"from": "gpt", "value": f"sg answer {i}"},
                ]
            }
            for i in range(n)
        ],
    )
    _write_jsonl(
        tmp_path / "al.jsonl", [{"instruction": f"al question {i}", "output": f"al answer {i}"} for i in range(n)]
    )
    ds = (
        "  sources:\n"
        "    - {source: {type: local, path: sg.jsonl}, format: sharegpt, weight: 0.7, name: forum}\n"
        "    - {source: {type: local, path: al.jsonl}, format: alpaca, weight: 0.3, name: tasks}\n"
        "  mix: {seed: 7}\n"
    )
    p = _pipeline(tmp_path, ds)
    code, step, art = _prepare(p)
    assert code == 0, step
    train = _records(art)
    forum = sum(r["messages"][0]["content"].startswith("sg ") for r in train)
    share = forum / len(train)
    # The first source to run out is the 0.7 one (n rows); about n / 0.7 rows are drawn in all.
    assert len(_all_records(art)) == pytest.approx(n / 0.7, rel=0.08)
    assert abs(share - 0.7) < 4 * math.sqrt(0.7 * 0.3 / len(train)), share
    stats = json.loads((art / "stats.json").read_text())
    assert set(stats["sources"]) == {"forum", "tasks"}
    assert stats["sources"]["forum"]["weight"] == 0.7 and stats["sources"]["tasks"]["format"] == "alpaca"
    assert stats["sources"]["forum"]["train"] == forum
    assert stats["sources"]["forum"]["kept"] + stats["sources"]["tasks"]["kept"] == stats["kept"]
    assert stats["sources"]["forum"]["rows_read"] == n
    # Seeded: the same mixture again.
    out = execute(p, step_runner=_only_prepare, reporter=Reporter(quiet=True), force=True)
    art2 = p.parent / ".ftpipe" / out.record["steps"]["prepare"]["artifact"]
    assert (art2 / "train.jsonl").read_text() == (art / "train.jsonl").read_text()


def test_mixture_concatenate_keeps_every_row_and_reports_rows_per_source(tmp_path: Path) -> None:
    _write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"messages": [{"role": "user", "content": f"a{i}"}, {"role": "assistant", "content": f"x{i}"}]}
            for i in range(30)
        ],
    )
    _write_jsonl(
        tmp_path / "b.jsonl",
        [{"instruction": f"b{i}", "output": f"y{i}"} for i in range(10)] + [{"instruction": "", "output": "bad"}],
    )
    ds = (
        "  sources:\n"
        "    - {source: {type: local, path: a.jsonl}}\n"
        "    - {source: {type: local, path: b.jsonl}, format: alpaca, weight: 5}\n"
        "  mix: {strategy: concatenate}\n  skip_invalid: true\n"
    )
    code, step, art = _prepare(_pipeline(tmp_path, ds))
    assert code == 0, step
    stats = json.loads((art / "stats.json").read_text())
    assert stats["sources"]["source1"]["kept"] == 30
    assert stats["sources"]["source2"]["rows_read"] == 11 and stats["sources"]["source2"]["kept"] == 10
    assert "b.jsonl row 11: 'instruction' is empty" in stats["problems_shown"][0]
