"""The ``autotrain`` trainer: AutoTrain Advanced, run in the environment ftpipe owns.

The step translates the pipeline into an AutoTrain config (:mod:`autotrain_config`), writes
the prepared training split in the columns AutoTrain reads, runs ``autotrain --config`` with
that environment's ``bin/`` first on PATH (AutoTrain starts ``accelerate`` by name), streams
its output into the step log, and collects its output folder as the model artifact.

AutoTrain has no resume: an interrupted train step starts again from the beginning.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from ftpipe.contracts import ModelRef, StepContext, StepResult
from ftpipe.errors import StepError
from ftpipe.spec import models as m
from ftpipe.trainers import autotrain_config as cfg
from ftpipe.trainers import autotrain_env

TAIL_LINES = 40
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
# What AutoTrain's trainer logs when it swallows an exception (and still exits 0).
FAILED_MARK = "has failed due to an exception"
_TQDM = re.compile(r"(\d+)/(\d+) \[")
_BAR = re.compile(r"\d+%\|.*\|")
_DICT = re.compile(r"(\{'[^{}]*\})\s*$")


class AutoTrainBackend:
    name = "autotrain"
    config_model = m.AutoTrainTrainer

    def environment_status(self) -> dict:
        """The managed environment (``caps.managed_env``), for ``ftpipe backends list``."""
        st = autotrain_env.status()
        return {
            **st,
            "what": f"AutoTrain Advanced {st['version']} (local or Hugging Face Spaces)",
            "missing": [] if st["installed"] else [f"autotrain-advanced=={st['version']}"],
        }

    def install_environment(self, *, force: bool, log: Callable[[str], None]) -> dict:
        """Create (or reuse) the managed environment: ``ftpipe backends install autotrain``."""
        return autotrain_env.install(force=force, log=log)

    def preflight(self, ctx: Any, trainer: Any) -> list[Any]:
        """The managed environment exists (`ftpipe backends install autotrain`)."""
        from ftpipe.preflight import attempt

        def installed() -> None:
            autotrain_env.require(ctx.cache_dir)  # raises, with the install command, when missing

        return [attempt("train", "the AutoTrain environment is installed", installed)] if ctx.runs("train") else []

    def train(self, ctx: StepContext) -> StepResult:
        env = autotrain_env.require(ctx.cache_dir)
        work = ctx.state_dir / "autotrain"
        if work.exists():  # a previous attempt: AutoTrain cannot resume, so start clean
            shutil.rmtree(work)
        work.mkdir(parents=True)
        try:
            return self._train(ctx, env, work)
        finally:
            _scrub_token(work / cfg.PROJECT_NAME)

    def _train(self, ctx: StepContext, env: autotrain_env.AutoTrainEnv, work: Path) -> StepResult:
        p = ctx.pipeline
        t = p.trainer
        base = _resolve_base(ctx)
        base_path = Path(base)
        local_base = base_path.is_dir()
        if local_base:
            base = str(_compatible_base(base_path, work / "base"))
        template = cfg.chat_template(p)
        prepared = ctx.inputs["prepare"] / "train.jsonl"
        rows = cfg.write_training_data(
            cfg.read_jsonl(prepared), work / "data" / "train.jsonl", method=t.method, template=template
        )
        token = p.model.token or None
        config = cfg.build_config(p, base_model=base, data_dir=work / "data", with_token=bool(token))
        config_path = work / "autotrain.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        ctx.log(
            f"autotrain {autotrain_env.AUTOTRAIN_VERSION} ({env.path}): {cfg.TASKS[t.method]} on {rows} rows, "
            f"base {p.model.base}, chat template {template}"
        )
        ctx.log("config:\n" + config_path.read_text())

        run_env = env.subprocess_env()
        if token:
            run_env[cfg.TOKEN_ENV] = token
        if local_base:  # nothing to download: make sure nothing is attempted
            run_env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        run_env["PYTHONUNBUFFERED"] = "1"
        run_env.setdefault("PAUSE_ON_FAILURE", "0")

        watcher = _OutputWatcher(ctx.log, ctx.progress)
        t0 = time.monotonic()
        code = run_streaming(
            [str(env.autotrain), "--config", str(config_path)], cwd=work, env=run_env, on_line=watcher.line
        )
        wall = time.monotonic() - t0
        project = work / cfg.PROJECT_NAME
        failed = code != 0 or watcher.failed or not _has_weights(project)
        if failed:
            why = (
                f"exit code {code}"
                if code != 0
                else "AutoTrain reported an exception"
                if watcher.failed
                else f"no model weights in {project}"
            )
            raise StepError(
                f"AutoTrain failed ({why}); last lines of its output:\n" + "\n".join(f"    {x}" for x in watcher.tail),
                hint=f"the full output is in this step's log; the config was {config_path}",
            )

        model_dir = ctx.out_dir / "model"
        _collect(project, model_dir)
        adapter = (model_dir / "adapter_config.json").exists()
        if adapter and t.merge_adapter:
            ctx.progress(0, None, "merging the adapter")
            merge_adapter(
                env, base, model_dir, method=t.method, revision=p.model.revision, run_env=run_env, log=ctx.log
            )
            adapter = False
        ref = ModelRef(kind="local", base=p.model.base, path="model", adapter=adapter)
        ref.write(ctx.out_dir)
        metrics = watcher.metrics(rows=rows, wall=wall)
        (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (ctx.out_dir / "loss.json").write_text(json.dumps(watcher.loss_history(), indent=2) + "\n")
        (ctx.out_dir / "autotrain.yml").write_text(config_path.read_text())
        shutil.rmtree(work, ignore_errors=True)
        loss = metrics.get("train_loss")
        summary = (
            f"autotrain {t.method}: {rows} rows, {metrics.get('steps', '?')} steps"
            + (f", train loss {loss:.4g}" if isinstance(loss, (int, float)) else "")
            + (" (adapter)" if adapter else "")
        )
        return StepResult(metrics=metrics, summary=summary)


# --------------------------------------------------------------------------- helpers


def _resolve_base(ctx: StepContext) -> str:
    """A local folder or a Hub id that AutoTrain can load (builtin:tiny → its folder)."""
    from ftpipe.models.loading import resolve_base

    model = ctx.pipeline.model
    return str(
        resolve_base(
            model.base,
            cache_dir=ctx.cache_dir,
            base_dir=ctx.base_dir,
            revision=model.revision,
            token=model.token,
            log=ctx.log,
        )
    )


def _compatible_base(src: Path, dest: Path) -> Path:
    """A local model folder AutoTrain's transformers (4.48) can load. Folders saved by a
    newer transformers name tokenizer classes it does not know; the fast tokenizer's files
    are the same, so the class name is all that changes."""
    tok_cfg = src / "tokenizer_config.json"
    try:
        data = json.loads(tok_cfg.read_text())
    except (OSError, ValueError):
        return src
    known = ("PreTrainedTokenizerFast",)
    cls = data.get("tokenizer_class")
    if cls is None or cls in known or cls.endswith("TokenizerFast") or not (src / "tokenizer.json").exists():
        return src
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name != "tokenizer_config.json":
            os.symlink(item.resolve(), dest / item.name)
    data["tokenizer_class"] = "PreTrainedTokenizerFast"
    (dest / "tokenizer_config.json").write_text(json.dumps(data, indent=2))
    return dest


# Runs in AutoTrain's environment (its transformers and peft wrote the adapter), so merging
# needs nothing from ftpipe's own extras, on this machine as in a Space.
MERGE_SCRIPT = """
import json, os, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
base, model_dir, method, revision = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] or None
token = os.environ.get("FTPIPE_AUTOTRAIN_HF_TOKEN") or None
tok = AutoTokenizer.from_pretrained(model_dir)
kw = dict(torch_dtype="auto", revision=revision, token=token)
if method == "reward":
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, **kw)
else:
    model = AutoModelForCausalLM.from_pretrained(base, **kw)
if model.get_input_embeddings().weight.shape[0] != len(tok):
    model.resize_token_embeddings(len(tok))
with torch.no_grad():
    merged = PeftModel.from_pretrained(model, model_dir).merge_and_unload()
for name in os.listdir(model_dir):
    if name.startswith("adapter_"):
        os.remove(os.path.join(model_dir, name))
merged.save_pretrained(model_dir)
tok.save_pretrained(model_dir)
print(json.dumps({"dtype": str(merged.dtype)}))
"""


def merge_adapter(
    env: autotrain_env.AutoTrainEnv,
    base: str,
    model_dir: Path,
    *,
    method: str,
    revision: str | None,
    run_env: dict[str, str],
    log: Callable[[str], None],
) -> None:
    """Replace the adapter in ``model_dir`` by the full model (base + adapter), merged in
    the base model's own dtype. AutoTrain's own merge works in float16: lossy for float32
    models and slow on a CPU."""
    t0 = time.monotonic()
    lines: list[str] = []
    code = run_streaming(
        [str(env.python), "-c", MERGE_SCRIPT, base, str(model_dir), method, revision or ""],
        cwd=model_dir.parent,
        env=run_env,
        on_line=lines.append,
    )
    if code != 0:
        raise StepError(
            "merging the adapter into the base model failed:\n" + "\n".join(f"    {x}" for x in lines[-TAIL_LINES:]),
            hint="set trainer.merge_adapter: false to keep the adapter as it is",
        )
    for line in lines:
        if not _BAR.search(line):
            log(line)
    log(f"merged the adapter into {base} in {time.monotonic() - t0:.1f}s")


def _has_weights(folder: Path) -> bool:
    return any((folder / name).exists() for name in WEIGHT_FILES)


def _collect(project: Path, model_dir: Path) -> None:
    """Move AutoTrain's output folder into the artifact, without its copy of the data or
    the tensorboard logs."""
    for leftover in ("autotrain-data", "runs"):
        shutil.rmtree(project / leftover, ignore_errors=True)
    for ckpt in project.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    _scrub_token(project)
    shutil.move(str(project), str(model_dir))


def _scrub_token(project: Path) -> None:
    # AutoTrain writes every parameter, the Hub token included, to training_params.json.
    path = project / "training_params.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("token"):
        data["token"] = None
        path.write_text(json.dumps(data, indent=4))


def run_streaming(cmd: list[str], *, cwd: Path, env: dict[str, str], on_line: Callable[[str], None]) -> int:
    """Run ``cmd`` in its own process group, calling ``on_line`` for each line of its output
    (carriage returns split lines too: tqdm redraws with them). An interrupt stops the group."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    assert proc.stdout is not None
    buf = b""
    try:
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for raw in lines:
                if raw.strip():
                    on_line(raw.decode("utf-8", "replace").rstrip())
        if buf.strip():
            on_line(buf.decode("utf-8", "replace").rstrip())
        return proc.wait()
    except BaseException:
        _stop_group(proc)
        raise


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class _OutputWatcher:
    """Reads AutoTrain's output: log lines to the step log, tqdm to progress, logged
    metric dicts to metrics."""

    def __init__(self, log: Callable[[str], None], progress: Callable[[int, int | None, str], None]) -> None:
        self.log, self.progress = log, progress
        self.tail: list[str] = []
        self.failed = False
        self.logs: list[dict] = []
        self.total_steps: int | None = None
        self._last_progress = -1
        self.training = False

    def line(self, text: str) -> None:
        bar = _TQDM.search(text)
        if bar and ("it/s" in text or "s/it" in text or "?it" in text):
            done, total = int(bar.group(1)), int(bar.group(2))
            if self.training:  # the training bar: the one after AutoTrain's "Starting to train"
                self.total_steps = total
                if done != self._last_progress:
                    self._last_progress = done
                    self.progress(done, total, "training")
            return
        if _BAR.search(text):  # datasets' and other progress bars: noise in the log
            return
        self.tail = (self.tail + [text])[-TAIL_LINES:]
        self.log(text)
        if "Starting to train" in text:
            self.training = True
        if FAILED_MARK in text:
            self.failed = True
        found = _DICT.search(text)
        if found and ("'loss'" in found.group(1) or "'train_loss'" in found.group(1)):
            try:
                value = ast.literal_eval(found.group(1))
            except (ValueError, SyntaxError):
                return
            if isinstance(value, dict):
                self.logs.append(value)

    def loss_history(self) -> list[dict]:
        out = []
        entries = [d for d in self.logs if "loss" in d]
        final_epoch = next((d.get("epoch") for d in reversed(self.logs) if "train_loss" in d), None)
        for d in entries:
            epoch = d.get("epoch")
            step = None
            if self.total_steps and epoch is not None and final_epoch:
                step = round(epoch / final_epoch * self.total_steps)
            out.append({"step": step, "epoch": epoch, "loss": d["loss"]})
        return out

    def metrics(self, *, rows: int, wall: float) -> dict[str, Any]:
        final: dict[str, Any] = next((d for d in reversed(self.logs) if "train_loss" in d), {})
        out: dict[str, Any] = {"train_rows": rows, "autotrain_wall_s": round(wall, 2)}
        if self.total_steps:
            out["steps"] = self.total_steps
        for key in ("train_loss", "train_runtime", "train_samples_per_second", "epoch"):
            if key in final:
                out[key] = final[key]
        losses = [d["loss"] for d in self.logs if "loss" in d]
        if losses:
            out["final_loss"] = losses[-1]
        return out
