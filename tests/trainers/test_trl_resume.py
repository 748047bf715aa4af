"""A training killed with SIGKILL continues from its last checkpoint on the next run: the
global step keeps counting and the optimizer, scheduler and RNG state come back, so the
result equals an uninterrupted run's."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_FAKES = Path(__file__).with_name("trl_fakes.py")
_spec = importlib.util.spec_from_file_location("trl_fakes", _FAKES)
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]

SETTINGS = {
    "hyperparameters": {"max_steps": 12, "learning_rate": 1e-2, "logging_steps": 1},
    "checkpoint": {"every_steps": 4, "keep": 2},
}

# The child trains and kills itself with SIGKILL (no cleanup, no atexit) at step 6: after
# checkpoint-4 was saved, before checkpoint-8.
CHILD = textwrap.dedent(f"""
    import importlib.util, os, signal, sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("trl_fakes", {str(_FAKES)!r})
    fakes = importlib.util.module_from_spec(spec); spec.loader.exec_module(fakes)
    from ftpipe.trainers.trl_backend import TrlBackend

    class Killer(fakes.Recorder):
        def progress(self, done, total, what):
            if done == 6:
                os.kill(os.getpid(), signal.SIGKILL)

    ctx = fakes.make_ctx(Path(sys.argv[1]), recorder=Killer(), run="run1", **{SETTINGS!r})
    TrlBackend().train(ctx)
""")


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model" / "adapter_model.safetensors"))


@pytest.mark.integration
def test_killed_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import torch

    from ftpipe.trainers.trl_backend import TrlBackend

    root = tmp_path / "killed"
    root.mkdir()
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)],
        check=False,
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    checkpoints = root / "state" / "train" / "checkpoints"
    assert (checkpoints / "checkpoint-4" / "trainer_state.json").exists()
    assert not (root / "run1" / "train" / "model.json").exists()
    # A save cut short by a kill: newer than the good checkpoint, without its trainer state.
    (checkpoints / "checkpoint-8").mkdir()
    (checkpoints / "checkpoint-8" / "adapter_model.safetensors").write_bytes(b"partial")

    rec = fakes.Recorder()
    ctx = fakes.make_ctx(root, recorder=rec, run="run2", **SETTINGS)
    result = TrlBackend().train(ctx)

    assert any("resuming from checkpoint-4" in line for line in rec.lines)
    assert result.metrics["resumed_from_step"] == 4 and result.metrics["global_step"] == 12
    done = [step for step, _, _ in rec.steps]
    assert done[0] == 4 and done[1:] == list(range(5, 13))  # counting continues, steps 1-4 not redone
    history = json.loads((ctx.out_dir / "loss.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == list(range(1, 13))
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-8"]

    # Same job, never interrupted: identical weights only if the optimizer/scheduler/RNG
    # state was restored (fresh Adam moments after step 4 would change every update).
    clean = fakes.make_ctx(tmp_path / "clean", run="run1", **SETTINGS)
    TrlBackend().train(clean)
    resumed, reference = _adapter(ctx.out_dir), _adapter(clean.out_dir)
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6)
