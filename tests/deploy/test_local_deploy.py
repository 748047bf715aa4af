"""The local deploy target and the model card, on hand-made train artifacts.

The helpers at the top (a train artifact holding the tiny model or a LoRA adapter on it, a
pipeline, a step context) are shared by the other tests in tests/deploy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftpipe.contracts import ModelRef, StepContext

TOKEN = "hf_test_token"  # the loopback Hub's token: it must never land in a file


# --------------------------------------------------------------------------- shared helpers


def shared_cache() -> Path:
    """The cache tests/conftest.py points FTPIPE_CACHE at (usable before its fixture runs)."""
    repo = Path(__file__).resolve().parents[2]
    return Path(os.environ.get("FTPIPE_TEST_CACHE", repo / ".pytest_cache" / "ftpipe-cache"))


def tiny_model_dir() -> Path:
    from ftpipe.models.tiny import ensure_tiny_model

    return ensure_tiny_model(shared_cache())


def make_train_artifact(folder: Path, *, adapter: bool) -> Path:
    """A train artifact as the trl backend leaves it: model.json + model/ (the tiny model,
    or a LoRA adapter with non-zero weights on it, each with its tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    model_dir = folder / "model"
    if adapter:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = tiny_model_dir()
        model = AutoModelForCausalLM.from_pretrained(base)
        # init_lora_weights=False: random B, so merging visibly changes the weights
        peft = get_peft_model(
            model,
            LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
            ),
        )
        peft.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(base).save_pretrained(model_dir)
    else:
        shutil.copytree(tiny_model_dir(), model_dir)
    (model_dir / "training_args.bin").write_bytes(b"pickle")  # never published
    ModelRef(kind="local", base="builtin:tiny", path="model", adapter=adapter).write(folder)
    (folder / "_result.json").write_text(json.dumps({"run_id": "20240101-000000-abcd"}))
    return folder


def make_evaluate_artifact(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(
        "# Evaluation: did fine-tuning pay?\n\n| variant | token_f1 |\n|---|---|\n"
        "| finetuned | 0.61 |\n| base | 0.12 (+0.49) |\n"
    )
    (folder / "report.json").write_text("{}")
    return folder


def pipeline_doc(deploy: list[dict], *, dataset: dict | None = None, model: dict | None = None) -> dict:
    return {
        "version": 1,
        "name": "recipes",
        "description": "Extract ingredients.",
        "dataset": dataset
        or {
            "source": {"type": "local", "path": "data.jsonl"},
            "format": "chat",
            "system_prompt": "You are a recipe assistant.",
        },
        "model": model or {"base": "builtin:tiny"},
        "trainer": {
            "backend": "trl",
            "peft": {"type": "lora", "r": 4},
            "hyperparameters": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 2},
        },
        "deploy": deploy,
    }


def make_pipeline(doc: dict) -> Any:
    from ftpipe.registry import pipeline_model

    return pipeline_model().model_validate(doc, context={"resolved": True})


def make_ctx(
    tmp_path: Path,
    doc: dict,
    *,
    inputs: dict[str, Path],
    target_index: int = 0,
    step_id: str = "deploy.x",
    run_id: str = "20240101-000001-beef",
    logs: list | None = None,
) -> StepContext:
    pipeline = make_pipeline(doc)
    pipeline_path = tmp_path / "pipe.yaml"
    pipeline_path.write_text(yaml.safe_dump(doc))
    data = tmp_path / "data.jsonl"
    if not data.exists():
        data.write_text(
            json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
            + "\n"
        )
    out = tmp_path / f"out-{step_id}"
    out.mkdir(parents=True, exist_ok=True)
    logs = [] if logs is None else logs
    (tmp_path / "store" / "state" / step_id).mkdir(parents=True, exist_ok=True)
    return StepContext(
        run_id=run_id,
        step_id=step_id,
        pipeline=pipeline,
        pipeline_path=pipeline_path,
        out_dir=out,
        inputs=inputs,
        state_dir=(tmp_path / "store" / "state" / step_id).resolve(),
        cache_dir=shared_cache(),
        log=logs.append,
        progress=lambda *a: None,
        secrets=(TOKEN,),
        options={"target": pipeline.deploy[target_index]} if pipeline.deploy else {},
    )


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return {
        "full": make_train_artifact(root / "full", adapter=False),
        "adapter": make_train_artifact(root / "adapter", adapter=True),
        "evaluate": make_evaluate_artifact(root / "evaluate"),
    }


def _deploy_local(tmp_path: Path, train: Path, target: dict, **extra: Path) -> tuple[StepContext, Any]:
    from ftpipe.deploy.local import LocalDeploy

    ctx = make_ctx(tmp_path, pipeline_doc([target]), inputs={"train": train, **extra})
    return ctx, LocalDeploy().deploy(ctx)


def test_full_model_is_copied_with_card_and_without_training_leftovers(tmp_path, artifacts):
    ctx, result = _deploy_local(
        tmp_path, artifacts["full"], {"type": "local", "path": "out/{pipeline}"}, evaluate=artifacts["evaluate"]
    )
    dest = tmp_path / "out" / "recipes"
    files = files_of(dest)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "ftpipe.json",
    } <= files
    assert "training_args.bin" not in files
    doc = json.loads((ctx.out_dir / "deploy.json").read_text())
    assert doc["target"] == "local" and doc["path"] == str(dest) and doc["files"] == sorted(files)
    assert json.loads((dest / "ftpipe.json").read_text())["adapter"] is False
    assert result.metrics["files"] == len(files)
    # the card is kept in the step's artifact too
    assert (ctx.out_dir / "README.md").read_text() == (dest / "README.md").read_text()


def test_adapter_keeps_a_pointer_to_its_base_and_loads(tmp_path, artifacts):
    ctx, _ = _deploy_local(tmp_path, artifacts["adapter"], {"type": "local", "path": "deployed"})
    dest = tmp_path / "deployed"
    files = files_of(dest)
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "ftpipe.json"} <= files
    assert "model.safetensors" not in files
    assert json.loads((dest / "adapter_config.json").read_text())["base_model_name_or_path"] == "builtin:tiny"
    marker = json.loads((dest / "ftpipe.json").read_text())
    # train_key: which fine-tune this is (the train artifact's key), for `must_beat: [deployed]`
    assert marker["train_key"] == Path(ctx.inputs["train"]).name and marker["replaced_train_key"] is None
    assert marker | {"pipeline": None, "train_key": None, "replaced_train_key": None} == {
        "base": "builtin:tiny",
        "revision": None,
        "adapter": True,
        "merged": False,
        "pipeline": None,
        "train_key": None,
        "replaced_train_key": None,
    }
    card = (dest / "README.md").read_text()
    assert front_matter(card)["library_name"] == "peft"

    # loads through ftpipe.json: the built-in base, the adapter merged in
    import torch
    from safetensors.torch import load_file

    from ftpipe.serve import load_model

    lm = load_model(dest, "x")
    base = load_file(tiny_model_dir() / "model.safetensors")
    key = next(k for k in base if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(lm.model.state_dict()[key], base[key])


def test_merge_writes_full_weights_that_differ_from_the_base(tmp_path, artifacts):
    import torch
    from safetensors.torch import load_file

    _deploy_local(tmp_path, artifacts["adapter"], {"type": "local", "path": "merged", "merge": True})
    dest = tmp_path / "merged"
    files = files_of(dest)
    assert "adapter_config.json" not in files and "config.json" in files and "tokenizer.json" in files
    marker = json.loads((dest / "ftpipe.json").read_text())
    assert marker["merged"] is True and marker["adapter"] is False
    weights = {}
    for f in dest.glob("*.safetensors"):
        weights.update(load_file(f))
    base = load_file(tiny_model_dir() / "model.safetensors")
    key = next(k for k in base if k.endswith("self_attn.q_proj.weight"))
    assert not any("lora" in k for k in weights)
    assert not torch.equal(weights[key], base[key])
    assert front_matter((dest / "README.md").read_text())["library_name"] == "transformers"


def test_redeploy_replaces_the_folder_and_foreign_folders_are_refused(tmp_path, artifacts):
    from ftpipe.errors import StepError

    _deploy_local(tmp_path, artifacts["full"], {"type": "local", "path": "dest"})
    (tmp_path / "dest" / "stale.txt").write_text("from an older deploy")
    _deploy_local(tmp_path, artifacts["adapter"], {"type": "local", "path": "dest"})
    files = files_of(tmp_path / "dest")
    assert "stale.txt" not in files and "model.safetensors" not in files and "adapter_config.json" in files
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dest.")]  # no temp siblings left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my files")
    with pytest.raises(StepError, match="not written by ftpipe"):
        _deploy_local(tmp_path, artifacts["full"], {"type": "local", "path": "mine"})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my files"


def test_hosted_model_is_refused_with_a_hint(tmp_path):
    from ftpipe.errors import StepError

    art = tmp_path / "train"
    art.mkdir()
    ModelRef(kind="hosted", base="gpt-4o-mini", provider="openai", model_id="ft:gpt-4o-mini:x").write(art)
    with pytest.raises(StepError, match="hosted model"):
        _deploy_local(tmp_path, art, {"type": "local", "path": "dest"})


def test_model_card_contents(tmp_path, artifacts):
    from ftpipe.deploy.modelcard import build_model_card, pipeline_hash

    doc = pipeline_doc(
        [{"type": "local"}],
        dataset={
            "source": {"type": "hub", "repo": "tester/recipes", "revision": "abc123", "token": TOKEN},
            "format": "chat",
        },
        model={"base": "Qwen/Qwen2.5-0.5B-Instruct", "token": TOKEN},
    )
    # a secret that leaked into a free-text field is still redacted from the card
    doc["description"] = f"Extract ingredients. token={TOKEN}"
    ctx = make_ctx(tmp_path, doc, inputs={"train": artifacts["adapter"], "evaluate": artifacts["evaluate"]})
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "gate.json").write_text(json.dumps({"passed": True, "reason": "beats base by 0.49"}))
    ctx = StepContext(**{**ctx.__dict__, "inputs": {**ctx.inputs, "gate": gate}})
    ref = ModelRef(kind="local", base="Qwen/Qwen2.5-0.5B-Instruct", path="model", adapter=True)
    card = build_model_card(ctx, ref, adapter=True, repo_id="tester/recipes-model")
    meta = front_matter(card)
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert meta["library_name"] == "peft"
    assert meta["tags"][:2] == ["ftpipe", "fine-tuned"] and "lora" in meta["tags"] and "sft" in meta["tags"]
    assert meta["datasets"] == ["tester/recipes"]
    assert "Hub dataset `tester/recipes` at `abc123`" in card
    assert pipeline_hash(ctx) in card and "`recipes`" in card
    assert "learning_rate: 0.001" in card and "batch_size: 2" in card
    assert "## Evaluation" in card and "| finetuned | 0.61 |" in card and "### Evaluation: did" in card
    assert "Deployment gate: **passed**" in card
    assert "ftpipe run pipe.yaml" in card and str(tmp_path) not in card
    assert "20240101-000000-abcd" in card  # the training run
    assert 'AutoPeftModelForCausalLM.from_pretrained("tester/recipes-model")' in card
    assert TOKEN not in card and "***" in card


def test_model_card_for_builtin_base_without_evaluation(tmp_path, artifacts):
    from ftpipe.deploy.modelcard import build_model_card
    from ftpipe.planner import data_fingerprint

    ctx = make_ctx(tmp_path, pipeline_doc([{"type": "local"}]), inputs={"train": artifacts["full"]})
    card = build_model_card(ctx, ModelRef.read(artifacts["full"]), adapter=False, location="/srv/m")
    meta = front_matter(card)
    assert "base_model" not in meta and "datasets" not in meta and meta["library_name"] == "transformers"
    assert "`builtin:tiny`" in card and "no evaluate step" in card
    assert data_fingerprint(ctx.pipeline, tmp_path) in card
    assert "ftpipe serve /srv/m" in card
