"""The validation rules of the methods/formats issue: each mistake is reported at its key
with what to do; the right settings validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe.spec.validate import load

BASE = """\
version: 1
name: demo
dataset:
{dataset}model:
  base: {model}
trainer:
{trainer}"""
ONE = "  source: {type: local, path: d.jsonl}\n"


def _problems(tmp_path: Path, *, dataset: str = ONE, trainer: str, model: str = "builtin:tiny") -> list[str]:
    (tmp_path / "d.jsonl").write_text(json.dumps({"messages": []}) + "\n")
    p = tmp_path / "p.yaml"
    p.write_text(BASE.format(dataset=dataset, trainer=trainer, model=model))
    return [f"{pr.path}: {pr.message}" for pr in load(p).problems]


@pytest.mark.parametrize(
    "dataset, trainer, expected",
    [
        (
            ONE,
            "  backend: trl\n  method: sft\n  rewards: [token_f1]\n",
            "trainer.rewards: rewards score GRPO's sampled completions; method sft uses none",
        ),
        (ONE, "  backend: trl\n  method: grpo\n", "trainer.rewards: method grpo needs at least one reward"),
        (
            ONE,
            "  backend: trl\n  method: grpo\n  rewards: [loss]\n",
            "trainer.rewards[0]: loss is computed from a model's likelihood",
        ),
        (
            ONE + "  format: preference\n",
            "  backend: trl\n  method: grpo\n  rewards: [token_f1]\n",
            "trainer.method: method grpo samples answers to prompts",
        ),
        (
            ONE,
            (
                "  backend: trl\n  method: grpo\n  rewards: [token_f1]\n  hyperparameters: {batch_size: 3, "
                "num_generations: 4}\n  resources: {gpus_per_node: 2}\n"
            ),
            "x 2 processes = 6) must hold whole groups: use num_generations 2 or 3 or 6",
        ),
        (
            ONE + "  format: binary_preference\n",
            "  backend: trl\n  method: kto\n  hyperparameters: {batch_size: 1}\n",
            "trainer.hyperparameters.batch_size: KTO estimates its KL term",
        ),
        (ONE, "  backend: trl\n  use_vllm: true\n", "trainer.use_vllm: use_vllm generates GRPO's completions"),
        (
            ONE + "  format: preference\n",
            "  backend: trl\n  method: dpo\n  hyperparameters: {padding_free: true}\n",
            "trainer.hyperparameters.padding_free: padding_free applies to sft only",
        ),
        (
            ONE,
            "  backend: autotrain\n  peft: {type: lora, use_dora: true}\n",
            "trainer.peft.use_dora: AutoTrain has no use_dora setting",
        ),
        (
            ONE + "  format: alpaca\n",
            "  backend: autotrain\n  chat_template: none\n",
            "trainer.chat_template: alpaca data becomes a list of messages: AutoTrain needs a chat template",
        ),
        (
            (
                "  sources:\n    - {source: {type: local, path: d.jsonl}}\n    - {source: {type: local, path: nope.jsonl}}\n"
                "  columns: {messages: conv}\n"
            ),
            "  backend: trl\n",
            "dataset.columns: with dataset.sources each source maps its own columns",
        ),
        (
            "  sources:\n    - {source: {type: local, path: d.jsonl}}\n    - {source: {type: local, path: nope.jsonl}}\n",
            "  backend: trl\n",
            "dataset.sources[1].source.path: no data at 'nope.jsonl'",
        ),
        (
            (
                "  sources:\n    - {source: {type: local, path: d.jsonl}, name: a}\n"
                "    - {source: {type: local, path: d.jsonl}, name: a, format: alpaca, columns: {outputs: x}}\n"
            ),
            "  backend: trl\n",
            "dataset.sources[1].columns.outputs: 'outputs' is not a field of format alpaca",
        ),
        ("  sources:\n    - {source: {type: local, path: d.jsonl}}\n", "  backend: trl\n", "dataset.sources"),
        (ONE, "  backend: trl\n  peft: {type: lora, target_modules: all-lin}\n", "trainer.peft"),
    ],
)
def test_each_mistake_is_reported(tmp_path: Path, dataset: str, trainer: str, expected: str) -> None:
    problems = _problems(tmp_path, dataset=dataset, trainer=trainer)
    assert any(expected in p for p in problems), problems


def test_the_right_settings_validate(tmp_path: Path) -> None:
    trainer = (
        "  backend: trl\n  method: grpo\n  rewards: [token_f1, {metric: 'ftpipe.evaluation.metrics:rouge_l', "
        "weight: 0.5}]\n  use_vllm: auto\n  use_liger_kernel: true\n"
        "  peft: {type: lora, use_dora: true, use_rslora: true, target_modules: all-linear, "
        "modules_to_save: [lm_head]}\n  hyperparameters: {batch_size: 4, gradient_accumulation_steps: 2, "
        "num_generations: 8}\n"
    )
    mixture = (
        "  sources:\n    - {source: {type: local, path: d.jsonl}, format: sharegpt, weight: 0.7,"
        " columns: {from: role, value: text}}\n"
        "    - {source: {type: hub, repo: org/tasks, revision: abc}, format: alpaca, weight: 0.3}\n"
        "  mix: {strategy: interleave, seed: 1}\n"
    )
    assert _problems(tmp_path, dataset=mixture, trainer=trainer) == []
    azure = (
        "  backend: azure-openai\n  method: dpo\n  endpoint: https://x.openai.azure.com\n"
        "  api_version: 2025-02-01-preview\n  hyperparameters: {beta: 0.2}\n"
    )
    assert (
        _problems(tmp_path, dataset=ONE + "  format: preference\n", trainer=azure, model="gpt-4o-mini-2024-07-18") == []
    )
