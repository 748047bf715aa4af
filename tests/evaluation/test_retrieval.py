"""The rag baseline's corpus, passages and prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.errors import UsageError
from ftpipe.evaluation.fewshot import Example
from ftpipe.evaluation.retrieval import (
    Passage,
    Retriever,
    build_rag_messages,
    chunk_words,
    corpus_files,
    load_passages,
)


def test_chunks_and_passages(tmp_path: Path) -> None:
    assert chunk_words("a b c d e", 2) == ["a b", "c d", "e"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "eggs.md").write_text("Boil eggs nine minutes.\n\nCool them in water.")
    (tmp_path / "faq.jsonl").write_text(
        json.dumps({"text": "Rice needs two cups of water."})
        + "\n\n"
        + json.dumps({"q": "Salt?", "a": "Ten grams per litre."})
        + "\n"
    )
    files = corpus_files(tmp_path, ["docs", "*.jsonl"])
    assert [f.name for f in files] == ["eggs.md", "faq.jsonl"]
    passages = load_passages(files, chunk_size=4, base_dir=tmp_path)
    assert [(p.source, p.text) for p in passages] == [
        ("docs/eggs.md", "Boil eggs nine minutes."),
        ("docs/eggs.md", "Cool them in water."),
        ("faq.jsonl", "Rice needs two cups"),
        ("faq.jsonl", "of water."),
        ("faq.jsonl", "Salt? Ten grams per"),
        ("faq.jsonl", "litre."),
    ]
    top = Retriever(passages, k=2).search("how long to boil eggs")
    assert top[0].text == "Boil eggs nine minutes."


def test_missing_corpus_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no files at 'nope/\*.md'"):
        corpus_files(tmp_path, "nope/*.md")
    with pytest.raises(UsageError, match="hold no text"):
        Retriever([], k=2)


def test_passages_go_in_front_of_the_last_user_turn() -> None:
    query = Example(({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Eggs?"}), "9 min")
    messages = build_rag_messages(query, [Passage("a.md", "Boil nine minutes."), Passage("b.md", "Cool.")])
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1] == {
        "role": "user",
        "content": "Use these passages if they help:\n[1] Boil nine minutes.\n\n[2] Cool.\n\nEggs?",
    }
    assert query.prompt[1]["content"] == "Eggs?"  # the example itself is untouched
