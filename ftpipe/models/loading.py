"""Finding and loading models: the base a pipeline names, and what a train step produced.

``model.base`` is ``builtin:tiny``, a folder or a ``.gguf`` file (relative to the pipeline's
folder), a file shipped in an installed package (``package:MODULE/file.gguf``), or a Hugging
Face Hub id (see ``ftpipe.models.sources``). A GGUF base is converted once per content hash
into a transformers folder in ftpipe's cache (``ftpipe.models.materialise``). Hub ids are
checked once (exists? reachable?) and then passed to ``from_pretrained`` unchanged, so
``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the Hub cache apply as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftpipe.contracts import ModelRef
from ftpipe.models.hub_check import check_hub_model
from ftpipe.models.materialise import materialise_gguf
from ftpipe.models.sources import classify_base
from ftpipe.models.tiny import TINY_MODEL, ensure_tiny_model

_CHECKED: set[tuple[str, str | None]] = set()  # (Hub id, revision) this process found on the Hub


def resolve_base(
    base: str,
    *,
    cache_dir: Path,
    base_dir: Path,
    revision: str | None = None,
    token: str | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """What to hand to ``from_pretrained`` for ``base``: the built-in tiny model's folder,
    an existing folder as an absolute path, a GGUF file's converted folder in ``cache_dir``,
    or the Hub id unchanged once the Hub says it exists (nothing is downloaded here)."""
    if base == TINY_MODEL:
        return str(ensure_tiny_model(Path(cache_dir)))
    spec = classify_base(base, Path(base_dir))
    if spec.kind == "gguf" and spec.path is not None:
        return str(materialise_gguf(spec.path, cache_dir=Path(cache_dir), name=base, log=log))
    if spec.path is not None:
        return str(spec.path)
    path = Path(base).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if path.exists():
        return str(path.resolve())
    if (base, revision) not in _CHECKED:
        check_hub_model(base, revision=revision, token=token)
        _CHECKED.add((base, revision))
    return base


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(device: str) -> Any:
    import torch

    # float32 on CPU: bf16/fp16 matmuls there are slow or unsupported. On a GPU half
    # precision, whatever dtype the weights were saved in (a converted GGUF is float32).
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _load_tokenizer(source: str, *, revision: str | None, token: str | None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, revision=revision, token=token)


def _ready_for_generation(model: Any, tokenizer: Any, device: str) -> tuple[Any, Any]:
    # Left padding so batched generate() continues every prompt at its real end.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer


def load_base_for_inference(
    base: str,
    *,
    cache_dir: Path,
    base_dir: Path,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for the untouched base model, in eval mode, padding left."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    source = resolve_base(base, cache_dir=cache_dir, base_dir=base_dir, revision=revision, token=token)
    tokenizer = _load_tokenizer(source, revision=revision, token=token)
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, token=token, dtype=_dtype(device))
    return _ready_for_generation(model, tokenizer, device)


def _base_with_adapter(
    adapter_dir: Path,
    base: str,
    *,
    cache_dir: Path,
    base_dir: Path,
    revision: str | None,
    token: str | None,
    dtype: Any,
) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    source = resolve_base(base, cache_dir=cache_dir, base_dir=base_dir, revision=revision, token=token)
    # The train step saves the tokenizer next to the adapter: it may carry a chat template
    # or tokens the base lacks.
    if (adapter_dir / "tokenizer_config.json").exists():
        tokenizer = _load_tokenizer(str(adapter_dir), revision=None, token=None)
    else:
        tokenizer = _load_tokenizer(source, revision=revision, token=token)
    model = AutoModelForCausalLM.from_pretrained(source, revision=revision, token=token, dtype=dtype)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.eos_token_id is not None and model.generation_config.eos_token_id != tokenizer.eos_token_id:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model.merge_and_unload(), tokenizer


def load_for_inference(
    ref: ModelRef,
    train_dir: Path,
    *,
    cache_dir: Path,
    base_dir: Path,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a local model a train step wrote (``ref`` read from
    ``train_dir``): full weights, or the base with the PEFT adapter merged in. ``revision``
    and ``token`` apply to the base. Eval mode, padding left."""
    from transformers import AutoModelForCausalLM

    if ref.kind != "local" or not ref.path:
        raise ValueError(f"model {ref.model_id or ref.base!r} is hosted ({ref.provider}); it has no local weights")
    device = device or default_device()
    model_dir = Path(train_dir) / ref.path
    if ref.adapter:
        model, tokenizer = _base_with_adapter(
            model_dir,
            ref.base,
            cache_dir=cache_dir,
            base_dir=base_dir,
            revision=revision,
            token=token,
            dtype=_dtype(device),
        )
    else:
        tokenizer = _load_tokenizer(str(model_dir), revision=None, token=None)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=_dtype(device))
    return _ready_for_generation(model, tokenizer, device)


def merge_adapter(
    model_dir: Path | ModelRef,
    base: str | Path,
    dest: Path,
    *,
    cache_dir: Path,
    base_dir: Path,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Write the base with the adapter in ``model_dir`` merged in (full weights + tokenizer)
    to ``dest``, in the base's own dtype. Also callable as ``merge_adapter(ref, train_dir,
    dest, ...)`` with the train step's ``ModelRef``."""
    if isinstance(model_dir, ModelRef):
        ref, train_dir = model_dir, Path(base)
        if ref.kind != "local" or not ref.path or not ref.adapter:
            raise ValueError("merge_adapter needs a local adapter model")
        model_dir, base = train_dir / ref.path, ref.base
    model, tokenizer = _base_with_adapter(
        Path(model_dir),
        str(base),
        cache_dir=cache_dir,
        base_dir=base_dir,
        revision=revision,
        token=token,
        dtype="auto",
    )
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
