"""ftpipe backends list / install: which trainer backends can run here, and the managed
environment for the ones that cannot share ftpipe's interpreter (AutoTrain)."""
from __future__ import annotations

import importlib.util
import sys

import click

from ftpipe.cli import emit_json, main
from ftpipe.errors import UsageError

# Backends that run in ftpipe's own interpreter: the modules they import, and the extra.
IN_PROCESS = {
    "trl": (("torch", "transformers", "trl", "peft", "datasets", "accelerate"), "train",
            "local training with transformers + TRL + PEFT"),
    "openai": (("openai",), "openai", "the OpenAI fine-tuning API (OPENAI_API_KEY at run time)"),
    "azure-openai": (("openai",), "azure", "Azure OpenAI fine-tuning (an API key or Entra ID at run time)"),
}
MANAGED = ("autotrain",)


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def backend_status() -> list[dict]:
    """One entry per registered trainer backend (built-ins and plugins)."""
    from ftpipe import registry
    from ftpipe.trainers import autotrain_env

    out = []
    for name, plugin in sorted(registry.plugins()["trainer"].items()):
        if name in IN_PROCESS:
            modules, extra, what = IN_PROCESS[name]
            missing = [mod for mod in modules if not _present(mod)]
            out.append({"backend": name, "installed": not missing, "what": what, "missing": missing,
                        "needs": f'pip install "ftpipe[{extra}]"', "environment": "ftpipe's own"})
        elif name == "autotrain":
            st = autotrain_env.status()
            out.append({"backend": name, "installed": st["installed"],
                        "what": f"AutoTrain Advanced {st['version']} (local or Hugging Face Spaces)",
                        "missing": [] if st["installed"] else [f"autotrain-advanced=={st['version']}"],
                        "needs": st["needs"], "environment": st["path"],
                        **({"size_bytes": st.get("size_bytes")} if st["installed"] else {})})
        else:
            target = plugin.target if isinstance(plugin.target, str) else type(plugin.target).__module__
            out.append({"backend": name, "installed": True, "what": "plugin", "missing": [],
                        "needs": f"the package that provides {target}", "environment": "ftpipe's own"})
    return out


@main.group()
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
        elif r["backend"] in MANAGED:
            line += f"\n{'':<{width}}  {'':9}  environment: {r['environment']}"
        click.echo(line)


@backends.command("install")
@click.argument("backend")
@click.option("--force", is_flag=True, help="Rebuild the environment even if it is complete.")
@click.option("--json", "as_json", is_flag=True, help="Progress on stderr, a JSON summary on stdout.")
def install_backend(backend: str, force: bool, as_json: bool) -> None:
    """Create the managed environment a backend needs (autotrain: its own virtualenv with
    autotrain-advanced pinned, in ftpipe's cache; reused by every run)."""
    if backend in IN_PROCESS:
        _, extra, _ = IN_PROCESS[backend]
        raise UsageError(f"the {backend} backend runs in ftpipe's own environment; nothing to manage",
                         hint=f'pip install "ftpipe[{extra}]"')
    if backend not in MANAGED:
        from ftpipe.spec.validate import did_you_mean

        raise UsageError(f"no managed environment for backend {backend!r}.{did_you_mean(backend, MANAGED)} "
                         f"(managed: {', '.join(MANAGED)})")
    from ftpipe.trainers import autotrain_env

    def progress(line: str) -> None:
        click.echo(line, err=as_json)
        sys.stdout.flush()

    result = autotrain_env.install(force=force, log=progress)
    if as_json:
        emit_json(result)
