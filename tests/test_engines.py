"""Which engine runs a local model (serve and evaluation): the decision, and that the
transformers path answers exactly as before."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ftpipe.engines import choose_engine, cuda_gpu_count
from ftpipe.errors import UsageError


@pytest.mark.parametrize(
    ("vllm", "gpus", "engine"),
    [
        (True, 1, "vllm"),
        (True, 8, "vllm"),
        (True, 0, "transformers"),
        (False, 4, "transformers"),
        (False, 0, "transformers"),
    ],
)
def test_auto_takes_vllm_only_with_a_gpu(vllm, gpus, engine):
    choice = choose_engine("auto", vllm=vllm, gpus=gpus)
    assert choice.name == engine
    if not vllm:
        assert "vllm is not installed" in choice.reason
    elif not gpus:
        assert "no CUDA GPU" in choice.reason


def test_explicit_choices():
    assert choose_engine("transformers", vllm=True, gpus=2).name == "transformers"
    assert choose_engine("vllm", vllm=True, gpus=1).name == "vllm"
    with pytest.raises(UsageError, match="vllm is not installed") as info:
        choose_engine("vllm", vllm=False, gpus=1)
    assert "pip install vllm" in (info.value.hint or "")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        choose_engine("vllm", vllm=True, gpus=0)
    with pytest.raises(UsageError, match="unknown engine"):
        choose_engine("llamacpp")


def test_probes_on_this_machine(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cuda_gpu_count() == 0
    assert choose_engine("auto").name == "transformers"  # vllm needs a GPU: never picked here


def test_serve_refuses_an_engine_that_cannot_run_here(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "serve", str(tmp_path), "--engine", "vllm"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2 and "engine 'vllm' cannot run here" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluation_generation_on_transformers_is_unchanged(monkeypatch):
    """engine=auto on a machine without vLLM/GPU is the transformers path: the same greedy
    answers as engine=transformers, in prompt order, on the tiny model."""
    from ftpipe.evaluation.generate import generate_local
    from ftpipe.serve import load_model
    from tests.deploy.test_local_deploy import tiny_model_dir

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    lm = load_model(tiny_model_dir(), "tiny")
    prompts = [[{"role": "user", "content": f"What goes in {dish}?"}] for dish in ("soup", "a cake", "bread")]
    auto = generate_local(lm.model, lm.tokenizer, prompts, max_new_tokens=8, batch_size=2, engine="auto")
    plain = generate_local(lm.model, lm.tokenizer, prompts, max_new_tokens=8, batch_size=2, engine="transformers")
    one_by_one = [generate_local(lm.model, lm.tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert auto == plain == one_by_one
    assert all(g.completion_tokens >= 1 for g in auto)


def test_continuous_batching_answers_like_padded_batches():
    """The path real models take on transformers (continuous batching) gives the same greedy
    texts and token counts as today's padded batches, on the tiny model (forced: by size it
    takes the padded path)."""
    from ftpipe.evaluation import engines
    from ftpipe.evaluation.generate import _encode_prompt, _stop_ids, generate_local
    from ftpipe.serve import load_model
    from tests.deploy.test_local_deploy import tiny_model_dir

    lm = load_model(tiny_model_dir(), "tiny")
    assert not engines.prefers_continuous_batching(lm.model)  # 0.3M parameters: padded batches
    assert engines.prefers_continuous_batching(lm.model, min_params=1)
    prompts = [
        [
            {"role": "system", "content": "You are a recipe assistant."},
            {"role": "user", "content": f"What goes in {dish}?"},
        ]
        for dish in ("soup", "a cake with eggs and milk", "bread", "a long stew of beef, onions and carrots")
    ]
    padded = generate_local(lm.model, lm.tokenizer, prompts, max_new_tokens=12, batch_size=4)
    encoded = [_encode_prompt(lm.tokenizer, p) for p in prompts]
    done: list[int] = []
    cb = engines.continuous_batching_generate(
        lm.model,
        lm.tokenizer,
        encoded,
        _stop_ids(lm.model, lm.tokenizer),
        max_new_tokens=12,
        pad_id=lm.tokenizer.pad_token_id,
        on_batch=done.append,
    )
    assert cb == padded and done == [len(prompts)]
    # each answer carries its measured latency (the report's p50/p95): never zero
    assert all(g.seconds > 0 for g in cb) and all(g.seconds > 0 for g in padded)


def test_vllm_command_serves_the_folder_under_the_pipeline_name(tmp_path, monkeypatch):
    from ftpipe.serving import vllm_command

    monkeypatch.setenv("FTPIPE_API_KEY", "k-secret")
    cmd = vllm_command(tmp_path, "recipes", "127.0.0.1", 8000)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--model") + 1] == str(tmp_path) and cmd[cmd.index("--served-model-name") + 1] == "recipes"
    assert "k-secret" not in " ".join(cmd)  # the key travels in VLLM_API_KEY, never on the command line
