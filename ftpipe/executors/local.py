"""The local executor: runs every step in this process."""

from __future__ import annotations

import click

from ftpipe.contracts import RunRequest
from ftpipe.spec.models import LocalExecutor


class LocalExecutorImpl:
    name = "local"
    config_model = LocalExecutor

    def execute(self, request: RunRequest) -> int:
        from ftpipe.engine import execute
        from ftpipe.progress import Reporter

        outcome = execute(
            request.pipeline_path,
            store=request.store,
            force=request.force,
            from_step=request.from_step,
            wait=request.wait_lock,
            reporter=Reporter(quiet=request.quiet),
            preflight=request.preflight,
        )
        if request.json_output:
            click.echo(_json(outcome.summary()))
        return outcome.exit_code


def _json(obj: dict) -> str:
    import json

    return json.dumps(obj, default=str)
