"""The model card (README.md) every deploy target writes beside the model.

YAML front matter the Hub understands (``base_model``, ``library_name``, ``tags``,
``datasets``), then where the model came from: base model, data fingerprint, pipeline
name and hash, hyperparameters, the evaluation table and the command that reproduces it.
The trainer config goes through :func:`ftpipe.planner.strip_secrets` and the finished text
through :func:`ftpipe.spec.interpolate.redact`: a card never carries a secret.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from ftpipe.contracts import ModelRef, StepContext
from ftpipe.planner import strip_secrets
from ftpipe.spec.interpolate import redact

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def is_hub_id(name: str, base_dir: Path | None = None) -> bool:
    """``org/name`` that is not a folder on this machine."""
    if name.startswith("builtin:") or not HUB_ID.match(name):
        return False
    return base_dir is None or not (base_dir / name).expanduser().exists()


def pipeline_hash(ctx: StepContext) -> str:
    """sha256 of the blocks that decide what model comes out (secrets removed)."""
    dump = strip_secrets(ctx.pipeline)
    core = {k: dump.get(k) for k in ("version", "dataset", "model", "trainer", "evaluate")}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()


def data_fingerprint(ctx: StepContext) -> str:
    """The run's recorded data fingerprint; computed again if the record is not at hand."""
    run_json = ctx.state_dir.parent.parent / "runs" / ctx.run_id / "run.json"
    try:
        fp = json.loads(run_json.read_text()).get("fingerprints", {}).get("data")
        if fp:
            return fp
    except (OSError, ValueError):
        pass
    from ftpipe.planner import data_fingerprint as compute

    return compute(ctx.pipeline, ctx.base_dir)


def reproduce_command(pipeline_path: Path) -> str:
    """``ftpipe run <path>``, the path relative to the repository root when there is one
    (never an absolute path: it would leak the user's folders into a public card)."""
    path = pipeline_path.resolve()
    for parent in path.parents:
        if (parent / ".git").exists():
            return f"ftpipe run {path.relative_to(parent).as_posix()}"
    return f"ftpipe run {path.name}"


def _train_run_id(ctx: StepContext) -> str | None:
    train = ctx.inputs.get("train")
    try:
        return json.loads((Path(train) / "_result.json").read_text()).get("run_id") if train else None
    except (OSError, ValueError):
        return None


def _demote(markdown: str) -> str:
    """Headings two levels down, so an embedded report sits under our "## Evaluation"."""
    return re.sub(r"^(#{1,4}) ", lambda m: "##" + m.group(1) + " ", markdown, flags=re.MULTILINE)


def _evaluation(ctx: StepContext) -> str | None:
    evaluate = ctx.inputs.get("evaluate")
    if evaluate is None or not (Path(evaluate) / "report.md").is_file():
        return None
    text = _demote((Path(evaluate) / "report.md").read_text(encoding="utf-8").strip())
    gate = ctx.inputs.get("gate")
    if gate is not None and (Path(gate) / "gate.json").is_file():
        doc = json.loads((Path(gate) / "gate.json").read_text())
        verdict = "passed" if doc.get("passed") else "blocked"
        text += f"\n\nDeployment gate: **{verdict}** — {doc.get('reason', '')}"
    return text


def _recommendation(ctx: StepContext) -> str | None:
    """The decision line: the gate's (it saw the final gate settings), else the report's."""
    for step, name in (("gate", "gate.json"), ("evaluate", "report.json")):
        folder = ctx.inputs.get(step)
        try:
            rec = json.loads((Path(folder) / name).read_text()).get("recommendation") if folder else None
        except (OSError, ValueError):
            rec = None
        if isinstance(rec, dict) and rec.get("line"):
            return str(rec["line"])
    return None


def _usage(ref: ModelRef, adapter: bool, repo_id: str | None, location: str | None) -> str:
    where = repo_id or location or "<this folder>"
    lines = ["```python"]
    if adapter:
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{where}")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{where}")',
        ]
    lines += [f'tokenizer = AutoTokenizer.from_pretrained("{where}")', "```"]
    if adapter and ref.base.startswith("builtin:"):
        lines += [
            "",
            f"The base is ftpipe's built-in `{ref.base}` model: load it with ftpipe (`ftpipe serve {where}`).",
        ]
    elif location and not repo_id:
        lines += ["", f"Or serve it with an OpenAI-compatible API: `ftpipe serve {location}`."]
    return "\n".join(lines)


def front_matter(ctx: StepContext, ref: ModelRef, adapter: bool) -> dict[str, Any]:
    pipeline = ctx.pipeline
    trainer = pipeline.trainer
    tags = ["ftpipe", "fine-tuned"]
    for extra in (getattr(trainer, "method", None), getattr(trainer, "backend", None)):
        if extra and extra not in tags:
            tags.append(str(extra))
    peft = getattr(trainer, "peft", None)
    if adapter and peft is not None and getattr(peft, "type", "none") != "none":
        tags.append(peft.type)
    tags.append("text-generation")
    meta: dict[str, Any] = {}
    if is_hub_id(ref.base, ctx.base_dir):
        meta["base_model"] = ref.base
    meta["library_name"] = "peft" if adapter else "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = tags
    hub = [s.repo for s in pipeline.dataset.all_sources() if s.type == "hub"]
    if hub:
        meta["datasets"] = hub
    return meta


def _describe_source(source: Any) -> str:
    if source.type == "hub":
        return (
            f"Hub dataset `{source.repo}`"
            + (f" at `{source.revision}`" if source.revision else "")
            + f", split `{source.split}`"
        )
    if isinstance(source.path, str):
        return f"local files `{source.path}`"
    return "local files " + ", ".join(f"{k}: `{v}`" for k, v in source.path.items())


def artifacts_table(rows: list[tuple[str, str, str]]) -> str:
    """Which engine and quantisation each deployed file is for: (file, engines, quantisation)."""
    lines = ["| File | Made for | Quantisation |", "|---|---|---|"]
    lines += [f"| `{name}` | {engines} | {quant} |" for name, engines, quant in rows]
    return "\n".join(lines)


def build_model_card(
    ctx: StepContext,
    ref: ModelRef,
    *,
    adapter: bool,
    repo_id: str | None = None,
    location: str | None = None,
    artifacts: list[tuple[str, str, str]] | None = None,
    usage: str | None = None,
    library: str | None = None,
) -> str:
    """The README.md text for the model of ``ref`` as deployed (``adapter``: the folder
    holds a PEFT adapter; ``repo_id``/``location``: where it can be loaded from;
    ``artifacts``: the files with the engine and quantisation each is for; ``usage`` and
    ``library`` replace the transformers usage and ``library_name``, for other formats)."""
    pipeline = ctx.pipeline
    meta = front_matter(ctx, ref, adapter)
    if library:
        meta["library_name"] = library
    data = "; ".join(_describe_source(s) for s in pipeline.dataset.all_sources())
    if pipeline.dataset.sources is not None:
        data = f"a mixture ({pipeline.dataset.mix.strategy}) of " + data
    hyper = strip_secrets(pipeline.trainer)
    run_id = _train_run_id(ctx)
    base_line = f"`{ref.base}`" + (f" at revision `{pipeline.model.revision}`" if pipeline.model.revision else "")
    kind = "a PEFT adapter on top of the base model" if adapter else "full weights"
    parts = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {pipeline.name}",
        "",
        *([f"**Recommendation: {rec}**", ""] if (rec := _recommendation(ctx)) else []),
        *([pipeline.description, ""] if pipeline.description else []),
        f"Fine-tuned from {base_line} with ftpipe. This repository holds {kind}.",
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        f"| Base model | {base_line} |",
        f"| Training data | {data} (format `{pipeline.dataset.format}`) |",
        f"| Data fingerprint | `{data_fingerprint(ctx)}` |",
        f"| Pipeline | `{pipeline.name}` |",
        f"| Pipeline hash | `{pipeline_hash(ctx)}` |",
        *([f"| Training run | `{run_id}` |"] if run_id else []),
        f"| Trainer | `{getattr(pipeline.trainer, 'backend', '?')}` ({getattr(pipeline.trainer, 'method', '?')}) |",
        "",
        "## Hyperparameters",
        "",
        "```yaml",
        yaml.safe_dump(hyper, sort_keys=False).strip(),
        "```",
        "",
    ]
    evaluation = _evaluation(ctx)
    parts += ["## Evaluation", "", evaluation if evaluation else "This pipeline has no evaluate step.", ""]
    if artifacts:
        parts += ["## Artifacts", "", artifacts_table(artifacts), ""]
    parts += ["## Usage", "", usage or _usage(ref, adapter, repo_id, location), ""]
    parts += ["## Reproduce", "", "```bash", reproduce_command(ctx.pipeline_path), "```", ""]
    return redact("\n".join(parts), ctx.secrets)


def write_model_card(folder: Path, text: str) -> Path:
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
