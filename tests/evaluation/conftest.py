"""Fixtures for the evaluation tests: a tiny random chat model, prepared data, a context."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ftpipe.contracts import ModelRef, StepContext


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may reach the Hub (set per test, so it never leaks into another module's)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


SYSTEM = "You are a helpful recipe assistant."

TRAIN = [
    ("How long do I boil an egg?", "Boil an egg for nine minutes."),
    ("What goes in a tomato soup?", "Tomatoes, onion, garlic and stock."),
    ("How do I make pancakes fluffy?", "Use baking powder and rest the batter."),
    ("Which oil is best for frying?", "Use an oil with a high smoke point."),
    ("How do I cook rice?", "Simmer one cup of rice in two cups of water."),
    ("What is a roux?", "Butter and flour cooked together."),
]
TEST = [
    ("How long should I boil eggs?", "Nine minutes."),
    ("What do I put in tomato soup?", "Tomatoes, onion and stock."),
    ("How can I make my pancakes fluffy?", "Add baking powder."),
    ("How much water for rice?", "Two cups per cup of rice."),
]


def chat_record(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from ftpipe.models.tiny import ensure_tiny_model

    # The same shared build the top-level conftest points FTPIPE_CACHE at (deterministic).
    repo = Path(__file__).resolve().parents[2]
    shared = Path(os.environ.get("FTPIPE_TEST_CACHE", repo / ".pytest_cache" / "ftpipe-cache"))
    return ensure_tiny_model(shared)


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.eval()
    return model, tokenizer


@pytest.fixture
def prepare_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "prepare"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [chat_record(q, a) for q, a in TRAIN])
    write_jsonl(folder / "validation.jsonl", [chat_record(q, a) for q, a in TRAIN[:2]])
    write_jsonl(folder / "test.jsonl", [chat_record(q, a) for q, a in TEST])
    return folder


class Recorder:
    def __init__(self) -> None:
        self.logs: list[str] = []
        self.progress: list[tuple[int, int | None, str]] = []

    def log(self, line: str) -> None:
        self.logs.append(line)

    def on_progress(self, done: int, total: int | None, what: str) -> None:
        self.progress.append((done, total, what))


def evaluate_block(**overrides: Any) -> Any:
    from ftpipe.spec.models import Evaluate

    data: dict[str, Any] = {
        "metrics": ["token_f1", "exact_match", "rouge_l", "loss"],
        "baselines": ["base", "few_shot"],
        "few_shot": {"k": 2, "selection": "similar", "seed": 0},
        "generation": {"max_new_tokens": 4, "batch_size": 3},
        "gate": {"metric": "token_f1", "must_beat": ["base"], "min_delta": 0.0},
    }
    data.update(overrides)
    return Evaluate.model_validate(data)


def make_ctx(
    tmp_path: Path,
    *,
    evaluate: Any,
    inputs: dict[str, Path],
    trainer: Any = None,
    base: str = "builtin:tiny",
    recorder: Recorder | None = None,
    step_id: str = "evaluate",
    cache_dir: Path | None = None,
    deploy: list | None = None,
) -> StepContext:
    recorder = recorder or Recorder()
    out = tmp_path / f"out-{step_id}"
    out.mkdir(exist_ok=True)
    pipeline = SimpleNamespace(
        evaluate=evaluate,
        model=SimpleNamespace(base=base, revision=None, token=None, chat_template=None),
        trainer=trainer or SimpleNamespace(backend="trl"),
        deploy=deploy or [],
    )
    return StepContext(
        run_id="run-test",
        step_id=step_id,
        pipeline=pipeline,  # type: ignore[arg-type]
        pipeline_path=tmp_path / "pipeline.yaml",
        out_dir=out,
        inputs=inputs,
        state_dir=tmp_path / "state",
        cache_dir=cache_dir or tmp_path / "cache",
        log=recorder.log,
        progress=recorder.on_progress,
    )


def write_train_artifact(tmp_path: Path, ref: ModelRef) -> Path:
    folder = tmp_path / "train"
    folder.mkdir(exist_ok=True)
    ref.write(folder)
    return folder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The module's helpers, for tests (conftest is not importable by name)."""
    return SimpleNamespace(
        evaluate_block=evaluate_block,
        make_ctx=make_ctx,
        write_train_artifact=write_train_artifact,
        write_jsonl=write_jsonl,
        chat_record=chat_record,
        TRAIN=TRAIN,
        TEST=TEST,
        SYSTEM=SYSTEM,
        Recorder=Recorder,
    )
