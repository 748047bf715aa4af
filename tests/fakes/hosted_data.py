"""Training data the hosted-trainer tests share: 20 cooking questions whose answers the
loopback OpenAI/Azure server's fine-tuned models learn (nearest neighbour by word overlap)."""

from __future__ import annotations

FOODS = ["rice", "beans", "eggs", "leeks", "pasta", "tofu", "lamb", "kale", "fish", "corn",
         "plums", "figs", "duck", "okra", "peas", "yams", "oats", "milk", "nuts", "beef"]  # fmt: skip
QA = [
    (f"How long do I cook {w} for dish number {i}?", f"Cook the {w} for {i + 3} minutes.") for i, w in enumerate(FOODS)
]
