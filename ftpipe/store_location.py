"""Where the run store is: found the way git and DVC find theirs, so that every command
agrees from anywhere in a repository.

In this order:

1. ``--store`` (the caller passes it) or ``$FTPIPE_STORE``;
2. the nearest ``.ftpipe/`` folder walking up from the start folder (the pipeline's folder
   for commands that take a pipeline, else the current folder), not above the repository
   root;
3. ``.ftpipe/`` at the root of the git repository holding the start folder;
4. ``.ftpipe/`` in the start folder (outside any repository).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STORE_DIR = ".ftpipe"


@dataclass(frozen=True)
class StoreLocation:
    path: Path
    how: str  # "option" | "env" | "found" | "repository" | "folder"

    def describe(self) -> str:
        return {
            "option": "given with --store",
            "env": "from FTPIPE_STORE",
            "found": "found walking up",
            "repository": "at the repository root",
            "folder": "beside the pipeline",
        }.get(self.how, self.how)


def git_root(start: Path) -> Path | None:
    """The work tree holding ``start`` (a ``.git`` folder, or the ``.git`` file of a worktree)."""
    for d in [start, *start.parents]:
        if (d / ".git").exists():
            return d
    return None


def locate_store(start: Path | None = None, *, option: str | Path | None = None, environ: bool = True) -> StoreLocation:
    """The run store for a command started in ``start`` (default: the current folder).
    ``environ=False`` ignores ``$FTPIPE_STORE`` (for files generated for another machine)."""
    if option:
        return StoreLocation(Path(option).expanduser().resolve(), "option")
    env = os.environ.get("FTPIPE_STORE") if environ else None
    if env:
        return StoreLocation(Path(env).expanduser().resolve(), "env")
    start = (start or Path.cwd()).resolve()
    repo = git_root(start)
    for d in [start, *start.parents]:
        if (d / STORE_DIR).is_dir():
            return StoreLocation(d / STORE_DIR, "found")
        if d == repo:
            break
    if repo is not None:
        return StoreLocation(repo / STORE_DIR, "repository")
    return StoreLocation(start / STORE_DIR, "folder")


def store_for_pipeline(pipeline_path: Path) -> Path:
    """The store a run of ``pipeline_path`` uses when no ``--store`` is given."""
    return locate_store(pipeline_path.resolve().parent).path


def store_arg(store: Path) -> str:
    """`` --store PATH`` when commands started in the current folder would not find
    ``store`` by themselves, so that a printed hint works when pasted; else ``""``."""
    try:
        here = locate_store().path
    except OSError:
        here = None
    if here is not None and here == store.resolve():
        return ""
    return f" --store {_shell_path(store)}"


def other_stores(root: Path, *, depth: int = 2) -> list[Path]:
    """Run stores with runs in the folders below ``root`` (at most ``depth`` levels down):
    an older store beside a pipeline that a command started elsewhere does not find."""
    found: list[Path] = []
    patterns = ["/".join(["*"] * n + [STORE_DIR]) for n in range(1, depth + 1)]
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            if (p / "runs").is_dir() and any((p / "runs").iterdir()):
                found.append(p)
    return found


def nested_store_note(store: Path, pipeline: Path | None = None) -> str | None:
    """A note when a run uses a store below the repository root (an older store beside a
    pipeline): commands started at the root would not find it by themselves."""
    repo = git_root(store.parent.resolve())
    if repo is None or store.resolve() == (repo / STORE_DIR).resolve() or os.environ.get("FTPIPE_STORE"):
        return None
    beside = pipeline is None or pipeline.resolve().parent == store.resolve().parent
    return (
        f"using the run store {_shell_path(store)} found {'beside' if beside else 'above'} the pipeline; "
        f"commands started at the "
        f"repository root use {_shell_path(repo / STORE_DIR)} unless given --store {_shell_path(store)} "
        f"(or move {_shell_path(store)} to {_shell_path(repo / STORE_DIR)})"
    )


def no_runs_hint(store: Path) -> str:
    """What to try when ``store`` holds no runs: another store in the repository that does
    (typically an older one beside a pipeline), else how stores are found."""
    repo = git_root(store.parent.resolve())
    others = [p for p in other_stores(repo) if p.resolve() != store.resolve()] if repo else []
    if others:
        shown = ", ".join(_shell_path(p) for p in others)
        return (
            f"runs are in {shown}: pass --store {_shell_path(others[0])}, or move that folder to "
            f"{_shell_path(repo / STORE_DIR) if repo else STORE_DIR} so every command finds it"
        )
    return (
        "run a pipeline first (`ftpipe run FILE`), or point at a store with --store / -p PIPELINE "
        "(the store is the nearest .ftpipe/ walking up, else the repository root's)"
    )


def _shell_path(path: Path) -> str:
    try:
        shown = os.path.relpath(path)
    except ValueError:
        shown = str(path)
    if len(shown) > len(str(path)) or shown.startswith("../../.."):
        shown = str(path)
    import shlex

    return shlex.quote(shown)
