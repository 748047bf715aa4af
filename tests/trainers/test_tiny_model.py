"""The built-in tiny model: deterministic, offline, any text tokenizes, chat-ready."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftpipe.models.loading import resolve_base
from ftpipe.models.tiny import (
    TINY_MODEL,
    TINY_VERSION,
    build_tiny_model,
    ensure_tiny_model,
    fingerprint,
)


def test_resolve_base_paths_and_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert resolve_base("models/mine", cache_dir=tmp_path / "c", base_dir=tmp_path) == str(
        (tmp_path / "models" / "mine").resolve()
    )
    assert resolve_base(str(tmp_path / "models" / "mine"), cache_dir=tmp_path, base_dir=Path("/")) == str(
        (tmp_path / "models" / "mine").resolve()
    )
    # a Hub id is checked before it is handed on: offline and not cached, it is named as such
    # (tests/models/test_base_sources.py covers the Hub answers)
    from ftpipe.errors import UsageError

    with pytest.raises(UsageError, match=r"'Qwen/Qwen2.5-0.5B-Instruct' is not in the local Hugging Face cache"):
        resolve_base("Qwen/Qwen2.5-0.5B-Instruct", cache_dir=tmp_path, base_dir=tmp_path)
    assert not (tmp_path / "c").exists()  # nothing built for a plain path


@pytest.mark.integration
def test_same_seed_same_files_other_seed_other_weights(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=0)
    c = build_tiny_model(tmp_path / "c", seed=1)
    assert fingerprint(a) == fingerprint(b)
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


@pytest.mark.integration
def test_ensure_builds_once_atomically(tmp_path: Path) -> None:
    path = ensure_tiny_model(tmp_path)
    assert path == tmp_path / f"tiny-model-v{TINY_VERSION}"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left
    assert resolve_base(TINY_MODEL, cache_dir=tmp_path, base_dir=Path("/nowhere")) == str(path)


@pytest.mark.integration
def test_shape_tokenizer_and_chat_template(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_tiny_model(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert 100_000 <= model.num_parameters() <= 1_000_000
    assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tok.eos_token_id

    text = "Grüße! 2 c. brown sugar, 1/2 tsp. vanilla — 🍰 naïve café, Zürich; 東京"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte level: nothing is unknown
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    # kitchen words are single tokens, so recipes stay short
    assert len(tok(" brown sugar", add_special_tokens=False)["input_ids"]) == 2

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    out = model.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] <= len(tok(prompt)["input_ids"]) + 3
