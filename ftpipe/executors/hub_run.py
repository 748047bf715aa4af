"""What the Hugging Face executors (``hf-spaces``, ``hf-jobs``) share: the private repos a
run travels through, the inputs upload, the environment split into secrets and variables,
and reading the outcome the remote entry (:mod:`ftpipe.executors.space_entry`) pushes.

One run of pipeline P: ``<ns>/ftpipe-P-inputs`` (private dataset) gets the pipeline file,
its local data and the request, at a revision the remote side pins;
``<ns>/ftpipe-P-results`` (private dataset) gets the run record, its logs and artifacts and
``requests/<request id>.json`` (the completion signal).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftpipe import __version__
from ftpipe.errors import UsageError
from ftpipe.executors import space_entry as entry
from ftpipe.executors.remote import RemoteContext
from ftpipe.spec.interpolate import env_refs, redact


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())


def repo_names(namespace: str, pipeline: str) -> tuple[str, str]:
    """(inputs dataset, results dataset) ids of a pipeline."""
    base = f"ftpipe-{slug(pipeline)}"[:80]
    return f"{namespace}/{base}-inputs", f"{namespace}/{base}-results"


def executor_config(ctx: RemoteContext, model: Any, type_name: str) -> Any:
    """The executor block with its secrets resolved (``--executor NAME`` on a pipeline that
    names another executor gets the defaults; the default token is a reference too)."""
    from ftpipe.spec.interpolate import interpolate

    ex = ctx.prepared.resolved.executor
    raw = ex.model_dump() if isinstance(ex, model) else {"type": type_name}
    full = interpolate(model.model_validate(raw, context={"resolved": True}).model_dump(), resolve_secrets=True)
    if full.missing:
        names = ", ".join(sorted({var for _, var in full.missing}))
        raise UsageError(
            f"the {type_name} executor needs a Hub token with write access: {names} is not set",
            hint=f"export {names}=hf_... (or set executor.token)",
        )
    cfg = model.model_validate(full.data, context={"resolved": True})
    ctx.secrets = tuple({*ctx.secrets, cfg.token})
    return cfg


def namespace_of(ctx: RemoteContext, api: Any, configured: str | None) -> str:
    if configured:
        return configured
    return str(ctx.call("finding the token's user (whoami)", lambda: api.whoami())["name"])


def ensure_private(ctx: RemoteContext, api: Any, repos: list[tuple[str, str]], **space_args: Any) -> None:
    """Create the repos (private) if needed and refuse to use one that is public."""
    for repo, kind in repos:
        extra = space_args if kind == "space" else {}
        ctx.call(
            f"creating the private {kind} repo {repo}",
            lambda repo=repo, kind=kind, extra=extra: api.create_repo(
                repo, repo_type=kind, private=True, exist_ok=True, **extra
            ),
        )
        info = ctx.call(f"reading {kind} repo {repo}", lambda repo=repo, kind=kind: api.repo_info(repo, repo_type=kind))
        if not info.private:
            raise UsageError(
                f"{kind} repo {repo} is public; ftpipe keeps a run's data private",
                hint="make it private on the Hub (Settings) or delete it, and run again",
            )


def environment(ctx: RemoteContext, token: str) -> tuple[dict[str, str], dict[str, str]]:
    """(secrets, variables) the remote run needs: every ${env:NAME} the pipeline references
    and that is set here. Secret ones, and any whose value holds a secret, go to secrets only."""
    doc = ctx.prepared.loaded.doc
    assert doc is not None
    names = {ref.name: ref.secret for ref in env_refs(doc.data)}
    secrets_ = {entry.TOKEN_VAR: token}
    variables: dict[str, str] = {}
    for name, secret in names.items():
        value = os.environ.get(name)
        if value is None or name == entry.TOKEN_VAR:
            continue
        if secret or redact(value, ctx.secrets) != value:
            secrets_[name] = value
        else:
            variables[name] = value
    return secrets_, variables


def repository_root(folder: Path) -> Path:
    """The git work tree holding ``folder`` (the folder itself outside git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return folder
    return Path(out.stdout.strip()).resolve() if out.returncode == 0 and out.stdout.strip() else folder


def input_files(ctx: RemoteContext, *, allow_outside: bool) -> tuple[Path, list[Path]]:
    """The pipeline file and the local files it reads, with their common folder.

    A remote run uploads them: a path outside the pipeline's repository (``../../.ssh/id_rsa``)
    is refused unless the executor says ``upload_outside_repo: true``."""
    from ftpipe.planner import resolve_local_files

    resolved = ctx.prepared.resolved
    pipeline = ctx.path.resolve()
    base = pipeline.parent
    files = [pipeline]
    for src in resolved.dataset.all_sources():  # one source, or each source of a mixture
        if src.type == "local":
            for rel in src.path.values() if isinstance(src.path, dict) else [src.path]:
                files += [p.resolve() for p in resolve_local_files(base, rel)]
    rag = getattr(resolved.evaluate, "rag", None) if resolved.evaluate is not None else None
    if rag is not None and rag.corpus:  # the retrieval baseline's documents
        from ftpipe.evaluation.retrieval import corpus_files

        files += [p.resolve() for p in corpus_files(base, rag.corpus)]
    model = (base / resolved.model.base).expanduser()
    if not resolved.model.base.startswith("builtin:") and model.is_dir():
        files += sorted(p.resolve() for p in model.rglob("*") if p.is_file())
    check_inside_repository(base, files, allow_outside=allow_outside)
    root = Path(os.path.commonpath([str(base)] + [str(p.parent) for p in files]))
    return root, sorted(set(files))


def check_inside_repository(base: Path, files: list[Path], *, allow_outside: bool) -> None:
    """Refuse to upload files from outside the pipeline's repository unless allowed."""
    if allow_outside:
        return
    repo = repository_root(base)
    outside = [p for p in files if not p.resolve().is_relative_to(repo)]
    if outside:
        shown = ", ".join(str(p) for p in outside[:3]) + (f" (+{len(outside) - 3} more)" if len(outside) > 3 else "")
        raise UsageError(
            f"the pipeline reads files outside its repository ({repo}): {shown}; a remote run would upload them",
            hint="move the data into the repository, or set executor.upload_outside_repo: true "
            "if uploading them is intended",
        )


def upload_inputs(
    ctx: RemoteContext,
    api: Any,
    repo: str,
    request_id: str,
    secret_names: list[str],
    *,
    allow_outside: bool,
    scheduled: bool = False,
) -> str:
    """One commit holding the pipeline, its data and the request; returns its revision.
    ``scheduled``: every run of a scheduled Job reads this request (the entry makes each
    run's request id unique)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    root, files = input_files(ctx, allow_outside=allow_outside)
    plan = ctx.prepared.plan
    request = {
        "request_id": request_id,
        "pipeline": ctx.path.resolve().relative_to(root).as_posix(),
        "force": ctx.request.force,
        "from_step": ctx.request.from_step,
        "secret_env": secret_names,
        "ftpipe": __version__,
        "plan": {s.id: s.key for s in plan.steps},
        "scheduled": scheduled,
    }
    ops: list[Any] = [CommitOperationAdd(p.relative_to(root).as_posix(), str(p)) for p in files]
    ops.append(CommitOperationAdd(entry.REQUEST_FILE, json.dumps(request, indent=2).encode()))
    keep = {op.path_in_repo for op in ops} | {".gitattributes"}
    present = ctx.call(f"listing {repo}", lambda: api.list_repo_files(repo, repo_type="dataset"))
    ops += [CommitOperationDelete(f) for f in present if f not in keep]
    # safe to repeat: the same content again makes no new commit
    info = ctx.call(
        f"uploading the inputs to {repo}",
        lambda: api.create_commit(
            repo, ops, repo_type="dataset", commit_message=f"ftpipe inputs for {plan.pipeline} ({request_id})"
        ),
    )
    return str(info.oid)


def read_result(ctx: RemoteContext, api: Any, results_repo: str, request_id: str) -> dict | None:
    """The outcome the entry pushed for ``request_id``, None until there is one."""
    name = entry.result_file(request_id)
    where = f"looking for the run's result in {results_repo}"
    if not ctx.call(where, lambda: api.file_exists(results_repo, name, repo_type="dataset")):
        return None
    tmp = ctx.store.root / "tmp" / f"result-{request_id}"
    with no_progress_bars():
        path = ctx.call(where, lambda: api.hf_hub_download(results_repo, name, repo_type="dataset", local_dir=tmp))
    try:
        return dict(json.loads(Path(path).read_text()))
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def download_run(ctx: RemoteContext, api: Any, results_repo: str, result: dict, dest: Path) -> None:
    """``runs/<id>/`` and the artifacts this store lacks, from the results repo into ``dest``."""
    run_id = result["run_id"]
    wanted = [f"runs/{run_id}/**"] + [
        f"{rel}/**" for rel in result.get("artifacts", []) if ctx.store.artifact(rel.split("/", 1)[1]) is None
    ]
    with no_progress_bars():
        ctx.call(
            f"bringing run {run_id} home from {results_repo}",
            lambda: api.snapshot_download(results_repo, repo_type="dataset", local_dir=dest, allow_patterns=wanted),
        )


@contextmanager
def no_progress_bars() -> Iterator[None]:
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


def source_checkout_note() -> str | None:
    """ftpipe runs from a source tree here: the remote side installs the released version of that number."""
    import ftpipe

    parts = Path(ftpipe.__file__).resolve().parts
    if "site-packages" in parts or "dist-packages" in parts:
        return None
    return (
        f"ftpipe runs from a source checkout ({Path(ftpipe.__file__).parent.parent}); the remote side installs "
        f"the released ftpipe=={__version__}, which may differ from your working tree"
    )
