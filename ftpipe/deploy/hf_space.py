"""The ``hf-space`` deploy target: a small Gradio chat demo Space for a Hub model repo.

The Space holds ``app.py``, ``requirements.txt`` and a README with the Space's front
matter; it loads the model with transformers (PEFT for an adapter repo) and streams
answers. The token is never written into a file: when the model repo is private it goes
to the Space as the secret ``HF_TOKEN``, which ``app.py`` reads from its environment.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from ftpipe.contracts import StepContext, StepResult
from ftpipe.deploy.hf_hub import hf_api, repo_url, upload_folder, with_retries
from ftpipe.deploy.local import list_files
from ftpipe.remote.hf import hub_errors
from ftpipe.spec.interpolate import redact
from ftpipe.spec.models import SpaceTarget
from ftpipe.store import write_json

TOKEN_SECRET = "HF_TOKEN"

REQUIREMENTS = """\
transformers>=4.45
torch
peft>=0.13
accelerate
huggingface_hub
"""

APP = '''\
"""Chat demo for {model_repo}, written by ftpipe (pipeline {pipeline})."""
import os
from threading import Thread

import gradio as gr
from huggingface_hub import file_exists
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

MODEL = {model_repo!r}
SYSTEM_PROMPT = {system_prompt!r}
MAX_NEW_TOKENS = 256
TOKEN = os.environ.get("HF_TOKEN")  # a Space secret, set only when the model repo is private

tokenizer = AutoTokenizer.from_pretrained(MODEL, token=TOKEN)
if file_exists(MODEL, "adapter_config.json", token=TOKEN):
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(MODEL, token=TOKEN)
else:
    model = AutoModelForCausalLM.from_pretrained(MODEL, token=TOKEN)
model.eval()


def _content(value):
    return value if isinstance(value, str) else str(value)


def respond(message, history):
    messages = [{{"role": "system", "content": SYSTEM_PROMPT}}] if SYSTEM_PROMPT else []
    for turn in history:
        if isinstance(turn, dict):  # messages format
            messages.append({{"role": turn["role"], "content": _content(turn["content"])}})
        else:  # (user, assistant) pairs
            user, assistant = turn
            messages += [{{"role": "user", "content": _content(user)}},
                         {{"role": "assistant", "content": _content(assistant)}}]
    messages.append({{"role": "user", "content": _content(message)}})
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=MAX_NEW_TOKENS)).start()
    text = ""
    for piece in streamer:
        text += piece
        yield text


demo = gr.ChatInterface(respond, title={title!r}, description={description!r})

if __name__ == "__main__":
    demo.launch()
'''


def space_files(ctx: StepContext, target: SpaceTarget) -> dict[str, str]:
    """The Space's files by path (no secret in any of them)."""
    pipeline = ctx.pipeline
    title = f"{pipeline.name} chat"
    description = pipeline.description or f"Chat with {target.model_repo}, fine-tuned with ftpipe."
    meta: dict[str, Any] = {
        "title": title[:60],
        "emoji": "💬",
        "colorFrom": "indigo",
        "colorTo": "blue",
        "sdk": "gradio",
        "app_file": "app.py",
        "pinned": False,
        "models": [target.model_repo],
        "tags": ["ftpipe", "chat"],
        "short_description": description[:60],
    }
    readme = (
        "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n"
        f"# {title}\n\n{description}\n\nA chat demo of [{target.model_repo}](/{target.model_repo}), "
        f"deployed by the ftpipe pipeline `{pipeline.name}`.\n"
    )
    app = APP.format(
        model_repo=target.model_repo,
        pipeline=pipeline.name,
        title=title,
        description=description,
        system_prompt=pipeline.dataset.system_prompt or "",
    )
    files = {"README.md": readme, "app.py": app, "requirements.txt": REQUIREMENTS}
    return {path: redact(text, ctx.secrets) for path, text in files.items()}


class SpaceDeploy:
    """Create or update a Gradio chat demo Space for a Hub model repo."""

    name = "hf-space"
    config_model = SpaceTarget

    def preflight(self, ctx: Any, target: Any) -> list[Any]:
        """Read-only checks before the run starts (ftpipe.preflight)."""
        from ftpipe.deploy import preflight_checks as pc

        return list(pc.hub_repo_checks(ctx, target, kind="Space"))

    def deploy(self, ctx: StepContext) -> StepResult:
        target: SpaceTarget = ctx.options["target"]
        api = hf_api(target.token)
        with hub_errors(f"model {target.model_repo}"):
            model_private = bool(api.model_info(target.model_repo).private)
        with hub_errors(f"space {target.repo}"):
            url = str(
                with_retries(
                    lambda: api.create_repo(
                        target.repo,
                        repo_type="space",
                        space_sdk="gradio",
                        private=target.private,
                        exist_ok=True,
                        space_hardware=target.hardware,
                    ),
                    what=f"create space {target.repo}",
                    log=ctx.log,
                    secrets=ctx.secrets,
                )
            )
            if model_private:
                # Before the upload, so that the first build can read the model.
                with_retries(
                    lambda: api.add_space_secret(
                        target.repo,
                        TOKEN_SECRET,
                        target.token,
                        description="Read access to the private model repo (set by ftpipe)",
                    ),
                    what="set the Space secret",
                    log=ctx.log,
                    secrets=ctx.secrets,
                )
            runtime = api.get_space_runtime(target.repo)
            if (runtime.requested_hardware or runtime.hardware) != target.hardware:
                ctx.log(f"space {target.repo}: requesting hardware {target.hardware}")
                with_retries(
                    lambda: api.request_space_hardware(target.repo, target.hardware),
                    what="request hardware",
                    log=ctx.log,
                    secrets=ctx.secrets,
                )
            with tempfile.TemporaryDirectory(prefix="hf-space-", dir=ctx.state_dir) as tmp:
                folder = Path(tmp)
                for path, text in space_files(ctx, target).items():
                    (folder / path).write_text(text, encoding="utf-8")
                files = list_files(folder)
                info = upload_folder(
                    api,
                    folder,
                    repo_id=target.repo,
                    repo_type="space",
                    revision="main",
                    message=f"ftpipe: chat demo for {target.model_repo}",
                    ctx=ctx,
                )
            stage = api.get_space_runtime(target.repo).stage
        doc = {
            "target": "hf-space",
            "space": target.repo,
            "url": url or repo_url(api, target.repo, "space"),
            "commit": info.oid,
            "model_repo": target.model_repo,
            "hardware": target.hardware,
            "private": target.private,
            "token_secret": model_private,
            "stage": str(stage),
            "files": files,
        }
        write_json(ctx.out_dir / "deploy.json", doc)
        return StepResult(summary=f"space {target.repo}@{info.oid[:10]} ({stage}, {target.hardware})")
