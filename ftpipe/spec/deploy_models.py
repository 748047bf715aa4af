"""The ``deploy`` targets: local, hub, endpoint, space, azure-openai, gguf."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    Field,
)

from ftpipe.contracts import TargetCaps
from ftpipe.spec.block import Block, NonNegInt, PositiveInt, Secret

# --------------------------------------------------------------------------- deploy


class LocalTarget(Block):
    """A model folder with a model card."""

    type: Literal["local"]
    caps: ClassVar[TargetCaps] = TargetCaps(readable=True)
    name: str | None = None
    path: str = Field(
        "outputs/{pipeline}", description="Folder (relative to the pipeline file); {pipeline} is replaced."
    )
    merge: bool = False

    def deployed_model_dir(self, base_dir: Path, pipeline_name: str) -> Path:
        """The folder this target writes the model to (what `must_beat: [deployed]` reads)."""
        path = Path(self.path.replace("{pipeline}", pipeline_name)).expanduser()
        return (path if path.is_absolute() else base_dir / path).resolve()


class HubTarget(Block):
    """Push the model folder to a Hub model repo."""

    type: Literal["hf-hub"]
    caps: ClassVar[TargetCaps] = TargetCaps(publishes="repo", extras=("hub",))
    name: str | None = None
    repo: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)?$")
    private: bool = True
    merge: bool = False
    revision: str = "main"
    token: Secret = "${env:HF_TOKEN}"


class EndpointTarget(Block):
    """An HF Inference Endpoint serving a Hub repo (created or updated, then smoke-tested)."""

    type: Literal["hf-endpoint"]
    caps: ClassVar[TargetCaps] = TargetCaps(deploys_from="repo", consumes="repo", extras=("hub",))
    name: str | None = None
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="The model repo (usually the hf-hub target's).")
    endpoint: Annotated[str, Field(pattern=r"^[a-z0-9-]{1,32}$")]
    namespace: str | None = None
    vendor: str = "aws"
    region: str = "us-east-1"
    accelerator: Literal["cpu", "gpu"] = "cpu"
    instance_size: str = "x2"
    instance_type: str = "intel-icl"
    min_replica: NonNegInt = 0
    max_replica: PositiveInt = 1
    task: str = "text-generation"
    framework: str = "pytorch"
    timeout_s: PositiveInt = 1800
    token: Secret = "${env:HF_TOKEN}"


class SpaceTarget(Block):
    """A small chat demo Space for a Hub model repo."""

    type: Literal["hf-space"]
    caps: ClassVar[TargetCaps] = TargetCaps(deploys_from="repo", consumes="model_repo", extras=("hub",))
    name: str | None = None
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$", description="The Space id to create.")
    model_repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    hardware: str = "cpu-basic"
    private: bool = True
    token: Secret = "${env:HF_TOKEN}"


class AzureDeployTarget(Block):
    """An Azure OpenAI deployment of the fine-tuned model (Azure Resource Manager)."""

    type: Literal["azure-openai"]
    caps: ClassVar[TargetCaps] = TargetCaps(deploys_from="hosted", providers=("azure-openai",), extras=("azure",))
    name: str | None = None
    subscription_id: str
    resource_group: str
    account: str
    deployment: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{2,64}$")]
    sku: str = "standard"
    capacity: PositiveInt = 1
    model_version: str = "1"
    management_endpoint: str = "https://management.azure.com"
    management_api_version: str = "2024-10-01"
    management_token: Secret | None = Field(
        "${env:AZURE_MANAGEMENT_TOKEN}", description="Bearer token for management.azure.com; unset = azure-identity."
    )
    smoke_test: bool = True
    timeout_s: PositiveInt = 1800


class GgufPush(Block):
    """Upload the GGUF file and its Modelfile to a Hub model repo."""

    repo: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)?$")
    private: bool = True
    revision: str = "main"
    token: Secret = "${env:HF_TOKEN}"


class GgufTarget(Block):
    """A GGUF file for llama.cpp and Ollama (written by llama.cpp's own converter), with an
    Ollama Modelfile; optionally pushed to a Hub repo."""

    type: Literal["gguf"]
    caps: ClassVar[TargetCaps] = TargetCaps(extras=("gguf",))
    name: str | None = None
    path: str = Field(
        "outputs/{pipeline}-gguf", description="Folder (relative to the pipeline file); {pipeline} is replaced."
    )
    quantization: Literal["f16", "q8_0", "q4_k_m"] = Field(
        "q8_0", description="f16 and q8_0 come from llama.cpp's converter; q4_k_m also needs llama-cpp-python."
    )
    parameters: dict[str, float | int | str] = Field(
        default_factory=dict, description="Ollama PARAMETER lines for the Modelfile (temperature, num_ctx, ...)."
    )
    push: GgufPush | None = None


BUILTIN_TARGETS: tuple[type[Block], ...] = (
    LocalTarget,
    HubTarget,
    EndpointTarget,
    SpaceTarget,
    AzureDeployTarget,
    GgufTarget,
)
