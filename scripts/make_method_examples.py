"""Write the example data of the method/format pipelines from the shipped recipe data:

    python scripts/make_method_examples.py

- pipelines/data/recipes-feedback.jsonl: binary preference rows (KTO): each recipe with its
  own ingredient list (label true) or another recipe's (label false).
- pipelines/data/recipes-alpaca.jsonl: the same task as Alpaca rows (instruction, input,
  output), to mix with the chat data (pipelines/mixture.yaml).
Deterministic: the same files every time."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "pipelines" / "data"


def main() -> None:
    rows = [json.loads(line) for line in (DATA / "recipes.jsonl").read_text().splitlines()]
    feedback = []
    for i, row in enumerate(rows[:160]):
        system, user, answer = row["messages"]
        good = i % 2 == 0
        completion = answer["content"] if good else rows[(i + 7) % len(rows)]["messages"][-1]["content"]
        feedback.append({"prompt": [system, user], "completion": completion, "label": good})
    alpaca = [
        {
            "instruction": "Extract the generic ingredients from this recipe.",
            "input": row["messages"][1]["content"],
            "output": row["messages"][2]["content"],
        }
        for row in rows[240:]
    ]
    for name, items in (("recipes-feedback.jsonl", feedback), ("recipes-alpaca.jsonl", alpaca)):
        (DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))


if __name__ == "__main__":
    main()
