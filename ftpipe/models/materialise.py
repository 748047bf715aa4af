"""A GGUF base model, dequantised once per content hash into a plain transformers folder.

transformers reads a ``.gguf`` file by dequantising every tensor (16-40 s for a 135M model on
two cores). Every step (prepare, train, evaluate, deploy) and ``ftpipe serve`` loads the base
again, so the first one writes ``<cache>/models/gguf-<sha256>/`` (float32 safetensors, the
tokenizer and its chat template) and the rest read that folder in a fraction of a second.
The folder is named after the file's bytes, not its path: a renamed copy reuses it, a changed
file gets a new one.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftpipe.errors import MissingDependency, UsageError
from ftpipe.models.sources import file_digest

MARKER = "ftpipe-materialised.json"


def materialised_dir(cache_dir: Path, digest: str) -> Path:
    return Path(cache_dir) / "models" / f"gguf-{digest[:24]}"


def materialise_gguf(
    path: Path, *, cache_dir: Path, name: str | None = None, log: Callable[[str], None] | None = None
) -> Path:
    """The transformers folder for the GGUF file ``path``, converting it the first time.
    Safe to call from several processes at once: one converts, the others wait for it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model.base: no GGUF file at {path}")
    dest = materialised_dir(cache_dir, file_digest(path))
    if (dest / MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f"{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        if (dest / MARKER).is_file():  # another process converted it while we waited
            return dest
        if log:
            log(f"converting {name or path.name} (GGUF) to safetensors once, in {dest}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            _convert(path, tmp)
            (tmp / MARKER).write_text(
                json.dumps({"source": name or str(path), "file": path.name, "sha256": file_digest(path)}, indent=2)
                + "\n"
            )
            if dest.exists():  # a half-written folder from a killed conversion
                shutil.rmtree(dest)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _convert(path: Path, out: Path) -> None:
    try:
        import gguf  # noqa: F401 - transformers needs it to read the file
    except ImportError:
        raise MissingDependency("gguf", "smollm2", f"reading the GGUF model {path.name}") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The weights are plain float32 now; transformers still marks the model as GGUF-quantised
    # and refuses to save it. Dropping the mark saves the dequantised tensors as they are
    # (tied embeddings stay tied: config.tie_word_embeddings is kept).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
