"""Preflight: cheap, read-only checks of every remote prerequisite, run before the first
step that costs money or time.

Each plugin implementation (trainer backend, deploy target, executor) may define
``preflight(ctx: PreflightContext, config) -> Iterable[Check]``; the core calls it for the
steps that will run (cached steps are not checked) and never asks what the plugin is.
A trainer also checks what the evaluation will call through its service (the base model's
deployment, ...) when ``ctx.runs("evaluate")``.

``ftpipe run`` stops with exit 2 listing every failed check with its fix;
``ftpipe plan --check`` runs the checks alone; ``--no-preflight`` skips them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.errors import FtpipeError, UsageError


@dataclass(frozen=True)
class Check:
    """One prerequisite and what became of it."""

    step: str  # the step (or "executor") that needs it
    what: str  # what was checked, e.g. "Hub token can write my-org/model"
    ok: bool
    problem: str = ""  # what is wrong (failed) or why it could not be checked (skipped)
    fix: str = ""
    skipped: bool = False  # could not be checked from here; not a failure

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        mark = "ok  " if self.ok else ("skip" if self.skipped else "FAIL")
        text = f"  {mark}  {self.step}: {self.what}"
        if self.problem:
            text += f"\n          {self.problem}"
        if self.fix and not self.ok:
            text += f"\n          fix: {self.fix}"
        return text


@dataclass(frozen=True)
class PreflightContext:
    """What a plugin's checks may look at."""

    pipeline: Any  # resolved (secret values included): never printed
    base_dir: Path
    cache_dir: Path
    steps: frozenset[str] = field(default_factory=frozenset)  # the step ids that will run
    secrets: tuple[str, ...] = ()

    def runs(self, step_id: str) -> bool:
        return step_id in self.steps


class PreflightFailed(UsageError):
    """At least one prerequisite is missing: nothing was started (exit 2)."""

    def __init__(self, failed: list[Check], secrets: tuple[str, ...] = ()) -> None:
        head = (
            f"preflight: {len(failed)} prerequisite{'s' if len(failed) > 1 else ''} missing; nothing was "
            "started (no job created, no file uploaded)"
        )
        lines = [head]
        lines += [_redact(c.line(), secrets) for c in failed]
        super().__init__(
            "\n".join(lines),
            hint="fix them and run again (`ftpipe plan --check FILE` runs the checks "
            "alone; `--no-preflight` skips them)",
        )
        self.failed = failed


def attempt(step: str, what: str, fn: Callable[[], str | None], *, fix: str = "") -> Check:
    """Run one probe: ``fn`` returns None (ok) or a problem; an ftpipe error (a translated
    remote error) is a failed check with its hint as the fix."""
    try:
        problem = fn()
    except FtpipeError as exc:
        return Check(step, what, False, exc.message, exc.hint or fix)
    except Exception as exc:  # noqa: BLE001 - an unforeseen answer is a failed prerequisite, not a crash
        return Check(step, what, False, f"{type(exc).__name__}: {_first_line(str(exc))}", fix)
    return Check(step, what, problem is None, problem or "", fix if problem else "")


def skipped(step: str, what: str, why: str) -> Check:
    return Check(step, what, True, why, skipped=True)


def steps_to_run(plan: Any, rs: Any, rerun: set[str]) -> frozenset[str]:
    """The steps that are not cache hits (a step after one that runs is never cached: its
    key includes its dependencies' keys)."""
    return frozenset(s.id for s in plan.steps if s.id in rerun or rs.artifact(s.key) is None)


def requested(plan: Any, *, force: bool, from_step: str | None) -> set[str]:
    """The steps a run was asked to redo (``--force``, ``--from``)."""
    if force:
        return {s.id for s in plan.steps}
    if from_step and from_step in {s.id for s in plan.steps}:
        return plan.downstream(from_step)
    return set()


def collect(
    prepared: Any, *, cache_dir: Path, steps: frozenset[str], executor: str | None = None, with_executor: bool = True
) -> list[Check]:
    """Every check of the steps that will run, and of the executor (``with_executor``: the
    submitting side; the engine that runs the steps, on the cluster or here, skips it)."""
    from ftpipe import registry

    p = prepared.resolved
    ctx = PreflightContext(
        pipeline=p,
        base_dir=Path(prepared.plan.path).parent,
        cache_dir=cache_dir,
        steps=steps,
        secrets=tuple(prepared.secrets),
    )
    out: list[Check] = []

    def ask(kind: str, name: str, config: Any) -> None:
        impl = registry.get(kind, name).load()
        fn = getattr(impl, "preflight", None)
        if callable(fn):
            out.extend(fn(ctx, config))

    ex_name = executor or p.executor.type
    if with_executor and ex_name == p.executor.type:
        ask("executor", ex_name, p.executor)
    if steps & {"train", "evaluate"}:
        ask("trainer", p.trainer.backend, p.trainer)
    for step in prepared.plan.steps:
        if step.kind == "deploy" and step.id in steps and step.index is not None:
            target = p.deploy[step.index]
            ask("target", target.type, target)
    return out


def enforce(
    prepared: Any,
    *,
    cache_dir: Path,
    steps: frozenset[str],
    log: Callable[[str], None] | None = None,
    executor: str | None = None,
    with_executor: bool = True,
) -> list[Check]:
    """Run the checks; raise :class:`PreflightFailed` (exit 2) when any failed."""
    if not steps:
        return []
    checks = collect(prepared, cache_dir=cache_dir, steps=steps, executor=executor, with_executor=with_executor)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise PreflightFailed(failed, tuple(prepared.secrets))
    if log is not None and checks:
        n_skip = sum(c.skipped for c in checks)
        log(
            f"preflight: {len(checks) - n_skip} check{'s' if len(checks) - n_skip != 1 else ''} passed"
            + (f", {n_skip} could not be checked from here" if n_skip else "")
        )
    return checks


def secret_value(value: str | None) -> str | None:
    """A field's value; a default left as a reference (``${env:HF_TOKEN}``,
    ``${env:RAY_ADDRESS:-http://...}``) is read from the environment, as the run would."""
    import os

    from ftpipe.spec.interpolate import ENV_REF_FULL

    if value and (m := ENV_REF_FULL.fullmatch(value)):
        return os.environ.get(m.group(1)) or m.group(2) or None
    return value


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


# --------------------------------------------------------------------------- shared probes


def hub_write_access(step: str, *, token: str | None, repo_id: str | None, what: str | None = None) -> Check:
    """The Hub token is valid, has write access, and may write in the namespace of ``repo_id``
    (``namespace/name``; a bare name or None: the token's own user)."""
    what = what or f"Hub token can write {repo_id}"
    token = secret_value(token)

    def probe() -> str | None:
        from huggingface_hub import HfApi

        from ftpipe.remote.hf import hub_errors, is_retryable
        from ftpipe.remote.retry import call_with_retries

        api = HfApi(token=token)
        with hub_errors("checking the token (whoami)"):  # a 429, 5xx or dropped connection is tried again
            me = call_with_retries(
                lambda: api.whoami(token=token), what="whoami", is_transient=is_retryable, secrets=(token or "",)
            )
        role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
        if role == "read":
            return f"the token of {me.get('name')} is read-only"
        namespace = repo_id.split("/")[0] if repo_id and "/" in repo_id else me.get("name")
        mine = {me.get("name")} | {o.get("name") for o in me.get("orgs") or []}
        if namespace not in mine:
            return (
                f"{me.get('name')} may not write in namespace '{namespace}' "
                f"(the token's user and organizations: {', '.join(sorted(n for n in mine if n))})"
            )
        return None

    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        return skipped(step, what, 'huggingface_hub is not installed here (pip install "ftpipe[hub]")')
    return attempt(
        step,
        what,
        probe,
        fix="use a token with write access to that namespace (HF_TOKEN): huggingface.co/settings/tokens",
    )
