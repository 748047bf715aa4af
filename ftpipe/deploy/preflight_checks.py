"""Preflight checks of the deploy targets (read-only: whoami, a listing, a folder test)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ftpipe.preflight import Check, PreflightContext, attempt, hub_write_access


def step_id(target: Any) -> str:
    return f"deploy.{target.name or target.type}"


def hub_repo_checks(
    ctx: PreflightContext, target: Any, *, repo_field: str = "repo", kind: str = "model repo"
) -> Iterator[Check]:
    """The target's token may write the repo (or Space, or endpoint namespace) it creates or updates."""
    repo = getattr(target, repo_field)
    yield hub_write_access(
        step_id(target), token=getattr(target, "token", None), repo_id=repo, what=f"Hub token can write {kind} {repo}"
    )


def local_folder_checks(ctx: PreflightContext, target: Any) -> Iterator[Check]:
    """The output folder can be created and written."""
    rel = target.path.replace("{pipeline}", ctx.pipeline.name)
    dest = (ctx.base_dir / rel).expanduser()

    def probe() -> str | None:
        parent = next((d for d in [dest, *dest.parents] if d.exists()), None)
        if parent is None or not parent.is_dir():
            return f"{parent} is not a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"no write permission in {parent}"
        return None

    yield attempt(
        step_id(target),
        f"output folder {dest} is writable",
        probe,
        fix="choose a path you can write (deploy[].path, relative to the pipeline file)",
    )


def azure_account_checks(ctx: PreflightContext, target: Any) -> Iterator[Check]:
    """The management token is accepted by the account (its deployments can be listed)."""
    from ftpipe.deploy.azure import arm_request, deployment_url, management_token

    def probe() -> str | None:
        url = deployment_url(target)
        listing = url.split("/deployments/")[0] + "/deployments?" + url.split("?", 1)[1]
        status, _ = arm_request(
            "GET", listing, management_token(target), what=f"listing the deployments of account {target.account}"
        )
        if status == 404:
            return (
                f"no Azure OpenAI account {target.account} in resource group {target.resource_group} "
                f"of subscription {target.subscription_id}"
            )
        return None

    yield attempt(
        step_id(target),
        f"Azure account {target.account} accepts the management token",
        probe,
        fix="check subscription_id, resource_group and account, and that AZURE_MANAGEMENT_TOKEN is a "
        "current token of an identity with the Cognitive Services Contributor role",
    )


def endpoint_checks(ctx: PreflightContext, target: Any) -> Iterator[Check]:
    """The token may create the endpoint in its namespace."""
    ns = target.namespace
    yield hub_write_access(
        step_id(target),
        token=target.token,
        repo_id=f"{ns}/{target.endpoint}" if ns else None,
        what=f"Hub token can create endpoint {target.endpoint} in {ns or 'its own namespace'}",
    )
