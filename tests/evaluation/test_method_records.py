"""Evaluation reads the records the new formats prepare: KTO's binary preference records
(desirable completions are references, undesirable ones are skipped) and tool-calling
conversations (calls and results stay linked in the prompt)."""

from __future__ import annotations

import json
from pathlib import Path

from ftpipe.evaluation.fewshot import example_from_record, load_examples


def test_binary_preference_records(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "completion": [{"role": "assistant", "content": f"a{i}"}],
            "label": i % 2 == 0,
        }
        for i in range(4)
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(tmp_path / "test.jsonl")
    assert [(e.prompt[0]["content"], e.reference) for e in examples] == [("q0", "a0"), ("q2", "a2")]


def test_tool_call_conversation_keeps_calls_in_the_prompt() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ex = example_from_record(
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "r", "tool_call_id": "c1"},
                {"role": "assistant", "content": "answer"},
            ]
        }
    )
    assert ex.reference == "answer"
    assert ex.prompt[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert ex.prompt[2] == {"role": "tool", "content": "r", "tool_call_id": "c1"}
