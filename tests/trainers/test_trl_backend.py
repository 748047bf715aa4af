"""The trl backend on the built-in tiny model: sft, dpo and orpo, LoRA and full weights,
the artifact it leaves, and the settings it maps onto TRL."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ftpipe.contracts import ModelRef, TrainerBackend
from ftpipe.errors import StepError

_spec = importlib.util.spec_from_file_location("trl_fakes", Path(__file__).with_name("trl_fakes.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]


def _backend():
    from ftpipe.trainers.trl_backend import TrlBackend

    return TrlBackend()


def test_satisfies_the_trainer_contract() -> None:
    from ftpipe.spec.models import TrlTrainer

    backend = _backend()
    assert isinstance(backend, TrainerBackend)
    assert backend.name == "trl" and backend.config_model is TrlTrainer


def test_launcher_command_single_and_multi_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.trainers.trl_backend import launcher_command

    cmd = launcher_command(Path("/s/job.json"), 4, 1)
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=4",
        "--nnodes=1",
        "--standalone",
        "-m",
        "ftpipe.trainers.trl_job",
        "/s/job.json",
    ]
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.2")
    cmd = launcher_command(Path("job.json"), 8, 2)
    assert "--node_rank=1" in cmd and "--master_addr=10.0.0.2" in cmd and "--standalone" not in cmd


def _artifact(ctx) -> tuple[ModelRef, dict]:
    out = ctx.out_dir
    for name in ("model.json", "metrics.json", "training_args.json", "loss.json", "loss.png"):
        assert (out / name).is_file(), name
    return ModelRef.read(out), json.loads((out / "metrics.json").read_text())


@pytest.mark.integration
def test_sft_lora_few_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    rec = fakes.Recorder()
    ctx = fakes.make_ctx(tmp_path, recorder=rec, report_to=["tensorboard"])
    result = _backend().train(ctx)
    assert list((ctx.out_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "runs").exists()

    ref, metrics = _artifact(ctx)
    assert ref == ModelRef(kind="local", base="builtin:tiny", path="model", adapter=True)
    assert (ctx.out_dir / "model" / "adapter_config.json").exists()
    assert (ctx.out_dir / "model" / "tokenizer.json").exists()
    assert metrics["global_step"] == 4 and result.metrics["global_step"] == 4
    for key in ("train_loss", "train_runtime", "train_samples_per_second", "eval_loss"):
        assert isinstance(result.metrics[key], float), key
    assert rec.steps[-1] == (4, 4, "train") and [s[0] for s in rec.steps] == sorted(s[0] for s in rec.steps)
    assert any(line.startswith("step 1/4: loss=") for line in rec.lines)
    args = json.loads((ctx.out_dir / "training_args.json").read_text())
    assert args["per_device_train_batch_size"] == 4 and args["max_steps"] == 4 and args["seed"] == 7
    assert args["bf16"] is False and args["activation_checkpointing"] is False
    assert sorted(p.name for p in (ctx.state_dir / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]


@pytest.mark.integration
def test_sft_full_weights_then_load_for_inference(tmp_path: Path) -> None:
    from ftpipe.models.loading import load_for_inference

    ctx = fakes.make_ctx(
        tmp_path,
        peft={"type": "none"},
        hyperparameters={"max_steps": 3, "learning_rate": 3e-3},
        checkpoint={"every_steps": 100, "keep": 1},
    )
    _backend().train(ctx)
    ref, metrics = _artifact(ctx)
    assert ref.adapter is False and (ctx.out_dir / "model" / "model.safetensors").exists()
    # the finished model is saved once: no extra checkpoint when training ends off the interval
    assert not list((ctx.state_dir / "checkpoints").glob("checkpoint-*"))
    assert metrics["trainable_parameters"] == metrics["total_parameters"]

    model, tok = load_for_inference(ref, ctx.out_dir, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir)
    assert not model.training and tok.padding_side == "left"
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "2 c. flour"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_preference_methods_few_steps(tmp_path: Path, method: str) -> None:
    rec = fakes.Recorder()
    ctx = fakes.make_ctx(
        tmp_path,
        method=method,
        recorder=rec,
        hyperparameters={"max_steps": 3, "batch_size": 2, "beta": 0.2, "max_prompt_length": 128},
    )
    result = _backend().train(ctx)
    ref, metrics = _artifact(ctx)
    assert ref.adapter is True and metrics["global_step"] == 3 == result.metrics["global_step"]
    assert isinstance(metrics["train_loss"], float)
    args = json.loads((ctx.out_dir / "training_args.json").read_text())
    assert args["beta"] == 0.2 and args["max_length"] == 256
    if method == "orpo":  # ORPO caps the completion: what max_seq_length leaves after the prompt
        assert args["max_completion_length"] == 128
    else:
        assert any("max_prompt_length" in line for line in rec.lines)


@pytest.mark.integration
def test_adapter_merge_and_load(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from ftpipe.models.loading import load_for_inference, merge_adapter

    ctx = fakes.make_ctx(tmp_path, hyperparameters={"max_steps": 2, "learning_rate": 1e-2})
    _backend().train(ctx)
    ref = ModelRef.read(ctx.out_dir)
    merged_in_memory, _ = load_for_inference(ref, ctx.out_dir, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir)
    dest = merge_adapter(
        ctx.out_dir / "model", "builtin:tiny", tmp_path / "merged", cache_dir=ctx.cache_dir, base_dir=ctx.base_dir
    )
    assert (dest / "model.safetensors").exists() and (dest / "tokenizer.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(dest)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, merged_in_memory(ids).logits, atol=1e-4)
    # the ModelRef form other steps use
    merge_adapter(ref, ctx.out_dir, tmp_path / "merged2", cache_dir=ctx.cache_dir, base_dir=ctx.base_dir)
    assert (tmp_path / "merged2" / "model.safetensors").exists()


@pytest.mark.integration
def test_training_config_maps_every_field(tmp_path: Path) -> None:
    from ftpipe.trainers.trl_args import training_config
    from ftpipe.trainers.trl_backend import build_job

    ctx = fakes.make_ctx(
        tmp_path,
        hyperparameters={
            "epochs": 2,
            "max_steps": None,
            "learning_rate": 5e-4,
            "batch_size": 3,
            "gradient_accumulation_steps": 2,
            "max_seq_length": 128,
            "warmup_ratio": 0.1,
            "weight_decay": 0.01,
            "lr_scheduler": "cosine",
            "optimizer": "adamw_torch",
            "packing": True,
            "gradient_checkpointing": True,
            "logging_steps": 7,
        },
        checkpoint={"every_steps": 30, "keep": 3},
    )
    job = build_job(ctx)
    assert "token" not in job.to_json()
    cfg, warnings = training_config(job, fp16=False, bf16=False)
    assert (cfg.num_train_epochs, cfg.max_steps, cfg.learning_rate) == (2.0, -1, 5e-4)
    assert (cfg.per_device_train_batch_size, cfg.per_device_eval_batch_size, cfg.gradient_accumulation_steps) == (
        3,
        3,
        2,
    )
    assert (cfg.max_length, cfg.warmup_steps, cfg.weight_decay) == (128, 0.1, 0.01)
    assert (str(cfg.lr_scheduler_type.value), str(cfg.optim.value), cfg.packing) == ("cosine", "adamw_torch", True)
    assert cfg.activation_checkpointing is True and cfg.logging_steps == 7 and cfg.seed == 7
    assert (cfg.save_steps, cfg.save_total_limit) == (30, 3)
    assert cfg.output_dir == str(ctx.state_dir / "checkpoints")
    assert cfg.report_to == [] or cfg.report_to == "none" or cfg.report_to == ["none"]
    assert warnings == []


@pytest.mark.integration
def test_mixed_precision_on_cpu_and_qlora_needs_cuda(tmp_path: Path) -> None:
    import torch

    from ftpipe.trainers.trl_args import mixed_precision

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only behaviour")
    assert mixed_precision("auto") == (False, False)
    assert mixed_precision("no") == (False, False)
    with pytest.raises(StepError, match="fp16 needs a CUDA GPU"):
        mixed_precision("fp16")
    ctx = fakes.make_ctx(tmp_path, peft={"type": "qlora", "r": 4, "alpha": 8})
    with pytest.raises(StepError, match="qlora needs a CUDA GPU"):
        _backend().train(ctx)
    assert not (ctx.out_dir / "model.json").exists()


def test_missing_reporter_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.trainers import trl_args

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(StepError, match="wandb needs the 'wandb' package") as err:
        trl_args.check_report_to(["wandb"])
    assert err.value.hint == "pip install wandb"


@pytest.mark.integration
def test_sft_on_text_records_and_wrong_format_for_dpo(tmp_path: Path) -> None:
    ctx = fakes.make_ctx(tmp_path, hyperparameters={"max_steps": 2})
    prepared = ctx.inputs["prepare"]
    lines = [json.dumps({"text": f"Recipe {i}: mix flour and sugar, bake 20 minutes."}) for i in range(8)]
    (prepared / "train.jsonl").write_text("\n".join(lines) + "\n")
    (prepared / "validation.jsonl").write_text("")
    result = _backend().train(ctx)
    assert result.metrics["global_step"] == 2 and "eval_loss" not in result.metrics

    ctx = fakes.make_ctx(tmp_path / "dpo", method="dpo")
    fakes.write_prepared(ctx.inputs["prepare"], "sft")  # chat records, not preference pairs
    with pytest.raises(StepError, match="dpo needs preference records"):
        _backend().train(ctx)


@pytest.mark.integration
def test_two_processes_run_under_torchrun(tmp_path: Path) -> None:
    """gpus_per_node * nodes > 1: the job runs under torchrun (two CPU processes with gloo
    here); progress and log lines come back from rank 0, the artifact is complete."""
    rec = fakes.Recorder()
    ctx = fakes.make_ctx(
        tmp_path,
        recorder=rec,
        resources={"gpus_per_node": 2, "nodes": 1},
        hyperparameters={"max_steps": 3, "batch_size": 2},
    )
    result = _backend().train(ctx)
    ref, metrics = _artifact(ctx)
    assert ref.adapter and metrics["global_step"] == 3 == result.metrics["global_step"]
    assert any("torch.distributed.run --nproc_per_node=2" in line for line in rec.lines)
    assert any(line.startswith("step 3/3: loss=") for line in rec.lines)
    assert rec.steps[-1] == (3, 3, "train")
    assert metrics["epoch"] == pytest.approx(3 * 2 * 2 / 16)  # both ranks consumed batches
    job = json.loads((ctx.state_dir / "job.json").read_text())
    assert job["out_dir"] == str(ctx.out_dir) and "token" not in json.dumps(job).lower()


@pytest.mark.integration
def test_fsdp_shards_across_two_cpu_processes(tmp_path: Path) -> None:
    """trainer.distributed: fsdp under torchrun with two CPU processes (gloo): the Trainer
    runs PyTorch FSDP (full shard, decoder layers wrapped) and saves one full model."""
    import torch

    rec = fakes.Recorder()
    ctx = fakes.make_ctx(
        tmp_path,
        recorder=rec,
        resources={"gpus_per_node": 2, "nodes": 1},
        peft={"type": "none"},
        hyperparameters={"max_steps": 3, "batch_size": 2},
        distributed={"strategy": "fsdp", "fsdp": {"activation_checkpointing": False}},
    )
    result = _backend().train(ctx)
    assert result.metrics["global_step"] == 3
    args = json.loads((ctx.out_dir / "training_args.json").read_text())
    # transformers records "full_shard" as FSDP2's reshard-after-forward
    assert args["fsdp"] is True and args["fsdp_config"]["reshard_after_forward"] is True
    from safetensors.torch import load_file

    weights = load_file(str(next((ctx.out_dir / "model").glob("*.safetensors"))))
    # a full (gathered) state dict, not one rank's shard: every tensor has its model shape
    from ftpipe.models.loading import load_for_inference

    model, _ = load_for_inference(
        ModelRef.read(ctx.out_dir), ctx.out_dir, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir
    )
    for name, tensor in model.state_dict().items():
        if name in weights:
            assert weights[name].shape == tensor.shape, name
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_distributed_strategies_become_trainer_arguments() -> None:
    from ftpipe.trainers.distributed import trainer_arguments

    assert trainer_arguments({"strategy": "ddp"}, bf16=False, fp16=False) == {}
    fsdp = trainer_arguments(
        {
            "strategy": "fsdp",
            "fsdp": {
                "sharding": "shard_grad_op",
                "auto_wrap": "size",
                "min_num_params": 1000,
                "cpu_offload": True,
                "activation_checkpointing": True,
            },
        },
        bf16=True,
        fp16=False,
    )
    assert fsdp == {
        "fsdp": "shard_grad_op auto_wrap offload",
        "fsdp_config": {"activation_checkpointing": True, "min_num_params": 1000},
    }
    ds = trainer_arguments(
        {"strategy": "deepspeed", "deepspeed": {"stage": 3, "offload_optimizer": True, "offload_params": True}},
        bf16=True,
        fp16=False,
    )
    zero = ds["deepspeed"]["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu"
    assert zero["offload_param"]["device"] == "cpu" and ds["deepspeed"]["bf16"] == {"enabled": "auto"}


@pytest.mark.integration
def test_named_chat_template_is_trained_and_saved(tmp_path: Path) -> None:
    from ftpipe.models.loading import load_for_inference

    ctx = fakes.make_ctx(tmp_path, chat_template="zephyr", hyperparameters={"max_steps": 2})
    _backend().train(ctx)
    ref = ModelRef.read(ctx.out_dir)
    _, tok = load_for_inference(ref, ctx.out_dir, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>\nHi<|im_end|>\n<|assistant|>\n"


def test_unknown_chat_template_names_the_choices() -> None:
    from types import SimpleNamespace

    from ftpipe.models.chat_templates import apply_chat_template_choice

    with pytest.raises(ValueError, match=r"unknown chat template 'llama9' \(available: chatml, zephyr\)"):
        apply_chat_template_choice(SimpleNamespace(), SimpleNamespace(), "llama9")


def test_unknown_chat_template_in_the_pipeline_is_a_step_error(tmp_path: Path) -> None:
    ctx = fakes.make_ctx(tmp_path, chat_template="llama9")
    with pytest.raises(StepError, match="model.chat_template: unknown template 'llama9'"):
        _backend().train(ctx)
