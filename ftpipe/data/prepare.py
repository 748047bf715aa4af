"""The prepare step: sources → normalised records → checks → de-duplication → splits.

Rows stream through a temporary file, so memory stays flat however large the input is:
the only per-row state kept is an 8-byte digest for de-duplication and a 1-byte split
label. Every invalid row is reported with its file and row number; none is dropped
silently (``skip_invalid`` drops them, still counted in the stats)."""
from __future__ import annotations

import hashlib
from array import array
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ftpipe.contracts import StepContext, StepResult
from ftpipe.data.readers import RowError, read_hub, read_local
from ftpipe.errors import StepError
from ftpipe.plan import resolve_local_files

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "validation", "test")
SHOW_PROBLEMS = 30
BATCH = 512


class Invalid(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule, self.message = rule, message


# --------------------------------------------------------------------------- normalise

def _messages(value: Any, field_name: str, *, need_assistant: bool) -> list[dict]:
    if not isinstance(value, list):
        raise Invalid("wrong type", f"'{field_name}' must be a list of {{role, content}} messages, got {type(value).__name__}")
    if not value:
        raise Invalid("empty conversation", f"'{field_name}' is an empty list")
    out = []
    for i, msg in enumerate(value, 1):
        if not isinstance(msg, dict):
            raise Invalid("wrong type", f"message {i} must be an object with role and content, got {type(msg).__name__}")
        role = msg.get("role")
        if role is None:
            raise Invalid("missing role", f"message {i} has no 'role'")
        if role not in ROLES:
            raise Invalid("unknown role", f"message {i} has unknown role {role!r} (allowed: {', '.join(ROLES)})")
        content = msg.get("content")
        if not isinstance(content, str):
            raise Invalid("wrong type", f"message {i} ({role}) content must be text, got {type(content).__name__}")
        if not content.strip():
            raise Invalid("empty content", f"message {i} ({role}) has empty content")
        clean = {"role": role, "content": content}
        if "weight" in msg and role == "assistant":
            clean["weight"] = msg["weight"]
        out.append(clean)
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise Invalid("no assistant turn", "no assistant message: there is nothing to learn from this example")
    return out


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise Invalid("wrong type", f"'{name}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise Invalid("empty content", f"'{name}' is empty")
    return value


def _get(row: dict, fmt_field: str, columns: dict[str, str]) -> Any:
    col = columns.get(fmt_field, fmt_field)
    if col not in row:
        mapped = f" (mapped from dataset.columns.{fmt_field})" if fmt_field in columns else ""
        have = ", ".join(sorted(map(str, row))[:8])
        raise Invalid("missing column", f"missing column '{col}'{mapped}; the row has: {have}")
    return row[col]


def normalise(row: dict, fmt: str, columns: dict[str, str], system_prompt: str | None) -> dict:
    """One source row → the normalised record of contracts.py, or ``Invalid``."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if fmt == "chat":
        msgs = _messages(_get(row, "messages", columns), columns.get("messages", "messages"), need_assistant=True)
        if system and msgs[0]["role"] != "system":
            msgs = system + msgs
        return {"messages": msgs}
    if fmt == "instruction":
        prompt = _text(_get(row, "prompt", columns), columns.get("prompt", "prompt"))
        completion = _text(_get(row, "completion", columns), columns.get("completion", "completion"))
        return {"messages": system + [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}
    if fmt == "preference":
        raw_prompt = _get(row, "prompt", columns)
        if isinstance(raw_prompt, str):
            prompt = system + [{"role": "user", "content": _text(raw_prompt, "prompt")}]
        else:
            prompt = _messages(raw_prompt, "prompt", need_assistant=False)
            if system and prompt[0]["role"] != "system":
                prompt = system + prompt
        pair = {}
        for side in ("chosen", "rejected"):
            value = _get(row, side, columns)
            if isinstance(value, str):
                pair[side] = [{"role": "assistant", "content": _text(value, side)}]
            else:
                msgs = _messages(value, side, need_assistant=True)
                pair[side] = [m for m in msgs if m["role"] == "assistant"][-1:]
        if pair["chosen"][0]["content"] == pair["rejected"][0]["content"]:
            raise Invalid("chosen equals rejected", "chosen and rejected are the same: the pair teaches nothing")
        return {"prompt": prompt, **pair}
    return {"text": _text(_get(row, "text", columns), columns.get("text", "text"))}


def record_text(rec: dict) -> str:
    if "messages" in rec:
        return "\n".join(m["content"] for m in rec["messages"])
    if "prompt" in rec:
        return "\n".join(m["content"] for m in rec["prompt"] + rec["chosen"] + rec["rejected"])
    return rec["text"]


def record_messages(rec: dict) -> int:
    if "messages" in rec:
        return len(rec["messages"])
    if "prompt" in rec:
        return len(rec["prompt"]) + 2
    return 0


# --------------------------------------------------------------------------- tokens

class TokenCounter:
    """Counts tokens with the base model's tokenizer, chat examples rendered by its chat
    template (ftpipe.data.template_tokens), or approximately (4 characters a token) for
    hosted models."""

    def __init__(self, ctx: StepContext) -> None:
        self.exact = False
        self.tok = None
        self.per_message = 4
        self.templated = False  # counts come from the model's chat template
        backend = getattr(ctx.pipeline.trainer, "backend", "")
        if backend in ("trl", "autotrain"):
            self._load(ctx)

    def _load(self, ctx: StepContext) -> None:
        try:
            from transformers import AutoTokenizer

            from ftpipe.models.loading import resolve_base
        except ImportError:
            return
        from ftpipe.remote.hf import hub_errors

        model = ctx.pipeline.model
        base = resolve_base(model.base, cache_dir=ctx.cache_dir, base_dir=ctx.base_dir, revision=model.revision,
                            token=model.token or None, log=ctx.log)
        with hub_errors(f"tokenizer of {model.base}"):
            self.tok = AutoTokenizer.from_pretrained(base, revision=model.revision, token=model.token or None)
        self.exact = True
        from ftpipe.data.template_tokens import ensure_template

        self.templated = ensure_template(self.tok, model.chat_template)
        if getattr(self.tok, "chat_template", None):
            sample = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
            try:
                templ = self.tok.apply_chat_template(sample, tokenize=True)
                templ = templ["input_ids"] if isinstance(templ, dict) or hasattr(templ, "keys") else templ
                plain = sum(len(self.tok(m["content"], add_special_tokens=False)["input_ids"]) for m in sample)
                self.per_message = max(0, math.ceil((len(templ) - plain) / len(sample)))
            except Exception:  # noqa: BLE001 - an odd template only makes the estimate coarser
                pass

    def count(self, records: list[dict]) -> list[int]:
        if self.tok is not None and self.templated:
            from ftpipe.data.template_tokens import template_counts

            counted = template_counts(self.tok, records)
            rest = [r for r, n in zip(records, counted) if n is None]
            others = iter(self._count(rest) if rest else [])
            return [next(others) if n is None else n for n in counted]
        return self._count(records)

    def _count(self, records: list[dict]) -> list[int]:
        texts = [record_text(r) for r in records]
        if self.tok is None:
            lens = [math.ceil(len(t) / 4) for t in texts]
        else:
            lens = [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]
        return [n + self.per_message * record_messages(r) for n, r in zip(lens, records)]


# --------------------------------------------------------------------------- sources

def iter_source(ctx: StepContext) -> Iterator[tuple[str | None, tuple]]:
    """(given split or None, (where, row number, row)) for every source row."""
    src = ctx.pipeline.dataset.source
    if src.type == "local":
        items = list(src.path.items()) if isinstance(src.path, dict) else [(None, src.path)]
        for split, rel in items:
            files = resolve_local_files(ctx.base_dir, rel)
            if not files:
                raise StepError(f"no data files at '{rel}' (relative to {ctx.base_dir})")
            for f in files:
                label = str(f.relative_to(ctx.base_dir)) if f.is_relative_to(ctx.base_dir) else str(f)
                for item in read_local(f, src.file_format, label):
                    yield split, item
    else:
        pairs = list(src.splits.items()) if src.splits else [(None, src.split)]
        for split, hub_split in pairs:
            for item in read_hub(src.repo, hub_split, revision=src.revision, subset=src.subset, token=src.token):
                yield split, item


# --------------------------------------------------------------------------- step

@dataclass
class Stats:
    source_rows: int = 0
    valid: int = 0
    invalid: Counter = field(default_factory=Counter)
    duplicates: int = 0
    too_long: int = 0
    longest: dict = field(default_factory=lambda: {"tokens": 0})
    problems: list[str] = field(default_factory=list)

    def problem(self, where: str, n: int, rule: str, message: str) -> None:
        self.invalid[rule] += 1
        if len(self.problems) < SHOW_PROBLEMS:
            self.problems.append(f"{where} row {n}: {message}")


def run_prepare(ctx: StepContext) -> StepResult:
    ds = ctx.pipeline.dataset
    trainer_hp = getattr(ctx.pipeline.trainer, "hyperparameters", None)
    max_len = ds.max_seq_length or getattr(trainer_hp, "max_seq_length", None) or getattr(
        trainer_hp, "model_max_length", None)
    counter = TokenCounter(ctx)
    stats = Stats()
    tmp = ctx.out_dir / ".rows.tmp"
    labels = bytearray()  # per kept row: 0 pending split, 1 train, 2 validation, 3 test
    tokens = array("I")  # per kept row, 4 bytes each
    seen: set[bytes] = set()
    code = {None: 0, "train": 1, "validation": 2, "test": 3}

    with tmp.open("w", encoding="utf-8") as out:
        batch: list[tuple[str | None, str, int, dict]] = []

        def flush() -> None:
            lengths = counter.count([b[3] for b in batch])
            for (split, where, n, rec), ntok in zip(batch, lengths):
                if max_len and ntok > max_len:
                    stats.too_long += 1
                    stats.problem(where, n, "too long",
                                  f"{ntok} tokens{'' if counter.exact else ' (approx.)'}, longer than max_seq_length {max_len}")
                    continue
                if ntok > stats.longest["tokens"]:
                    stats.longest = {"tokens": ntok, "where": f"{where} row {n}"}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                labels.append(code[split])
                tokens.append(ntok)
            batch.clear()

        for split, (where, n, row) in iter_source(ctx):
            stats.source_rows += 1
            if isinstance(row, RowError):
                stats.problem(where, n, "invalid JSON" if "JSON" in row.message else "wrong type", row.message)
                continue
            try:
                rec = normalise(row, ds.format, ds.columns, ds.system_prompt)
            except Invalid as exc:
                stats.problem(where, n, exc.rule, exc.message)
                continue
            if ds.dedupe:
                digest = hashlib.blake2b(json.dumps(rec, sort_keys=True).encode(), digest_size=8).digest()
                if digest in seen:
                    stats.duplicates += 1
                    continue
                seen.add(digest)
            batch.append((split, where, n, rec))
            if len(batch) >= BATCH:
                flush()
            if stats.source_rows % 50_000 == 0:
                ctx.progress(stats.source_rows, None, "rows read")
        flush()
    seen.clear()
    bad = sum(stats.invalid.values())
    for line in stats.problems:
        ctx.log(line)
    if bad and not ds.skip_invalid:
        counts = ", ".join(f"{rule}: {n}" for rule, n in stats.invalid.most_common() if n)
        shown = "\n".join(f"  {p}" for p in stats.problems)
        more = f"\n  ... and {bad - len(stats.problems)} more (all in the step log)" if bad > len(stats.problems) else ""
        raise StepError(f"{bad} invalid rows of {stats.source_rows} ({counts}):\n{shown}{more}",
                        hint="fix the data, or set dataset.skip_invalid: true to drop them (they stay counted in stats.json)")
    kept = len(labels)
    if kept < ds.min_examples:
        raise StepError(f"only {kept} usable examples (of {stats.source_rows} rows; {stats.duplicates} duplicates, "
                        f"{bad} invalid); dataset.min_examples is {ds.min_examples}")
    _assign_splits(labels, ds.split)
    counts = _write_splits(tmp, labels, tokens, ctx.out_dir)
    tmp.unlink()
    result = {
        "format": ds.format, "source_rows": stats.source_rows, "kept": kept, "duplicates_removed": stats.duplicates,
        "invalid": dict(stats.invalid), "invalid_dropped": bad, "max_seq_length": max_len,
        "tokens_exact": counter.exact, "longest_example": stats.longest, "splits": counts,
        "problems_shown": stats.problems,
    }
    (ctx.out_dir / "stats.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = " · ".join(f"{s} {counts[s]['rows']}" for s in SPLITS) + f" rows · longest {stats.longest['tokens']} tokens"
    if bad:
        summary += f" · {bad} invalid dropped"
    metrics = {f"{s}_rows": counts[s]["rows"] for s in SPLITS} | {f"{s}_tokens": counts[s]["tokens"] for s in SPLITS}
    metrics |= {"duplicates_removed": stats.duplicates, "invalid_dropped": bad, "longest_tokens": stats.longest["tokens"]}
    return StepResult(metrics=metrics, summary=summary)


def _assign_splits(labels: bytearray, split: Any) -> None:
    """Deterministically carve validation/test out of the rows with no given split."""
    import random

    pending = [i for i, v in enumerate(labels) if v == 0]
    given = {v for v in labels if v}
    n = len(pending)
    n_val = 0 if 2 in given else _count(n, split.validation)
    n_test = 0 if 3 in given else _count(n, split.test)
    order = list(range(n))
    random.Random(split.seed).shuffle(order)
    for rank, idx in enumerate(order):
        labels[pending[idx]] = 3 if rank < n_test else 2 if rank < n_test + n_val else 1


def _count(n: int, frac: float) -> int:
    return 0 if frac <= 0 or n < 3 else max(1, round(n * frac))


def _write_splits(tmp: Path, labels: bytearray, tokens: "array[int]", out_dir: Path) -> dict:
    names = {1: "train", 2: "validation", 3: "test"}
    files = {k: (out_dir / f"{v}.jsonl").open("w", encoding="utf-8") for k, v in names.items()}
    counts = {v: {"rows": 0, "tokens": 0, "longest": 0} for v in names.values()}
    try:
        with tmp.open("r", encoding="utf-8") as f:
            for i, line in enumerate(f):
                lab = labels[i]
                files[lab].write(line)
                c = counts[names[lab]]
                c["rows"] += 1
                c["tokens"] += tokens[i]
                c["longest"] = max(c["longest"], tokens[i])
    finally:
        for fh in files.values():
            fh.close()
    return counts
