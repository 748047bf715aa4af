"""`ftpipe convert autotrain`: AutoTrain LLM configs (sft, dpo, orpo, reward; local and
spaces backends) become pipelines that validate; every other key is reported with its line."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from ftpipe.convert.autotrain import SCHEMA_HINT, convert_file, env_refs, looks_like_path
from ftpipe.errors import EXIT_INVALID, UsageError
from ftpipe.spec.validate import load

REPO = Path(__file__).resolve().parents[2]
CHAT_ROW = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
PREF_ROW = {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
TEXT_ROW = {"text": "Some plain text to continue."}


def write_config(tmp_path: Path, text: str, rows: dict | None = None, split: str = "train") -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    if rows is not None:
        (data / f"{split}.jsonl").write_text("".join(json.dumps(rows) + "\n" for _ in range(12)))
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(text))
    return path


def converted(tmp_path: Path, config: Path, *, env: dict | None = None, schema: bool = True) -> tuple[dict, object]:
    """Convert to tmp/out/pipeline.yaml, check it validates, return (pipeline, conversion)."""
    out = tmp_path / "out" / "pipeline.yaml"
    out.parent.mkdir(exist_ok=True)
    conv = convert_file(config, output=out)
    out.write_text(conv.text)
    loaded = load(out, env=env or {})
    assert loaded.problems == [], [str(p) for p in loaded.problems]
    try:
        import jsonschema
    except ImportError:
        schema = False
    if schema:
        schema = json.loads((REPO / "schemas" / "pipeline.schema.json").read_text())
        jsonschema.validate(loaded.doc.data, schema)
    lines = conv.text.splitlines()
    assert lines[0] == SCHEMA_HINT  # no schemas/pipeline.schema.json above a temporary folder
    assert lines[1] == f"# Run it:  ftpipe run {out}"
    return yaml.safe_load(conv.text), conv


SFT = """\
task: llm-sft
base_model: HuggingFaceTB/SmolLM2-135M-Instruct
project_name: autotrain-sft
log: none
backend: local
data:
  path: data
  train_split: train
  valid_split: null
  chat_template: tokenizer
  column_mapping:
    text_column: conversation
params:
  block_size: 1024
  model_max_length: 2048
  epochs: 3
  batch_size: 2
  lr: 1e-5
  peft: true
  quantization: null
  target_modules: all-linear
  padding: right
  optimizer: adamw_torch
  scheduler: cosine
  gradient_accumulation: 4
  mixed_precision: bf16
  merge_adapter: true
hub:
  username: ${HF_USERNAME}
  token: ${HF_TOKEN}
  push_to_hub: false
"""


def test_sft_local(tmp_path: Path) -> None:
    pipe, conv = converted(tmp_path, write_config(tmp_path, SFT, {"conversation": CHAT_ROW["messages"]}))
    assert pipe["name"] == "autotrain-sft"
    assert pipe["dataset"]["source"] == {"type": "local", "path": "../data/train.jsonl"}
    assert pipe["dataset"]["format"] == "chat" and pipe["dataset"]["columns"] == {"messages": "conversation"}
    assert pipe["model"] == {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    t = pipe["trainer"]
    assert t["backend"] == "autotrain" and t["method"] == "sft" and t["chat_template"] == "tokenizer"
    assert t["peft"] == {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.05}
    assert t["merge_adapter"] is True
    assert t["hyperparameters"] == {
        "block_size": 1024,
        "model_max_length": 2048,
        "epochs": 3,
        "batch_size": 2,
        "learning_rate": 1e-5,
        "padding": "right",
        "optimizer": "adamw_torch",
        "scheduler": "cosine",
        "gradient_accumulation": 4,
        "mixed_precision": "bf16",
    }
    assert pipe["executor"] == {"type": "local"} and "deploy" not in pipe
    assert conv.unsupported == []
    # every key of the file is accounted for
    assert {e.key for e in conv.mapped} >= {
        "task",
        "base_model",
        "project_name",
        "log",
        "backend",
        "data.path",
        "data.chat_template",
        "data.column_mapping.text_column",
        "params.lr",
        "params.peft",
        "params.quantization",
        "hub.push_to_hub",
    }


@pytest.mark.parametrize("task,method", [("llm-dpo", "dpo"), ("llm-orpo", "orpo")])
def test_dpo_and_orpo(tmp_path: Path, task: str, method: str) -> None:
    config = write_config(
        tmp_path,
        f"""\
        task: {task}
        base_model: Qwen/Qwen2.5-0.5B-Instruct
        project_name: pref-{method}
        log: none
        backend: local
        data:
          path: data
          train_split: train
          valid_split: null
          chat_template: none
          column_mapping:
            text_column: good
            rejected_text_column: bad
            prompt_text_column: question
        params:
          block_size: 512
          epochs: 1
          lr: 5e-6
          peft: true
          quantization: int8
          lora_r: 8
          lora_alpha: 16
          max_prompt_length: 256
          max_completion_length: 256
          dpo_beta: 0.2
        hub:
          username: someone
          token: ${{HF_TOKEN}}
          push_to_hub: false
        """,
        {"question": "q?", "good": "a", "bad": "b"},
    )
    pipe, conv = converted(tmp_path, config)
    assert pipe["trainer"]["method"] == method
    assert pipe["dataset"]["format"] == "preference"
    assert pipe["dataset"]["columns"] == {"chosen": "good", "rejected": "bad", "prompt": "question"}
    assert pipe["trainer"]["peft"] == {"type": "qlora", "bits": 8, "r": 8, "alpha": 16, "dropout": 0.05}
    hp = pipe["trainer"]["hyperparameters"]
    assert hp["max_prompt_length"] == 256 and hp["learning_rate"] == 5e-6
    if method == "dpo":
        assert hp["beta"] == 0.2 and conv.unsupported == []
    else:  # AutoTrain's ORPO trainer does not read dpo_beta: reported, with its line
        assert "beta" not in hp
        assert [(e.key, e.line) for e in conv.unsupported] == [("params.dpo_beta", 25)]


def test_reward(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        task: llm-reward
        base_model: gpt2
        project_name: rm
        log: none
        backend: local
        data: {path: data, train_split: train, valid_split: null, chat_template: none,
               column_mapping: {text_column: chosen, rejected_text_column: rejected}}
        params: {epochs: 1, peft: false}
        hub: {username: u, token: null, push_to_hub: false}
        """,
        PREF_ROW,
    )
    pipe, conv = converted(tmp_path, config)
    assert pipe["trainer"]["method"] == "reward" and pipe["dataset"]["format"] == "preference"
    assert pipe["trainer"]["peft"] == {"type": "none"} and "columns" not in pipe["dataset"]
    assert "evaluate" not in pipe  # a reward model generates nothing to evaluate
    assert any("prompt" in n for n in conv.notes)


def test_generic_is_sft_on_text(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        task: llm-generic
        base_model: gpt2
        project_name: lm
        log: none
        backend: local-cli
        data: {path: data, train_split: train, valid_split: null, chat_template: null,
               column_mapping: {text_column: text}}
        params: {epochs: 1}
        hub: {username: u, token: null, push_to_hub: false}
        """,
        TEXT_ROW,
    )
    pipe, conv = converted(tmp_path, config)
    assert pipe["trainer"]["method"] == "sft" and pipe["trainer"]["chat_template"] == "none"
    assert pipe["dataset"]["format"] == "text" and "columns" not in pipe["dataset"]
    assert any("llm-generic" in n for n in conv.notes)


def test_spaces_backend_and_push(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        task: llm-sft
        base_model: meta-llama/Llama-3.2-1B-Instruct
        project_name: my-llm
        log: none
        backend: spaces-a10g-large
        data:
          path: HuggingFaceH4/no_robots
          train_split: train
          valid_split: test
          chat_template: tokenizer
          column_mapping: {text_column: messages}
        params: {epochs: 1, peft: true, quantization: int4}
        hub:
          username: ${HF_USERNAME}
          token: ${MY_HF_TOKEN}
          push_to_hub: true
        """,
    )
    # schema=False: the JSON schema's repo pattern does not admit ${env:...} references yet
    pipe, conv = converted(tmp_path, config, env={"HF_USERNAME": "alice"}, schema=False)
    assert pipe["dataset"]["source"] == {
        "type": "hub",
        "repo": "HuggingFaceH4/no_robots",
        "split": "train",
        "splits": {"train": "train", "validation": "test"},
    }
    assert pipe["executor"] == {
        "type": "hf-spaces",
        "hardware": "a10g-large",
        "namespace": "${env:HF_USERNAME}",
        "token": "${env:MY_HF_TOKEN}",
    }
    assert pipe["deploy"] == [
        {"type": "hf-hub", "repo": "${env:HF_USERNAME}/my-llm", "private": True, "token": "${env:MY_HF_TOKEN}"}
    ]
    assert pipe["trainer"]["peft"]["type"] == "qlora" and pipe["trainer"]["peft"]["bits"] == 4
    assert "${HF_USERNAME}" not in conv.text and "${MY_HF_TOKEN}" not in conv.text


def test_literal_token_is_not_copied(tmp_path: Path) -> None:
    text = SFT.replace("${HF_TOKEN}", "hf_abcdefghijklmnopqrstuvwxyz").replace(
        "push_to_hub: false", "push_to_hub: true"
    )
    text = text.replace("${HF_USERNAME}", "alice")
    pipe, conv = converted(tmp_path, write_config(tmp_path, text, {"conversation": CHAT_ROW["messages"]}))
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in conv.text
    assert pipe["deploy"][0]["token"] == "${env:HF_TOKEN}" and pipe["deploy"][0]["repo"] == "alice/autotrain-sft"
    assert any("literal" in n for n in conv.notes)


def test_env_references() -> None:
    assert env_refs("${HF_USERNAME}/x") == "${env:HF_USERNAME}/x"
    assert env_refs({"a": ["${A}", 1]}) == {"a": ["${env:A}", 1]}
    assert env_refs("${env:ALREADY}") == "${env:ALREADY}"


def test_unsupported_keys_are_reported_with_their_line(tmp_path: Path) -> None:
    text = SFT.replace(
        "  merge_adapter: true\n",
        "  merge_adapter: true\n  unsloth: true\n  use_flash_attention_2: true\n"
        "  max_grad_norm: 0.5\n  made_up_param: 3\n",
    )
    text = text.replace("log: none", "log: wandb") + "extra_top: 1\n"
    text = text.replace("    text_column: conversation\n", "    text_column: conversation\n    label_column: y\n")
    config = write_config(tmp_path, text, {"conversation": CHAT_ROW["messages"]})
    _, conv = converted(tmp_path, config)
    lines = config.read_text().splitlines()
    got = {e.key: e.line for e in conv.unsupported}
    assert set(got) == {
        "log",
        "data.column_mapping.label_column",
        "params.unsloth",
        "params.use_flash_attention_2",
        "params.max_grad_norm",
        "params.made_up_param",
        "extra_top",
    }
    for key, line in got.items():
        assert lines[line - 1].strip().startswith(key.split(".")[-1] + ":"), (key, line)
    # and in the written pipeline's header, as file:line
    assert f"{config}:{got['params.unsloth']}  params.unsloth:" in conv.text


def test_not_an_llm_task_exits_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        task: text_binary_classification
        base_model: google-bert/bert-base-uncased
        project_name: clf
        log: none
        backend: local
        data: {path: data, train_split: train, valid_split: null, column_mapping: {text_column: text, target_column: y}}
        """,
    )
    with pytest.raises(UsageError) as info:
        convert_file(config)
    assert info.value.exit_code == EXIT_INVALID
    assert f"{config}:1:" in str(info.value) and "not an LLM fine-tuning task" in str(info.value)
    out = subprocess.run(["ftpipe", "convert", "autotrain", str(config)], capture_output=True, text=True)
    assert out.returncode == 2 and "not an LLM fine-tuning task" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "text,needle",
    [
        ("base_model: gpt2\n", "missing 'task'"),
        ("task: llm-sft\nbase_model: gpt2\n", "missing 'data'"),
        ("task: [unclosed\n", "config.yml:"),
        ("- a list\n", "mapping of keys"),
    ],
)
def test_bad_configs_exit_2(tmp_path: Path, text: str, needle: str) -> None:
    config = write_config(tmp_path, text)
    out = subprocess.run(["ftpipe", "convert", "autotrain", str(config)], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr


def test_cli_writes_file_and_json(tmp_path: Path) -> None:
    config = write_config(tmp_path, SFT, {"conversation": CHAT_ROW["messages"]})
    out_file = tmp_path / "pipelines" / "sft.yaml"
    res = subprocess.run(
        ["ftpipe", "convert", "autotrain", str(config), "-o", str(out_file), "--json"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["valid"] is True and report["output"] == str(out_file)
    assert out_file.read_text().startswith(SCHEMA_HINT)
    assert report["pipeline"]["trainer"]["backend"] == "autotrain"
    val = subprocess.run(["ftpipe", "validate", str(out_file)], capture_output=True, text=True)
    assert val.returncode == 0, val.stderr
    again = subprocess.run(
        ["ftpipe", "convert", "autotrain", str(config), "-o", str(out_file)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "--force" in again.stderr


# AutoTrain's own examples (configs/llm_finetuning in its repository) write `task: llm` and
# choose the trainer with params.trainer; AutoTrain lets params.trainer override the task.
LLAMA3_DPO = """\
task: llm
base_model: meta-llama/Meta-Llama-3-8B-Instruct
project_name: autotrain-llama3-8b-dpo-qlora
log: tensorboard
backend: local

data:
  path: mlabonne/orpo-dpo-mix-40k
  train_split: train
  valid_split: null
  chat_template: chatml
  column_mapping:
    text_column: chosen
    rejected_text_column: rejected
    prompt_text_column: prompt

params:
  trainer: dpo
  block_size: 1024
  model_max_length: 2048
  max_prompt_length: 512
  epochs: 3
  batch_size: 2
  lr: 3e-5
  peft: true
  quantization: int4
  target_modules: all-linear
  padding: right
  optimizer: adamw_torch
  scheduler: linear
  gradient_accumulation: 4
  mixed_precision: fp16

hub:
  username: ${HF_USERNAME}
  token: ${HF_TOKEN}
  push_to_hub: true
"""


def test_task_llm_with_params_trainer(tmp_path: Path) -> None:
    pipe, conv = converted(tmp_path, write_config(tmp_path, LLAMA3_DPO), env={"HF_USERNAME": "me"}, schema=False)
    assert pipe["trainer"]["method"] == "dpo" and pipe["trainer"]["chat_template"] == "chatml"
    assert pipe["dataset"]["source"] == {"type": "hub", "repo": "mlabonne/orpo-dpo-mix-40k", "split": "train"}
    assert pipe["trainer"]["hyperparameters"]["learning_rate"] == 3e-5  # YAML 1.1 reads 3e-5 as text
    assert pipe["trainer"]["peft"]["type"] == "qlora"
    assert ("params.trainer", 18) in {(e.key, e.line) for e in conv.mapped}
    assert [e.key for e in conv.unsupported] == ["log"]
    assert pipe["deploy"][0]["repo"] == "${env:HF_USERNAME}/autotrain-llama3-8b-dpo-qlora"


def test_orpo_on_spaces_without_prompt_column(tmp_path: Path) -> None:
    text = (
        LLAMA3_DPO.replace("trainer: dpo", "trainer: orpo")
        .replace("backend: local", "backend: spaces-a10g-largex4")
        .replace("    prompt_text_column: prompt\n", "")
    )
    pipe, conv = converted(tmp_path, write_config(tmp_path, text), env={"HF_USERNAME": "me"}, schema=False)
    assert pipe["trainer"]["method"] == "orpo"
    assert pipe["executor"]["type"] == "hf-spaces" and pipe["executor"]["hardware"] == "a10g-largex4"
    assert any("prompt_text_column" in n for n in conv.notes)


def test_unknown_trainer_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, LLAMA3_DPO.replace("trainer: dpo", "trainer: grpo"))
    with pytest.raises(UsageError, match="grpo"):
        convert_file(config)


def test_schema_modeline_points_at_a_schema_that_exists(tmp_path: Path) -> None:
    """Issue 12, 3.11: the modeline used to say ../schemas/... wherever the file went."""
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    (repo / "schemas" / "pipeline.schema.json").write_text("{}")
    config = write_config(tmp_path, SFT, {"conversation": CHAT_ROW["messages"]})
    for out, expected in (
        (repo / "pipelines" / "sft.yaml", "../schemas/pipeline.schema.json"),
        (repo / "a" / "b" / "sft.yaml", "../../schemas/pipeline.schema.json"),
        (repo / "sft.yaml", "schemas/pipeline.schema.json"),
    ):
        out.parent.mkdir(parents=True, exist_ok=True)
        first = convert_file(config, output=out).text.splitlines()[0]
        assert first == f"# yaml-language-server: $schema={expected}"
        assert (out.parent / expected).is_file()


@pytest.mark.parametrize(
    "path,local",
    [
        ("data/", True),
        ("data/train/", True),
        ("./data", True),
        ("data/recipes.jsonl", True),
        ("a/b/c", True),
        ("org/dataset", False),
        ("squad", False),
    ],
)
def test_path_looking_values_stay_local(path: str, local: bool) -> None:
    assert looks_like_path(path) is local


def test_a_data_folder_that_does_not_exist_yet_stays_local(tmp_path: Path) -> None:
    config = write_config(tmp_path, SFT.replace("  path: data\n", "  path: later/\n"))
    assert not (tmp_path / "later").exists()
    conv = convert_file(config, output=tmp_path / "out" / "pipeline.yaml")
    assert conv.pipeline["dataset"]["source"] == {"type": "local", "path": "../later/train.jsonl"}
    assert any("no train.jsonl or train.csv" in n for n in conv.notes)


def test_settings_that_need_cuda_are_warned_about(tmp_path: Path) -> None:
    text = SFT.replace("quantization: null", "quantization: int4").replace(
        "optimizer: adamw_torch", "optimizer: paged_adamw_8bit"
    )
    conv = convert_file(write_config(tmp_path, text, {"conversation": CHAT_ROW["messages"]}))
    joined = "\n".join(conv.warnings)
    assert len(conv.warnings) == 3, conv.warnings
    assert "int4 (QLoRA) needs a CUDA GPU" in joined and "bf16 needs a GPU" in joined
    assert "paged_adamw_8bit (bitsandbytes) needs a CUDA GPU" in joined
    assert "# Warnings:" in conv.text
    res = subprocess.run(
        ["ftpipe", "convert", "autotrain", str(tmp_path / "config.yml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert res.returncode == 0 and res.stderr.count("warning: ") == 3, res.stderr
    # a GPU Space has CUDA: nothing to warn about
    gpu = convert_file(write_config(tmp_path, text.replace("backend: local", "backend: spaces-a10g-large")))
    assert gpu.warnings == []
    plain = convert_file(write_config(tmp_path, SFT.replace("mixed_precision: bf16", "mixed_precision: fp16")))
    assert plain.warnings == []
