"""KTO, GRPO (rewards by metric name), tool-calling SFT and the PEFT variants on the built-in
tiny model with real TRL/PEFT, a few steps each; the GPU-only switches say so on a CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from ftpipe.errors import StepError

_spec = importlib.util.spec_from_file_location("trl_fakes", Path(__file__).with_name("trl_fakes.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]


def _ctx(
    tmp_path: Path,
    *,
    method: str,
    rows: list[dict],
    trainer: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    peft: dict[str, Any] | None = None,
    rec: Any = None,
) -> Any:
    from ftpipe.spec.models import TrlTrainer

    ctx = fakes.make_ctx(tmp_path, recorder=rec, peft=peft)
    hp = {
        "max_steps": 2,
        "batch_size": 2,
        "learning_rate": 1e-3,
        "max_seq_length": 256,
        "logging_steps": 1,
        "mixed_precision": "no",
    } | (hyperparameters or {})
    ctx.pipeline.trainer = TrlTrainer(
        backend="trl",
        method=method,
        hyperparameters=hp,
        peft=peft or {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        checkpoint={"every_steps": None},
        seed=7,
        **(trainer or {}),
    )
    prepared = ctx.inputs["prepare"]
    (prepared / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (prepared / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    return ctx


def _train(ctx: Any) -> tuple[Any, dict, list[dict]]:
    from ftpipe.trainers.trl_backend import TrlBackend

    result = TrlBackend().train(ctx)
    metrics = json.loads((ctx.out_dir / "metrics.json").read_text())
    history = json.loads((ctx.out_dir / "loss.json").read_text())
    return result, metrics, history


def _kto_rows(n: int = 12) -> list[dict]:
    rows = fakes.recipes(n)
    out = []
    for i, row in enumerate(rows):
        good = i % 2 == 0
        answer = (
            row["messages"][-1]
            if good
            else {"role": "assistant", "content": rows[(i + 1) % n]["messages"][-1]["content"]}
        )
        out.append({"prompt": row["messages"][:-1], "completion": [answer], "label": good})
    return out


@pytest.mark.integration
def test_kto_trains_with_its_loss_logged(tmp_path: Path) -> None:
    ctx = _ctx(
        tmp_path,
        method="kto",
        rows=_kto_rows(),
        hyperparameters={"beta": 0.2, "desirable_weight": 1.0, "undesirable_weight": 1.5},
    )
    result, metrics, history = _train(ctx)
    assert metrics["global_step"] == 2 and isinstance(metrics["train_loss"], float)
    assert [h["loss"] for h in history if "loss" in h] and "eval_loss" in metrics
    args = json.loads((ctx.out_dir / "training_args.json").read_text())
    assert (args["beta"], args["undesirable_weight"]) == (0.2, 1.5)
    assert (ctx.out_dir / "model" / "adapter_config.json").exists()
    assert "kto (lora): 2 steps, train loss" in result.summary


def _grpo_rows(n: int = 8) -> list[dict]:
    return fakes.recipes(n)


@pytest.mark.integration
def test_grpo_trains_with_weighted_rewards_by_metric_name(tmp_path: Path) -> None:
    rec = fakes.Recorder()
    ctx = _ctx(
        tmp_path,
        method="grpo",
        rows=_grpo_rows(),
        rec=rec,
        trainer={"rewards": ["token_f1", {"metric": "ftpipe.evaluation.metrics:rouge_l", "weight": 0.5}]},
        hyperparameters={"batch_size": 4, "num_generations": 4, "max_completion_length": 8},
    )
    result, metrics, history = _train(ctx)
    assert metrics["global_step"] == 2
    logged = [h for h in history if "reward" in h]
    assert logged, history
    assert {"rewards/token_f1/mean", "rewards/ftpipe_evaluation_metrics_rouge_l/mean"} <= logged[0].keys()
    for h in logged:  # the reward is the weighted sum of the two metrics' means
        expected = h["rewards/token_f1/mean"] + 0.5 * h["rewards/ftpipe_evaluation_metrics_rouge_l/mean"]
        assert h["reward"] == pytest.approx(expected, abs=1e-5)
    assert isinstance(metrics["reward_last"], float) and "reward" in result.summary
    args = json.loads((ctx.out_dir / "training_args.json").read_text())
    assert (args["num_generations"], args["max_completion_length"], args["reward_weights"]) == (4, 8, [1.0, 0.5])
    assert args["use_vllm"] is False  # no vllm/CUDA here: transformers generates
    assert any(line.startswith("step 1/2:") and "reward" in line for line in rec.lines)


def test_rewards_score_conversational_completions_against_the_reference() -> None:
    from ftpipe.trainers.rewards import reward_function

    f1 = reward_function("token_f1")
    completions = [[{"role": "assistant", "content": "boil the eggs"}], [{"role": "assistant", "content": "no"}]]
    assert f1(completions=completions, reference=["boil the eggs", "yes"], prompts=[[], []]) == [1.0, 0.0]
    assert f1.__name__ == "token_f1"
    with pytest.raises(Exception, match="unknown metric 'tokn_f1'"):
        reward_function("tokn_f1")


def _tool_rows(n: int = 10) -> list[dict]:
    rows = []
    for i in range(n):
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "oven_time", "arguments": json.dumps({"dish": f"dish {i}"})},
        }
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"How long for dish {i}?"},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "content": f"{i + 10} minutes", "tool_call_id": f"c{i}"},
                    {"role": "assistant", "content": f"Bake it {i + 10} minutes."},
                ],
                "tools": [{"type": "function", "function": {"name": "oven_time", "parameters": {"type": "object"}}}],
            }
        )
    rows.append({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    return rows


@pytest.mark.integration
def test_sft_on_tool_calls_renders_them_through_the_chat_template(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from ftpipe.trainers.trl_data import load_split

    ctx = _ctx(
        tmp_path,
        method="sft",
        rows=_tool_rows(),
        peft={
            "type": "lora",
            "r": 4,
            "alpha": 8,
            "use_dora": True,
            "use_rslora": True,
            "target_modules": "all-linear",
            "modules_to_save": ["lm_head"],
        },
    )
    dataset = load_split(ctx.inputs["prepare"] / "train.jsonl", "sft")
    first = dataset[0]
    assert json.loads(first["tools"])[0]["function"]["name"] == "oven_time"
    assert first["prompt"][1]["tool_calls"][0]["function"]["arguments"] == '{"dish": "dish 0"}'
    _, metrics, _ = _train(ctx)
    assert metrics["global_step"] == 2 and isinstance(metrics["train_loss"], float)
    config = json.loads((ctx.out_dir / "model" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["use_rslora"] is True
    assert config["modules_to_save"] == ["lm_head"] and config["target_modules"]
    tok = AutoTokenizer.from_pretrained(ctx.out_dir / "model")
    text = tok.apply_chat_template(
        first["prompt"] + first["completion"], tools=json.loads(first["tools"]), tokenize=False
    )
    assert '<tool_call>\n{"name": "oven_time", "arguments": {"dish": "dish 0"}}\n</tool_call>' in text
    assert "<tools>" in text and "<|im_start|>tool\n10 minutes" in text


def test_gpu_only_switches_say_so_on_a_cpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only behaviour")
    ctx = _ctx(tmp_path / "a", method="sft", rows=fakes.recipes(8), trainer={"use_liger_kernel": True})
    with pytest.raises(StepError, match="use_liger_kernel needs a CUDA GPU"):
        _train(ctx)
    ctx = _ctx(tmp_path / "b", method="sft", rows=fakes.recipes(8), hyperparameters={"padding_free": True})
    with pytest.raises(StepError, match="padding_free needs a CUDA GPU"):
        _train(ctx)
    ctx = _ctx(
        tmp_path / "c",
        method="grpo",
        rows=fakes.recipes(8),
        trainer={"rewards": ["token_f1"], "use_vllm": True},
        hyperparameters={"batch_size": 2, "num_generations": 2},
    )
    with pytest.raises(StepError, match="use_vllm: generating with vLLM needs a CUDA GPU"):
        _train(ctx)
