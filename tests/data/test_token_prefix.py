"""A prefix every rendered conversation shares (a template's default system prompt, or
``dataset.system_prompt``) is tokenized once (ftpipe.data.tokens.SharedPrefix, issue 19);
the counts must stay exactly the whole-text counts."""

from __future__ import annotations

import pytest

from ftpipe.data import prepare
from ftpipe.data.tokens import SharedPrefix, _piece_boundaries, encoded_lengths

pytest.importorskip("transformers")

SYSTEM = "You are a careful kitchen assistant: list the ingredients, nothing else."


def _rendered(tokenizer, n: int) -> list[str]:
    texts = []
    for i in range(n):
        msgs = [{"role": "system", "content": f"Answer in French ({i})."}] if i % 4 == 0 else []
        msgs += [
            {"role": "user", "content": f"Recipe {i}: {i % 7} eggs, {i % 5} cups flour" + " and salt" * (i % 3)},
            {"role": "assistant", "content": "eggs, flour" + (", salt" if i % 3 else "")},
        ]
        rec = prepare.normalise({"messages": msgs}, "chat", {}, SYSTEM)
        texts.append(tokenizer.apply_chat_template(rec["messages"], tokenize=False))
    return texts


def _count(prefix: SharedPrefix, texts: list[str], chunk: int = 64) -> tuple[list[int], int]:
    """Counts through the prefix, a chunk at a time as the prepare step goes; and how many
    texts had the prefix cut off."""
    counts: list[int] = []
    cut_off = 0
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        base = [0] * len(part)
        rests = prefix.cut(part, list(range(len(part))), base)
        cut_off += sum(r != t for r, t in zip(rests, part, strict=True))
        counts += [b + n for b, n in zip(base, encoded_lengths(prefix.tok, rests), strict=True)]
    return counts, cut_off


def test_a_shared_system_prompt_is_tokenized_once_and_the_counts_stay_exact(tokenizer) -> None:
    texts = _rendered(tokenizer, 600)
    prefix = SharedPrefix(tokenizer)
    counts, cut_off = _count(prefix, texts)

    assert counts == encoded_lengths(tokenizer, texts)
    # learned despite the rows with their own system message (a quarter of them), and used
    assert prefix.text is not None and SYSTEM in prefix.text and prefix.text.endswith("<|im_start|>")
    assert prefix.tokens == encoded_lengths(tokenizer, [prefix.text])[0] > SharedPrefix.MIN_TOKENS
    assert cut_off == 450  # every row without its own system message


def test_without_a_shared_prefix_nothing_is_cut(tokenizer) -> None:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"q{i}"}], tokenize=False) for i in range(99)]
    prefix = SharedPrefix(tokenizer)
    counts, cut_off = _count(prefix, texts)
    assert counts == encoded_lengths(tokenizer, texts)
    assert prefix.text is None and cut_off == 0  # "<|im_start|>" alone is not worth cutting


def _metaspace_tokenizer():
    """A character-level tokenizer whose pre-tokenizer marks the first piece of a text only
    (Metaspace, prepend_scheme first, as Llama 2 and Mistral tokenizers do)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = "▁abcdefghijklmnopqrstuvwxyz\n:.,0123456789"
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tk.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tk)


def test_a_tokenizer_that_treats_the_first_piece_differently_is_counted_whole() -> None:
    tok = _metaspace_tokenizer()
    texts = [f"<s>system\nbe brief</s><s>user\nrecipe {i}</s>" for i in range(40)]
    assert _piece_boundaries(tok) == ()
    prefix = SharedPrefix(tok)
    counts, cut_off = _count(prefix, texts)
    assert counts == encoded_lengths(tok, texts) and cut_off == 0

    # Were it let through, the first-chunk check refuses it: cutting would miscount here.
    naive = "<s>system\nbe brief</s><s>"
    assert encoded_lengths(tok, texts[:1]) != [sum(encoded_lengths(tok, [naive, texts[0][len(naive) :]]))]
    forced = SharedPrefix(tok)
    forced.boundaries, forced.learned = ("<s>", "</s>"), False
    counts, cut_off = _count(forced, texts)
    assert forced.text is None and cut_off == 0 and counts == encoded_lengths(tok, texts)


def test_a_tokenizer_that_tokenizes_special_tokens_as_text_is_counted_whole(tokenizer) -> None:
    texts = _rendered(tokenizer, 64)
    tokenizer.split_special_tokens = True
    try:
        prefix = SharedPrefix(tokenizer)
        counts, cut_off = _count(prefix, texts)
        assert prefix.text is None and cut_off == 0 and counts == encoded_lengths(tokenizer, texts)
    finally:
        tokenizer.split_special_tokens = False
