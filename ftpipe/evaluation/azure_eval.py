"""Azure OpenAI serves a model only through a deployment, so scoring an Azure fine-tune
before the deploy step needs one: a temporary deployment in the account of the
pipeline's azure-openai deploy target, removed when the evaluation ends."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ftpipe.contracts import StepContext
from ftpipe.errors import StepError

EVAL_SUFFIX = "-eval"


@contextmanager
def evaluation_deployment(ctx: StepContext, model_id: str) -> Iterator[str]:
    """The deployment name to call the Azure fine-tune ``model_id`` by during evaluation:
    a temporary deployment, removed afterwards (a base model is called by its own name)."""
    if ".ft-" not in model_id:
        yield model_id
        return
    from ftpipe.deploy.azure import AzureDeploy, arm_request, deployment_body, deployment_url, management_token
    from ftpipe.spec.models import AzureDeployTarget

    targets = [t for t in ctx.pipeline.deploy if isinstance(t, AzureDeployTarget)]
    if not targets:
        raise StepError(
            "Azure OpenAI serves a fine-tune only through a deployment, and this pipeline names no "
            "Azure account to create one in",
            hint="add an azure-openai deploy target: evaluate deploys the fine-tune there under a "
            "temporary name and removes it afterwards",
        )
    target = targets[0]
    name = target.deployment[: 64 - len(EVAL_SUFFIX)] + EVAL_SUFFIX
    temp = target.model_copy(update={"deployment": name})
    token = management_token(temp)
    url = deployment_url(temp)
    ctx.log(f"creating temporary deployment {name} of {model_id} for evaluation")
    _, dep = arm_request(
        "PUT", url, token, what=f"creating evaluation deployment {name}", body=deployment_body(temp, model_id)
    )
    try:
        dep = AzureDeploy()._wait(ctx, temp, url, token, dep, poll=getattr(ctx.pipeline.trainer, "poll", None))
        if (dep or {}).get("properties", {}).get("provisioningState") != "Succeeded":
            raise StepError(
                f"the evaluation deployment {name} of {model_id} did not succeed",
                hint="check the account's quota for this model (Azure portal → Deployments)",
            )
        yield name
    finally:
        try:
            arm_request("DELETE", url, token, what=f"removing evaluation deployment {name}")
            ctx.log(f"removed temporary deployment {name}")
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the evaluation's outcome
            ctx.log(f"could not remove temporary deployment {name}: {exc} (delete it in the Azure portal)")
