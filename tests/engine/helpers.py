"""A pipeline whose steps are fakes that count calls, for testing the engine itself."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_pipeline(folder: Path, *, lr: float = 0.001, rows: int = 30, gate: bool = True, deploy: int = 1) -> Path:
    data = folder / "data.jsonl"
    if not data.exists():
        with data.open("w") as f:
            for i in range(rows):
                f.write(
                    json.dumps(
                        {
                            "messages": [
                                {"role": "user", "content": f"question {i}"},
                                {"role": "assistant", "content": f"answer {i}"},
                            ]
                        }
                    )
                    + "\n"
                )
    deploy_block = "".join(f"  - {{type: local, name: out{i}, path: out{i}}}\n" for i in range(deploy))
    text = (
        f"""\
version: 1
name: enginetest
dataset:
  source: {{type: local, path: data.jsonl}}
  format: chat
model:
  base: gpt-4o-mini
trainer:
  backend: trl
  hyperparameters: {{learning_rate: {lr}}}
evaluate:
  metrics: [token_f1]
  baselines: [base]
"""
        + ("  gate: {metric: token_f1, must_beat: [base]}\n" if gate else "")
        + ("deploy:\n" + deploy_block if deploy else "")
    )
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


RUNNER_SCRIPT = textwrap.dedent("""
    # Runs the engine with fake steps. argv: pipeline, calls-file, slow-step, marker-file, gate(pass|block), wait(0|1)
    import json, sys, time
    from pathlib import Path
    from ftpipe.contracts import StepResult
    from ftpipe.engine import execute
    from ftpipe.progress import Reporter

    pipeline, calls, slow, marker, gate, wait = sys.argv[1:7]

    def runner(step, ctx):
        with open(calls, "a") as f:
            f.write(step.id + "\\n")
        (ctx.out_dir / "out.txt").write_text(step.id)
        if step.id == slow:
            Path(marker).write_text("started")
            time.sleep(60)
        if step.kind == "gate" and gate == "block":
            return StepResult(summary="token_f1 0.1 did not beat base", outcome="blocked")
        return StepResult(metrics={"step": step.id}, summary="fake " + step.id)

    out = execute(Path(pipeline), step_runner=runner, reporter=Reporter(live=False), wait=wait == "1")
    sys.exit(out.exit_code)
""")


def runner_cmd(
    pipeline: Path, calls: Path, slow: str = "-", marker: Path | None = None, gate: str = "pass", wait: bool = False
) -> list[str]:
    return [
        sys.executable,
        "-c",
        RUNNER_SCRIPT,
        str(pipeline),
        str(calls),
        slow,
        str(marker or "/dev/null"),
        gate,
        "1" if wait else "0",
    ]
