"""Validation rules of the decision report: the rag and deployed baselines, gate.confidence."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftpipe.spec.interpolate import ENV_REF


def check(p: Any, base_dir: Path) -> Iterator[tuple[tuple, str]]:
    ev = p.evaluate
    if ev is None:
        return
    names = ev.baseline_names()
    if "rag" in names and ev.rag is None:
        yield (
            ("evaluate", "baselines", names.index("rag")),
            "the rag baseline needs an evaluate.rag block: rag: {corpus: docs/*.md, k: 3, chunk_size: 120}",
        )
    if ev.rag is not None:
        items = [ev.rag.corpus] if isinstance(ev.rag.corpus, str) else list(ev.rag.corpus)
        for i, item in enumerate(items):
            full = (base_dir / item).expanduser()
            if not ENV_REF.search(item) and not (full.exists() or glob.glob(str(full), recursive=True)):
                where = ("evaluate", "rag", "corpus") + (() if isinstance(ev.rag.corpus, str) else (i,))
                yield (
                    where,
                    f"no corpus files at '{item}' (looked for {full}); the path is relative to the pipeline file",
                )
    if "deployed" in names:
        readable = [t for t in p.deploy if getattr(getattr(type(t), "caps", None), "readable", False)]
        if not readable:
            why = (
                "the deployed baseline compares with the model at a deploy target that can be read back "
                "(type local); this pipeline deploys to none"
            )
            yield (("evaluate", "baselines", names.index("deployed")), why)
    if "judge" in ev.metrics and ev.judge is None:
        yield (
            ("evaluate", "metrics", ev.metrics.index("judge")),
            "the judge metric needs an evaluate.judge block: judge: {model: gpt-4o-mini, rubric: ...}",
        )
    gate = ev.gate
    if gate is not None and gate.max_forgetting is not None and not ev.benchmarks:
        yield (
            ("evaluate", "gate", "max_forgetting"),
            "max_forgetting gates on general-ability checks: add evaluate.benchmarks: [ftpipe_general_mini]",
        )
    if gate is not None and gate.confidence is not None and gate.metric == "perplexity":
        yield (
            ("evaluate", "gate", "confidence"),
            "perplexity has no per-example values to resample: gate on loss (or a text metric) with confidence",
        )
