"""The prepare step: sources → normalised records → checks → de-duplication → splits.

Rows stream through a temporary file, so memory stays flat however large the input is:
the only per-row state kept is an 8-byte digest for de-duplication and a 1-byte split
label. Every invalid row is reported with its file and row number; none is dropped
silently (``skip_invalid`` drops them, still counted in the stats)."""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ftpipe.contracts import StepContext, StepResult
from ftpipe.data import formats, mixture
from ftpipe.data.formats import Invalid
from ftpipe.data.readers import RowError, read_hub, read_local
from ftpipe.errors import StepError
from ftpipe.plan import resolve_local_files

ROLES = ("system", "user", "assistant", "tool")
SPLITS = ("train", "validation", "test")
SHOW_PROBLEMS = 30
BATCH = 512


# --------------------------------------------------------------------------- normalise


def _messages(value: Any, field_name: str, *, need_assistant: bool) -> list[dict]:
    return formats.messages(value, field_name, need_assistant=need_assistant)


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
    if fmt in formats.NORMALISERS:  # chat, sharegpt, alpaca, binary_preference (tool calls, content parts)
        return formats.NORMALISERS[fmt](row, columns, system_prompt)
    if fmt == "instruction":
        prompt = _text(_get(row, "prompt", columns), columns.get("prompt", "prompt"))
        completion = _text(_get(row, "completion", columns), columns.get("completion", "completion"))
        return {
            "messages": system + [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        }
    if fmt == "preference":
        raw_prompt = _get(row, "prompt", columns)
        turns: list[dict[str, Any]]
        if isinstance(raw_prompt, str):
            turns = system + [{"role": "user", "content": _text(raw_prompt, "prompt")}]
        else:
            turns = _messages(raw_prompt, "prompt", need_assistant=False)
            if system and turns[0]["role"] != "system":
                turns = system + turns
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
        return {"prompt": turns, **pair}
    return {"text": _text(_get(row, "text", columns), columns.get("text", "text"))}


def _message_text(m: dict) -> str:
    calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in m.get("tool_calls") or ())
    return (m.get("content") or "") + calls


def record_text(rec: dict) -> str:
    if "messages" in rec:
        text = "\n".join(_message_text(m) for m in rec["messages"])
        return text + ("\n" + json.dumps(rec["tools"]) if rec.get("tools") else "")
    if "prompt" in rec:
        turns = rec["prompt"] + rec.get("completion", []) + rec.get("chosen", []) + rec.get("rejected", [])
        return "\n".join(_message_text(m) for m in turns)
    return rec["text"]


def record_messages(rec: dict) -> int:
    if "messages" in rec:
        return len(rec["messages"])
    if "prompt" in rec:
        return len(rec["prompt"]) + (1 if "completion" in rec else 2)
    return 0


# --------------------------------------------------------------------------- tokens


class TokenCounter:
    """Counts tokens with the base model's tokenizer, chat examples rendered by its chat
    template (ftpipe.data.template_tokens), or approximately (4 characters a token) for
    hosted models."""

    def __init__(self, ctx: StepContext) -> None:
        self.exact = False
        self.tok: Any = None  # a transformers tokenizer once loaded
        self.per_message = 4
        self.templated = False  # counts come from the model's chat template
        caps = getattr(type(ctx.pipeline.trainer), "caps", None)  # the trainer plugin's declaration
        if caps is not None and caps.prepare_tokenizer:
            self._load(ctx)

    def _load(self, ctx: StepContext) -> None:
        try:
            from transformers import AutoTokenizer

            from ftpipe.models.loading import resolve_base
        except ImportError:
            return
        from ftpipe.remote.hf import hub_errors

        model = ctx.pipeline.model
        base = resolve_base(
            model.base,
            cache_dir=ctx.cache_dir,
            base_dir=ctx.base_dir,
            revision=model.revision,
            token=model.token or None,
            log=ctx.log,
        )
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
            rest = [r for r, n in zip(records, counted, strict=True) if n is None]
            others = iter(self._count(rest) if rest else [])
            return [next(others) if n is None else n for n in counted]
        return self._count(records)

    def _count(self, records: list[dict]) -> list[int]:
        texts = [record_text(r) for r in records]
        if self.tok is None:
            lens = [math.ceil(len(t) / 4) for t in texts]
        else:
            lens = [len(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]
        return [n + self.per_message * record_messages(r) for n, r in zip(lens, records, strict=True)]


# --------------------------------------------------------------------------- sources


def iter_source(ctx: StepContext, src: Any = None) -> Iterator[tuple[str | None, tuple]]:
    """(given split or None, (where, row number, row)) for every row of ``src`` (default:
    ``dataset.source``)."""
    src = src if src is not None else ctx.pipeline.dataset.source
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
    max_len = (
        ds.max_seq_length
        or getattr(trainer_hp, "max_seq_length", None)
        or getattr(trainer_hp, "model_max_length", None)
    )
    counter = TokenCounter(ctx)
    stats = Stats()
    tmp = ctx.out_dir / ".rows.tmp"
    labels = bytearray()  # per kept row: 0 pending split, 1 train, 2 validation, 3 test
    tokens = array("I")  # per kept row, 4 bytes each
    seen: set[bytes] = set()
    code = {None: 0, "train": 1, "validation": 2, "test": 3}
    sources = mixture.specs(ds)
    origin = bytearray()  # per kept row: the index of its source (mixtures)
    per_source: list[Counter[str]] = [Counter() for _ in sources]

    with tmp.open("w", encoding="utf-8") as out:
        batch: list[tuple[str | None, str, int, dict, int]] = []

        def flush() -> None:
            lengths = counter.count([b[3] for b in batch])
            for (split, where, n, rec, i), ntok in zip(batch, lengths, strict=True):
                if max_len and ntok > max_len:
                    stats.too_long += 1
                    stats.problem(
                        where,
                        n,
                        "too long",
                        f"{ntok} tokens{'' if counter.exact else ' (approx.)'}, longer than max_seq_length {max_len}",
                    )
                    continue
                if ntok > stats.longest["tokens"]:
                    stats.longest = {"tokens": ntok, "where": f"{where} row {n}"}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                labels.append(code[split])
                tokens.append(ntok)
                origin.append(i)
            batch.clear()

        for i, split, (where, n, row) in mixture.iter_rows(ctx):
            stats.source_rows += 1
            per_source[i]["rows_read"] += 1
            if isinstance(row, RowError):
                stats.problem(where, n, "invalid JSON" if "JSON" in row.message else "wrong type", row.message)
                continue
            try:
                rec = normalise(row, sources[i].format, sources[i].columns, ds.system_prompt)
            except Invalid as exc:
                stats.problem(where, n, exc.rule, exc.message)
                continue
            if ds.dedupe:
                digest = hashlib.blake2b(json.dumps(rec, sort_keys=True).encode(), digest_size=8).digest()
                if digest in seen:
                    stats.duplicates += 1
                    continue
                seen.add(digest)
            batch.append((split, where, n, rec, i))
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
        by_rule = ", ".join(f"{rule}: {n}" for rule, n in stats.invalid.most_common() if n)
        shown = "\n".join(f"  {p}" for p in stats.problems)
        more = (
            f"\n  ... and {bad - len(stats.problems)} more (all in the step log)" if bad > len(stats.problems) else ""
        )
        raise StepError(
            f"{bad} invalid rows of {stats.source_rows} ({by_rule}):\n{shown}{more}",
            hint="fix the data, or set dataset.skip_invalid: true to drop them (they stay counted in stats.json)",
        )
    kept = len(labels)
    if kept < ds.min_examples:
        raise StepError(
            f"only {kept} usable examples (of {stats.source_rows} rows; {stats.duplicates} duplicates, "
            f"{bad} invalid); dataset.min_examples is {ds.min_examples}"
        )
    _assign_splits(labels, ds.split)
    counts = _write_splits(tmp, labels, tokens, ctx.out_dir)
    tmp.unlink()
    result = {
        "format": ds.format,
        "source_rows": stats.source_rows,
        "kept": kept,
        "duplicates_removed": stats.duplicates,
        "invalid": dict(stats.invalid),
        "invalid_dropped": bad,
        "max_seq_length": max_len,
        "tokens_exact": counter.exact,
        "longest_example": stats.longest,
        "splits": counts,
        "problems_shown": stats.problems,
    }
    if ds.sources is not None:
        result["sources"] = _source_counts(sources, per_source, labels, origin)
    (ctx.out_dir / "stats.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = (
        " · ".join(f"{s} {counts[s]['rows']}" for s in SPLITS) + f" rows · longest {stats.longest['tokens']} tokens"
    )
    if bad:
        summary += f" · {bad} invalid dropped"
    metrics = {f"{s}_rows": counts[s]["rows"] for s in SPLITS} | {f"{s}_tokens": counts[s]["tokens"] for s in SPLITS}
    metrics |= {
        "duplicates_removed": stats.duplicates,
        "invalid_dropped": bad,
        "longest_tokens": stats.longest["tokens"],
    }
    return StepResult(metrics=metrics, summary=summary)


def _source_counts(
    sources: list[mixture.SourceSpec], read: list[Counter], labels: bytearray, origin: bytearray
) -> dict[str, dict[str, Any]]:
    """Per source of a mixture: rows read, rows kept, and rows in each split."""
    names = {1: "train", 2: "validation", 3: "test"}
    kept = Counter(zip(origin, labels, strict=True))
    total = sum(s.weight for s in sources)
    return {
        s.name: {
            "format": s.format,
            "weight": round(s.weight / total, 6),
            "rows_read": read[i]["rows_read"],
            "kept": sum(kept[(i, lab)] for lab in names),
        }
        | {names[lab]: kept[(i, lab)] for lab in names}
        for i, s in enumerate(sources)
    }


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
