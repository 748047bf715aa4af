"""Local generation and reference likelihoods on the tiny random model."""

from __future__ import annotations

import math

import pytest

from ftpipe.evaluation.generate import (
    aggregate_nll,
    count_prompt_tokens,
    generate_local,
    reference_nll,
    render_prompt,
)

PROMPTS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How long do I boil an egg?"}],
    [{"role": "user", "content": "Soup?"}],
    [{"role": "user", "content": "What is a roux, and how do I make one for a gravy that does not go lumpy?"}],
    [
        {"role": "user", "content": "Rice"},
        {"role": "assistant", "content": "Yes?"},
        {"role": "user", "content": "How much water?"},
    ],
    [{"role": "user", "content": "Café crème — ¿qué es?"}],
]
REFS = ["Nine minutes.", "Tomato.", "Butter and flour.", "Two cups.", "Un café."]


def test_batched_greedy_equals_unbatched(tiny) -> None:
    model, tok = tiny
    calls: list[int] = []
    batched = generate_local(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, on_batch=calls.append)
    single = generate_local(model, tok, PROMPTS, max_new_tokens=6, batch_size=1)
    assert batched == single
    assert calls == [4, 5]
    for gen, prompt in zip(batched, PROMPTS, strict=True):
        assert 1 <= gen.completion_tokens <= 6
        ids = tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert gen.prompt_tokens == len(ids)


def test_generation_is_deterministic(tiny) -> None:
    model, tok = tiny
    a = generate_local(model, tok, PROMPTS[:2], max_new_tokens=5, batch_size=2, seed=1)
    b = generate_local(model, tok, PROMPTS[:2], max_new_tokens=5, batch_size=2, seed=2)
    assert a == b  # greedy: the seed cannot change the answer


def test_prompt_tokens_and_render(tiny) -> None:
    model, tok = tiny
    text = render_prompt(tok, PROMPTS[1])
    assert text == "<|im_start|>user\nSoup?<|im_end|>\n<|im_start|>assistant\n"
    assert count_prompt_tokens(tok, PROMPTS) == [
        g.prompt_tokens for g in generate_local(model, tok, PROMPTS, max_new_tokens=1, batch_size=5)
    ]


def test_plain_layout_without_a_chat_template() -> None:
    class Tok:
        chat_template = None

    assert render_prompt(Tok(), [{"role": "user", "content": "hi"}]) == "user: hi\nassistant: "
    assert render_prompt(Tok(), []) == ""


def test_reference_nll_matches_the_model_loss(tiny) -> None:
    import torch

    model, tok = tiny
    batched = reference_nll(model, tok, PROMPTS, REFS, batch_size=3)
    single = reference_nll(model, tok, PROMPTS, REFS, batch_size=1)
    for (s1, n1), (s2, n2) in zip(batched, single, strict=True):
        assert n1 == n2 and s1 == pytest.approx(s2, rel=1e-4)
    # Hand check for one example: HF's mean loss over the answer tokens (incl. the end-of-turn marker).
    prompt_ids = tok(render_prompt(tok, PROMPTS[1]), add_special_tokens=False)["input_ids"]
    answer_ids = tok("Tomato.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer_ids])
    with torch.no_grad():
        expected = model(input_ids=ids, labels=labels).loss.item()
    total, count = batched[1]
    assert count == len(answer_ids)
    assert total / count == pytest.approx(expected, rel=1e-4)


def test_reference_nll_for_plain_text(tiny) -> None:
    model, tok = tiny
    [(total, count)] = reference_nll(model, tok, [[]], ["just some text"], batch_size=1)
    assert count == len(tok("just some text", add_special_tokens=False)["input_ids"]) and total > 0


def test_aggregate_nll_is_token_weighted() -> None:
    loss, ppl = aggregate_nll([(2.0, 1), (4.0, 3)])
    assert loss == pytest.approx(1.5) and ppl == pytest.approx(math.exp(1.5))
    assert aggregate_nll([]) == (None, None)


def test_template_without_a_system_role_gets_it_folded_in(tiny) -> None:
    from transformers import AutoTokenizer

    _, tok = tiny
    strict = AutoTokenizer.from_pretrained(tok.name_or_path)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    text = render_prompt(strict, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert text == "[user] Be brief.\n\nHi\n[assistant] "
