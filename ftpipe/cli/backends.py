"""ftpipe backends list / install: which trainer backends can run here, and the managed
environment for the ones that cannot share ftpipe's interpreter (AutoTrain).

Everything shown comes from each plugin's declaration (``TrainerCaps``): the extras it
needs, whether it has a managed environment (its plugin then provides
``environment_status()`` and ``install_environment(force=, log=)``), its description."""

from __future__ import annotations

import sys

import click

from ftpipe.cli import emit_json
from ftpipe.errors import UsageError


def _describe(plugin: object) -> str:
    doc = (getattr(getattr(plugin, "config_model", None), "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else "plugin"


def backend_status() -> list[dict]:
    """One entry per registered trainer backend (built-ins and plugins)."""
    from ftpipe import registry
    from ftpipe.extras import install_hint, missing_modules

    out = []
    for name, plugin in sorted(registry.plugins()["trainer"].items()):
        caps = plugin.caps
        row: dict = {
            "backend": name,
            "hosted": caps.hosted,
            "can_cancel": caps.can_cancel,
            "extras": list(caps.extras),
            "managed": caps.managed_env,
            "builtin": plugin.builtin,
        }
        if caps.managed_env:
            st = plugin.load().environment_status()
            row.update(
                installed=bool(st["installed"]),
                what=st.get("what") or _describe(plugin),
                missing=list(st.get("missing") or []),
                needs=st["needs"],
                environment=st["path"],
            )
            if st["installed"] and st.get("size_bytes") is not None:
                row["size_bytes"] = st["size_bytes"]
        else:
            missing = missing_modules(caps.extras)
            needs = install_hint(caps.extras)
            if not plugin.builtin:
                source = plugin.target if isinstance(plugin.target, str) else type(plugin.target).__module__
                needs = f"the package that provides {source}" + (f", and {needs}" if caps.extras else "")
            row.update(
                installed=not missing, what=_describe(plugin), missing=missing, needs=needs, environment="ftpipe's own"
            )
        out.append(row)
    return out


@click.group()
def backends() -> None:
    """Trainer backends: what is installed, and the managed AutoTrain environment."""


@backends.command("list")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def list_backends(as_json: bool) -> None:
    """Each trainer backend: installed or not, and what it needs."""
    rows = backend_status()
    if as_json:
        emit_json({"backends": rows})
        return
    width = max(len(r["backend"]) for r in rows)
    for r in rows:
        mark = "installed" if r["installed"] else "missing  "
        line = f"{r['backend']:<{width}}  {mark}  {r['what']}"
        if not r["installed"]:
            line += f"\n{'':<{width}}  {'':9}  needs: {r['needs']}"
        elif r["managed"]:
            line += f"\n{'':<{width}}  {'':9}  environment: {r['environment']}"
        click.echo(line)


@backends.command("install")
@click.argument("backend")
@click.option("--force", is_flag=True, help="Rebuild the environment even if it is complete.")
@click.option("--json", "as_json", is_flag=True, help="Progress on stderr, a JSON summary on stdout.")
def install_backend(backend: str, force: bool, as_json: bool) -> None:
    """Create the managed environment a backend needs (autotrain: its own virtualenv with
    autotrain-advanced pinned, in ftpipe's cache; reused by every run)."""
    from ftpipe import registry
    from ftpipe.extras import install_hint

    trainers = registry.plugins()["trainer"]
    managed = sorted(n for n, p in trainers.items() if p.caps.managed_env)
    if backend in trainers and not trainers[backend].caps.managed_env:
        raise UsageError(
            f"the {backend} backend runs in ftpipe's own environment; nothing to manage",
            hint=install_hint(trainers[backend].caps.extras),
        )
    if backend not in managed:
        from ftpipe.spec.validate import did_you_mean

        raise UsageError(
            f"no managed environment for backend {backend!r}.{did_you_mean(backend, managed)} "
            f"(managed: {', '.join(managed) or 'none'})"
        )

    def progress(line: str) -> None:
        click.echo(line, err=as_json)
        sys.stdout.flush()

    result = trainers[backend].load().install_environment(force=force, log=progress)
    if as_json:
        emit_json(result)
