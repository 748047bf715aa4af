"""Which inference engine runs a local model: vLLM or transformers.

One decision for ``ftpipe serve`` and for the evaluation step's generation, so both run the
same engine on a given machine:

- ``vllm`` when the ``vllm`` package is installed *and* a CUDA GPU is visible (vLLM needs
  one): ``vllm serve`` for the server, ``vllm.LLM.generate`` (offline batches) for evaluation.
- ``transformers`` otherwise: for the server, transformers' own serving stack (the code of
  ``transformers serve``) with continuous batching; for evaluation, continuous batching
  (``generate_batch``) for real models and padded ``generate`` batches for tiny ones
  (:mod:`ftpipe.evaluation.engines`; measurements in docs/serving.md).

``requested`` is ``auto`` (the rule above), ``transformers`` or ``vllm``; asking for vLLM
where it cannot run is a usage error that says why. The probes import nothing heavy unless
they must (torch only when vllm is installed), so a decision is cheap.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from ftpipe.errors import UsageError

ENGINES = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class EngineChoice:
    name: str  # "vllm" | "transformers"
    reason: str  # one line for logs and model cards


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_gpu_count() -> int:
    """CUDA GPUs torch can see (0 without torch or a GPU). ``CUDA_VISIBLE_DEVICES=""`` hides all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def choose_engine(requested: str = "auto", *, vllm: bool | None = None, gpus: int | None = None) -> EngineChoice:
    """The engine for ``requested`` on this machine (``vllm``/``gpus`` override the probes, for tests)."""
    if requested not in ENGINES:
        raise UsageError(f"unknown engine {requested!r} (choose from {', '.join(ENGINES)})")
    if requested == "transformers":
        return EngineChoice("transformers", "requested")
    has_vllm = vllm_installed() if vllm is None else vllm
    # Probing the GPU imports torch: only worth it when vLLM could use it.
    n_gpus = (cuda_gpu_count() if has_vllm else 0) if gpus is None else gpus
    if has_vllm and n_gpus > 0:
        return EngineChoice("vllm", f"vllm installed and {n_gpus} CUDA GPU(s) visible")
    why = "vllm is not installed" if not has_vllm else "no CUDA GPU is visible"
    if requested == "vllm":
        raise UsageError(
            f"engine 'vllm' cannot run here: {why}",
            hint="on a CUDA machine: pip install vllm; or use --engine transformers (or auto)",
        )
    return EngineChoice("transformers", f"{why}: transformers")
