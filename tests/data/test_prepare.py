"""The prepare step on real files: every validation message names its file and row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ftpipe.contracts import StepResult
from ftpipe.engine import execute
from ftpipe.progress import Reporter
from ftpipe.store import RunStore


def _pipeline(
    tmp_path: Path, data: str, *, fmt: str = "chat", extra: str = "", backend: str = "openai", columns: str = ""
) -> Path:
    p = tmp_path / "p.yaml"
    model = "gpt-4o-mini" if backend == "openai" else "builtin:tiny"
    p.write_text(f"""version: 1
name: prep
dataset:
  source: {{type: local, path: {data}}}
  format: {fmt}
  min_examples: 3
{columns}{extra}model:
  base: {model}
trainer:
  backend: {backend}
""")
    return p


def _only_prepare(step, ctx) -> StepResult:
    if step.kind == "prepare":
        from ftpipe.data.prepare import run_prepare

        return run_prepare(ctx)
    return StepResult()


def _run(p: Path):
    return execute(p, step_runner=_only_prepare, reporter=Reporter(quiet=True))


def _chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def _write_jsonl(path: Path, rows: list) -> None:
    with path.open("w") as f:
        for r in rows:
            f.write(r if isinstance(r, str) else json.dumps(r))
            f.write("\n")


GOOD = [_chat(f"q{i}", f"a{i}") for i in range(20)]


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ('{"messages": [', "row 3: invalid JSON"),
        (
            {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "row 3: message 1 has unknown role 'bot' (allowed: system, user, assistant, tool)",
        ),
        ({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}, "row 3: message 1 has no 'role'"),
        (
            {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
            "row 3: message 1 (user) has empty content",
        ),
        ({"messages": [{"role": "user", "content": "only a question"}]}, "row 3: no assistant message"),
        ({"messages": "hello"}, "row 3: 'messages' must be a list of {role, content} messages, got str"),
        (
            {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "y"}]},
            "row 3: message 1 (user) content must be text, got int",
        ),
        ({"conversation": []}, "row 3: missing column 'messages'"),
        ([1, 2], "row 3: expected a JSON object, got list"),
    ],
)
def test_each_invalid_row_is_reported_with_its_number(tmp_path: Path, bad_row, message: str) -> None:
    _write_jsonl(tmp_path / "d.jsonl", GOOD[:2] + [bad_row] + GOOD[2:])
    out = _run(_pipeline(tmp_path, "d.jsonl"))
    assert out.exit_code == 1
    err = out.record["steps"]["prepare"]["error"]
    assert f"d.jsonl {message}" in err, err
    assert "1 invalid rows of 21" in err and "skip_invalid" in err


def test_skip_invalid_drops_and_counts(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "d.jsonl", GOOD + ["{broken", {"messages": [{"role": "user", "content": "q"}]}])
    out = _run(_pipeline(tmp_path, "d.jsonl", extra="  skip_invalid: true\n"))
    assert out.exit_code == 0, out.record
    m = out.record["steps"]["prepare"]["metrics"]
    assert m["invalid_dropped"] == 2
    art = RunStore(tmp_path / ".ftpipe").root / out.record["steps"]["prepare"]["artifact"]
    stats = json.loads((art / "stats.json").read_text())
    assert stats["invalid"] == {"invalid JSON": 1, "no assistant turn": 1}
    assert sum(stats["splits"][s]["rows"] for s in ("train", "validation", "test")) == 20


def test_duplicates_are_removed_and_counted(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "d.jsonl", GOOD + GOOD[:5])
    out = _run(_pipeline(tmp_path, "d.jsonl"))
    assert out.record["steps"]["prepare"]["metrics"]["duplicates_removed"] == 5


def test_too_few_examples(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "d.jsonl", GOOD[:2])
    out = _run(_pipeline(tmp_path, "d.jsonl"))
    assert "only 2 usable examples" in out.record["steps"]["prepare"]["error"]


def test_split_is_deterministic_and_complete(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "d.jsonl", [_chat(f"q{i}", f"a{i}") for i in range(200)])
    p = _pipeline(tmp_path, "d.jsonl")
    out = _run(p)
    art = tmp_path / ".ftpipe" / out.record["steps"]["prepare"]["artifact"]
    splits = {s: (art / f"{s}.jsonl").read_text().splitlines() for s in ("train", "validation", "test")}
    assert [len(v) for v in splits.values()] == [160, 20, 20]
    assert len(set(sum(splits.values(), []))) == 200
    out2 = execute(p, step_runner=_only_prepare, reporter=Reporter(quiet=True), force=True)
    art2 = tmp_path / ".ftpipe" / out2.record["steps"]["prepare"]["artifact"]
    assert (art2 / "test.jsonl").read_text() == "\n".join(splits["test"]) + "\n"


def test_instruction_csv_with_column_mapping_and_system_prompt(tmp_path: Path) -> None:
    with (tmp_path / "d.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        for i in range(12):
            w.writerow([f"what is {i}?", f"it is {i}"])
        w.writerow(["", "empty question"])
    p = _pipeline(
        tmp_path,
        "d.csv",
        fmt="instruction",
        columns="  columns: {prompt: question, completion: answer}\n",
        extra="  system_prompt: Be brief.\n  split: {validation: 0, test: 0}\n",
    )
    out = _run(p)
    err = out.record["steps"]["prepare"]["error"]
    assert "d.csv row 14: 'question' is empty" in err  # csv rows count the header line
    p.write_text(p.read_text().replace("  system_prompt", "  skip_invalid: true\n  system_prompt"))
    out = _run(p)
    art = tmp_path / ".ftpipe" / out.record["steps"]["prepare"]["artifact"]
    first = json.loads((art / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]


def test_preference_data_and_given_splits_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(15)]
    _write_jsonl(tmp_path / "train" / "a.jsonl", rows[:10])
    _write_jsonl(tmp_path / "train" / "b.jsonl", rows[10:])
    _write_jsonl(
        tmp_path / "test.jsonl",
        [{"prompt": "t", "chosen": "c", "rejected": "c"}, {"prompt": "t2", "chosen": "c", "rejected": "r"}],
    )
    p = _pipeline(tmp_path, "{train: train, test: test.jsonl}", fmt="preference")
    p.write_text(p.read_text().replace("backend: openai", "backend: openai\n  method: dpo"))
    out = _run(p)
    assert "test.jsonl row 1: chosen and rejected are the same" in out.record["steps"]["prepare"]["error"]
    p.write_text(p.read_text().replace("min_examples: 3", "min_examples: 3\n  skip_invalid: true"))
    out = _run(p)
    m = out.record["steps"]["prepare"]["metrics"]
    assert (m["train_rows"], m["test_rows"]) == (13, 1) or (m["train_rows"] + m["validation_rows"], m["test_rows"]) == (
        15,
        1,
    )


def test_examples_longer_than_max_seq_length_are_reported(tmp_path: Path) -> None:
    rows = GOOD + [_chat("word " * 400, "answer")]
    _write_jsonl(tmp_path / "d.jsonl", rows)
    p = _pipeline(tmp_path, "d.jsonl", extra="  max_seq_length: 64\n")
    out = _run(p)
    err = out.record["steps"]["prepare"]["error"]
    assert "d.jsonl row 21:" in err and "longer than max_seq_length 64" in err
