"""Preflight checks of the executors: the cluster or the Hub is reachable with the
credentials ftpipe will use, and the hardware asked for exists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ftpipe.preflight import Check, PreflightContext, attempt, hub_write_access


def ray_checks(ctx: PreflightContext, ex: Any) -> Iterator[Check]:
    """The Jobs API answers at the address with the auth the submission will use (Ray's
    own client connects and checks the cluster's version: a read-only GET)."""
    from ftpipe.preflight import secret_value
    from ftpipe.remote.ray import RayJobs

    address = secret_value(ex.address) or ex.address  # a default may be a reference (RAY_ADDRESS)

    def probe() -> None:
        RayJobs(address)  # raises a RemoteError naming the address and the fix

    yield attempt(
        "executor",
        f"Ray cluster reachable at {address}",
        probe,
        fix="start the cluster (`ray start --head`), or set executor.address / RAY_ADDRESS to its "
        "dashboard (http://<head>:8265); with token auth set RAY_AUTH_MODE=token and the token",
    )


def spaces_checks(ctx: PreflightContext, ex: Any) -> Iterator[Check]:
    """Space hardware exists, and the token can create the Space and datasets."""
    try:
        from huggingface_hub import SpaceHardware

        flavors = sorted(h.value for h in SpaceHardware)
    except ImportError:
        flavors = []  # the write-access check below says what to install
    if flavors:
        yield Check(
            "executor",
            f"Space hardware {ex.hardware} exists",
            ex.hardware in flavors,
            "" if ex.hardware in flavors else f"unknown Space hardware '{ex.hardware}'",
            "" if ex.hardware in flavors else f"use one of: {', '.join(flavors)}",
        )
    yield hub_write_access(
        "executor",
        token=ex.token,
        repo_id=f"{ex.namespace}/space" if ex.namespace else None,
        what=f"Hub token can create the run's Space and datasets in {ex.namespace or 'its own namespace'}",
    )
