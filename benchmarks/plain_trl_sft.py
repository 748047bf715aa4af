"""The hand-written TRL script that bench_trl_overhead.py compares ``ftpipe run`` with,
end to end (process start to exit): what a user would write for the same SFT job.

    python benchmarks/plain_trl_sft.py DATA.jsonl BASE_MODEL_DIR OUT_DIR [--steps N]

Chat rows become TRL prompt/completion pairs (loss on the answer), as ftpipe's trl backend
does; full fine-tuning, the bench's hyperparameters, no checkpoints, the model saved once.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("base")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=-1)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3.0e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--precision", choices=("no", "bf16", "fp16"), default="no")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(42)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    with open(args.data, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    train = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    config = SFTConfig(
        output_dir=args.out,
        num_train_epochs=args.epochs,
        max_steps=args.steps,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        max_length=args.max_length,
        logging_steps=10,
        warmup_steps=0,
        bf16=args.precision == "bf16",
        fp16=args.precision == "fp16",
        activation_checkpointing=False,
        save_strategy="no",
        report_to="none",
        seed=42,
        data_seed=42,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    metrics = trainer.train().metrics
    trainer.save_model(f"{args.out}/model")
    print(json.dumps({k: metrics[k] for k in ("train_samples_per_second", "train_runtime")}))


if __name__ == "__main__":
    main()
