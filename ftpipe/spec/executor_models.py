"""The ``executor`` block: local, ray, hf-spaces, hf-jobs."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import (
    Field,
    field_validator,
)

from ftpipe.contracts import ExecutorCaps
from ftpipe.spec.block import Block, PositiveInt, Secret, _nested

# --------------------------------------------------------------------------- executors


# Remote executors upload the pipeline's local inputs: only from inside its repository unless this is set.
UploadOutsideRepo = Annotated[
    bool, Field(description="Allow uploading local inputs from outside the pipeline's repository (refused by default).")
]


class LocalExecutor(Block):
    type: Literal["local"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps()


class RayResources(Block):
    gpus: Annotated[float, Field(ge=0)] = 0
    cpus: Annotated[float, Field(gt=0)] = 1
    memory: Annotated[int, Field(gt=0)] | None = Field(None, description="Bytes.")


class RayExecutor(Block):
    type: Literal["ray"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps(
        remote=True, extras=("ray",), runs_training_here=False, multi_worker=True
    )
    address: str = Field("${env:RAY_ADDRESS:-http://127.0.0.1:8265}", description="Ray Jobs API address (dashboard).")
    resources: RayResources = _nested()
    storage: str | None = Field(None, description="Where the job writes the run store (a path or URI on the cluster).")
    stop_on_interrupt: bool = True
    timeout_s: PositiveInt = Field(
        3 * 24 * 3600, description="How long the runner follows the job before it stops it and gives up."
    )
    pip: list[str] = Field(
        default_factory=list, description="Extra requirements for the job (needs network on the cluster)."
    )
    upload_outside_repo: UploadOutsideRepo = False


class SpacesExecutor(Block):
    type: Literal["hf-spaces"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps(remote=True, extras=("hub",), runs_training_here=False)
    namespace: str | None = None
    hardware: str = "cpu-basic"
    token: Secret = "${env:HF_TOKEN}"
    timeout_s: PositiveInt = 6 * 3600
    upload_outside_repo: UploadOutsideRepo = False


class HfJobsExecutor(Block):
    type: Literal["hf-jobs"]
    caps: ClassVar[ExecutorCaps] = ExecutorCaps(remote=True, extras=("hub",), runs_training_here=False)
    namespace: str | None = None
    flavor: str = Field("cpu-basic", description="Hardware flavor of the Job (`hf jobs hardware` lists them).")
    timeout_s: PositiveInt = Field(6 * 3600, description="The Job's own timeout; the runner waits as long.")
    image: str | None = Field(
        None,
        description="Docker image; default python:<this Python>-slim. An image "
        "with this ftpipe version installed skips the install.",
    )
    token: Secret = "${env:HF_TOKEN}"
    upload_outside_repo: UploadOutsideRepo = False

    @field_validator("flavor")
    @classmethod
    def _known_flavor(cls, value: str) -> str:
        from ftpipe.executors.job_flavors import FLAVORS

        if value not in FLAVORS:
            import difflib

            close = difflib.get_close_matches(value, FLAVORS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown Jobs hardware flavor '{value}'.{hint} (available: {', '.join(FLAVORS)})")
        return value


BUILTIN_EXECUTORS: tuple[type[Block], ...] = (LocalExecutor, RayExecutor, SpacesExecutor, HfJobsExecutor)
