"""Which values are secrets, derived from the config models alone.

A field typed :data:`ftpipe.spec.models.Secret` (``x-secret`` in the JSON Schema) is the one
mark of a secret, for built-in and plugin models alike: interpolation keeps it a reference
while validating, planning leaves it out of keys, and a run redacts its value. Field names
mean nothing here (a plugin's ``credentials: Secret`` is as secret as ``token``).

Besides secret fields, some environment variables are secrets wherever they appear: those a
secret field references, and the well-known token variables (:data:`WELL_KNOWN`). Their
values are redacted from everything a run writes, and ``validate`` refuses them in a plain
field, where they would be printed, stored and uploaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ftpipe.spec.interpolate import ENV_REF

SECRET_MARK = "x-secret"

# Variables that hold credentials in the services ftpipe talks to, secret wherever they appear.
WELL_KNOWN = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_API_TOKEN",
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_MANAGEMENT_TOKEN",
    "AZURE_CLIENT_SECRET",
    "WANDB_API_KEY",
    "RAY_AUTH_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "ANTHROPIC_API_KEY",
)
# And by name: a variable called *_TOKEN, *_API_KEY, *_SECRET or *PASSWORD* holds a credential.
_SECRET_VAR = re.compile(r"(^|_)(TOKEN|API_KEY|SECRET|SECRET_KEY|ACCESS_KEY|PASSWORD|PASSWD)$|PASSWORD")


def is_secret_var(name: str) -> bool:
    """A well-known credential variable, or one whose name says it holds one."""
    return name in WELL_KNOWN or bool(_SECRET_VAR.search(name.upper()))


def _marked(obj: Any) -> bool:
    extra = getattr(obj, "json_schema_extra", None)
    return isinstance(obj, FieldInfo) and isinstance(extra, dict) and bool(extra.get(SECRET_MARK))


def _annotation_is_secret(ann: Any) -> bool:
    """``Secret``, ``Secret | None``, ``Optional[Secret]``: the Annotated metadata says so."""
    origin = get_origin(ann)
    if origin is Annotated:
        return any(_marked(m) for m in get_args(ann)[1:]) or _annotation_is_secret(get_args(ann)[0])
    if _is_union(origin):
        members = [a for a in get_args(ann) if a is not type(None)]
        return bool(members) and all(_annotation_is_secret(a) for a in members)
    return False


def is_secret_field(field: FieldInfo) -> bool:
    return _marked(field) or _annotation_is_secret(field.annotation)


def _is_union(origin: Any) -> bool:
    return origin is Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType")


def _members(ann: Any) -> list[Any]:
    origin = get_origin(ann)
    if origin is Annotated:
        return _members(get_args(ann)[0])
    if _is_union(origin):
        return [m for a in get_args(ann) for m in _members(a)]
    return [ann]


def _tag(model: type[BaseModel]) -> tuple[str, Any] | None:
    for name in ("backend", "type"):
        f = model.model_fields.get(name)
        if f is not None and get_origin(f.annotation) is Literal:
            return name, get_args(f.annotation)
    return None


def secret_paths(model: Any, data: Any) -> frozenset[tuple]:
    """Paths in raw ``data`` (as loaded from YAML) that a Secret field of ``model`` holds."""
    out: set[tuple] = set()
    _walk_type(model, data, (), out)
    return frozenset(out)


def _walk_type(ann: Any, data: Any, path: tuple, out: set[tuple]) -> None:
    if isinstance(data, str) and _annotation_is_secret(ann):  # e.g. the values of dict[str, Secret]
        out.add(path)
        return
    members = _members(ann)
    if isinstance(data, dict):
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        tagged = [m for m in models if (t := _tag(m)) and data.get(t[0]) in t[1]]
        for m in tagged or models:  # an unknown tag: every member's secrets count
            _walk_model(m, data, path, out)
        for m in members:
            if get_origin(m) in (dict, Mapping) and len(get_args(m)) == 2:
                for k, v in data.items():
                    _walk_type(get_args(m)[1], v, path + (k,), out)
    elif isinstance(data, list):
        for m in members:
            if get_origin(m) in (list, tuple) and get_args(m):
                for i, v in enumerate(data):
                    _walk_type(get_args(m)[0], v, path + (i,), out)


def _walk_model(model: type[BaseModel], data: dict, path: tuple, out: set[tuple]) -> None:
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in data:
            continue
        if is_secret_field(field):
            out.add(path + (key,))
        else:
            _walk_type(field.annotation, data[key], path + (key,), out)


def secret_fields(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of every Secret field of a validated model, defaults included."""
    if isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            v = getattr(value, name, None)
            if is_secret_field(field):
                if v is not None:
                    yield path + (name,), v
            else:
                yield from secret_fields(v, path + (name,))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from secret_fields(v, path + (i,))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from secret_fields(v, path + (k,))


def without_secrets(value: Any) -> Any:
    """A JSON-able dump of ``value`` (a model, or lists/dicts of them) without its Secret fields."""
    if isinstance(value, BaseModel):
        return _strip(value, value.model_dump(mode="json"))
    if isinstance(value, (list, tuple)):
        return [without_secrets(v) for v in value]
    if isinstance(value, dict):
        return {k: without_secrets(v) for k, v in value.items()}
    return value


def _strip(value: Any, dump: Any) -> Any:
    if isinstance(value, BaseModel) and isinstance(dump, dict):
        for name, field in type(value).model_fields.items():
            if name not in dump:
                continue
            if is_secret_field(field):
                del dump[name]
            else:
                dump[name] = _strip(getattr(value, name, None), dump[name])
    elif isinstance(value, (list, tuple)) and isinstance(dump, list):
        return [_strip(v, d) for v, d in zip(value, dump, strict=False)]
    elif isinstance(value, dict) and isinstance(dump, dict):
        return {dk: _strip(v, dump[dk]) for (_, v), dk in zip(value.items(), list(dump), strict=False)}
    return dump


def secret_vars(pipeline: Any) -> set[str]:
    """The environment variables a pipeline's Secret fields reference (defaults included)."""
    names: set[str] = set()
    for _, value in secret_fields(pipeline):
        if isinstance(value, str):
            names.update(m.group(1) for m in ENV_REF.finditer(value))
    return names


def secret_values(pipeline: Any, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every secret value known to a run: the variables its Secret fields reference (their
    defaults included) and the well-known token variables set in ``env``. Redact all of them
    from what it writes."""
    env = os.environ if env is None else env
    names = secret_vars(pipeline) | set(WELL_KNOWN)
    return tuple(sorted({env[n] for n in names if env.get(n)}, key=len, reverse=True))


def plain_secret_refs(data: Any, secret_at: Collection[tuple], also: Collection[str] = ()) -> list[tuple[tuple, str]]:
    """(path, variable) for each credential variable referenced outside a Secret field: a
    well-known or credential-named variable, one a Secret field of the file references, or
    one in ``also`` (the variables of Secret fields' defaults). Its value would be printed,
    stored and uploaded with the plain field."""
    secret_at = frozenset(secret_at)
    found: list[tuple[tuple, str]] = []
    named: set[str] = set(also)
    plain: list[tuple[tuple, str]] = []
    stack: list[tuple[tuple, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((path + (k,), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((path + (i,), v) for i, v in enumerate(value))
        elif isinstance(value, str) and "${" in value:
            names = [m.group(1) for m in ENV_REF.finditer(value)]
            if path in secret_at:
                named.update(names)
            else:
                plain.extend((path, n) for n in names)
    for path, name in plain:
        if name in named or is_secret_var(name):
            found.append((path, name))
    return sorted(found, key=lambda pv: [str(s) for s in pv[0]])


def redact_data(value: Any, secrets: Collection[str]) -> Any:
    """``value`` (plain data) with every secret value in its strings replaced by ``***``."""
    from ftpipe.spec.interpolate import redact

    if not secrets:
        return value
    if isinstance(value, dict):
        return {k: redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v, secrets) for v in value]
    return redact(value, tuple(secrets)) if isinstance(value, str) else value


def resolve_secret_defaults(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """``value`` (a validated model) with each Secret field still holding a reference (its
    default: a value from the file was resolved by interpolation) resolved from ``env``: the
    variable, else the reference's own default, else None. A backend gets the token, never the
    text ``${env:HF_TOKEN}``."""
    from ftpipe.spec.interpolate import ENV_REF_FULL

    env = os.environ if env is None else env
    if isinstance(value, BaseModel):
        updates: dict[str, Any] = {}
        for name, field in type(value).model_fields.items():
            v = getattr(value, name, None)
            if is_secret_field(field):
                if isinstance(v, str) and (m := ENV_REF_FULL.fullmatch(v)):
                    updates[name] = env.get(m.group(1)) or m.group(2) or None
            else:
                nv = resolve_secret_defaults(v, env)
                if nv is not v:
                    updates[name] = nv
        return value.model_copy(update=updates) if updates else value
    if isinstance(value, list):
        items = [resolve_secret_defaults(v, env) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value
