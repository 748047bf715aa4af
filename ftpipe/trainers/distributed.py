"""``trainer.distributed``: how several training processes share the work, as the
arguments transformers' Trainer (through accelerate) takes. The same arguments serve
torchrun on one node and Ray Train across nodes.

- ``ddp``: every process holds the whole model (the default; nothing to add).
- ``fsdp``: parameters, gradients and optimizer state sharded across processes (PyTorch
  FSDP), with the auto-wrap policy, activation checkpointing and CPU offload.
- ``deepspeed``: ZeRO stage 0-3 with optional optimizer/parameter offload to CPU.
"""

from __future__ import annotations

from typing import Any

FSDP_SHARDING = {"full_shard", "shard_grad_op", "hybrid_shard", "no_shard"}


def trainer_arguments(distributed: dict[str, Any] | None, *, bf16: bool, fp16: bool) -> dict[str, Any]:
    """The TrainingArguments entries for ``distributed`` (a ``Distributed`` block as a dict)."""
    if not distributed or distributed.get("strategy", "ddp") == "ddp":
        return {}
    if distributed["strategy"] == "fsdp":
        opts = distributed.get("fsdp") or {}
        words = [opts.get("sharding", "full_shard")]
        wrap = opts.get("auto_wrap", "transformer_layer")
        if wrap != "none":
            words.append("auto_wrap")
        if opts.get("cpu_offload"):
            words.append("offload")
        config: dict[str, Any] = {"activation_checkpointing": bool(opts.get("activation_checkpointing"))}
        if wrap == "size":
            config["min_num_params"] = int(opts.get("min_num_params", 100_000_000))
        # transformer_layer: accelerate wraps the model's own no-split modules (its decoder layers)
        return {"fsdp": " ".join(words), "fsdp_config": config}
    if distributed["strategy"] == "deepspeed":
        return {"deepspeed": deepspeed_config(distributed.get("deepspeed") or {}, bf16=bf16, fp16=fp16)}
    raise ValueError(f"unknown distributed strategy {distributed['strategy']!r}")


def deepspeed_config(opts: dict[str, Any], *, bf16: bool, fp16: bool) -> dict[str, Any]:
    """A DeepSpeed config whose batch and precision settings follow the Trainer ("auto")."""
    stage = int(opts.get("stage", 2))
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if opts.get("offload_optimizer") and stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if opts.get("offload_params") and stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }
