"""The prepare step: sources → normalised records → checks → de-duplication → splits.

Rows stream through a temporary file, so memory stays flat however large the input is:
the only per-row state kept is an 8-byte digest for de-duplication and a 1-byte split
label. Every invalid row is reported with its file and row number; none is dropped
silently (``skip_invalid`` drops them, still counted in the stats)."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

from ftpipe.contracts import StepContext, StepResult
from ftpipe.data import formats, mixture
from ftpipe.data.formats import Invalid
from ftpipe.data.readers import RowError, read_hub, read_local
from ftpipe.data.tokens import TokenCounter
from ftpipe.errors import StepError
from ftpipe.planner import resolve_local_files

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


class Deferred:
    """Invalid rows met while a chunk filled, reported when the chunk is kept, before its
    too-long rows, as a one-chunk-at-a-time loop would have: the shown problems and the
    order of the rules in stats.json stay the same. Holds at most SHOW_PROBLEMS messages."""

    def __init__(self) -> None:
        self.rules: Counter[str] = Counter()
        self.shown: list[tuple[str, int, str, str]] = []

    def add(self, where: str, n: int, rule: str, message: str) -> None:
        self.rules[rule] += 1
        if len(self.shown) < SHOW_PROBLEMS:
            self.shown.append((where, n, rule, message))

    def replay(self, stats: Stats) -> None:
        for where, n, rule, message in self.shown:
            stats.problem(where, n, rule, message)
        shown = Counter(rule for _, _, rule, _ in self.shown)
        for rule, count in self.rules.items():
            stats.invalid[rule] += count - shown[rule]


@dataclass
class Chunk:
    rows: list[tuple] = field(default_factory=list)  # (split, where, row number, line, source[, record])
    invalid: Deferred = field(default_factory=Deferred)


def _dedupe_key(rec: dict, line: str) -> str:
    """What identifies a record for de-duplication: its canonical (sorted-keys) JSON. A record
    normalise built entirely has its keys in an order fixed by which keys it has, so its
    output line is canonical already and saves a second encoding. Only ``tools`` schemas and
    message ``weight`` values keep the user's key order; as keys they show in the line as
    ``"tools": `` and ``"weight": `` (inside a string the quotes would be escaped)."""
    if '"tools": ' in line or '"weight": ' in line:
        return json.dumps(rec, sort_keys=True)
    return line


def _tokenizer_threads() -> int:
    """One tokenizing thread a core, up to 4. The Rust tokenizer runs single-threaded here
    (the engine sets TOKENIZERS_PARALLELISM=false) and costs more per row than the main
    thread's reading, checking and rendering, so a tokenizer thread on every core, the main
    thread among them, keeps every core busy: on 2 cores, 1M chat rows in 30 s instead of
    36 s with one tokenizer thread (benchmarks/bench_prepare.py)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


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
    approx = "" if counter.exact else " (approx.)"

    def keep(chunk: Chunk, lengths: list[int], out: TextIO) -> None:
        chunk.invalid.replay(stats)  # the rows found invalid while this chunk filled, as they came
        lines = []
        for (split, where, n, line, i), ntok in zip(chunk.rows, lengths, strict=True):
            if max_len and ntok > max_len:
                stats.too_long += 1
                stats.problem(where, n, "too long", f"{ntok} tokens{approx}, longer than max_seq_length {max_len}")
                continue
            if ntok > stats.longest["tokens"]:
                stats.longest = {"tokens": ntok, "where": f"{where} row {n}"}
            lines.append(line)
            labels.append(code[split])
            tokens.append(ntok)
            origin.append(i)
        out.write("".join(lines))

    # Chunks of BATCH rows: the main thread reads, checks and renders one while worker
    # threads tokenize the ones before (the tokenizer releases the GIL). At most one chunk
    # per worker and one more are held, so memory stays flat; chunks are kept in order, so
    # the output is the same as one chunk at a time.
    workers = _tokenizer_threads()
    with tmp.open("w", encoding="utf-8") as out, ThreadPoolExecutor(workers, thread_name_prefix="tokenize") as pool:
        in_flight: deque[tuple[Chunk, Future[list[int]]]] = deque()
        chunk = Chunk()

        def submit(last: bool = False) -> None:
            nonlocal chunk
            plan = counter.plan([row[5] for row in chunk.rows])
            chunk.rows = [row[:5] for row in chunk.rows]  # the record itself is no longer needed
            in_flight.append((chunk, pool.submit(counter.finish, plan)))
            chunk = Chunk()
            while in_flight and (last or len(in_flight) > workers):
                done, future = in_flight.popleft()
                keep(done, future.result(), out)

        # the per-row loop: what it looks up is looked up once
        dedupe, system_prompt, blake2b = ds.dedupe, ds.system_prompt, hashlib.blake2b
        dumps = json.JSONEncoder(ensure_ascii=False).encode  # json.dumps(rec, ensure_ascii=False), built once
        shapes = [(s.format, s.columns) for s in sources]
        rows_read = [0] * len(sources)
        for i, split, (where, n, row) in mixture.iter_rows(ctx):
            stats.source_rows += 1
            rows_read[i] += 1
            if isinstance(row, RowError):
                chunk.invalid.add(where, n, "invalid JSON" if "JSON" in row.message else "wrong type", row.message)
                continue
            try:
                rec = normalise(row, *shapes[i], system_prompt)
            except Invalid as exc:
                chunk.invalid.add(where, n, exc.rule, exc.message)
                continue
            line = dumps(rec) + "\n"
            if dedupe:
                digest = blake2b(_dedupe_key(rec, line).encode(), digest_size=8).digest()
                if digest in seen:
                    stats.duplicates += 1
                    continue
                seen.add(digest)
            chunk.rows.append((split, where, n, line, i, rec))
            if len(chunk.rows) >= BATCH:
                submit()
            if stats.source_rows % 50_000 == 0:
                ctx.progress(stats.source_rows, None, "rows read")
        submit(last=True)
    for i, count in enumerate(rows_read):
        per_source[i]["rows_read"] = count
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
    # The lines go through as bytes (they were encoded once, into tmp) and in blocks.
    files = {k: (out_dir / f"{v}.jsonl").open("wb") for k, v in names.items()}
    blocks: dict[int, list[bytes]] = {k: [] for k in names}
    totals = {k: [0, 0, 0] for k in names}  # rows, tokens, longest
    try:
        with tmp.open("rb") as f:
            for line, lab, ntok in zip(f, labels, tokens, strict=True):
                block = blocks[lab]
                block.append(line)
                if len(block) >= 4096:
                    files[lab].write(b"".join(block))
                    block.clear()
                t = totals[lab]
                t[0] += 1
                t[1] += ntok
                if ntok > t[2]:
                    t[2] = ntok
        for lab, block in blocks.items():
            files[lab].write(b"".join(block))
    finally:
        for fh in files.values():
            fh.close()
    return {names[k]: {"rows": t[0], "tokens": t[1], "longest": t[2]} for k, t in totals.items()}
