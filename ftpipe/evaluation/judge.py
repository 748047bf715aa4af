"""LLM-as-judge: a metric (``judge`` in ``evaluate.metrics``) for answers string metrics
cannot score. Any OpenAI-compatible chat endpoint grades each answer against the
reference with the pipeline's prompt and rubric; the score (on ``scale``) is normalised to
0..1. Scores are cached per example (model, endpoint, rendered prompt), so re-running an
evaluation that produced the same answers costs no judge calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.errors import MissingDependency, RemoteError, StepError

JUDGE = "judge"

DEFAULT_PROMPT = """You grade an assistant's answer against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{prediction}

Rubric:
{rubric}

Reply with one line "Score: N", N an integer from {low} to {high}."""

_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class JudgeSpec:
    model: str
    base_url: str | None
    api_key: str | None
    prompt: str
    rubric: str
    low: int
    high: int
    concurrency: int = 4


def spec_from_config(cfg: Any) -> JudgeSpec:
    return JudgeSpec(
        model=cfg.model,
        base_url=cfg.base_url,
        api_key=cfg.api_key,
        prompt=cfg.prompt or DEFAULT_PROMPT,
        rubric=cfg.rubric,
        low=cfg.scale[0],
        high=cfg.scale[1],
        concurrency=cfg.concurrency,
    )


def render(spec: JudgeSpec, *, question: str, reference: str, prediction: str) -> str:
    return spec.prompt.format(
        question=question, reference=reference, prediction=prediction, rubric=spec.rubric, low=spec.low, high=spec.high
    )


def parse_score(reply: str, low: int, high: int) -> float:
    """The judge's score normalised to 0..1 ("Score: 4" on 1..5 -> 0.75)."""
    match = _SCORE.search(reply) or _NUMBER.search(reply)
    if match is None:
        raise ValueError(f"no score in the judge's reply {reply[:200]!r}")
    raw = float(match.group(1) if match.re is _SCORE else match.group(0))
    if not low <= raw <= high:
        raise ValueError(f"the judge's score {raw:g} is outside {low}..{high} (reply {reply[:200]!r})")
    return (raw - low) / (high - low)


def _cache_key(spec: JudgeSpec, text: str) -> str:
    blob = json.dumps(
        {"model": spec.model, "base_url": spec.base_url, "low": spec.low, "high": spec.high, "prompt": text},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _client(spec: JudgeSpec) -> Any:
    try:
        import openai
    except ImportError:
        raise MissingDependency("openai", "openai", "the judge metric") from None
    return openai.OpenAI(api_key=spec.api_key or "unused", base_url=spec.base_url, max_retries=4, timeout=120)


def score_answers(
    spec: JudgeSpec,
    items: Sequence[tuple[str, str, str]],  # (question, reference, prediction)
    *,
    cache_dir: Path,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """One 0..1 score per item, from the cache where the same prompt was judged before."""
    folder = cache_dir / "judge"
    folder.mkdir(parents=True, exist_ok=True)
    texts = [render(spec, question=q, reference=r, prediction=p) for q, r, p in items]
    keys = [_cache_key(spec, t) for t in texts]
    scores: list[float | None] = []
    for key in keys:
        try:
            scores.append(float(json.loads((folder / f"{key}.json").read_text())["score"]))
        except (OSError, ValueError, KeyError):
            scores.append(None)
    todo = [i for i, s in enumerate(scores) if s is None]
    if log:
        log(f"judge {spec.model}: {len(items) - len(todo)} cached, {len(todo)} to grade")
    if todo:
        client = _client(spec)
        try:
            with ThreadPoolExecutor(max_workers=max(1, spec.concurrency)) as pool:
                for i, (score, reply) in zip(
                    todo, pool.map(lambda j: _grade(client, spec, texts[j]), todo), strict=False
                ):
                    scores[i] = score
                    _write(folder / f"{keys[i]}.json", {"score": score, "reply": reply, "model": spec.model})
        finally:
            client.close()
    return [float(s) for s in scores if s is not None]


def _grade(client: Any, spec: JudgeSpec, text: str) -> tuple[float, str]:
    import openai

    try:
        resp = client.chat.completions.create(
            model=spec.model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=32
        )
    except openai.OpenAIError as exc:
        raise RemoteError("judge", f"the judge model {spec.model!r} failed: {exc}") from exc
    reply = (resp.choices[0].message.content or "") if resp.choices else ""
    try:
        return parse_score(reply, spec.low, spec.high), reply
    except ValueError as exc:
        raise StepError(f"judge: {exc}", hint="make the judge prompt ask for 'Score: N'") from None


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    os.replace(tmp, path)
