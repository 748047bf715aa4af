"""Does the quickstart's fine-tuning pay? Train it, then compare token F1 of greedy answers.

    python scripts/check_quickstart_quality.py                       # pipelines/quickstart.yaml
    python scripts/check_quickstart_quality.py --epochs 8 --lr 5e-3  # try other settings

Runs the pipeline's own pieces on this machine, in a temporary folder: the prepare step
(same split), the trl backend with the pipeline's trainer block (overrides on the command
line), and greedy generation on the test split for the fine-tuned model, the untouched
base model and the base model prompted with the pipeline's few-shot examples. Prints the
train step's wall time and each variant's mean token F1 (ftpipe.evaluation.metrics).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _ctx(pipeline, path: Path, root: Path, step: str, inputs: dict, cache: Path):
    from ftpipe.contracts import StepContext

    out = root / step
    out.mkdir(parents=True)

    def progress(done, total, what):
        if done and total and (done == total or done % max(1, total // 10) == 0):
            print(f"  {step}: {done}/{total}", flush=True)

    return StepContext(
        run_id="check",
        step_id=step,
        pipeline=pipeline,
        pipeline_path=path,
        out_dir=out,
        inputs=inputs,
        state_dir=root / "state" / step,
        cache_dir=cache,
        log=lambda line: None,
        progress=progress,
    )


def _override(pipeline, args):
    hp = {
        k: v
        for k, v in (
            ("epochs", args.epochs),
            ("learning_rate", args.lr),
            ("batch_size", args.batch_size),
            ("max_steps", args.max_steps),
            ("warmup_ratio", args.warmup),
            ("lr_scheduler", args.scheduler),
        )
        if v is not None
    }
    trainer = pipeline.trainer
    if hp:
        trainer = trainer.model_copy(update={"hyperparameters": trainer.hyperparameters.model_copy(update=hp)})
    if args.peft:
        trainer = trainer.model_copy(update={"peft": _peft(args.peft)})
    return pipeline.model_copy(update={"trainer": trainer})


def _peft(kind: str):
    from ftpipe.spec.models import LoraPeft, NoPeft

    return NoPeft(type="none") if kind == "none" else LoraPeft(type="lora", r=16, alpha=32, dropout=0.0)


def _score(model, tok, prompts, references, cfg) -> float:
    from ftpipe.evaluation.generate import generate_local
    from ftpipe.evaluation.metrics import token_f1

    answers = generate_local(model, tok, prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    return sum(token_f1(a.text, ref) for a, ref in zip(answers, references, strict=True)) / len(references)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", type=Path, default=REPO / "pipelines" / "quickstart.yaml")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--scheduler")
    parser.add_argument("--peft", choices=["none", "lora"])
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()

    from ftpipe.api import load

    loaded = load(args.pipeline)
    if not loaded.ok:
        print("\n".join(str(p) for p in loaded.problems))
        return 2
    pipeline = _override(loaded.pipeline, args)
    path = args.pipeline.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache = Path(os.environ.get("FTPIPE_CACHE", Path.home() / ".cache" / "ftpipe"))
        from ftpipe.data.prepare import run_prepare
        from ftpipe.models.tiny import ensure_tiny_model

        ensure_tiny_model(cache)  # outside the timing: built once per machine
        prepare = _ctx(pipeline, path, root, "prepare", {}, cache)
        run_prepare(prepare)

        from ftpipe.trainers.trl_backend import TrlBackend

        train = _ctx(pipeline, path, root, "train", {"prepare": prepare.out_dir}, cache)
        hp = pipeline.trainer.hyperparameters
        print(
            f"training: {pipeline.trainer.method}, peft {pipeline.trainer.peft.type}, epochs {hp.epochs}, "
            f"lr {hp.learning_rate}, batch {hp.batch_size}, scheduler {hp.lr_scheduler}, warmup {hp.warmup_ratio}"
        )
        t0 = time.perf_counter()
        result = TrlBackend().train(train)
        wall = time.perf_counter() - t0
        m = result.metrics
        print(
            f"train step: {wall:.1f} s wall ({m['train_runtime']:.1f} s in trainer.train, "
            f"{m['global_step']} steps, {m['train_samples_per_second']:.1f} samples/s), "
            f"train loss {m['train_loss']:.3f}, eval loss {m.get('eval_loss', float('nan')):.3f}"
        )

        from ftpipe.contracts import ModelRef
        from ftpipe.evaluation.fewshot import (
            FewShotSelector,
            build_few_shot_messages,
            load_examples,
        )
        from ftpipe.models.loading import load_base_for_inference, load_for_inference

        evaluate = pipeline.evaluate
        test = load_examples(prepare.out_dir / f"{evaluate.split}.jsonl", limit=evaluate.limit)
        prompts, refs = [list(ex.prompt) for ex in test], [ex.reference for ex in test]
        gen = evaluate.generation
        scores = {}
        opts = {"cache_dir": cache, "base_dir": path.parent}
        model, tok = load_for_inference(ModelRef.read(train.out_dir), train.out_dir, **opts)
        scores["finetuned"] = _score(model, tok, prompts, refs, gen)
        if not args.skip_baselines:
            model, tok = load_base_for_inference(pipeline.model.base, **opts)
            scores["base"] = _score(model, tok, prompts, refs, gen)
            fs = evaluate.few_shot
            selector = FewShotSelector(
                load_examples(prepare.out_dir / "train.jsonl"), k=fs.k, selection=fs.selection, seed=fs.seed
            )
            shots = [build_few_shot_messages(ex, selector.select(ex)) for ex in test]
            scores[f"few_shot (k={fs.k}, {fs.selection})"] = _score(model, tok, shots, refs, gen)
    print(f"\ntoken F1 on {len(test)} {evaluate.split} examples (greedy, max_new_tokens {gen.max_new_tokens}):")
    for name, score in scores.items():
        print(f"  {name:28s} {score:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
