"""Where the prepare step's rows come from: one source, or a mixture of several.

A mixture (``dataset.sources``) reads each source with its own format and columns. With
``mix.strategy: interleave`` each row is drawn from a source chosen at random by weight
(seeded by ``mix.seed``) until the first source runs out, as ``datasets.interleave_datasets``
does with ``stopping_strategy="first_exhausted"``: the mixture then holds the sources in
the proportions of their weights. ``concatenate`` reads every row of every source in order.
Rows stream: nothing is held in memory but one pending row per source."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ftpipe.contracts import StepContext


@dataclass(frozen=True)
class SourceSpec:
    """How rows of one source are normalised, and its name in stats.json."""

    name: str
    format: str
    columns: dict[str, str]
    weight: float = 1.0


def specs(dataset: Any) -> list[SourceSpec]:
    if dataset.sources is None:
        return [SourceSpec("source", dataset.format, dict(dataset.columns))]
    return [
        SourceSpec(s.name or f"source{i}", s.format, dict(s.columns), s.weight)
        for i, s in enumerate(dataset.sources, 1)
    ]


def iter_rows(ctx: StepContext) -> Iterator[tuple[int, str | None, tuple]]:
    """(source index, given split or None, (where, row number, row)) for every row used."""
    from ftpipe.data.prepare import iter_source

    ds = ctx.pipeline.dataset
    if ds.sources is None:
        for split, item in iter_source(ctx):
            yield 0, split, item
        return
    streams = [iter_source(ctx, s.source) for s in ds.sources]
    if ds.mix.strategy == "concatenate":
        for i, stream in enumerate(streams):
            for split, item in stream:
                yield i, split, item
        return
    rng = random.Random(ds.mix.seed)
    indices = list(range(len(streams)))
    weights = [s.weight for s in ds.sources]
    while True:
        i = rng.choices(indices, weights)[0]
        try:
            split, item = next(streams[i])
        except StopIteration:
            ctx.log(f"mixture: source {i + 1} ran out; the mixture stops there (interleave, first exhausted)")
            return
        yield i, split, item
