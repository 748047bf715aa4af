"""The evaluate step: score the fine-tuned model and its alternatives on the test split.

Variants: ``finetuned`` (the train step's model), ``base`` (the base model, zero-shot),
``few_shot`` (the base model with k training examples in the prompt) and named model
baselines (``run:<id>``, a local path, a Hub id, or ``openai:<model id>``). Every variant
answers the same prompts; the report says what each scored, how many tokens a request
cost, and whether fine-tuning paid.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.contracts import StepContext, StepResult
from ftpipe.errors import StepError, UsageError
from ftpipe.evaluation import metrics as M
from ftpipe.evaluation.decision_report import add_decision, per_example_scores
from ftpipe.evaluation.fewshot import (
    Example,
    FewShotSelector,
    build_few_shot_messages,
    load_examples,
)
from ftpipe.evaluation.generate import Generation
from ftpipe.evaluation.hosted_access import ENV_PROVIDER
from ftpipe.evaluation.report import VariantResult, build_report, write_report
from ftpipe.evaluation.variants import FINETUNED, Variant, plan_variants, skipped_baselines

JUDGE = "judge"


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Job:
    """What every variant is scored on."""

    test: list[Example]
    plain: list[list[dict]]  # the test prompts as they are
    few_shot: list[list[dict]] | None  # the same prompts with k examples in front
    text_metrics: dict[str, M.MetricFn]
    model_metrics: list[str]
    rag: list[list[dict]] | None = None  # the same prompts with retrieved passages
    judge: Any = None  # a judge.JudgeSpec when ``judge`` is a metric
    benchmarks: list[Any] = field(default_factory=list)  # forgetting.BenchmarkSpec
    benchmark_results: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> task -> result


@dataclass
class _Scored:
    generations: list[Generation] | None = None
    per_example: dict[str, list[float]] = field(default_factory=dict)
    nll: list[tuple[float, int]] | None = None
    prompt_tokens: list[int] | None = None  # counted when nothing was generated
    generation_seconds: float | None = None  # wall time of answering every prompt (serving cost)


def _resolve_metrics(ctx: StepContext, names: list[str]) -> dict[str, M.MetricFn]:
    # Custom "module:function" metrics may live beside the pipeline file.
    base = str(ctx.base_dir.resolve())
    sys.path.insert(0, base)
    try:
        return {n: M.resolve_metric(n) for n in names if not M.is_model_metric(n) and n != JUDGE}
    finally:
        if base in sys.path:
            sys.path.remove(base)


def _load_split(ctx: StepContext, cfg: Any, text_metrics: dict[str, M.MetricFn]) -> list[Example]:
    split_file = Path(ctx.inputs["prepare"]) / f"{cfg.split}.jsonl"
    if not split_file.is_file():
        raise StepError(f"the prepare step left no {cfg.split} split ({split_file} is missing)")
    test = load_examples(split_file, limit=cfg.limit)
    if not test:
        raise StepError(
            f"the {cfg.split} split is empty: nothing to evaluate",
            hint="raise dataset.split.test (or validation), or add data",
        )
    if text_metrics and any(not ex.prompt for ex in test):
        raise UsageError(
            f"metrics {', '.join(text_metrics)} need prompt/answer records; "
            "plain text data supports only loss, perplexity"
        )
    return test


def _few_shot_prompts(ctx: StepContext, cfg: Any, test: list[Example]) -> list[list[dict]]:
    train = load_examples(Path(ctx.inputs["prepare"]) / "train.jsonl")
    fs = cfg.few_shot
    selector = FewShotSelector(train, k=fs.k, selection=fs.selection, seed=fs.seed)
    ctx.log(f"few_shot: {selector.k} {fs.selection} examples from {len(train)} training records")
    return [build_few_shot_messages(ex, selector.select(ex)) for ex in test]


def _score_variant(ctx: StepContext, variant: Variant, job: _Job, loaded: tuple[Any, Any] | None) -> _Scored:
    from ftpipe.evaluation import generate as G

    gen_cfg = ctx.pipeline.evaluate.generation
    seed = gen_cfg.seed
    prompts = job.few_shot if variant.few_shot and job.few_shot is not None else job.plain
    if variant.rag and job.rag is not None:
        prompts = job.rag
    n = len(prompts)
    what = f"evaluate {variant.name}"
    scored = _Scored()
    if job.text_metrics or job.judge is not None:
        ctx.progress(0, n, what)

        def on_batch(done: int) -> None:
            ctx.progress(done, n, what)

        gen_started = time.monotonic()
        if loaded is not None:
            scored.generations = G.generate_local(
                loaded[0],
                loaded[1],
                prompts,
                max_new_tokens=gen_cfg.max_new_tokens,
                batch_size=gen_cfg.batch_size,
                seed=seed,
                on_batch=on_batch,
                engine=getattr(gen_cfg, "engine", "auto"),
            )
        else:
            from ftpipe.evaluation.hosted_access import chat_client

            provider = variant.source.provider or ENV_PROVIDER
            client = chat_client(provider, getattr(ctx.pipeline, "trainer", None))
            try:
                scored.generations = G.generate_hosted(
                    client,
                    variant.source.model_id or "",
                    prompts,
                    max_new_tokens=gen_cfg.max_new_tokens,
                    seed=seed,
                    concurrency=min(gen_cfg.batch_size, 8),
                    on_batch=on_batch,
                    report_every=gen_cfg.batch_size,
                    service=provider,
                )
            finally:
                client.close()
        scored.generation_seconds = time.monotonic() - gen_started
        for name, fn in job.text_metrics.items():
            scored.per_example[name] = [
                M.score(fn, name, g.text, ex.reference) for g, ex in zip(scored.generations, job.test, strict=True)
            ]
        if job.judge is not None:
            from ftpipe.evaluation.judge import score_answers

            items = [(ex.query_text, ex.reference, g.text) for g, ex in zip(scored.generations, job.test, strict=False)]
            scored.per_example[JUDGE] = score_answers(job.judge, items, cache_dir=ctx.cache_dir, log=ctx.log)
    elif loaded is not None:
        scored.prompt_tokens = G.count_prompt_tokens(loaded[1], prompts)
    if job.model_metrics and loaded is not None:
        ctx.progress(0, n, f"{what} (loss)")
        scored.nll = G.reference_nll(
            loaded[0],
            loaded[1],
            prompts,
            [ex.reference for ex in job.test],
            batch_size=gen_cfg.batch_size,
            on_batch=lambda done: ctx.progress(done, n, f"{what} (loss)"),
        )
    elif job.model_metrics:
        ctx.log(f"{variant.name}: {', '.join(job.model_metrics)} not available for a hosted model (no log-likelihoods)")
    return scored


def _mean(values: list[int] | list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _variant_result(variant: Variant, scored: _Scored, job: _Job, seconds: float) -> VariantResult:
    from ftpipe.evaluation.generate import aggregate_nll

    values: dict[str, float | None] = {name: _mean(vals) for name, vals in scored.per_example.items()}
    if job.model_metrics:
        loss, ppl = aggregate_nll(scored.nll) if scored.nll else (None, None)
        for name in job.model_metrics:
            values[name] = loss if name == "loss" else ppl
    # NaN/inf (a diverged model) would make report.json invalid JSON: record "no value".
    values = {k: (v if v is None or math.isfinite(v) else None) for k, v in values.items()}
    gens = scored.generations
    return VariantResult(
        name=variant.name,
        kind=variant.source.kind,
        model=variant.source.label,
        few_shot=variant.few_shot,
        n=len(job.test),
        metrics=values,
        prompt_tokens_mean=_mean([g.prompt_tokens for g in gens]) if gens else _mean(scored.prompt_tokens or []),
        completion_tokens_mean=_mean([g.completion_tokens for g in gens]) if gens else None,
        seconds=seconds,
        latencies=tuple(g.seconds for g in gens) if gens else (),
        generation_seconds=scored.generation_seconds,
    )


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _score_all(ctx: StepContext, variants: list[Variant], job: _Job) -> tuple[list[VariantResult], list[dict]]:
    # Variants sharing a model (base and few_shot) load it once; one model in memory at a time.
    groups: dict[str, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.source.key, []).append(v)
    by_name: dict[str, VariantResult] = {}
    predictions: list[dict[str, Any]] = []
    for members in groups.values():
        source = members[0].source
        loaded = None
        if source.kind == "local":
            ctx.log(f"loading {source.label}")
            loaded = source.load()  # type: ignore[misc]
        try:
            for v in members:
                started = time.monotonic()
                scored = _score_variant(ctx, v, job, loaded)
                res = by_name[v.name] = _variant_result(v, scored, job, time.monotonic() - started)
                ctx.log(f"{v.name}: " + ", ".join(f"{k} {_fmt(x)}" for k, x in res.metrics.items()))
                predictions.extend(_prediction_rows(v.name, scored, job.test))
            _benchmark(ctx, members, job, loaded)
        finally:
            loaded = None
            _release_memory()
    return [by_name[v.name] for v in variants], predictions


def _benchmark(ctx: StepContext, members: list[Variant], job: _Job, loaded: tuple[Any, Any] | None) -> None:
    """General-ability checks (lm-eval) on the fine-tuned and the base model, once per model."""
    from ftpipe.evaluation.forgetting import BENCHMARKED, run_benchmarks

    names = [v.name for v in members if v.name in BENCHMARKED]
    if not job.benchmarks or not names or loaded is None:
        return
    ctx.log(f"benchmarks on {names[0]}: {', '.join(s.task for s in job.benchmarks)}")
    job.benchmark_results[names[0]] = run_benchmarks(
        loaded[0],
        loaded[1],
        job.benchmarks,
        base_dir=ctx.base_dir,
        batch_size=ctx.pipeline.evaluate.generation.batch_size,
        log=ctx.log,
    )


def run_evaluate(ctx: StepContext) -> StepResult:
    """Score every variant on the prepared split; write report.json, report.md, chart.png
    (and predictions.jsonl: every answer with its per-example scores)."""
    cfg = ctx.pipeline.evaluate
    if cfg is None:
        raise UsageError("the pipeline has no evaluate block")
    names = list(cfg.metrics)
    text_metrics = _resolve_metrics(ctx, names)
    test = _load_split(ctx, cfg, text_metrics)
    variants = plan_variants(ctx)
    job = _Job(
        test=test,
        plain=[list(ex.prompt) for ex in test],
        few_shot=_few_shot_prompts(ctx, cfg, test) if any(v.few_shot for v in variants) else None,
        text_metrics=text_metrics,
        model_metrics=[n for n in names if M.is_model_metric(n)],
        rag=_rag_prompts(ctx, cfg, test) if any(v.rag for v in variants) else None,
        judge=_judge_spec(cfg) if JUDGE in names else None,
        benchmarks=_benchmark_specs(ctx, cfg),
    )
    ctx.log(f"evaluating {len(variants)} variants on {len(test)} {cfg.split} examples: {', '.join(names)}")
    from ftpipe.evaluation.hosted_access import routed

    with routed(ctx, variants) as served:
        results, predictions = _score_all(ctx, served, job)
    report = build_report(
        results,
        metrics=names,
        prices=_prices(cfg),
        split=cfg.split,
        run_id=ctx.run_id,
        gate_metric=cfg.gate.metric if cfg.gate else None,
    )
    if job.benchmarks:
        from ftpipe.evaluation.forgetting import benchmark_section

        hosted = {
            v.name: "a hosted model has no log-likelihoods for lm-eval"
            for v in variants
            if v.name in ("finetuned", "base") and v.source.kind != "local"
        }
        report["benchmarks"] = benchmark_section(job.benchmark_results, hosted)
    add_decision(
        report,
        per_example=per_example_scores(predictions),
        cfg=cfg,
        training_seconds=_training_seconds(ctx),
        skipped=skipped_baselines(ctx),
        trained_tokens=(_train_result(ctx).get("metrics") or {}).get("trained_tokens"),
    )
    write_report(ctx.out_dir, report)
    with open(ctx.out_dir / "predictions.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions)
    return StepResult(metrics=flat_metrics(report), summary=summary_line(report))


def _rag_prompts(ctx: StepContext, cfg: Any, test: list[Example]) -> list[list[dict]]:
    from ftpipe.evaluation.retrieval import (
        Retriever,
        build_rag_messages,
        corpus_files,
        load_passages,
    )

    rag = cfg.rag
    if rag is None:
        raise UsageError(
            "evaluate.baselines: rag needs an evaluate.rag block: {corpus: <files or glob>, k, chunk_size}"
        )
    files = corpus_files(ctx.base_dir, rag.corpus)
    retriever = Retriever(load_passages(files, chunk_size=rag.chunk_size, base_dir=ctx.base_dir), k=rag.k)
    ctx.log(f"rag: top {retriever.k} of {len(retriever.passages)} passages from {len(files)} files")
    return [build_rag_messages(ex, retriever.search(ex.query_text)) for ex in test]


def _benchmark_specs(ctx: StepContext, cfg: Any) -> list[Any]:
    if not getattr(cfg, "benchmarks", None):
        return []
    from ftpipe.evaluation.forgetting import specs_from_config

    return specs_from_config(cfg.benchmarks, ctx.base_dir)


def _judge_spec(cfg: Any) -> Any:
    from ftpipe.evaluation.judge import spec_from_config

    if cfg.judge is None:
        raise UsageError("evaluate.metrics: judge needs an evaluate.judge block: {model: ..., rubric: ...}")
    return spec_from_config(cfg.judge)


def _train_result(ctx: StepContext) -> dict[str, Any]:
    """The train step's record (duration, metrics such as a hosted job's trained_tokens)."""
    try:
        doc = json.loads((Path(ctx.inputs["train"]) / "_result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _training_seconds(ctx: StepContext) -> float | None:
    """How long the train step took (its artifact's record), for the training cost."""
    try:
        return float(_train_result(ctx)["duration_s"])
    except (KeyError, ValueError, TypeError):
        return None


def _prediction_rows(variant: str, scored: _Scored, test: list[Example]) -> list[dict[str, Any]]:
    rows = []
    for i, ex in enumerate(test):
        row: dict[str, Any] = {"variant": variant, "index": i, "reference": ex.reference}
        if scored.generations is not None:
            g = scored.generations[i]
            row.update(prediction=g.text, prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens)
        row["metrics"] = {name: vals[i] for name, vals in scored.per_example.items()}
        if scored.nll is not None:
            s, t = scored.nll[i]
            row["metrics"]["loss"] = s / t if t else None
        rows.append(row)
    return rows


def _prices(cfg: Any) -> dict[str, dict[str, float]]:
    out = {}
    for key, price in (cfg.prices or {}).items():
        if isinstance(price, dict):
            out[key] = {"input": float(price["input"]), "output": float(price["output"])}
        else:
            out[key] = {"input": float(price.input), "output": float(price.output)}
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def flat_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """``<variant>.<metric>``, ``delta.<baseline>.<metric>`` and ``n`` for the run record."""
    out: dict[str, Any] = {}
    for name, v in report["variants"].items():
        for metric, value in v["metrics"].items():
            out[f"{name}.{metric}"] = value
        if v.get("cost_per_1k_requests") is not None:
            out[f"{name}.cost_per_1k_requests"] = v["cost_per_1k_requests"]
        for q in ("p50_s", "p95_s"):
            if (v.get("latency") or {}).get(q) is not None:
                out[f"{name}.latency_{q}"] = v["latency"][q]
    for comp in report["comparisons"]:
        for metric, d in comp["deltas"].items():
            out[f"delta.{comp['baseline']}.{metric}"] = d
    out["n"] = report["n"]
    for task, t in ((report.get("benchmarks") or {}).get("tasks") or {}).items():
        for variant, value in t["variants"].items():
            out[f"benchmark.{task}.{variant}"] = value
    if report.get("recommendation"):
        out["recommendation"] = report["recommendation"]["line"]
    return out


def summary_line(report: dict[str, Any]) -> str:
    metric = report["primary_metric"]
    variants = report["variants"]
    ft = variants[FINETUNED]["metrics"].get(metric)
    others = ", ".join(f"{n} {_fmt(v['metrics'].get(metric))}" for n, v in variants.items() if n != FINETUNED)
    return f"{FINETUNED} {metric} {_fmt(ft)}" + (f" ({others})" if others else "") + f" on {report['n']} examples"
