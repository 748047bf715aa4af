"""Azure OpenAI serves a model only through a deployment, so scoring an Azure fine-tune
before the deploy step needs one: a temporary deployment in the account of the
pipeline's azure-openai deploy target, removed when the evaluation ends."""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

from ftpipe.contracts import StepContext
from ftpipe.errors import StepError

EVAL_SUFFIX = "-eval"


@contextmanager
def evaluation_deployments(ctx: StepContext, variants: list[Any]) -> Iterator[list[Any]]:
    """``variants`` with every Azure fine-tune routed through a temporary deployment."""
    first = variants[0] if variants else None
    src = getattr(first, "source", None)
    if src is None or src.provider != "azure-openai" or not src.model_id or ".ft-" not in src.model_id:
        yield variants
        return
    from ftpipe.deploy.azure import AzureDeploy, arm_request, deployment_body, deployment_url, management_token

    targets = [t for t in ctx.pipeline.deploy if t.type == "azure-openai"]
    if not targets:
        raise StepError("Azure OpenAI serves a fine-tune only through a deployment, and this pipeline names no "
                        "Azure account to create one in",
                        hint="add an azure-openai deploy target: evaluate deploys the fine-tune there under a "
                             "temporary name and removes it afterwards")
    target = targets[0]
    name = (target.deployment[: 64 - len(EVAL_SUFFIX)] + EVAL_SUFFIX)
    temp = target.model_copy(update={"deployment": name})
    token = management_token(temp)
    url = deployment_url(temp)
    ctx.log(f"creating temporary deployment {name} of {src.model_id} for evaluation")
    _, dep = arm_request("PUT", url, token, what=f"creating evaluation deployment {name}",
                         body=deployment_body(temp, src.model_id))
    try:
        dep = AzureDeploy()._wait(ctx, temp, url, token, dep, poll=getattr(ctx.pipeline.trainer, "poll", None))
        if (dep or {}).get("properties", {}).get("provisioningState") != "Succeeded":
            raise StepError(f"the evaluation deployment {name} of {src.model_id} did not succeed",
                            hint="check the account's quota for this model (Azure portal → Deployments)")
        routed = dataclasses.replace(src, model_id=name)  # the report still shows the fine-tune's id
        yield [dataclasses.replace(first, source=routed), *variants[1:]]
    finally:
        try:
            arm_request("DELETE", url, token, what=f"removing evaluation deployment {name}")
            ctx.log(f"removed temporary deployment {name}")
        except Exception as exc:  # noqa: BLE001 - cleanup must not hide the evaluation's outcome
            ctx.log(f"could not remove temporary deployment {name}: {exc} (delete it in the Azure portal)")
