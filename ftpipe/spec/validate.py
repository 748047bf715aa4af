"""Load a pipeline file, validate it, and report every problem with its position.

``load(path)`` never raises for a problem in the file: it returns a ``Loaded`` whose
``problems`` list holds each one as ``file:line:col  key.path: message``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ftpipe.spec.interpolate import Interpolation, interpolate
from ftpipe.spec.yamlpos import Document, YamlProblem, load_yaml

SUPPORTED_VERSIONS = (1,)


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        # line 0: about the file as a whole (not found, a folder), which has no position
        where = f"{self.file}:{self.line}:{self.col}" if self.line > 0 else self.file
        return f"{where}  {self.path}: {self.message}" if self.path else f"{where}  {self.message}"


@dataclass
class Loaded:
    path: Path
    text: str = ""
    doc: Document | None = None
    pipeline: Any = None  # the validated Pipeline model (secrets as references)
    interpolation: Interpolation | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.pipeline is not None


def path_str(path: tuple) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def did_you_mean(word: object, options: list[str] | tuple[str, ...]) -> str:
    if not isinstance(word, str):
        return ""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not match:  # also catch case differences, prefixes and abbreviations ('msgs' -> 'messages')
        match = [o for o in options if o.lower() == word.lower() or (len(word) > 2 and o.startswith(word))][:1]
    if not match and len(word) >= 3:
        match = [o for o in options if o[0] == word[0] and _subsequence(word.lower(), o.lower())][:1]
    return f" Did you mean '{match[0]}'?" if match else ""


def _subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


def load(path: str | Path, *, env: Mapping[str, str] | None = None, display: str | None = None) -> Loaded:
    """Read, parse and validate a pipeline file. Secrets stay ``${env:...}`` references."""
    from ftpipe.registry import pipeline_model_for  # light, but keeps import order simple

    p = Path(path)
    shown = display or str(path)
    out = Loaded(path=p)

    def problem(line: int, col: int, dotted: str, msg: str) -> None:
        out.problems.append(Problem(shown, line, col, dotted, msg))

    if not p.exists():
        problem(0, 0, "", f"file not found (looked for {p.resolve()})")
        return out
    if p.is_dir():
        problem(0, 0, "", "this is a folder; give the pipeline's YAML file")
        return out
    from ftpipe.spec.yamlpos import MAX_BYTES

    try:
        size = p.stat().st_size
        if size > MAX_BYTES:  # refused before reading: a pipeline is a page of YAML
            problem(
                1,
                1,
                "",
                f"the file is {size:,} bytes; a pipeline file is at most {MAX_BYTES // 1024} KiB "
                "(keep data in data files, not in the pipeline)",
            )
            return out
        raw = p.read_bytes()
    except OSError as exc:
        problem(1, 1, "", f"cannot read the file: {exc.strerror or exc}")
        return out
    try:
        out.text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        problem(
            line,
            col,
            "",
            f"not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at offset {exc.start}: "
            f"{exc.reason}); save it as UTF-8",
        )
        return out
    try:
        doc = load_yaml(out.text)
    except YamlProblem as exc:
        problem(exc.line, exc.col, "", exc.message)
        return out
    out.doc = doc
    if doc.data is None:
        problem(
            1,
            1,
            "",
            "the file is empty: a pipeline starts with 'version: 1' and 'name: ...' (see pipelines/quickstart.yaml)",
        )
        return out
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else f"a single value ({type(doc.data).__name__})"
        problem(*doc.pos(()), "", f"the top level must be a mapping of keys (version, name, dataset, ...), got {kind}")
        return out
    version = doc.data.get("version")
    if "version" not in doc.data:
        problem(1, 1, "version", "missing: add 'version: 1' at the top of the file")
        return out
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        line, col = doc.pos(("version",))
        problem(
            line,
            col,
            "version",
            f"unsupported version {version!r}: this ftpipe reads version {', '.join(map(str, SUPPORTED_VERSIONS))}"
            " (upgrade ftpipe for newer files)",
        )
        return out

    model = pipeline_model_for(doc.data)
    from ftpipe.spec.secrets import secret_paths

    secret_at = secret_paths(model, doc.data)
    interp = interpolate(doc.data, env=env, resolve_secrets=False, secret_paths=secret_at)
    out.interpolation = interp
    for ipath, text in interp.bad:
        line, col = doc.pos(ipath)
        problem(
            line, col, path_str(ipath), f"malformed reference {text!r}: write ${{env:NAME}} or ${{env:NAME:-default}}"
        )
    missing_vars = {tuple(mp): var for mp, var in interp.missing}

    try:
        out.pipeline = model.model_validate(interp.data)
    except ValidationError as exc:
        for ppath, line, col, msg in translate_errors(exc, doc, model):
            if ppath in missing_vars:  # the value is an unresolved reference: say that, not the type error
                var = missing_vars[ppath]
                msg = (
                    f"environment variable {var} is not set and the reference has no default: set {var}, "
                    f"or write ${{env:{var}:-<value>}}"
                )
            problem(line, col, path_str(ppath), msg)
        from ftpipe.spec.typos import behind_tag_typos

        for ppath, line, col, msg in behind_tag_typos(exc, interp.data, doc, model):
            problem(line, col, path_str(ppath), msg)
    _check_secret_refs(doc, secret_at, out.pipeline, problem)
    if out.pipeline is not None and not out.problems:
        from ftpipe.spec.rules import check

        for rpath, msg in check(out.pipeline, base_dir=p.parent, raw=interp.data):
            line, col = doc.pos(rpath)
            problem(line, col, path_str(rpath), msg)
    if out.problems:
        out.pipeline = None
    out.problems.sort(key=lambda pr: (pr.line, pr.col))
    return out


def load_checked(path: Path, *, env: Mapping[str, str] | None = None) -> Loaded:
    """:func:`load`, raising ``PipelineInvalid`` (every problem in its message) for an invalid file."""
    from ftpipe.errors import PipelineInvalid

    loaded = load(path, env=env)
    if loaded.problems:
        lines = [f"{path}: {len(loaded.problems)} problem{'s' if len(loaded.problems) > 1 else ''}"]
        lines += [f"  {p}" for p in loaded.problems]
        raise PipelineInvalid("\n".join(lines), loaded.problems)
    return loaded


def _check_secret_refs(doc: Document, secret_at: frozenset[tuple], pipeline: Any, problem: Any) -> None:
    """A credential variable in a plain field would be resolved into plans, logs, the run
    store and model cards: only a Secret field may reference it."""
    from ftpipe.spec.secrets import plain_secret_refs, secret_vars

    defaults = secret_vars(pipeline) if pipeline is not None else set()
    for spath, var in plain_secret_refs(doc.data, secret_at, defaults):
        line, col = doc.pos(spath)
        problem(
            line,
            col,
            path_str(spath),
            f"references ${{env:{var}}}, which holds a secret, in a field that is not secret: its value "
            "would be written to plans, logs, the run store and model cards. Reference it only from a "
            "secret field (token, api_key, ...), or use another variable",
        )


# --------------------------------------------------------------------------- errors

_PRIORITY = {
    "literal_error": 0,
    "union_tag_invalid": 0,
    "union_tag_not_found": 0,
    "extra_forbidden": 0,
    "missing": 1,
    "value_error": 1,
    "model_type": 9,
    "dict_type": 9,
    "model_attributes_type": 9,
}


def _raw_path(data: Any, loc: tuple) -> tuple[tuple, list]:
    """Follow ``loc`` through the raw data, dropping pydantic's union/type segments.
    Returns the matched path and the segments that were skipped."""
    cur, matched, skipped = data, [], []
    for seg in loc:
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
            matched.append(seg)
        elif isinstance(cur, list) and isinstance(seg, int) and 0 <= seg < len(cur):
            cur = cur[seg]
            matched.append(seg)
        else:
            skipped.append(seg)
            cur = None if not isinstance(cur, (dict, list)) else cur
    return tuple(matched), skipped


def _members(ann: Any) -> list[Any]:
    origin = get_origin(ann)
    if origin is Annotated:
        return _members(get_args(ann)[0])
    if (
        origin is Union
        or (origin is not None and str(origin) == "types.UnionType")
        or type(ann).__name__ == "UnionType"
    ):
        return [t for a in get_args(ann) for t in _members(a)]
    return [ann]


def _models_at(root: type[BaseModel], loc: tuple) -> list[type[BaseModel]]:
    """The model classes that ``loc`` can point into (for the list of allowed keys)."""
    cands: list[Any] = [root]
    for seg in loc:
        nxt: list[Any] = []
        for c in cands:
            if isinstance(c, type) and issubclass(c, BaseModel):
                if isinstance(seg, str) and seg in c.model_fields:
                    nxt.extend(_members(c.model_fields[seg].annotation))
                continue
            origin = get_origin(c)
            if origin in (list, tuple) and isinstance(seg, int):
                nxt.extend(_members(get_args(c)[0]))
            elif origin is dict:
                nxt.extend(_members(get_args(c)[1]))
        # a union/type segment (e.g. 'trl', 'LoraPeft') selects a member without consuming a field
        picked = [
            c
            for c in cands
            if isinstance(c, type)
            and issubclass(c, BaseModel)
            and _tag_of(c) == seg
            or getattr(c, "__name__", None) == seg
        ]
        cands = picked if picked else (nxt or cands)
    return [c for c in cands if isinstance(c, type) and issubclass(c, BaseModel)]


def _tag_of(model: type[BaseModel]) -> Any:
    for name in ("backend", "type"):
        f = model.model_fields.get(name)
        if f is not None and get_origin(f.annotation) is Literal:
            return get_args(f.annotation)[0]
    return None


def _expected(ctx: dict, key: str) -> list[str]:
    return re.findall(r"'([^']*)'", str(ctx.get(key, "")))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


def translate_errors(exc: ValidationError, doc: Document, model: type[BaseModel]):
    """Yield (path, line, col, message) for each pydantic error, one per path."""
    best: dict[tuple, tuple[int, tuple]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        etype = err["type"]
        ctx = err.get("ctx") or {}
        path, skipped = _raw_path(doc.data, loc)
        value = err.get("input")
        key_pos = False
        if etype == "extra_forbidden":
            key = loc[-1]
            parent = _models_at(model, loc[:-1])
            allowed = sorted({f for mdl in parent for f in mdl.model_fields})
            msg = f"unknown key '{key}'.{did_you_mean(key, allowed)}" + (
                f" (allowed: {', '.join(allowed)})" if allowed else ""
            )
            msg = _hint(path_str(tuple(s for s in path if not isinstance(s, int))), loc) or msg
            key_pos = True
        elif etype == "missing":
            path = path + (loc[-1],) if loc and loc[-1] not in path else path
            msg = f"missing required key '{loc[-1]}'"
            key_pos = True
        elif etype == "union_tag_invalid":
            disc = ctx.get("discriminator", "").strip("'")
            tags = _expected(ctx, "expected_tags")
            tag = ctx.get("tag")
            path = path + (disc,)
            what = {"backend": "backend", "type": "type"}.get(disc, disc)
            msg = f"unknown {what} '{tag}'.{did_you_mean(tag, tags)} (available: {', '.join(sorted(tags))})"
        elif etype == "union_tag_not_found":
            disc = ctx.get("discriminator", "").strip("'")
            choices = sorted({_tag_of(mm) for mm in _models_at(model, loc) if _tag_of(mm)})
            msg = f"missing '{disc}'" + (f" (one of: {', '.join(choices)})" if choices else "")
            path = path + (disc,)
            key_pos = True
        elif etype == "literal_error":
            options = _expected(ctx, "expected")
            msg = f"unknown value {value!r}.{did_you_mean(value, options)} (allowed: {', '.join(options)})"
        elif etype in ("int_parsing", "int_type", "float_parsing", "float_type", "int_from_float"):
            kind = "a whole number" if etype.startswith("int") else "a number"
            msg = f"expected {kind}, got {_describe(value)}"
        elif etype in ("bool_parsing", "bool_type"):
            msg = f"expected true or false, got {_describe(value)}"
        elif etype in ("string_type",):
            msg = f"expected text, got {_describe(value)}"
        elif etype in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"expected a mapping (key: value lines), got {_describe(value)}"
        elif etype in ("list_type",):
            msg = f"expected a list, got {_describe(value)}"
        elif etype in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[etype]
            bound = next(iter(ctx.values()), "?")
            msg = f"must be {op} {bound}, got {value!r}"
        elif etype == "string_pattern_mismatch":
            msg = f"{value!r} is not a valid value here (expected the form {ctx.get('pattern')})"
        elif etype in ("string_too_long", "string_too_short", "too_short", "too_long"):
            msg = err["msg"][0].lower() + err["msg"][1:] + f", got {_describe(value)}"
        elif etype == "value_error":
            msg = str(ctx.get("error", err["msg"])).removeprefix("Value error, ")
        else:
            msg = err["msg"]
        prio = _PRIORITY.get(etype, 5)
        # for a union that failed every member, keep the most telling message per place
        slot = path
        if slot not in best or prio < best[slot][0]:
            line, col = doc.pos(path, key=key_pos)
            best[slot] = (prio, (path, line, col, msg))
    # an error inside a union member makes its own "wrong type" siblings noise
    for slot, (prio, item) in sorted(best.items(), key=lambda kv: kv[1][1][1:3]):
        if prio == 9 and any(other[: len(slot)] == slot and other != slot for other in best):
            continue
        yield item


def _hosted_tag_in(loc: tuple) -> Any:
    """The hosted trainer plugin whose config ``loc`` points into, if any."""
    from ftpipe import registry

    trainers = registry.plugins()["trainer"]
    return next((trainers[s] for s in loc if isinstance(s, str) and s in trainers and trainers[s].caps.hosted), None)


def _hint(path: str, loc: tuple) -> str | None:
    """A better message for an unknown key that means a misunderstanding, not a typo."""
    if path == "trainer.peft":
        plugin = _hosted_tag_in(loc)
        if plugin is not None:
            return (
                f"unknown key 'peft': the {plugin.name} backend trains on {plugin.caps.service or 'the provider'}"
                "'s service, which takes no "
                "LoRA/QLoRA settings; remove peft (it applies to backends that train local weights)"
            )
    return None
