"""``${env:NAME}`` / ``${env:NAME:-default}`` references in pipeline values.

Secrets are always written as references. Which values are secrets is decided by the
config models (a field typed ``Secret``, see :mod:`ftpipe.spec.secrets`), never by a key's
name: the loader passes the secret paths in, keeps those references unresolved when it
validates or plans, and resolves them only for a run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
ENV_REF_FULL = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BAD_REF = re.compile(r"\$\{(?!env:[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})[^}]*\}?")


def _pipeline_secret_paths(data: Any) -> frozenset[tuple]:
    from ftpipe.registry import pipeline_model
    from ftpipe.spec.secrets import secret_paths

    return secret_paths(pipeline_model(), data)


@dataclass
class Interpolation:
    """The result of resolving references in raw pipeline data."""

    data: Any
    secrets: list[str] = field(default_factory=list)  # resolved secret values, to redact
    missing: list[tuple[tuple, str]] = field(default_factory=list)  # (path, variable)
    bad: list[tuple[tuple, str]] = field(default_factory=list)  # (path, text) malformed refs


def _sub(text: str, env: Mapping[str, str], path: tuple, out: Interpolation, keep_missing: bool) -> str:
    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        out.missing.append((path, name))
        # validating without the environment: the variable's name stands in, so that a
        # value such as `${env:ORG}/model` still has the shape its field expects
        return name if keep_missing else ""

    return ENV_REF.sub(repl, text)


def interpolate(
    data: Any,
    *,
    env: Mapping[str, str] | None = None,
    resolve_secrets: bool,
    secret_paths: Collection[tuple] | None = None,
    path: tuple = (),
    _out: Interpolation | None = None,
) -> Interpolation:
    """Replace ``${env:...}`` references. Values at ``secret_paths`` (by default: the Secret
    fields of the pipeline model, ``data`` being a whole pipeline) stay references unless
    ``resolve_secrets``; their resolved values are collected for redaction, and so are the
    values of credential variables referenced anywhere."""
    from ftpipe.spec.secrets import is_secret_var

    env = os.environ if env is None else env
    out = _out if _out is not None else Interpolation(data=None)
    secret_at = frozenset(secret_paths) if secret_paths is not None else _pipeline_secret_paths(data)

    def walk(value: Any, p: tuple) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, p + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, p + (i,)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            for m in _BAD_REF.finditer(value):
                out.bad.append((p, m.group(0)))
            secret = p in secret_at
            if secret and not resolve_secrets:
                return value
            resolved = _sub(value, env, p, out, keep_missing=not resolve_secrets)
            if secret and resolved:
                out.secrets.append(resolved)
            elif ENV_REF.search(value):
                for m in ENV_REF.finditer(value):
                    if is_secret_var(m.group(1)) and m.group(1) in env and env[m.group(1)]:
                        out.secrets.append(env[m.group(1)])
            return resolved
        return value

    out.data = walk(data, path)
    return out


@dataclass(frozen=True)
class EnvRef:
    name: str
    secret: bool
    default: str | None


def env_refs(data: Any, secret_paths: Collection[tuple] | None = None) -> list[EnvRef]:
    """Every ${env:NAME} the pipeline file references: secret if a Secret field references it
    (``secret_paths``, by default derived from the pipeline model) or it is a credential variable."""
    from ftpipe.spec.secrets import is_secret_var

    secret_at = frozenset(secret_paths) if secret_paths is not None else _pipeline_secret_paths(data)
    found: dict[str, EnvRef] = {}

    def walk(value: Any, p: tuple) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, p + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, p + (i,))
        elif isinstance(value, str):
            for m in ENV_REF.finditer(value):
                name, default = m.group(1), m.group(2)
                old = found.get(name)
                is_secret = p in secret_at or is_secret_var(name) or (old.secret if old else False)
                found[name] = EnvRef(name, is_secret, default if old is None else old.default)

    walk(data, ())
    return sorted(found.values(), key=lambda r: r.name)


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace every secret value in ``text`` by ``***``."""
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, "***")
    return text
