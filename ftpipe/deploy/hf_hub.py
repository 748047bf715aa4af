"""The ``hf-hub`` deploy target: push the model folder (with its model card) to a Hub model
repo and record the commit.

Uploads are idempotent: the client skips files whose content the branch already has, so an
unchanged model makes no commit, and retrying a whole upload after a failure (a commit
whose answer was lost, a dropped connection) cannot duplicate anything. Files from an
earlier deploy that the new model does not have are deleted in the same commit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ftpipe.contracts import StepContext, StepResult
from ftpipe.deploy.local import export_model, list_files
from ftpipe.errors import MissingDependency
from ftpipe.remote.hf import hub_errors, is_retryable
from ftpipe.remote.retry import RetryPolicy, call_with_retries
from ftpipe.spec.models import HubTarget
from ftpipe.store import write_json

T = TypeVar("T")

UPLOAD_ATTEMPTS = 3
RETRY_DELAY_S = 1.0


def hf_api(token: str | None) -> Any:
    """An ``HfApi`` for ``token`` (the endpoint comes from HF_ENDPOINT)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise MissingDependency("huggingface_hub", "hub", "publishing to the Hugging Face Hub") from None
    return HfApi(token=token or None)


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    log: Callable[[str], None],
    secrets: tuple[str, ...] = (),
    attempts: int = UPLOAD_ATTEMPTS,
) -> T:
    """Call ``fn`` again after a retryable Hub failure (429, 5xx, dropped connection),
    through the shared retry helper (Retry-After honoured). Only for idempotent
    operations such as uploads of the same content."""
    return call_with_retries(
        fn,
        what=what,
        log=log,
        attempts=attempts,
        is_transient=is_retryable,
        policy=RetryPolicy(base_delay=RETRY_DELAY_S),
        secrets=secrets,
    )


def upload_folder(
    api: Any, folder: Path, *, repo_id: str, repo_type: str, revision: str, message: str, ctx: StepContext
) -> Any:
    """``upload_folder`` that replaces the repo's files (but .gitattributes) with the folder's,
    retried on transient failures. Returns the client's CommitInfo."""

    def push() -> Any:
        return api.upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=str(folder),
            revision=revision,
            commit_message=message,
            delete_patterns="*",
        )

    return with_retries(push, what=f"upload to {repo_id}", log=ctx.log, secrets=ctx.secrets)


def ensure_repo(api: Any, repo_id: str, *, private: bool, revision: str, ctx: StepContext) -> str:
    """Create the model repo (and the ``revision`` branch unless it is main) if missing,
    retried on transient failures; returns the repo's URL."""
    with hub_errors(f"create repo {repo_id}"):
        url = str(
            with_retries(
                lambda: api.create_repo(repo_id, private=private, exist_ok=True),
                what=f"create {repo_id}",
                log=ctx.log,
                secrets=ctx.secrets,
            )
        )
        if revision != "main":
            with_retries(
                lambda: api.create_branch(repo_id, branch=revision, exist_ok=True),
                what=f"create branch {revision}",
                log=ctx.log,
                secrets=ctx.secrets,
            )
    return url


def repo_url(api: Any, repo_id: str, repo_type: str = "model") -> str:
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[repo_type]
    return f"{api.endpoint.rstrip('/')}/{prefix}{repo_id}"


class HubDeploy:
    """Publish the model to a Hugging Face Hub model repo (private by default)."""

    name = "hf-hub"
    config_model = HubTarget

    def preflight(self, ctx: Any, target: Any) -> list[Any]:
        """Read-only checks before the run starts (ftpipe.preflight)."""
        from ftpipe.deploy import preflight_checks as pc

        return list(pc.hub_repo_checks(ctx, target))

    def deploy(self, ctx: StepContext) -> StepResult:
        target: HubTarget = ctx.options["target"]
        api = hf_api(target.token)
        what = f"hf-hub {target.repo}"
        with tempfile.TemporaryDirectory(prefix="hf-hub-", dir=ctx.state_dir) as tmp:
            folder = Path(tmp) / "model"
            folder.mkdir()
            marker = export_model(ctx, folder, merge=target.merge, what=what, repo_id=target.repo)
            files = list_files(folder)
            url = ensure_repo(api, target.repo, private=target.private, revision=target.revision, ctx=ctx)
            ctx.log(f"{what}: uploading {len(files)} files to {target.revision}")
            with hub_errors(f"upload to {target.repo}"):
                info = upload_folder(
                    api,
                    folder,
                    repo_id=target.repo,
                    repo_type="model",
                    revision=target.revision,
                    message=f"ftpipe: {ctx.pipeline.name} (run {ctx.run_id})",
                    ctx=ctx,
                )
        commit = info.oid
        ctx.log(f"{what}: {target.revision} is at {commit}")
        doc = {
            "target": "hf-hub",
            "repo": target.repo,
            "revision": target.revision,
            "commit": commit,
            "url": url or repo_url(api, target.repo),
            "commit_url": info.commit_url,
            "private": target.private,
            "adapter": marker["adapter"],
            "merged": marker["merged"],
            "files": files,
        }
        write_json(ctx.out_dir / "deploy.json", doc)
        return StepResult(
            metrics={"files": len(files)},
            summary=f"{target.repo}@{commit[:10]} ({'private' if target.private else 'public'})",
        )
