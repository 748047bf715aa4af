"""The virtual environment ftpipe creates and owns for AutoTrain Advanced.

autotrain-advanced pins old releases of transformers, trl, peft, pydantic and
huggingface-hub that clash with ftpipe's own, so it never shares our interpreter: it lives
in ``<cache>/envs/autotrain-<pin hash>`` (``<cache>`` is $FTPIPE_CACHE or
~/.cache/ftpipe), is reused by every run, and is rebuilt when the pin (the version plus
the list of fixes below) changes. A marker file, written last and atomically, says the
environment is complete; a folder without it is a half-built leftover and is rebuilt.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ftpipe.errors import EXIT_INVALID, FtpipeError, StepError

AUTOTRAIN_VERSION = "0.8.36"
# Install the CPU/CUDA torch this machine provides first, by exact pin: a bare `torch` would
# let pip fetch whatever the registry has (gigabytes of CUDA wheels).
TORCH_REQUIREMENT = "torch==2.13.0"
# torchvision (pulled in through timm) ships a build that cannot load beside the CPU torch
# ("operator torchvision::nms does not exist"), and `accelerate launch` imports timm; both
# are only needed for AutoTrain's image tasks.
REMOVE_AFTER_INSTALL = ("torchvision", "timm")
# Bump FIX_LEVEL when the recipe changes in a way the fields above do not show.
FIX_LEVEL = 1
MARKER = "ftpipe-env.json"
INSTALL_COMMAND = "ftpipe backends install autotrain"
ENV_VAR = "FTPIPE_AUTOTRAIN_ENV"

LineFn = Callable[[str], None]


def pin() -> dict:
    """Everything that decides the environment's contents; its hash names the folder."""
    return {
        "package": f"autotrain-advanced=={AUTOTRAIN_VERSION}",
        "first": [TORCH_REQUIREMENT],
        "remove": list(REMOVE_AFTER_INSTALL),
        "fix_level": FIX_LEVEL,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def pin_hash() -> str:
    return hashlib.sha256(json.dumps(pin(), sort_keys=True).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """ftpipe's shared cache, as the run store computes it (no folder is created)."""
    env = os.environ.get("FTPIPE_CACHE")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftpipe"


def env_dir(cache_dir: Path | None = None) -> Path:
    """Where the environment for the current pin lives. $FTPIPE_AUTOTRAIN_ENV names the
    folder outright (a shared or pre-built install: a CI cache, a Docker image)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    return Path(cache_dir or default_cache_dir()) / "envs" / f"autotrain-{pin_hash()}"


@dataclass(frozen=True)
class AutoTrainEnv:
    """A complete environment: where it is and what its marker says."""

    path: Path
    info: dict

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"

    @property
    def autotrain(self) -> Path:
        return self.bin_dir / "autotrain"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment variables for running AutoTrain: its bin/ first on PATH (it starts
        `accelerate` by name), nothing leaking in from ftpipe's own interpreter."""
        env = dict(os.environ if base is None else base)
        for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            env.pop(var, None)
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        env["PYTHONNOUSERSITE"] = "1"
        env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env


class AutoTrainNotInstalled(FtpipeError):
    """The AutoTrain environment does not exist (or is stale): says how to create it."""

    exit_code = EXIT_INVALID

    def __init__(self, where: Path, reason: str) -> None:
        super().__init__(
            f"the autotrain trainer needs ftpipe's AutoTrain environment "
            f"(autotrain-advanced=={AUTOTRAIN_VERSION}), which is {reason} ({where})",
            hint=f"run `{INSTALL_COMMAND}` once (a few minutes, about 3 GB); runs reuse it",
        )


def read_marker(path: Path) -> dict | None:
    try:
        info = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("pin") == pin() else None


def find(cache_dir: Path | None = None) -> AutoTrainEnv | None:
    """The installed environment for the current pin, or None."""
    path = env_dir(cache_dir)
    info = read_marker(path)
    if info is None or not (path / "bin" / "autotrain").exists():
        return None
    return AutoTrainEnv(path, info)


def require(cache_dir: Path | None = None) -> AutoTrainEnv:
    """The environment, or an error that gives the install command."""
    env = find(cache_dir)
    if env is not None:
        return env
    path = env_dir(cache_dir)
    stale = [p.name for p in path.parent.glob("autotrain-*") if p != path and (p / MARKER).exists()]
    if (path / MARKER).exists():
        reason = "built from a different pin (another autotrain-advanced version or fix list)"
    elif path.exists():
        reason = "only partly built (an install was interrupted)"
    elif stale:
        reason = f"not installed for the current pin (found {', '.join(sorted(stale))}, built from an older pin)"
    else:
        reason = "not installed"
    raise AutoTrainNotInstalled(path, reason)


def status(cache_dir: Path | None = None) -> dict:
    """What `ftpipe backends list` shows for autotrain."""
    path = env_dir(cache_dir)
    env = find(cache_dir)
    out = {
        "installed": env is not None,
        "path": str(path),
        "needs": f"its own environment with autotrain-advanced=={AUTOTRAIN_VERSION} ({INSTALL_COMMAND})",
        "version": AUTOTRAIN_VERSION,
        "pin_hash": pin_hash(),
    }
    if env is not None:
        out["installed_at"] = env.info.get("installed_at")
        out["size_bytes"] = env.info.get("size_bytes")
    return out


# --------------------------------------------------------------------------- install


@contextmanager
def _install_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FtpipeError(
                f"another `{INSTALL_COMMAND}` is building {path}", hint="wait for it to finish, then run again"
            ) from None
        yield
    finally:
        os.close(fd)


def _run(
    cmd: list[str],
    *,
    log: LineFn,
    env: dict[str, str] | None,
    what: str,
    echo: Callable[[str], bool | str | None],
    transcript: TextIO | None = None,
    transcript_path: Path | None = None,
) -> None:
    """Run one install command. Every line goes to ``transcript`` (the install log); the
    console gets what ``echo`` returns for it (True: the line itself). The last lines come
    back in the error when it fails."""
    if transcript is not None:
        transcript.write(f"$ {' '.join(cmd)}\n")
        transcript.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if transcript is not None:
            transcript.write(line + "\n")
        tail = (tail + [line])[-25:]
        shown = echo(line) if line else None
        if shown:
            log(f"    {line if shown is True else shown}")
    if transcript is not None:
        transcript.flush()
    if proc.wait() != 0:
        where = f"\n  the full log: {transcript_path}" if transcript_path else ""
        raise StepError(
            f"{what} failed (exit {proc.returncode}):\n" + "\n".join(f"    {x}" for x in tail) + where,
            hint="check your network access to the package index, then run the install again",
        )


class PipProgress:
    """pip prints a line or more per package (about 200 for autotrain-advanced): the console
    gets one line per ``every`` packages collected, the install and its outcome, and errors;
    the install log keeps everything."""

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.collected = 0

    def __call__(self, line: str) -> str | None:
        s = line.strip()
        if s.startswith("Collecting "):
            self.collected += 1
            return f"{self.collected} packages collected ..." if self.collected % self.every == 0 else None
        if s.startswith("Installing collected packages:"):
            return f"installing {len(s.split(':', 1)[1].split(','))} packages ..."
        if s.startswith("Successfully installed"):
            return f"installed {len(s.split()) - 2} packages"
        if s.startswith(("ERROR", "Successfully uninstalled", "WARNING: Skipping")):
            return s
        return None


def install_log_path(path: Path) -> Path:
    """Where the install of the environment at ``path`` keeps its full log."""
    return path.parent / f"{path.name}.install.log"


def _folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def install(
    cache_dir: Path | None = None, *, force: bool = False, log: LineFn = print, python: str | None = None
) -> dict:
    """Create (or reuse) the environment. Returns what `backends install --json` prints."""
    path = env_dir(cache_dir)
    with _install_lock(path):
        existing = find(cache_dir)
        if existing is not None and not force:
            log(f"autotrain: already installed at {path} (autotrain-advanced=={AUTOTRAIN_VERSION})")
            return {
                "backend": "autotrain",
                "installed": True,
                "reused": True,
                "path": str(path),
                **{k: existing.info.get(k) for k in ("seconds", "size_bytes", "installed_at")},
            }
        start = time.monotonic()
        if path.exists():
            log(f"autotrain: removing the incomplete or outdated environment at {path}")
            shutil.rmtree(path)
        steps = 4
        py = str(path / "bin" / "python")
        pip_env = dict(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
            pip_env.pop(var, None)
        pip_env["PYTHONNOUSERSITE"] = "1"
        pip = [py, "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
        log_path = install_log_path(path)
        log(f"autotrain: the full install log is {log_path}")
        with open(log_path, "w", encoding="utf-8") as transcript:

            def run(cmd: list[str], what: str, echo: Callable[[str], bool | str | None]) -> None:
                _run(cmd, log=log, env=pip_env, what=what, echo=echo, transcript=transcript, transcript_path=log_path)

            log(f"[1/{steps}] creating the virtual environment {path}")
            run([python or sys.executable, "-m", "venv", str(path)], "creating the virtual environment", lambda _: True)
            log(f"[2/{steps}] installing {TORCH_REQUIREMENT} (first, so AutoTrain's dependencies reuse it)")
            run(pip + [TORCH_REQUIREMENT], f"pip install {TORCH_REQUIREMENT}", PipProgress())
            log(f"[3/{steps}] installing autotrain-advanced=={AUTOTRAIN_VERSION} (the longest step)")
            run(
                pip + [f"autotrain-advanced=={AUTOTRAIN_VERSION}", TORCH_REQUIREMENT],
                f"pip install autotrain-advanced=={AUTOTRAIN_VERSION}",
                PipProgress(),
            )
            log(
                f"[4/{steps}] removing {', '.join(REMOVE_AFTER_INSTALL)} (they break `accelerate launch` beside "
                "the CPU torch)"
            )
            run([py, "-m", "pip", "uninstall", "-y", *REMOVE_AFTER_INSTALL], "pip uninstall", PipProgress())
            run(
                [py, "-c", "import autotrain, torch, transformers, trl, peft, accelerate"],
                "checking the environment imports",
                lambda _: True,
            )
        if not (path / "bin" / "autotrain").exists():
            raise StepError(f"the install finished but {path / 'bin' / 'autotrain'} is missing")

        seconds = round(time.monotonic() - start, 1)
        size = _folder_size(path)
        info = {
            "pin": pin(),
            "pin_hash": pin_hash(),
            "seconds": seconds,
            "size_bytes": size,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        tmp = path / f".{MARKER}.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, path / MARKER)  # last, atomically: from here on the env counts as complete
        log(f"autotrain: installed in {seconds:.0f}s, {size / 1e9:.1f} GB at {path}")
        for old in sorted(path.parent.glob("autotrain-*")):
            if old != path and (old / MARKER).exists():
                log(f"autotrain: {old} was built from an older pin; once no older ftpipe uses it: rm -r {old}")
        return {
            "backend": "autotrain",
            "installed": True,
            "reused": False,
            "path": str(path),
            "seconds": seconds,
            "size_bytes": size,
            "installed_at": info["installed_at"],
            "log": str(log_path),
        }
