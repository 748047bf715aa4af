"""The built-in tiny model (``model.base: builtin:tiny``): a test and demo model only.

A Llama-shaped causal LM (2 layers, width 64, ~290k randomly initialised parameters, tied
embeddings) with a byte-level BPE tokenizer built from a small corpus shipped in this
package (``tiny_corpus.py``): common English and kitchen words are single tokens, any other
text falls back to BPE pieces and bytes, so nothing is unknown and nothing is downloaded.
The tokenizer has pad/eos tokens and a ChatML chat template (eos ``<|im_end|>`` ends a turn).

It knows nothing until you fine-tune it: it exists so the quickstart and the tests run on a
laptop CPU in about a minute. Same seed -> byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_MODEL = "builtin:tiny"
# Bump when the architecture, corpus or tokenizer recipe changes: caches are keyed on it.
TINY_VERSION = 4  # 4: the ChatML template renders tool calls

SUBWORD_VOCAB_SIZE = 512  # BPE pieces for words the corpus lacks; whole words come on top
HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 256
NUM_LAYERS = 2
NUM_HEADS = 4
MAX_POSITIONS = 2048
# Llama's default 0.02 is tuned for wide models; at width 64 it leaves attention nearly
# uniform for many steps. 0.1 (about 1/sqrt(width)) learns the quickstart task ~2x faster.
INIT_STD = 0.1

PAD, BOS, IM_START, IM_END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ftpipe.models.chat_templates import CHATML
    from ftpipe.models.tiny_corpus import corpus_lines, whole_word_forms

    # Byte level: every string maps onto the 256 byte tokens at worst, so nothing is unknown.
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    lines = corpus_lines()
    subwords = Tokenizer(models.BPE())
    subwords.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(
        vocab_size=SUBWORD_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[PAD, BOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    subwords.train_from_iterator(lines, trainer=trainer)
    state = json.loads(subwords.to_str())["model"]
    vocab: dict[str, int] = dict(state["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    # Function and kitchen words become one token in each position they can take (after a
    # space, after punctuation or a newline, capitalised); ignore_merges looks a whole
    # pre-token up in the vocabulary before merging, so such a word is never split.
    for text in whole_word_forms():
        for piece, _ in pre.pre_tokenize_str(text):
            if piece.lstrip("\u0120").isalpha() and piece not in vocab:
                vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([PAD, BOS, IM_START, IM_END])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=IM_END,  # generation stops at the end of an assistant turn
        pad_token=PAD,
        unk_token=None,
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML
    return fast


def build_tiny_model(dest: Path, seed: int = 0) -> Path:
    """Write the tiny model (weights, config, tokenizer with chat template) into ``dest``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_STD,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seeded for reproducible weights; fork_rng restores the caller's global RNG afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def ensure_tiny_model(cache_dir: Path, seed: int = 0) -> Path:
    """The tiny model's folder under ``cache_dir``, built on first use. Concurrent callers
    are safe: each builds in its own temporary folder and the first rename wins."""
    cache_dir = Path(cache_dir)
    suffix = "" if seed == 0 else f"-seed{seed}"
    final = cache_dir / f"tiny-model-v{TINY_VERSION}{suffix}"
    if (final / "config.json").exists():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=cache_dir))
    try:
        build_tiny_model(tmp, seed=seed)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").exists():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def fingerprint(folder: Path) -> str:
    """sha256 over the names and bytes of every file in ``folder`` (determinism checks)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()
