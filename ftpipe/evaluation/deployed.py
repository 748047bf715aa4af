"""The ``deployed`` baseline: the model a deploy target holds now.

A worse model must not replace a better one. With ``baselines: [..., deployed]`` and
``gate.must_beat: [..., deployed]`` the evaluate step scores the model currently at the
first deploy target that can be read back (``TargetCaps.readable``) on the same examples,
and the gate blocks a fine-tune that does not beat it. Nothing deployed yet, or the
deployed model being this very fine-tune (a cached re-run), skips the comparison.

Light on purpose: planning reads :func:`deployed_state` for the evaluate step's cache key
(so evaluation re-runs when someone else's model lands at the target).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEPLOYED = "deployed"
MARKER = "ftpipe.json"


@dataclass(frozen=True)
class DeployedState:
    status: str  # "none" (nothing there) | "self" (this fine-tune) | "other" (another model)
    path: Path | None  # the model folder at the target
    train_key: str | None  # the cache key of the train step that produced it, if recorded
    marker: dict[str, Any] | None = None

    @property
    def reason(self) -> str:
        if self.path is None:
            return "no deploy target can be read back"
        if self.status == "none":
            return f"nothing deployed at {self.path} yet"
        return f"the model at {self.path} is this fine-tune"

    def fingerprint(self) -> str | None:
        """What the evaluate step's key depends on: the identity of the model it compares
        with. For this very fine-tune, the model it replaced (what the evaluation that
        approved it compared with), so a re-run after deploying is all cache hits."""
        if self.status == "self":
            return (self.marker or {}).get("replaced_train_key")
        if self.status != "other":
            return None
        return self.train_key or json.dumps(self.marker, sort_keys=True)


def readable_target(pipeline: Any) -> Any | None:
    """The first deploy target that declares it can be read back."""
    for target in getattr(pipeline, "deploy", None) or ():
        caps = getattr(type(target), "caps", None)
        if caps is not None and getattr(caps, "readable", False):
            return target
    return None


def deployed_state(pipeline: Any, base_dir: Path, train_key: str) -> DeployedState:
    """What the readable target holds now, relative to the train step ``train_key``."""
    target = readable_target(pipeline)
    if target is None:
        return DeployedState("none", None, None)
    folder = Path(target.deployed_model_dir(base_dir, pipeline.name))
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DeployedState("none", folder, None)
    key = marker.get("train_key")
    status = "self" if key and key == train_key else "other"
    return DeployedState(status, folder, key, marker)


def wants_deployed(pipeline: Any) -> bool:
    ev = getattr(pipeline, "evaluate", None)
    return ev is not None and DEPLOYED in ev.baseline_names()
