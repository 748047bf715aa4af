"""A third-party plugin pair, as a package outside ftpipe would ship it: the hosted trainer
``cloudtune`` (fine-tunes on an OpenAI-compatible service, here the loopback double) and the
deploy target ``cloudserve`` (serves a cloudtune fine-tune in a named slot; a slot may
mirror another target's slot, so that target must run first).

Everything the core needs to know it learns from the ``caps`` declared here. The module is
installed into a folder with a ``.dist-info`` holding its entry points (``install``), so the
same machinery that loads any third-party plugin loads it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ftpipe.contracts import ModelRef, StepContext, StepResult, TargetCaps, TrainerCaps

MODULE = "ftpipe_cloud"
PROVIDER = "cloudtune"
CACHE_VERSION = 7
RECORD = "cloudtune-job.json"


class CloudTuneTrainer(BaseModel):
    """CloudTune: fine-tuning on an OpenAI-compatible service."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: Literal["cloudtune"]
    caps: ClassVar[TrainerCaps] = TrainerCaps(
        hosted=True,
        provider=PROVIDER,
        service="CloudTune",
        extras=("openai",),
        can_cancel=True,
        eval_access="chat-api",
        formats=("chat",),
        cache_version=CACHE_VERSION,
    )
    base_url: str
    wait: bool = True  # poll the job until it ends


class CloudServeTarget(BaseModel):
    """Serve a CloudTune fine-tune in a named slot."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["cloudserve"]
    caps: ClassVar[TargetCaps] = TargetCaps(
        deploys_from="hosted",
        providers=(PROVIDER,),
        publishes="slot",
        consumes="mirror_of",
        extras=("hub",),
        cache_version=2,
    )
    name: str | None = None
    slot: str
    mirror_of: str | None = None  # another slot this one copies: its target runs first

    @classmethod
    def pipeline_rules(cls, p: Any, base_dir: Path) -> Any:
        """Rules between this block and the rest of the pipeline, run by `ftpipe validate`."""
        slots = [t.slot for t in p.deploy if isinstance(t, cls)]
        for i, t in enumerate(p.deploy):
            if isinstance(t, cls) and t.mirror_of is not None and t.mirror_of not in slots:
                yield (("deploy", i, "mirror_of"), f"no cloudserve target fills slot {t.mirror_of!r}")


def _client(trainer: CloudTuneTrainer) -> Any:
    import openai

    return openai.OpenAI(base_url=trainer.base_url, api_key=os.environ["CLOUDTUNE_KEY"], max_retries=2)


class CloudTune:
    name = "cloudtune"
    config_model = CloudTuneTrainer

    def train(self, ctx: StepContext) -> StepResult:
        trainer: CloudTuneTrainer = ctx.pipeline.trainer
        client = _client(trainer)
        with open(Path(ctx.inputs["prepare"]) / "train.jsonl", "rb") as fh:
            uploaded = client.files.create(file=("train.jsonl", fh), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=ctx.pipeline.model.base, training_file=uploaded.id)
        (ctx.state_dir / RECORD).write_text(json.dumps({"job_id": job.id}))
        ctx.log(f"cloudtune: submitted {job.id}")
        while trainer.wait and job.status not in ("succeeded", "failed", "cancelled"):
            job = client.fine_tuning.jobs.retrieve(job.id)
        model_id = job.fine_tuned_model or ctx.pipeline.model.base
        ModelRef(
            kind="hosted", base=ctx.pipeline.model.base, provider=PROVIDER, model_id=model_id, job_id=job.id
        ).write(ctx.out_dir)
        return StepResult(metrics={}, summary=f"{job.id} {job.status}")

    def cancel(self, state_dir: Path, trainer: CloudTuneTrainer) -> dict:
        job_id = json.loads((state_dir / RECORD).read_text())["job_id"]
        client = _client(trainer)
        what = f"CloudTune job {job_id}"
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return {"job_id": job_id, "status": job.status, "cancelled": False, "what": what}
        after = client.fine_tuning.jobs.cancel(job_id)
        return {"job_id": job_id, "status": after.status, "cancelled": True, "what": what}

    def chat_client(self, trainer: CloudTuneTrainer) -> Any:
        return _client(trainer)


class CloudServe:
    name = "cloudserve"
    config_model = CloudServeTarget

    def deploy(self, ctx: StepContext) -> StepResult:
        target: CloudServeTarget = ctx.options["target"]
        ref = ModelRef.read(Path(ctx.inputs["train"]))
        (ctx.out_dir / "deploy.json").write_text(
            json.dumps({"target": "cloudserve", "slot": target.slot, "model_id": ref.model_id})
        )
        return StepResult(summary=f"{ref.model_id} in slot {target.slot}")


def install(folder: Path) -> None:
    """Make the plugin importable and discoverable from ``folder`` (put it on sys.path)."""
    shutil.copy(Path(__file__), folder / f"{MODULE}.py")
    dist = folder / f"{MODULE}-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {MODULE}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[ftpipe.trainers]\ncloudtune = {MODULE}:CloudTune\n\n[ftpipe.targets]\ncloudserve = {MODULE}:CloudServe\n"
    )
