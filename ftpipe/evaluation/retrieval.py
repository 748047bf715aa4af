"""The retrieval-augmented baseline (``baselines: [rag]``): the base model answers with
the top-k passages of a document corpus in its prompt, ranked by BM25 (``bm25s``).

The corpus is text or markdown files (split into passages of ``chunk_size`` words) and
JSONL files (one passage per record: its ``text`` field, else every string field).
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftpipe.errors import UsageError
from ftpipe.evaluation.fewshot import BM25, Example, Message, tokenize

_TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


@dataclass(frozen=True)
class Passage:
    source: str  # file (relative to the pipeline folder)
    text: str


def corpus_files(base_dir: Path, patterns: str | Sequence[str]) -> list[Path]:
    """The files a corpus setting names (files, folders, globs; relative to ``base_dir``)."""
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    out: list[Path] = []
    for item in items:
        full = (base_dir / item).expanduser()
        if full.is_dir():
            found = sorted(p for p in full.rglob("*") if p.is_file() and p.suffix in (*_TEXT_SUFFIXES, ".jsonl"))
        elif full.is_file():
            found = [full]
        else:
            found = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        if not found:
            raise UsageError(
                f"evaluate.rag.corpus: no files at '{item}' (looked for {full}); "
                "the path is relative to the pipeline file"
            )
        out.extend(p for p in found if p not in out)
    return out


def chunk_words(text: str, size: int) -> list[str]:
    """Consecutive passages of at most ``size`` words (whitespace kept simple)."""
    words = text.split()
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


def load_passages(files: Sequence[Path], *, chunk_size: int, base_dir: Path) -> list[Passage]:
    passages: list[Passage] = []
    for path in files:
        try:
            rel = str(path.relative_to(base_dir))
        except ValueError:
            rel = path.name
        text = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".jsonl":
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise UsageError(f"{path}:{lineno}: not JSON ({exc})") from None
                body = record.get("text") if isinstance(record, dict) else None
                if not isinstance(body, str):
                    body = " ".join(
                        v for v in (record.values() if isinstance(record, dict) else []) if isinstance(v, str)
                    )
                passages.extend(Passage(rel, c) for c in chunk_words(body, chunk_size))
        else:
            passages.extend(Passage(rel, c) for c in chunk_words(text, chunk_size))
    return passages


class Retriever:
    """Top-k passages for a query (BM25 over lowercased word tokens)."""

    def __init__(self, passages: Sequence[Passage], *, k: int):
        if not passages:
            raise UsageError("evaluate.rag.corpus: the corpus files hold no text")
        self.passages = list(passages)
        self.k = min(k, len(self.passages))
        self._bm25 = BM25([tokenize(p.text) for p in self.passages])

    def search(self, query: str) -> list[Passage]:
        return [self.passages[i] for i in self._bm25.top_k(tokenize(query), self.k)]


def build_rag_messages(query: Example, passages: Sequence[Passage]) -> list[Message]:
    """The query's messages with the passages in front of its last user turn."""
    context = "\n\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))
    messages = [dict(m) for m in query.prompt]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    prefix = f"Use these passages if they help:\n{context}\n\n"
    if last_user is None:
        messages.append({"role": "user", "content": prefix.rstrip()})
    else:
        messages[last_user]["content"] = prefix + messages[last_user]["content"]
    return messages
