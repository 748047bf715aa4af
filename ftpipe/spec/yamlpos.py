"""YAML loading that keeps line/column positions and refuses duplicate keys.

PyYAML silently keeps the last of two equal keys; here that is an error. Positions are
1-based and recorded for every key and value by path (a tuple of keys and list indexes).
Pipeline files come from pull requests and run unattended, so loading is bounded: size,
nesting depth and alias expansion have limits, each reported as a ``YamlProblem``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Pos = tuple[int, int]

MAX_BYTES = 64 * 1024  # a pipeline is a page or two of YAML (the examples are 1-4 KiB)
MAX_DEPTH = 40  # levels of nesting (the deepest real pipeline has about six)
MAX_VALUES = 5_000  # values once aliases are expanded (the examples hold about 60)


@dataclass
class Document:
    data: Any
    value_pos: dict[tuple, Pos] = field(default_factory=dict)
    key_pos: dict[tuple, Pos] = field(default_factory=dict)

    def pos(self, path: tuple, *, key: bool = False) -> Pos:
        """Best position for ``path``: the key (or value), else the nearest parent's."""
        p = tuple(path)
        while p:
            table = (self.key_pos, self.value_pos) if key else (self.value_pos, self.key_pos)
            for t in table:
                if p in t:
                    return t[p]
            p = p[:-1]
            key = True
        return self.value_pos.get((), (1, 1))


class YamlProblem(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


def _mark(node_or_mark: Any) -> Pos:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return (mark.line + 1, mark.column + 1)


def _explain(exc: yaml.MarkedYAMLError, text: str) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    src = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    if "\t" in src[: max(col, 1)] or "'\\t'" in problem:
        msg = "tab character: YAML indents with spaces only; replace the tab with spaces"
    elif "found unexpected end of stream" in problem or ("quoted scalar" in context and "end of stream" in problem):
        msg = "unclosed quote: a quoted string starts here but never ends"
        if exc.context_mark:
            line, col = exc.context_mark.line + 1, exc.context_mark.column + 1
    elif "mapping values are not allowed" in problem:
        msg = "bad indentation or a missing space: a 'key: value' is not allowed here (check the indentation of this line and the one before)"
    elif "expected <block end>" in problem or "did not find expected key" in problem:
        msg = "bad indentation: this line does not line up with the keys around it"
    elif "could not find expected ':'" in problem:
        msg = "a key without ':' (or a broken multi-line value): write 'key: value'"
    else:
        msg = f"YAML syntax error: {problem or context or exc}"
    return YamlProblem(line, col, msg)


def load_yaml(text: str) -> Document:
    """Parse ``text`` into plain data plus positions. Raises ``YamlProblem``.

    Bounded whatever the input: at most ``MAX_BYTES`` of text, ``MAX_DEPTH`` levels of
    nesting and ``MAX_VALUES`` values once aliases are expanded (a "billion laughs" file
    stops at the limit instead of filling memory)."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(
            1,
            1,
            f"the file is {len(text):,} characters long; a pipeline file is at most "
            f"{MAX_BYTES // 1024} KiB (keep data in data files, not in the pipeline)",
        )
    if _CLoader is not None and _PLAIN_TEXT.fullmatch(text):
        try:
            doc = _compose(_CLoader(text))
            if doc.data is not None:  # (an empty document's position differs; nothing to gain there)
                return doc
        except (yaml.YAMLError, YamlProblem):
            pass  # the pure-Python loader below says what is wrong, in its own words
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters before parsing starts
        raise _reader_problem(exc, text) from None
    try:
        return _compose(loader)
    except YamlProblem:
        raise
    except yaml.MarkedYAMLError as exc:
        raise _explain(exc, text) from None
    except yaml.YAMLError as exc:
        raise _reader_problem(exc, text) from None


def _compose(loader: Any) -> Document:
    try:
        node = loader.get_single_node()
        doc = Document(data=None)
        if node is not None:
            doc.data = _Builder(doc, loader).build(node)
        return doc
    finally:
        loader.dispose()


def _reader_problem(exc: yaml.YAMLError, text: str) -> YamlProblem:
    pos = getattr(exc, "position", None)
    if isinstance(pos, int) and 0 <= pos < len(text):
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        code = getattr(exc, "character", None)
        char = chr(code) if isinstance(code, int) else text[pos]
        return YamlProblem(
            line,
            col,
            f"not a text file: it holds the control character {char!r}, which YAML "
            "does not allow (is this a binary file?)",
        )
    return YamlProblem(1, 1, f"YAML error: {exc}")


class _Limits:
    """A composer that refuses nesting deeper than ``MAX_DEPTH`` (it recurses once per level,
    so the input would otherwise decide how deep Python recurses) and more than
    ``MAX_VALUES`` nodes."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlProblem(*_mark(self.peek_event()), _too_deep())  # type: ignore[attr-defined]
            if self._nodes > MAX_VALUES:
                raise YamlProblem(*_mark(self.peek_event()), _too_many())  # type: ignore[attr-defined]
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1


class _Loader(_Limits, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader with the limits: its messages are the ones ftpipe explains."""


# Printable ASCII without tabs: where libyaml and PyYAML's Python scanner agree (they differ
# on tabs, control and non-ASCII characters, and word their errors differently).
_PLAIN_TEXT = re.compile(r"[\n\x20-\x7e]*")

_CLoader: Any = None
if getattr(yaml, "__with_libyaml__", False):

    class _LibyamlLoader(
        _Limits,
        yaml.composer.Composer,
        yaml.cyaml.CParser,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        """libyaml's parser (C) feeding the same Python composer, limits and constructor as
        :class:`_Loader`: the same nodes, marks and values, several times faster. Only for
        ``_PLAIN_TEXT``; on any error the pure-Python loader runs again to report it."""

        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if getattr(event, "tag", None) is not None or (
                isinstance(event, yaml.ScalarEvent)
                and event.style not in ("'", '"')
                and (event.value == "" or "?" in event.value)
            ):  # explicit tags, empty values, '?' in a plain value: libyaml reads those differently
                raise _NotPlain()
            return super().compose_node(parent, index)

    _CLoader = _LibyamlLoader


class _NotPlain(yaml.YAMLError):
    """The text is one that libyaml and PyYAML's Python parser may read differently."""


def _too_many() -> str:
    return f"more than {MAX_VALUES:,} values; a pipeline holds a few dozen (keep data in data files)"


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; a pipeline needs a handful of levels: flatten this value"


@dataclass
class _Builder:
    """Turns the composed node graph into plain data. Aliases point at shared nodes (and may
    point at their own ancestors), so depth and the number of values are counted here too."""

    doc: Document
    loader: Any  # _Loader or _CLoader
    values: int = 0

    def build(self, node: yaml.Node, path: tuple = (), depth: int = 0) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise YamlProblem(*_mark(node), _too_many() + " (counting each value an alias '*name' repeats)")
        if depth > MAX_DEPTH:
            raise YamlProblem(*_mark(node), _too_deep() + " (an alias '*name' may repeat its own anchor)")
        self.doc.value_pos.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            merged: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged.update(self._merge(value_node, path, depth))
                    continue
                key = _scalar(key_node, self.loader)
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    raise YamlProblem(*_mark(key_node), "keys must be plain names")
                if key in out:
                    first = self.doc.key_pos.get(path + (key,), (0, 0))
                    raise YamlProblem(
                        *_mark(key_node),
                        f"duplicate key '{key}' (first defined at line {first[0]}); YAML would silently "
                        "keep only the last one: remove or rename one of them",
                    )
                self.doc.key_pos[path + (key,)] = _mark(key_node)
                out[key] = self.build(value_node, path + (key,), depth + 1)
            # '<<' merge keys: the mapping's own keys win over merged ones
            return {**{k: v for k, v in merged.items() if k not in out}, **out} if merged else out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        return _scalar(node, self.loader)

    def _merge(self, node: yaml.Node, path: tuple, depth: int) -> dict:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        out: dict = {}
        for src in reversed(sources):  # earlier mappings in a merge list win
            if not isinstance(src, yaml.MappingNode):
                raise YamlProblem(*_mark(src), "'<<' merges a mapping (or a list of mappings) into this one")
            value = self.build(src, path, depth + 1)
            out.update(value)
        return out


def _scalar(node: yaml.Node, loader: Any) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node, deep=True)
    raise YamlProblem(*_mark(node), "a mapping or list cannot be used as a key")
