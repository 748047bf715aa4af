"""Prepare counts a chat example's tokens the way the trainer sees it: through the model's
chat template (issue 13), not the messages plus a guessed per-message overhead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ftpipe.data.template_tokens import ensure_template, template_counts

pytest.importorskip("transformers")


@pytest.fixture
def tokenizer():  # the built-in tiny model's tokenizer (ChatML template)
    from transformers import AutoTokenizer

    from ftpipe.models.tiny import ensure_tiny_model

    return AutoTokenizer.from_pretrained(str(ensure_tiny_model(Path(os.environ["FTPIPE_CACHE"]))))


def _ids(encoded) -> list[int]:
    return encoded["input_ids"] if hasattr(encoded, "keys") else encoded


def test_a_chat_example_counts_what_its_template_renders(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Extract the ingredients."},
        {"role": "user", "content": "2 cups flour, 1 egg"},
        {"role": "assistant", "content": "flour, egg"},
    ]
    [n] = template_counts(tokenizer, [{"messages": messages}])
    assert n == len(_ids(tokenizer.apply_chat_template(messages, tokenize=True)))
    plain = sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)
    assert n > plain  # role markers and turn ends count


def test_a_preference_pair_counts_both_conversations_and_text_is_left_to_the_caller(tokenizer) -> None:
    prompt = [{"role": "user", "content": "2 cups flour, 1 egg"}]
    pair = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "flour, egg"}],
        "rejected": [{"role": "assistant", "content": "2 cups flour"}],
    }
    n_pair, n_text = template_counts(tokenizer, [pair, {"text": "plain text"}])
    chosen = len(_ids(tokenizer.apply_chat_template(prompt + pair["chosen"], tokenize=True)))
    rejected = len(_ids(tokenizer.apply_chat_template(prompt + pair["rejected"], tokenize=True)))
    assert n_pair == chosen + rejected and n_text is None


def test_a_tokenizer_without_a_template_gets_the_one_training_uses(tokenizer) -> None:
    from ftpipe.models.chat_templates import CHAT_TEMPLATES

    own = tokenizer.chat_template
    try:
        tokenizer.chat_template = None
        assert ensure_template(tokenizer, None) and tokenizer.chat_template == CHAT_TEMPLATES["chatml"]
        assert ensure_template(tokenizer, "zephyr") and tokenizer.chat_template == CHAT_TEMPLATES["zephyr"]
        assert not ensure_template(tokenizer, "no-such-template")
    finally:
        tokenizer.chat_template = own
