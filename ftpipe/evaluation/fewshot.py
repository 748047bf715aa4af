"""Evaluation examples and the few-shot baseline.

An :class:`Example` is a prompt (a list of chat messages) and the reference answer. The
few-shot baseline puts ``k`` training examples in front of each query, chosen either by
BM25 similarity to the query (scored by ``bm25s``) or at random.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftpipe.errors import MissingDependency, StepError

Message = dict  # {"role": str, "content": str}

_WORD = re.compile(r"\w+", re.UNICODE)


class ExampleError(StepError):
    """A prepared record that cannot be turned into a prompt and a reference."""


@dataclass(frozen=True)
class Example:
    prompt: tuple[Message, ...]  # every message before the reference answer
    reference: str

    @property
    def query_text(self) -> str:
        """The text used for retrieval: the prompt's non-system turns."""
        return "\n".join(m["content"] for m in self.prompt if m.get("role") != "system")


def example_from_record(record: dict) -> Example:
    """Prompt/reference of a normalised prepare record (chat, instruction, preference, text)."""
    if "messages" in record:
        messages = record["messages"]
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None:
            raise ExampleError("the record has no assistant message to use as the reference")
        return Example(tuple(_msg(m) for m in messages[:last]), _content(messages[last]))
    if "prompt" in record and "completion" in record:  # binary preference (KTO): a desirable completion
        completion = record["completion"]
        reference = completion if isinstance(completion, str) else _content((completion or [{}])[-1])
        prompt = record["prompt"]
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return Example(tuple(_msg(m) for m in prompt), reference)
    if "prompt" in record and "chosen" in record:
        prompt = record["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        chosen = record["chosen"]
        if isinstance(chosen, list):
            chosen = chosen[-1] if chosen else {"content": ""}
        reference = chosen if isinstance(chosen, str) else _content(chosen)
        return Example(tuple(_msg(m) for m in prompt), reference)
    if "text" in record:
        # Plain text has no prompt: only likelihood metrics apply to it.
        return Example((), str(record["text"]))
    raise ExampleError(f"unrecognised record with fields {sorted(record)}")


def _content(message: dict) -> str:
    content = message.get("content")
    return "" if content is None else str(content)


def _msg(message: dict) -> Message:
    # Tool calls and the results that answer them stay linked (chat templates and the
    # OpenAI API need both sides).
    extra = {k: message[k] for k in ("tool_calls", "tool_call_id") if message.get(k)}
    return {"role": message["role"], "content": _content(message), **extra}


def load_examples(path: Path, *, limit: int | None = None) -> list[Example]:
    """Read a prepared split (JSONL); ``limit`` keeps the first N records."""
    examples: list[Example] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if limit is not None and len(examples) >= limit:
                break
            try:
                record = json.loads(line)
                if (
                    isinstance(record, dict) and record.get("label") is False
                ):  # an undesirable completion is no reference answer
                    continue
                examples.append(example_from_record(record))
            except (ExampleError, ValueError, KeyError, TypeError) as exc:
                raise ExampleError(f"{path}:{lineno}: {exc}") from exc
    return examples


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens for retrieval."""
    return _WORD.findall(text.lower())


class BM25:
    """Okapi BM25 (Lucene's variant) over a fixed corpus of token lists, scored by the
    maintained ``bm25s`` library (sparse matrices: fast on corpora of many passages)."""

    def __init__(self, corpus: Sequence[Sequence[str]], *, k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.n = len(corpus)
        self._index = None
        if self.n and any(corpus):
            try:
                import bm25s
            except ImportError:
                raise MissingDependency("bm25s", "train", "similar few-shot selection and the rag baseline") from None
            self._index = bm25s.BM25(k1=k1, b=b, method="lucene")
            self._index.index([list(doc) for doc in corpus], show_progress=False)

    def scores(self, query: Sequence[str]) -> list[float]:
        if self._index is None:
            return [0.0] * self.n
        return [float(x) for x in self._index.get_scores(list(query))]

    def top_k(self, query: Sequence[str], k: int) -> list[int]:
        """Indices of the k best documents; ties go to the earlier document."""
        scores = self.scores(query)
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


class FewShotSelector:
    """Chooses k training examples for each query."""

    def __init__(self, train: Sequence[Example], *, k: int, selection: str = "similar", seed: int = 0):
        if selection not in ("similar", "random"):
            raise ValueError(f"few_shot.selection must be 'similar' or 'random', got {selection!r}")
        self.train = list(train)
        self.k = min(k, len(self.train))
        self.selection = selection
        if selection == "similar":
            self._bm25 = BM25([tokenize(ex.query_text) for ex in self.train])
        else:
            # One fixed, seeded sample for every query: the classic few-shot prompt.
            self._fixed = random.Random(seed).sample(range(len(self.train)), self.k)

    def select(self, query: Example) -> list[Example]:
        if self.selection == "similar":
            idx = self._bm25.top_k(tokenize(query.query_text), self.k)
        else:
            idx = self._fixed
        return [self.train[i] for i in idx]


def build_few_shot_messages(query: Example, shots: Sequence[Example]) -> list[Message]:
    """System prompt(s) first, then each shot's turns and its answer, then the query's turns."""
    system = [dict(m) for m in query.prompt if m["role"] == "system"]
    messages = list(system)
    for shot in shots:
        messages.extend(dict(m) for m in shot.prompt if m["role"] != "system")
        messages.append({"role": "assistant", "content": shot.reference})
    messages.extend(dict(m) for m in query.prompt if m["role"] != "system")
    return messages
