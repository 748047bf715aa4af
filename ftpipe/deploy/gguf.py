"""The ``gguf`` deploy target: the model as one GGUF file for llama.cpp and Ollama.

The trained model (an adapter merged into its base) is exported as full weights, then
llama.cpp's own converter writes the GGUF (:mod:`ftpipe.deploy.gguf_convert`); ``q4_k_m``
is quantised from the f16 file by llama.cpp's quantizer. Beside it: an Ollama ``Modelfile``
(chat template, the pipeline's system prompt, stop token, parameters), a model card that
says which engine and quantisation the file is for, and ``ftpipe.json``. With ``push`` the
folder is uploaded to a Hub model repo through the hf-hub target's upload machinery.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _secrets
import shutil
from pathlib import Path

from ftpipe.contracts import StepContext, StepResult
from ftpipe.deploy.local import (
    MARKER,
    export_model,
    list_files,
    local_model,
    replace_dir,
)
from ftpipe.deploy.modelcard import build_model_card, write_model_card
from ftpipe.errors import StepError
from ftpipe.spec.models import GgufTarget
from ftpipe.store import write_json

ENGINES = "llama.cpp, Ollama (and transformers with `gguf_file=`)"

# Ollama's Go-template form of the ChatML layout (the built-in tiny model, SmolLM2, Qwen ...).
CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


def resolve_path(ctx: StepContext, target: GgufTarget) -> Path:
    raw = target.path.replace("{pipeline}", ctx.pipeline.name)
    path = Path(raw).expanduser()
    return (path if path.is_absolute() else ctx.base_dir / path).resolve()


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(
    gguf_name: str, *, chat_template: str | None, eos_token: str | None, system: str | None, parameters: dict
) -> str:
    """An Ollama Modelfile for ``gguf_name`` (in the same folder)."""
    lines = ["# Ollama: ollama create <name> -f Modelfile   (written by ftpipe)", f"FROM ./{gguf_name}"]
    if chat_template and "<|im_start|>" in chat_template:
        lines.append(f"TEMPLATE {_quoted(CHATML_TEMPLATE)}")
    elif chat_template:
        lines.append("# TEMPLATE: Ollama reads the chat template stored in the GGUF (tokenizer.chat_template)")
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    stops = [eos_token] if eos_token else []
    if chat_template and "<|im_start|>" in chat_template and "<|im_start|>" not in stops:
        stops.append("<|im_start|>")
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    for key, value in parameters.items():
        lines.append(f"PARAMETER {key} {json.dumps(value) if isinstance(value, str) else value}")
    return "\n".join(lines) + "\n"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_gguf_folder(ctx: StepContext, target: GgufTarget, folder: Path, *, location: str) -> dict:
    """Fill the empty ``folder`` with the GGUF, Modelfile, README.md and ftpipe.json."""
    from ftpipe.deploy.gguf_convert import convert, llama_cpp_runs, quantize

    what = "gguf deploy"
    ref, _ = local_model(ctx, what)
    weights = folder / ".hf"
    weights.mkdir()
    export_model(ctx, weights, merge=True, what=what, location=location)
    quant = target.quantization
    name = f"{ctx.pipeline.name}-{quant}.gguf"
    log_file = ctx.state_dir / "convert.log"
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    if quant in ("f16", "q8_0"):
        ctx.log(f"{what}: llama.cpp's converter -> {name}")
        convert(weights, folder / name, quant, log_file=log_file)
    else:
        f16 = folder / f".{ctx.pipeline.name}-f16.gguf"
        ctx.log(f"{what}: llama.cpp's converter -> f16, then llama.cpp's quantizer -> {quant}")
        convert(weights, f16, "f16", log_file=log_file)
        quantize(f16, folder / name, quant)
        f16.unlink()
        # k-quants work on blocks of 256 weights: llama.cpp falls back on narrow rows, and for
        # some shapes the result does not run. Check before publishing it.
        status = llama_cpp_runs(folder / name)
        if status not in (0, None):
            raise StepError(
                f"gguf deploy: llama.cpp cannot run the {quant} file it made for this model "
                f"(exit {status}; k-quants need rows that are multiples of 256 weights)",
                hint="use quantization: q8_0 (or f16) for this model",
            )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(weights))
    system = getattr(ctx.pipeline.dataset, "system_prompt", None)
    (folder / "Modelfile").write_text(
        modelfile(
            name,
            chat_template=getattr(tokenizer, "chat_template", None),
            eos_token=tokenizer.eos_token,
            system=system,
            parameters=dict(target.parameters),
        )
    )
    shutil.rmtree(weights)
    usage = "\n".join(
        [
            "```bash",
            "ollama create " + ctx.pipeline.name.lower() + " -f Modelfile   # Ollama",
            f"llama-cli -m {name} -cnv                     # llama.cpp",
            "```",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("<this folder>", gguf_file="{name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("<this folder>", gguf_file="{name}")',
            "```",
        ]
    )
    card = build_model_card(
        ctx,
        ref,
        adapter=False,
        repo_id=target.push.repo if target.push else None,
        location=location,
        artifacts=[(name, ENGINES, quant), ("Modelfile", "Ollama", quant)],
        usage=usage,
        library="gguf",
    )
    write_model_card(folder, card)
    marker = {
        "base": ref.base,
        "pipeline": ctx.pipeline.name,
        "format": "gguf",
        "file": name,
        "quantization": quant,
        "engine": "llama.cpp",
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return marker


class GgufDeploy:
    """Write a GGUF (+ Ollama Modelfile) into a folder; optionally push it to the Hub."""

    name = "gguf"
    config_model = GgufTarget

    def is_current(self, artifact: Path) -> bool:
        try:
            doc = json.loads((artifact / "deploy.json").read_text())
        except (OSError, ValueError):
            return True
        return not doc.get("path") or (Path(doc["path"]) / str(doc.get("file"))).is_file()

    def deploy(self, ctx: StepContext) -> StepResult:
        target: GgufTarget = ctx.options["target"]
        dest = resolve_path(ctx, target)
        if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / MARKER).exists())):
            raise StepError(
                f"gguf deploy: refusing to replace {dest}: it exists and was not written by ftpipe",
                hint="choose another deploy path, or move that folder away",
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{_secrets.token_hex(3)}")
        tmp.mkdir()
        try:
            marker = write_gguf_folder(ctx, target, tmp, location=str(dest))
            replace_dir(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        gguf = dest / marker["file"]
        doc = {
            "target": "gguf",
            "path": str(dest),
            "url": gguf.as_uri(),
            "file": marker["file"],
            "quantization": marker["quantization"],
            "bytes": gguf.stat().st_size,
            "sha256": _sha256(gguf),
            "files": list_files(dest),
        }
        shutil.copy2(dest / "README.md", ctx.out_dir / "README.md")
        summary = f"{marker['file']} ({doc['bytes'] / 1e6:.1f} MB) in {dest}"
        if target.push:
            doc["push"] = self._push(ctx, target, dest)
            summary += f", pushed to {target.push.repo}"
        write_json(ctx.out_dir / "deploy.json", doc)
        return StepResult(metrics={"bytes": doc["bytes"]}, summary=summary)

    def _push(self, ctx: StepContext, target: GgufTarget, folder: Path) -> dict:
        from ftpipe.deploy.hf_hub import ensure_repo, hf_api, repo_url, upload_folder
        from ftpipe.remote.hf import hub_errors

        push = target.push
        assert push is not None
        api = hf_api(push.token)
        ensure_repo(api, push.repo, private=push.private, revision=push.revision, ctx=ctx)
        ctx.log(f"gguf deploy: uploading to {push.repo}@{push.revision}")
        with hub_errors(f"upload to {push.repo}"):
            info = upload_folder(
                api,
                folder,
                repo_id=push.repo,
                repo_type="model",
                revision=push.revision,
                message=f"ftpipe: {ctx.pipeline.name} GGUF (run {ctx.run_id})",
                ctx=ctx,
            )
        return {
            "repo": push.repo,
            "revision": push.revision,
            "commit": info.oid,
            "url": repo_url(api, push.repo),
            "private": push.private,
        }
