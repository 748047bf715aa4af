"""The step graph of a pipeline and each step's cache key. Pure: reads the pipeline and
its local inputs' fingerprints, touches no network, imports nothing heavy.

A cache key hashes the step kind, the step's resolved config (secrets left out), the
keys of the steps it depends on, input fingerprints, and the implementation version.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Bump a step's version when its behaviour changes so that old results are not reused.
# A train or deploy step's key also holds its plugin's own ``caps.cache_version``, so
# bumping one backend (trl) re-runs its steps and nobody else's (paid openai jobs).
STEP_VERSIONS = {"prepare": 1, "train": 1, "evaluate": 2, "gate": 2, "deploy": 1}


@dataclass(frozen=True)
class PlannedStep:
    id: str
    kind: str  # prepare | train | evaluate | gate | deploy
    needs: tuple[str, ...]
    key: str
    config: dict[str, Any]  # what went into the key (secrets removed), for display
    plugin: str | None = None  # trainer backend / deploy target name
    index: int | None = None  # deploy target index

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["needs"] = list(self.needs)
        return d


@dataclass(frozen=True)
class Plan:
    pipeline: str
    path: str
    steps: tuple[PlannedStep, ...]
    fingerprints: dict[str, str] = field(default_factory=dict)

    def step(self, step_id: str) -> PlannedStep:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def downstream(self, step_id: str) -> set[str]:
        """``step_id`` and every step that depends on it, transitively."""
        out = {step_id}
        for s in self.steps:  # steps are in topological order
            if out.intersection(s.needs):
                out.add(s.id)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "path": self.path,
            "fingerprints": self.fingerprints,
            "steps": [s.to_json() for s in self.steps],
        }


def strip_secrets(value: Any) -> Any:
    """Config without its Secret fields: they never enter a key, a plan or a record. Give
    the validated model (or a dump of :func:`ftpipe.spec.secrets.without_secrets`): the
    fields' types, not their names, say what is secret."""
    from ftpipe.spec.secrets import without_secrets

    return without_secrets(value)


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(pipeline: Any, base_dir: Path) -> str:
    """Content hash of a local source's files; repo@revision for a Hub source (for a
    mixture, of each source in order)."""
    sources = pipeline.dataset.all_sources()
    if len(sources) == 1:
        return _source_fingerprint(sources[0], base_dir)
    return _hash([_source_fingerprint(src, base_dir) for src in sources])


def _source_fingerprint(src: Any, base_dir: Path) -> str:
    if src.type == "hub":
        return _hash(
            {
                "hub": src.repo,
                "revision": src.revision or "main(unpinned)",
                "split": src.split,
                "splits": src.splits,
                "subset": src.subset,
            }
        )
    items = sorted(src.path.items()) if isinstance(src.path, dict) else [("all", src.path)]
    parts = []
    for split, rel in items:
        for f in resolve_local_files(base_dir, rel):
            parts.append((split, os.path.relpath(f, base_dir), _file_digest(f)))
    return _hash(parts)


def resolve_local_files(base_dir: Path, rel: str) -> list[Path]:
    """The files a local source path names: a file, a glob or a folder (sorted)."""
    full = (base_dir / rel).expanduser()
    if full.is_dir():
        return sorted(p for p in full.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".csv", ".parquet"))
    if full.exists():
        return [full]
    return sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())


def model_fingerprint(pipeline: Any, base_dir: Path) -> str:
    base = pipeline.model.base
    from ftpipe.models.sources import gguf_fingerprint

    gguf = gguf_fingerprint(base, base_dir)
    if gguf is not None:
        return _hash(gguf)  # the file's bytes: a moved or renamed copy keeps its cache
    local = (base_dir / base).expanduser()
    if not base.startswith("builtin:") and local.is_dir():
        # sizes and mtimes: hashing gigabytes of weights would make planning slow
        files = sorted(
            (str(p.relative_to(local)), p.stat().st_size, p.stat().st_mtime_ns) for p in local.rglob("*") if p.is_file()
        )
        return _hash({"local": files})
    return _hash({"id": base, "revision": pipeline.model.revision})


def build_plan(pipeline: Any, path: Path) -> Plan:
    """Resolve the step graph: prepare → train → evaluate → gate → deploy[i]."""
    base_dir = path.parent
    dump = strip_secrets(pipeline)
    fp = {"data": data_fingerprint(pipeline, base_dir), "model": model_fingerprint(pipeline, base_dir)}
    model_cfg = strip_secrets(dump["model"])
    steps: list[PlannedStep] = []

    def add(
        sid: str,
        kind: str,
        needs: tuple[str, ...],
        config: dict,
        plugin: str | None = None,
        index: int | None = None,
        extra: dict | None = None,
        plugin_version: int | None = None,
    ) -> PlannedStep:
        dep_keys = {n: next(s.key for s in steps if s.id == n) for n in needs}
        version: Any = STEP_VERSIONS[kind]
        if plugin_version is not None and plugin_version != 1:
            version = [version, plugin_version]  # version 1 keeps the keys of runs made before plugins had one
        key = _hash({"kind": kind, "version": version, "config": config, "needs": dep_keys, **(extra or {})})
        step = PlannedStep(sid, kind, needs, key, config, plugin, index)
        steps.append(step)
        return step

    trainer = strip_secrets(dump["trainer"])
    max_len = dump["dataset"].get("max_seq_length") or (trainer.get("hyperparameters") or {}).get("max_seq_length")
    add(
        "prepare",
        "prepare",
        (),
        {"dataset": strip_secrets(dump["dataset"]), "max_seq_length": max_len, "tokenizer": model_cfg["base"]},
        extra={"data": fp["data"], "model": fp["model"]},
    )
    # the executor does not change what a step computes, so it is not part of any key
    add(
        "train",
        "train",
        ("prepare",),
        {"trainer": trainer, "model": model_cfg},
        plugin=pipeline.trainer.backend,
        extra={"model": fp["model"]},
        plugin_version=type(pipeline.trainer).caps.cache_version,
    )
    before_deploy: tuple[str, ...] = ("train",)  # a model card shows the evaluation; the gate guards deploying
    if pipeline.evaluate is not None:
        ev = strip_secrets(dump["evaluate"])
        gate = ev.pop("gate", None)
        add(
            "evaluate",
            "evaluate",
            ("prepare", "train"),
            {"evaluate": ev, "model": model_cfg},
            extra=_deployed_extra(pipeline, base_dir, steps[-1].key),
        )
        before_deploy += ("evaluate",)
        if gate is not None:
            add("gate", "gate", ("evaluate",), {"gate": gate})
            before_deploy += ("gate",)
    published: dict[str, str] = {}  # repo -> the deploy step that publishes it (caps.publishes)
    for i, (model, target) in enumerate(zip(pipeline.deploy, dump["deploy"], strict=True)):
        caps = type(model).caps
        sid = f"deploy.{target.get('name') or target['type']}"
        cfg = strip_secrets(target)
        needs = before_deploy
        # a target serving a repo this run publishes (an endpoint, a Space) waits for, and is
        # keyed on, that publishing step
        served = target.get(caps.consumes) if caps.consumes else None
        if served in published:
            needs = needs + (published[served],)
        add(
            sid,
            "deploy",
            needs,
            {"target": cfg, "pipeline": pipeline.name},
            plugin=target["type"],
            index=i,
            plugin_version=caps.cache_version,
        )
        if caps.publishes and target.get(caps.publishes):
            published[target[caps.publishes]] = sid  # the latest publisher of a repo before its consumer
    return Plan(pipeline=pipeline.name, path=str(path), steps=tuple(steps), fingerprints=fp)


def _deployed_extra(pipeline: Any, base_dir: Path, train_key: str) -> dict[str, Any] | None:
    """Evaluation scores the model at the deploy target (`baselines: [deployed]`): another
    model landing there must re-run it."""
    if "deployed" not in pipeline.evaluate.baseline_names():
        return None  # (and planning imports nothing more)
    from ftpipe.evaluation.deployed import deployed_state

    return {"deployed": deployed_state(pipeline, base_dir, train_key).fingerprint()}
