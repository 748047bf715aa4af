"""The autotrain backend: pipeline → AutoTrain config and data (unit), the managed
environment's bookkeeping, the validation rules, and one real AutoTrain SFT run
(``-m autotrain``; it fails instead of skipping when FTPIPE_REQUIRE_AUTOTRAIN=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ftpipe.errors import EXIT_INVALID, StepError
from ftpipe.spec.validate import load
from ftpipe.trainers import autotrain_config as cfg
from ftpipe.trainers import autotrain_env

REPO = Path(__file__).resolve().parents[2]
# Where the developer's (or CI's) installed environment is, read before the test fixtures
# give each test its own home and cache.
INSTALLED_ENV = autotrain_env.env_dir()

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
}
PREF = {
    "prompt": [{"role": "user", "content": "Capital of France?"}],
    "chosen": [{"role": "assistant", "content": "Paris."}],
    "rejected": [{"role": "assistant", "content": "Lyon."}],
}


def pipeline(tmp_path: Path, trainer: str, *, fmt: str = "chat", extra: str = "") -> object:
    """A validated pipeline whose trainer block is ``trainer`` (YAML, indented 2)."""
    (tmp_path / "d.jsonl").write_text(json.dumps(PREF if fmt == "preference" else CHAT) + "\n")
    text = (
        f"version: 1\nname: t\ndataset:\n  source: {{type: local, path: d.jsonl}}\n  format: {fmt}\n"
        f"model:\n  base: builtin:tiny\ntrainer:\n{textwrap.indent(textwrap.dedent(trainer), '  ')}{extra}"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    loaded = load(path)
    assert loaded.problems == [], loaded.problems
    return loaded.pipeline


def problems(tmp_path: Path, trainer: str, *, fmt: str = "chat", extra: str = "") -> list[str]:
    (tmp_path / "d.jsonl").write_text(json.dumps(CHAT) + "\n")
    text = (
        f"version: 1\nname: t\ndataset:\n  source: {{type: local, path: d.jsonl}}\n  format: {fmt}\n"
        f"model:\n  base: builtin:tiny\ntrainer:\n{textwrap.indent(textwrap.dedent(trainer), '  ')}{extra}"
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return [f"{p.path}: {p.message}" for p in load(path).problems]


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "method,task", [("sft", "llm-sft"), ("dpo", "llm-dpo"), ("orpo", "llm-orpo"), ("reward", "llm-reward")]
)
def test_method_becomes_task(tmp_path: Path, method: str, task: str) -> None:
    fmt = "chat" if method == "sft" else "preference"
    p = pipeline(tmp_path, f"backend: autotrain\nmethod: {method}\n", fmt=fmt)
    config = cfg.build_config(p, base_model="/m", data_dir=tmp_path / "data")
    assert config["task"] == task
    assert config["base_model"] == "/m"
    assert config["backend"] == "local"
    assert config["data"]["path"] == str(tmp_path / "data") and config["data"]["train_split"] == "train"
    assert config["data"]["valid_split"] is None
    # AutoTrain reads these unconditionally: present even for a local run without push
    assert config["hub"] == {"username": "ftpipe", "token": None, "push_to_hub": False}
    assert "dpo_beta" in config["params"] if method == "dpo" else "dpo_beta" not in config["params"]


def test_column_mapping_per_method(tmp_path: Path) -> None:
    sft = pipeline(tmp_path, "backend: autotrain\n")
    assert cfg.build_config(sft, base_model="m", data_dir=tmp_path)["data"]["column_mapping"] == {
        "text_column": "messages"
    }
    for method in ("dpo", "orpo"):
        p = pipeline(tmp_path, f"backend: autotrain\nmethod: {method}\n", fmt="preference")
        assert cfg.build_config(p, base_model="m", data_dir=tmp_path)["data"]["column_mapping"] == {
            "text_column": "chosen",
            "rejected_text_column": "rejected",
            "prompt_text_column": "prompt",
        }
    reward = pipeline(tmp_path, "backend: autotrain\nmethod: reward\n", fmt="preference")
    assert cfg.build_config(reward, base_model="m", data_dir=tmp_path)["data"]["column_mapping"] == {
        "text_column": "chosen",
        "rejected_text_column": "rejected",
    }


def test_hyperparameters_are_translated(tmp_path: Path) -> None:
    p = pipeline(
        tmp_path,
        """\
        backend: autotrain
        method: dpo
        seed: 7
        merge_adapter: false
        hyperparameters: {epochs: 2, learning_rate: 0.001, batch_size: 4, block_size: 128, model_max_length: 512,
                          gradient_accumulation: 2, mixed_precision: bf16, optimizer: adafactor, scheduler: cosine,
                          warmup_ratio: 0.05, weight_decay: 0.01, padding: left, beta: 0.2, max_prompt_length: 64,
                          max_completion_length: 32, logging_steps: 3}
        """,
        fmt="preference",
    )
    params = cfg.build_config(p, base_model="m", data_dir=tmp_path)["params"]
    assert params == {
        "epochs": 2,
        "lr": 0.001,
        "batch_size": 4,
        "block_size": 128,
        "model_max_length": 512,
        "gradient_accumulation": 2,
        "mixed_precision": "bf16",
        "optimizer": "adafactor",
        "scheduler": "cosine",
        "warmup_ratio": 0.05,
        "weight_decay": 0.01,
        "padding": "left",
        "logging_steps": 3,
        "seed": 7,
        "merge_adapter": False,
        "peft": True,
        "quantization": None,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": "all-linear",
        "max_prompt_length": 64,
        "max_completion_length": 32,
        "dpo_beta": 0.2,
    }


@pytest.mark.parametrize(
    "peft,expected",
    [
        ("{type: none}", {"peft": False, "quantization": None}),
        (
            "{type: lora, r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, v_proj]}",
            {
                "peft": True,
                "quantization": None,
                "lora_r": 4,
                "lora_alpha": 8,
                "lora_dropout": 0.1,
                "target_modules": "q_proj,v_proj",
            },
        ),
        ("{type: qlora}", {"peft": True, "quantization": "int4"}),
        ("{type: qlora, bits: 8}", {"peft": True, "quantization": "int8"}),
    ],
)
def test_peft(tmp_path: Path, peft: str, expected: dict) -> None:
    p = pipeline(tmp_path, f"backend: autotrain\npeft: {peft}\n")
    params = cfg.build_config(p, base_model="m", data_dir=tmp_path)["params"]
    assert {k: params[k] for k in expected} == expected
    if expected["peft"] is False:
        assert "lora_r" not in params and params["merge_adapter"] is False


def test_mixed_precision_no_is_autotrain_null(tmp_path: Path) -> None:
    p = pipeline(tmp_path, "backend: autotrain\n")
    assert cfg.build_config(p, base_model="m", data_dir=tmp_path)["params"]["mixed_precision"] is None


@pytest.mark.parametrize(
    "trainer_t,model_t,fmt,expected",
    [
        (None, None, "chat", "tokenizer"),
        (None, "chatml", "chat", "chatml"),
        ("zephyr", None, "chat", "zephyr"),
        (None, None, "text", "none"),
    ],
)
def test_chat_template_choice(tmp_path: Path, trainer_t, model_t, fmt, expected) -> None:
    trainer = "backend: autotrain\n" + (f"chat_template: {trainer_t}\n" if trainer_t else "")
    p = pipeline(tmp_path, trainer, fmt="chat")
    if model_t or fmt == "text":
        p = p.model_copy(
            update={
                "model": p.model.model_copy(update={"chat_template": model_t}),
                "dataset": p.dataset.model_copy(update={"format": fmt}),
            }
        )
    assert cfg.chat_template(p) == expected


def test_token_goes_by_environment_not_file(tmp_path: Path) -> None:
    p = pipeline(tmp_path, "backend: autotrain\n")
    config = cfg.build_config(p, base_model="m", data_dir=tmp_path, with_token=True)
    assert config["hub"]["token"] == "${" + cfg.TOKEN_ENV + "}"


def test_project_name_is_checked(tmp_path: Path) -> None:
    p = pipeline(tmp_path, "backend: autotrain\n")
    with pytest.raises(ValueError):
        cfg.build_config(p, base_model="m", data_dir=tmp_path, project_name="has space")


# --------------------------------------------------------------------------- data


def test_records_for_each_method() -> None:
    assert cfg.convert_record(CHAT, method="sft", template="tokenizer") == {"messages": CHAT["messages"]}
    assert cfg.convert_record({"text": "abc"}, method="sft", template="none") == {"text": "abc"}
    dpo = cfg.convert_record(PREF, method="dpo", template="chatml")
    # AutoTrain takes the prompt from the chosen conversation's first turns
    assert dpo["chosen"] == PREF["prompt"] + PREF["chosen"] and dpo["rejected"] == PREF["prompt"] + PREF["rejected"]
    assert dpo["prompt"] == "Capital of France?"
    plain = cfg.convert_record(PREF, method="orpo", template="none")
    assert plain == {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
    reward = cfg.convert_record(PREF, method="reward", template="tokenizer")
    assert set(reward) == {"chosen", "rejected"} and reward["chosen"][-1]["content"] == "Paris."


def test_write_training_data_refuses_weights(tmp_path: Path) -> None:
    from ftpipe.errors import StepError

    weighted = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    with pytest.raises(StepError, match="weight"):
        cfg.write_training_data([CHAT, weighted], tmp_path / "train.jsonl", method="sft", template="tokenizer")
    n = cfg.write_training_data([CHAT, CHAT], tmp_path / "train.jsonl", method="sft", template="tokenizer")
    assert n == 2 and len((tmp_path / "train.jsonl").read_text().splitlines()) == 2


# --------------------------------------------------------------------------- rules


def test_rules_refuse_what_autotrain_cannot_express(tmp_path: Path) -> None:
    msgs = problems(
        tmp_path,
        """\
        backend: autotrain
        method: sft
        chat_template: none
        hyperparameters: {beta: 0.3, max_prompt_length: 64, logging_steps: 0, optimizer: adamw_torh,
                          scheduler: cosine_warmup, block_size: 4096, model_max_length: 1024}
        """,
        extra="evaluate: {metrics: [loss], baselines: [base]}\n",
    )
    text = "\n".join(msgs)
    assert "trainer.chat_template: chat data is a list of messages" in text
    assert "trainer.hyperparameters.beta: AutoTrain's sft trainer ignores beta" in text
    assert "trainer.hyperparameters.max_prompt_length" in text
    assert "trainer.hyperparameters.logging_steps" in text
    assert "Did you mean 'adamw_torch'?" in text
    assert "cosine_warmup" in text
    assert "trainer.hyperparameters.block_size" in text


def test_rules_model_block(tmp_path: Path) -> None:
    text = "\n".join(problems(tmp_path, "backend: autotrain\n").__iter__())
    assert text == ""
    (tmp_path / "d.jsonl").write_text(json.dumps(CHAT) + "\n")
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nname: t\ndataset: {source: {type: local, path: d.jsonl}}\n"
        "model: {base: org/m, revision: abc, chat_template: '{{ messages }}'}\n"
        "trainer: {backend: autotrain}\n"
    )
    found = [str(p) for p in load(path).problems]
    assert any("model.revision: AutoTrain always loads the newest revision" in f for f in found)
    assert any("model.chat_template: AutoTrain applies its named templates" in f for f in found)
    assert all(":5:" in f or ":4:" in f for f in found)  # positions point into the file


def test_rules_reward_has_no_evaluate(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps(PREF) + "\n")
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nname: t\ndataset: {source: {type: local, path: d.jsonl}, format: preference}\n"
        "model: {base: builtin:tiny}\ntrainer: {backend: autotrain, method: reward}\n"
        "evaluate: {metrics: [loss], baselines: [base]}\n"
    )
    assert any("reward model" in str(p) for p in load(path).problems)


def test_rules_leave_other_backends_alone(tmp_path: Path) -> None:
    assert problems(tmp_path, "backend: trl\nhyperparameters: {beta: 0.3}\n") == []


# --------------------------------------------------------------------------- environment


def test_env_folder_follows_the_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(autotrain_env.ENV_VAR, raising=False)
    a = autotrain_env.env_dir(tmp_path)
    assert a.parent == tmp_path / "envs" and a.name == f"autotrain-{autotrain_env.pin_hash()}"
    assert "autotrain-advanced==0.8.36" in json.dumps(autotrain_env.pin())
    monkeypatch.setattr(autotrain_env, "FIX_LEVEL", autotrain_env.FIX_LEVEL + 1)
    assert autotrain_env.env_dir(tmp_path) != a  # a new fix list builds a new environment


def test_missing_env_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(autotrain_env.ENV_VAR, raising=False)
    with pytest.raises(autotrain_env.AutoTrainNotInstalled) as info:
        autotrain_env.require(tmp_path)
    assert info.value.exit_code == EXIT_INVALID
    assert "ftpipe backends install autotrain" in str(info.value)
    # a folder without the marker (an interrupted install) does not count as installed
    folder = autotrain_env.env_dir(tmp_path)
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "autotrain").write_text("")
    with pytest.raises(autotrain_env.AutoTrainNotInstalled, match="partly built"):
        autotrain_env.require(tmp_path)
    (folder / autotrain_env.MARKER).write_text(json.dumps({"pin": autotrain_env.pin()}))
    assert autotrain_env.require(tmp_path).path == folder
    (folder / autotrain_env.MARKER).write_text(json.dumps({"pin": {"package": "autotrain-advanced==0.0.1"}}))
    with pytest.raises(autotrain_env.AutoTrainNotInstalled, match="different pin"):
        autotrain_env.require(tmp_path)


def test_install_reuses_a_complete_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(autotrain_env.ENV_VAR, raising=False)
    folder = autotrain_env.env_dir(tmp_path)
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "autotrain").write_text("")
    (folder / autotrain_env.MARKER).write_text(json.dumps({"pin": autotrain_env.pin(), "seconds": 1.0}))
    monkeypatch.setattr(autotrain_env, "_run", lambda *a, **k: pytest.fail("nothing should be installed"))
    lines: list[str] = []
    out = autotrain_env.install(tmp_path, log=lines.append)
    assert out["reused"] is True and "already installed" in lines[0]


def test_install_steps_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch by exact pin first, then autotrain-advanced (torch pinned again), then the
    removal of torchvision and timm; the marker is written last."""
    monkeypatch.delenv(autotrain_env.ENV_VAR, raising=False)
    calls: list[list[str]] = []
    folder = autotrain_env.env_dir(tmp_path)

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        assert not (folder / autotrain_env.MARKER).exists()
        if "venv" in cmd:
            (folder / "bin").mkdir(parents=True)
            (folder / "bin" / "autotrain").write_text("")

    monkeypatch.setattr(autotrain_env, "_run", fake_run)
    lines: list[str] = []
    out = autotrain_env.install(tmp_path, log=lines.append)
    pip = [c for c in calls if "pip" in c]
    assert pip[0][-1] == "torch==2.13.0"
    assert "autotrain-advanced==0.8.36" in pip[1] and "torch==2.13.0" in pip[1]
    assert pip[2][-3:] == ["uninstall", "-y", "torchvision", "timm"][-3:] and "timm" in pip[2]
    assert [ln for ln in lines if ln.startswith("[")] == [ln for ln in lines if ln[:1] == "["]
    assert [ln.split("]")[0] for ln in lines if ln.startswith("[")] == ["[1/4", "[2/4", "[3/4", "[4/4"]
    assert out["reused"] is False and autotrain_env.find(tmp_path) is not None
    assert out["log"] == str(autotrain_env.install_log_path(folder)) and Path(out["log"]).is_file()
    assert any(out["log"] in ln for ln in lines)


_PIP_NOISE = """
import sys
for i in range(200):
    print(f"Collecting pkg{i}==1.0")
    print(f"  Downloading pkg{i}-1.0-py3-none-any.whl (10 kB)")
    print(f"Requirement already satisfied: dep{i} in ./lib")
print("Installing collected packages: " + ", ".join(f"pkg{i}" for i in range(200)))
print("Successfully installed " + " ".join(f"pkg{i}-1.0" for i in range(200)))
if len(sys.argv) > 1:
    print("ERROR: No matching distribution found for nothing==0")
    sys.exit(1)
"""


def test_install_shows_progress_and_keeps_the_full_pip_log(tmp_path: Path) -> None:
    """Issue 12, 3.12: about 200 pip lines became progress lines; the log file has them all."""
    lines: list[str] = []
    log_path = tmp_path / "install.log"
    with open(log_path, "w") as transcript:
        autotrain_env._run(
            [sys.executable, "-c", _PIP_NOISE],
            log=lines.append,
            env=None,
            what="pip install x",
            echo=autotrain_env.PipProgress(),
            transcript=transcript,
            transcript_path=log_path,
        )
    assert lines == [f"    {n} packages collected ..." for n in range(10, 201, 10)] + [
        "    installing 200 packages ...",
        "    installed 200 packages",
    ]
    logged = log_path.read_text().splitlines()
    assert logged[0].startswith(f"$ {sys.executable} -c")
    assert sum(ln.startswith("Collecting pkg") for ln in logged) == 200
    assert sum(ln.startswith("Requirement already satisfied") for ln in logged) == 200
    lines.clear()
    with open(log_path, "w") as transcript, pytest.raises(StepError) as info:
        autotrain_env._run(
            [sys.executable, "-c", _PIP_NOISE, "fail"],
            log=lines.append,
            env=None,
            what="pip install x",
            echo=autotrain_env.PipProgress(),
            transcript=transcript,
            transcript_path=log_path,
        )
    assert "    ERROR: No matching distribution found for nothing==0" in lines  # errors reach the console
    assert f"the full log: {log_path}" in str(info.value) and "exit 1" in str(info.value)


def test_backends_list_json(tmp_path: Path) -> None:
    env = {**os.environ, "FTPIPE_CACHE": str(tmp_path), "FTPIPE_AUTOTRAIN_ENV": str(tmp_path / "none")}
    out = subprocess.run(["ftpipe", "backends", "list", "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["backend"]: r for r in json.loads(out.stdout)["backends"]}
    assert {"trl", "autotrain", "openai", "azure-openai"} <= set(rows)
    assert rows["autotrain"]["installed"] is False
    assert "ftpipe backends install autotrain" in rows["autotrain"]["needs"]


def test_run_without_env_says_install(tmp_path: Path) -> None:
    """`ftpipe run` of an autotrain pipeline without the environment: the message gives the
    install command (and nothing is trained)."""
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(CHAT) + "\n" for _ in range(12)))
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nname: t\ndataset: {source: {type: local, path: d.jsonl}, split: {validation: 0, "
        "test: 0}, dedupe: false}\nmodel: {base: builtin:tiny}\ntrainer: {backend: autotrain}\n"
    )
    env = {**os.environ, "FTPIPE_AUTOTRAIN_ENV": str(tmp_path / "no-env")}
    out = subprocess.run(["ftpipe", "run", str(path)], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr  # a usage error before any step runs
    assert not (tmp_path / ".ftpipe" / "runs").exists()
    assert "ftpipe backends install autotrain" in out.stderr


# --------------------------------------------------------------------------- integration


def _installed_env() -> Path | None:
    if (INSTALLED_ENV / autotrain_env.MARKER).exists() and autotrain_env.read_marker(INSTALLED_ENV):
        return INSTALLED_ENV
    return None


@pytest.mark.autotrain
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_tiny_sft_through_real_autotrain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_path = _installed_env()
    if env_path is None:
        msg = f"the AutoTrain environment is not installed ({INSTALLED_ENV}); run `ftpipe backends install autotrain`"
        if os.environ.get("FTPIPE_REQUIRE_AUTOTRAIN") == "1":
            pytest.fail(msg + " (FTPIPE_REQUIRE_AUTOTRAIN=1: this test may not be skipped)")
        pytest.skip(msg)
    monkeypatch.setenv(autotrain_env.ENV_VAR, str(env_path))
    rows = [json.loads(line) for line in (REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()]
    (tmp_path / "recipes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:60]))
    path = tmp_path / "at.yaml"
    path.write_text(
        textwrap.dedent("""\
        version: 1
        name: at-tiny
        dataset:
          source: {type: local, path: recipes.jsonl}
          format: chat
          split: {validation: 0.1, test: 0.1, seed: 1}
        model: {base: builtin:tiny}
        trainer:
          backend: autotrain
          method: sft
          peft: {type: lora, r: 4, alpha: 8}
          hyperparameters: {epochs: 1, learning_rate: 1.0e-3, batch_size: 4, gradient_accumulation: 1,
                            block_size: 128, model_max_length: 256, logging_steps: 1}
        """)
    )
    store = tmp_path / "store"
    out = subprocess.run(
        ["ftpipe", "run", str(path), "--store", str(store), "--json"], capture_output=True, text=True, timeout=840
    )
    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == {"prepare": "done", "train": "done"}
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())
    train = record["steps"]["train"]
    artifact = store / train["artifact"]
    ref = json.loads((artifact / "model.json").read_text())
    assert ref["kind"] == "local" and ref["path"] == "model" and ref["base"] == "builtin:tiny"
    model = artifact / "model"
    # LoRA merged into the base (merge_adapter defaults to true): full weights, no adapter
    assert ref["adapter"] is False and (model / "model.safetensors").exists()
    assert (model / "tokenizer.json").exists() and (model / "config.json").exists()
    assert not (model / "autotrain-data").exists()
    params = json.loads((model / "training_params.json").read_text())
    assert params["trainer"] == "sft" and not params.get("token")
    metrics = train["metrics"]
    assert metrics["train_rows"] > 0 and isinstance(metrics.get("train_loss"), float)
    assert json.loads((artifact / "loss.json").read_text())
    log = (store / train["log"]).read_text()
    assert "Starting to train" in log
    # the trained folder loads in ftpipe's own transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoTokenizer.from_pretrained(model)
    AutoModelForCausalLM.from_pretrained(model)


# --------------------------------------------------------------------------- the step, with a fake AutoTrain

FAKE_AUTOTRAIN = """#!/bin/sh
# stands in for AutoTrain's CLI: checks its config, prints what AutoTrain prints, writes a model
cfg="$2"
grep -q "task: llm-sft" "$cfg" || { echo "bad config"; exit 3; }
echo "INFO | autotrain.cli.autotrain:main:58 - Using AutoTrain configuration: $cfg"
echo "INFO | autotrain.trainers.common:on_train_begin:386 - Starting to train..."
printf '  0%%|          | 0/2 [00:00<?, ?it/s]\\r 50%%|#####     | 1/2 [00:00<00:00, 4.0it/s]\\r100%%|##########| 2/2 [00:00<00:00, 4.0it/s]\\n'
echo "{'loss': 2.5, 'grad_norm': 0.3, 'learning_rate': 0.001, 'epoch': 0.5}"
echo "{'loss': 2.25, 'grad_norm': 0.3, 'learning_rate': 0.0, 'epoch': 1.0}"
echo "{'train_runtime': 0.5, 'train_samples_per_second': 8.0, 'train_steps_per_second': 4.0, 'train_loss': 2.375, 'epoch': 1.0}"
case "$FAKE_MODE" in
  crash) echo "ERROR | train has failed due to an exception: Traceback (most recent call last): boom"; exit 0 ;;
  exit) echo "ValueError: something AutoTrain did not like"; exit 1 ;;
  noweights) exit 0 ;;
esac
mkdir -p ftpipe-autotrain/autotrain-data
echo '{}' > ftpipe-autotrain/config.json
echo 'weights' > ftpipe-autotrain/model.safetensors
echo '{"trainer": "sft", "token": "hf_secret_value"}' > ftpipe-autotrain/training_params.json
"""


def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "fake-env"
    (folder / "bin").mkdir(parents=True)
    script = folder / "bin" / "autotrain"
    script.write_text(FAKE_AUTOTRAIN)
    script.chmod(0o755)
    (folder / autotrain_env.MARKER).write_text(json.dumps({"pin": autotrain_env.pin()}))
    monkeypatch.setenv(autotrain_env.ENV_VAR, str(folder))
    return folder


def step_context(tmp_path: Path):
    from ftpipe.contracts import StepContext
    from ftpipe.registry import pipeline_model

    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    p = pipeline(tmp_path, "backend: autotrain\npeft: {type: none}\n")
    p = pipeline_model().model_validate(
        {**p.model_dump(mode="json"), "model": {"base": str(base)}}, context={"resolved": True}
    )
    prep = tmp_path / "prepare"
    prep.mkdir()
    (prep / "train.jsonl").write_text("".join(json.dumps(CHAT) + "\n" for _ in range(5)))
    out, state = tmp_path / "out", tmp_path / "state"
    out.mkdir()
    state.mkdir()
    logs: list[str] = []
    progress: list[tuple] = []
    ctx = StepContext(
        run_id="r",
        step_id="train",
        pipeline=p,
        pipeline_path=tmp_path / "p.yaml",
        out_dir=out,
        inputs={"prepare": prep},
        state_dir=state,
        cache_dir=tmp_path / "cache",
        log=logs.append,
        progress=lambda d, t, w: progress.append((d, t, w)),
    )
    return ctx, logs, progress


def test_step_collects_model_metrics_and_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.contracts import ModelRef
    from ftpipe.trainers.autotrain_backend import AutoTrainBackend

    fake_env(tmp_path, monkeypatch)
    ctx, logs, progress = step_context(tmp_path)
    result = AutoTrainBackend().train(ctx)
    ref = ModelRef.read(ctx.out_dir)
    assert ref.kind == "local" and ref.path == "model" and ref.adapter is False
    model = ctx.out_dir / "model"
    assert (model / "model.safetensors").exists() and not (model / "autotrain-data").exists()
    assert json.loads((model / "training_params.json").read_text())["token"] is None  # scrubbed
    assert result.metrics["train_loss"] == 2.375 and result.metrics["steps"] == 2
    assert result.metrics["train_rows"] == 5 and result.metrics["final_loss"] == 2.25
    assert json.loads((ctx.out_dir / "loss.json").read_text()) == [
        {"step": 1, "epoch": 0.5, "loss": 2.5},
        {"step": 2, "epoch": 1.0, "loss": 2.25},
    ]
    assert (0, 2, "training") in progress and (2, 2, "training") in progress
    assert any("Starting to train" in line for line in logs)
    assert not any("it/s]" in line for line in logs)  # progress bars go to progress, not the log
    assert yaml.safe_load((ctx.out_dir / "autotrain.yml").read_text())["task"] == "llm-sft"
    assert not (ctx.state_dir / "autotrain").exists()  # the work folder is cleaned up


@pytest.mark.parametrize(
    "mode,why", [("crash", "reported an exception"), ("exit", "exit code 1"), ("noweights", "no model weights")]
)
def test_step_failure_shows_the_last_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, why: str
) -> None:
    from ftpipe.errors import StepError
    from ftpipe.trainers.autotrain_backend import AutoTrainBackend

    fake_env(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_MODE", mode)
    ctx, _, _ = step_context(tmp_path)
    with pytest.raises(StepError) as info:
        AutoTrainBackend().train(ctx)
    text = str(info.value)
    assert why in text and "Starting to train" in text
    if mode == "crash":
        assert "boom" in text
    if mode == "exit":
        assert "something AutoTrain did not like" in text


def test_preflight_exits_2_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftpipe.preflight import PreflightContext
    from ftpipe.trainers.autotrain_backend import AutoTrainBackend

    monkeypatch.setenv(autotrain_env.ENV_VAR, str(tmp_path / "missing"))
    ctx = PreflightContext(pipeline=None, base_dir=tmp_path, cache_dir=tmp_path, steps=frozenset({"train"}))
    [check] = AutoTrainBackend().preflight(ctx, None)
    assert not check.ok and "ftpipe backends install autotrain" in check.fix + check.problem
    # a cached train step needs no environment
    assert (
        AutoTrainBackend().preflight(PreflightContext(pipeline=None, base_dir=tmp_path, cache_dir=tmp_path), None) == []
    )
    # through `ftpipe run`: exit 2, the fix named, nothing started
    path = tmp_path / "at.yaml"
    rows = (REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()[:20]
    (tmp_path / "data.jsonl").write_text("\n".join(rows) + "\n")
    path.write_text(
        "version: 1\nname: at-missing\ndataset:\n  source: {type: local, path: data.jsonl}\n"
        "  format: chat\nmodel:\n  base: builtin:tiny\ntrainer:\n  backend: autotrain\n"
    )
    env = {**os.environ, autotrain_env.ENV_VAR: str(tmp_path / "missing"), "FTPIPE_STORE": str(tmp_path / "store")}
    out = subprocess.run(["ftpipe", "run", str(path)], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2 and "ftpipe backends install autotrain" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "store" / "runs").exists()


def test_install_other_backends_is_a_usage_error() -> None:
    out = subprocess.run(["ftpipe", "backends", "install", "trl"], capture_output=True, text=True)
    assert out.returncode == 2 and 'pip install "ftpipe[train]"' in out.stderr
    out = subprocess.run(["ftpipe", "backends", "install", "autotrian"], capture_output=True, text=True)
    assert out.returncode == 2 and "Did you mean 'autotrain'?" in out.stderr
