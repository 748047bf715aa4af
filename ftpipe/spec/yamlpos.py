"""YAML loading that keeps line/column positions and refuses duplicate keys.

PyYAML silently keeps the last of two equal keys; here that is an error. Positions are
1-based and recorded for every key and value by path (a tuple of keys and list indexes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Pos = tuple[int, int]


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
    """Parse ``text`` into plain data plus positions. Raises ``YamlProblem``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _explain(exc, text) from None
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked errors are rare
        raise YamlProblem(1, 1, f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    doc = Document(data=None)
    if node is None:
        return doc
    doc.data = _build(node, (), doc, loader)
    return doc


def _build(node: yaml.Node, path: tuple, doc: Document, loader: yaml.SafeLoader) -> Any:
    doc.value_pos.setdefault(path, _mark(node))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve '<<' merge keys
        out: dict = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, loader)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise YamlProblem(*_mark(key_node), "keys must be plain names")
            if key in out:
                first = doc.key_pos.get(path + (key,), (0, 0))
                raise YamlProblem(*_mark(key_node),
                                  f"duplicate key '{key}' (first defined at line {first[0]}); YAML would silently "
                                  "keep only the last one: remove or rename one of them")
            doc.key_pos[path + (key,)] = _mark(key_node)
            out[key] = _build(value_node, path + (key,), doc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), doc, loader) for i, item in enumerate(node.value)]
    return _scalar(node, loader)


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node, deep=True)
    raise YamlProblem(*_mark(node), "a mapping or list cannot be used as a key")
