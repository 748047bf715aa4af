"""BM25 ranking, few-shot selection and prompt construction."""

from __future__ import annotations

import math

import pytest

from ftpipe.evaluation.fewshot import (
    BM25,
    Example,
    ExampleError,
    FewShotSelector,
    build_few_shot_messages,
    example_from_record,
    load_examples,
    tokenize,
)

CORPUS = [["apple", "banana"], ["apple", "apple", "cherry"], ["durian"]]


def test_bm25_scores_by_hand() -> None:
    # bm25s's Lucene BM25: idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), k1=1.5, b=0.75, avgdl=2
    bm = BM25(CORPUS)
    idf_apple = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # ln 1.6
    # doc0: tf 1, dl 2 -> norm 1.5 -> idf * 1 / 2.5
    # doc1: tf 2, dl 3 -> norm 1.5 * (0.25 + 0.75 * 1.5) = 2.0625 -> idf * 2 / 4.0625
    expected = [idf_apple / 2.5, idf_apple * 2 / 4.0625, 0.0]
    assert bm.scores(["apple"]) == pytest.approx(expected, rel=1e-5)
    assert bm.top_k(["apple"], 3) == [1, 0, 2]


def test_bm25_rare_terms_weigh_more() -> None:
    bm = BM25(CORPUS)
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))  # ln(8/3), each term in one document
    assert bm.scores(["cherry", "banana"]) == pytest.approx([idf / 2.5, idf / 3.0625, 0.0], rel=1e-5)
    assert bm.top_k(["cherry", "banana"], 2) == [0, 1]


def test_bm25_ties_go_to_the_earlier_document() -> None:
    bm = BM25([["x"], ["y"], ["x"], ["z"]])
    assert bm.top_k(["x"], 2) == [0, 2]
    assert bm.top_k(["nothing"], 4) == [0, 1, 2, 3]
    assert BM25([]).top_k(["x"], 3) == []


def test_tokenize_is_unicode_aware() -> None:
    assert tokenize("Hello, World! ¿Qué tal?") == ["hello", "world", "qué", "tal"]


def ex(question: str, answer: str, system: str | None = "sys") -> Example:
    prompt = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return Example(tuple(prompt), answer)


TRAIN = [
    ex("how to cook pasta", "boil it"),
    ex("tomato soup recipe", "tomatoes and stock"),
    ex("best salad dressing", "oil and vinegar"),
    ex("how long to cook rice", "twenty minutes"),
]


def test_similar_selection_uses_bm25() -> None:
    sel = FewShotSelector(TRAIN, k=2, selection="similar")
    picked = sel.select(ex("a good tomato soup", "?"))
    assert picked[0].reference == "tomatoes and stock"
    # "cook" appears in two documents; the shorter one ranks first
    assert [p.reference for p in sel.select(ex("cook", "?"))] == ["boil it", "twenty minutes"]


def test_system_prompt_does_not_drive_retrieval() -> None:
    train = [ex("pasta", "a", system="soup soup soup"), ex("soup", "b", system="x")]
    sel = FewShotSelector(train, k=1, selection="similar")
    assert sel.select(ex("soup", "?"))[0].reference == "b"


def test_random_selection_is_seeded_and_fixed() -> None:
    a = FewShotSelector(TRAIN, k=2, selection="random", seed=7)
    b = FewShotSelector(TRAIN, k=2, selection="random", seed=7)
    first = a.select(ex("anything", "?"))
    assert first == a.select(ex("something else", "?")) == b.select(ex("x", "?"))
    assert len(first) == 2 and len({e.reference for e in first}) == 2
    seeds = {
        tuple(e.reference for e in FewShotSelector(TRAIN, k=2, selection="random", seed=s).select(ex("q", "?")))
        for s in range(10)
    }
    assert len(seeds) > 1


def test_k_is_clamped_to_the_training_set() -> None:
    assert len(FewShotSelector(TRAIN[:2], k=5, selection="similar").select(ex("q", "?"))) == 2
    assert len(FewShotSelector(TRAIN[:2], k=5, selection="random").select(ex("q", "?"))) == 2
    with pytest.raises(ValueError, match="similar"):
        FewShotSelector(TRAIN, k=1, selection="bm25")


def test_few_shot_messages_keep_the_system_prompt_first() -> None:
    query = ex("q?", "ref", system="Be brief.")
    shots = [ex("s1?", "a1", system="other system"), Example(({"role": "user", "content": "s2?"},), "a2")]
    assert build_few_shot_messages(query, shots) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "s1?"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "s2?"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "q?"},
    ]
    assert build_few_shot_messages(ex("q", "r", system=None), []) == [{"role": "user", "content": "q"}]


def test_multi_turn_shots_keep_every_turn() -> None:
    shot = Example(
        ({"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}),
        "a2",
    )
    msgs = build_few_shot_messages(ex("q", "r", system=None), [shot])
    assert [m["content"] for m in msgs] == ["u1", "a1", "u2", "a2", "q"]


def test_example_from_records() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"},
        ]
    }
    e = example_from_record(chat)
    assert e.reference == "a2" and [m["content"] for m in e.prompt] == ["s", "u1", "a1", "u2"]
    assert e.query_text == "u1\na1\nu2"
    pref = {
        "prompt": [{"role": "user", "content": "p"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    assert example_from_record(pref) == Example(({"role": "user", "content": "p"},), "good")
    assert example_from_record({"text": "plain"}) == Example((), "plain")
    with pytest.raises(ExampleError, match="no assistant message"):
        example_from_record({"messages": [{"role": "user", "content": "u"}]})


def test_load_examples_limit_and_errors(tmp_path) -> None:
    path = tmp_path / "test.jsonl"
    line = '{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}\n'
    path.write_text(line + "\n" + line + line)
    assert len(load_examples(path)) == 3
    assert len(load_examples(path, limit=2)) == 2
    path.write_text(line + '{"messages": [{"role": "user", "content": "u"}]}\n')
    with pytest.raises(ExampleError, match=r"test.jsonl:2: .*no assistant"):
        load_examples(path)
