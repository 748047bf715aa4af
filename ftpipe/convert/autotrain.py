"""AutoTrain Advanced LLM config (``autotrain --config``) → ftpipe pipeline.

Every key of the AutoTrain file is either mapped onto the pipeline (``mapped``) or reported
with its line as unsupported (``unsupported``); judgement calls are ``notes``. AutoTrain's
``${VAR}`` references become ``${env:VAR}``; a literal Hub token is never copied.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftpipe.errors import UsageError
from ftpipe.spec.yamlpos import Document, YamlProblem, load_yaml

SCHEMA_FILE = ("schemas", "pipeline.schema.json")
SCHEMA_HINT = (
    "# Editor checks: `ftpipe schema -o pipeline.schema.json`, then put "
    "`# yaml-language-server: $schema=pipeline.schema.json` on this line"
)
# optimizers that bitsandbytes implements on CUDA only
CUDA_OPTIMIZERS = ("8bit", "paged")
LLM_TASKS = {
    "llm-sft": "sft",
    "llm-dpo": "dpo",
    "llm-orpo": "orpo",
    "llm-reward": "reward",
    "llm": "sft",
    "llm-generic": "sft",
}
LOCAL_BACKENDS = ("local", "local-cli", "local-ui")
TEMPLATES = ("none", "zephyr", "chatml", "tokenizer")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# params key -> (hyperparameters key, converter)
HYPER = {
    "epochs": "epochs",
    "lr": "learning_rate",
    "batch_size": "batch_size",
    "block_size": "block_size",
    "model_max_length": "model_max_length",
    "gradient_accumulation": "gradient_accumulation",
    "mixed_precision": "mixed_precision",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "warmup_ratio": "warmup_ratio",
    "weight_decay": "weight_decay",
    "padding": "padding",
    "logging_steps": "logging_steps",
    "dpo_beta": "beta",
    "max_prompt_length": "max_prompt_length",
    "max_completion_length": "max_completion_length",
}
PEFT_KEYS = ("peft", "quantization", "lora_r", "lora_alpha", "lora_dropout", "target_modules")
# AutoTrain parameters ftpipe's autotrain backend does not expose, and why
NOT_EXPOSED = {
    "use_flash_attention_2": "the autotrain backend does not turn on flash attention",
    "disable_gradient_checkpointing": "the autotrain backend keeps AutoTrain's gradient checkpointing on",
    "eval_strategy": "AutoTrain forces valid_split off for LLM tasks; ftpipe's evaluate step scores held-out data",
    "save_total_limit": "AutoTrain saves no checkpoints without a validation split",
    "auto_find_batch_size": "set hyperparameters.batch_size",
    "max_grad_norm": "the autotrain backend keeps AutoTrain's default (1.0)",
    "add_eos_token": "the autotrain backend keeps AutoTrain's default (true)",
    "model_ref": "the autotrain backend trains DPO against the base model (or without one, with PEFT)",
    "unsloth": "the autotrain backend does not use unsloth",
    "distributed_backend": "the autotrain backend leaves the distributed setup to AutoTrain",
}


@dataclass(frozen=True)
class Entry:
    key: str  # dotted path in the AutoTrain file
    line: int
    to: str = ""  # mapped: the pipeline key; unsupported: empty
    reason: str = ""


@dataclass
class Conversion:
    pipeline: dict
    text: str = ""
    mapped: list[Entry] = field(default_factory=list)
    unsupported: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what will fail where it is run (needs CUDA, ...)

    def to_json(self) -> dict:
        return {
            "pipeline": self.pipeline,
            "mapped": [asdict(e) for e in self.mapped],
            "unsupported": [asdict(e) for e in self.unsupported],
            "notes": self.notes,
            "warnings": self.warnings,
        }


def env_refs(value: Any) -> Any:
    """AutoTrain's ``${VAR}`` → ftpipe's ``${env:VAR}``, in every string."""
    if isinstance(value, str):
        return _VAR.sub(r"${env:\1}", value)
    if isinstance(value, list):
        return [env_refs(v) for v in value]
    if isinstance(value, dict):
        return {k: env_refs(v) for k, v in value.items()}
    return value


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and bool(re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value.strip()))


class _Converter:
    def __init__(self, doc: Document, source: str, config_dir: Path, out_dir: Path) -> None:
        self.doc, self.source, self.config_dir, self.out_dir = doc, source, config_dir, out_dir
        self.raw: dict = doc.data
        self.out = Conversion(pipeline={})

    # -- bookkeeping ----------------------------------------------------------
    def line(self, *path: Any) -> int:
        return self.doc.pos(tuple(path), key=True)[0]

    def mapped(self, path: tuple, to: str) -> None:
        self.out.mapped.append(Entry(".".join(map(str, path)), self.line(*path), to=to))

    def unsupported(self, path: tuple, reason: str) -> None:
        self.out.unsupported.append(Entry(".".join(map(str, path)), self.line(*path), reason=reason))

    def fail(self, path: tuple, message: str) -> UsageError:
        line, col = self.doc.pos(path, key=True) if path else (1, 1)
        return UsageError(
            f"{self.source}:{line}:{col}  {message}",
            hint="ftpipe converts AutoTrain's LLM configs: task llm-sft, llm-dpo, llm-orpo, llm-reward",
        )

    # -- the conversion ---------------------------------------------------------
    def run(self) -> Conversion:
        raw = self.raw
        task = raw.get("task")
        if task is None:
            raise self.fail((), "missing 'task': an AutoTrain config names its task (e.g. task: llm-sft)")
        if task not in LLM_TASKS:
            raise self.fail(
                ("task",),
                f"task {task!r} is not an LLM fine-tuning task; ftpipe pipelines fine-tune "
                f"LLMs (AutoTrain tasks: {', '.join(k for k in LLM_TASKS if '-' in k)})",
            )
        self.mapped(("task",), "trainer.method")
        method = self._method(task)
        for key in ("base_model", "data"):
            if key not in raw:
                raise self.fail((), f"missing '{key}': the config has no {key.replace('_', ' ')}")
        data = raw["data"] if isinstance(raw["data"], dict) else {}
        params = raw.get("params") or {}
        hub = raw.get("hub") or {}
        for block, value in (("data", raw["data"]), ("params", params), ("hub", hub)):
            if not isinstance(value, dict):
                raise self.fail((block,), f"'{block}' must be a mapping of keys, got {type(value).__name__}")

        template = data.get("chat_template")
        template = "none" if template in (None, "none", "None") else template
        if template not in TEMPLATES:
            raise self.fail(
                ("data", "chat_template"),
                f"unknown chat_template {template!r} (AutoTrain knows: {', '.join(TEMPLATES)})",
            )
        pipe: dict[str, Any] = {"version": 1, "name": self._name()}
        pipe["description"] = f"Converted from the AutoTrain config {Path(self.source).name} ({task})."
        pipe["dataset"] = self._dataset(data, method, template)
        pipe["model"] = {"base": env_refs(str(raw["base_model"]))}
        self.mapped(("base_model",), "model.base")
        pipe["trainer"] = self._trainer(method, template, params)
        backend = str(raw.get("backend") or "local")
        if backend in LOCAL_BACKENDS or "cpu" in backend:  # a GPU Space has CUDA
            self.out.warnings += cuda_warnings(params)
        if "chat_template" in data:
            self.mapped(("data", "chat_template"), "trainer.chat_template")
        token = self._token_ref(hub)
        deploy = self._hub(hub, token)
        if deploy:
            pipe["deploy"] = deploy
        pipe["executor"] = self._executor(hub, token)
        self._log()
        for key in raw:
            if key not in ("task", "base_model", "project_name", "log", "backend", "data", "params", "hub"):
                self.unsupported((key,), "not an AutoTrain LLM config key (AutoTrain ignores it too)")
        self.out.pipeline = pipe
        self.out.mapped.sort(key=lambda e: e.line)
        self.out.unsupported.sort(key=lambda e: e.line)
        return self.out

    def _method(self, task: str) -> str:
        """AutoTrain takes the trainer from the task's suffix, then lets params.trainer
        override it (its own examples write task: llm with params.trainer: dpo)."""
        params = self.raw.get("params")
        trainer = params.get("trainer") if isinstance(params, dict) else None
        if trainer is None:
            trainer = task.partition("-")[2] or "default"
        else:
            self.mapped(("params", "trainer"), "trainer.method")
        if trainer in ("default", "generic"):
            self.out.notes.append(
                f"task {task} uses AutoTrain's default trainer (plain causal-LM training): it "
                "becomes method sft, which trains the same way on text data"
            )
            return "sft"
        if trainer not in ("sft", "dpo", "orpo", "reward"):
            where = ("params", "trainer") if params and "trainer" in params else ("task",)
            raise self.fail(
                where,
                f"trainer {trainer!r} is not an LLM fine-tuning trainer ftpipe runs (sft, dpo, orpo, reward, default)",
            )
        return trainer

    def _name(self) -> str:
        name = self.raw.get("project_name")
        if name is not None:
            self.mapped(("project_name",), "name")
            name = str(name)
        else:
            name = Path(self.source).stem
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:64] or "autotrain"
        return name if name[0].isalnum() else f"p{name}"[:64]

    # -- dataset ----------------------------------------------------------------
    def _dataset(self, data: dict, method: str, template: str) -> dict:
        path = data.get("path")
        if path is None:
            raise self.fail(("data",), "missing data.path: where the training data is (a folder or a Hub dataset)")
        self.mapped(("data", "path"), "dataset.source")
        train = str(data.get("train_split") or "train")
        if "train_split" in data:
            self.mapped(("data", "train_split"), "dataset.source")
        valid = data.get("valid_split")
        if "valid_split" in data:
            self.mapped(("data", "valid_split"), "dataset.source (validation split)")
        path = env_refs(str(path))
        source = self._source(path, train, None if valid in (None, "") else str(valid))
        ds: dict[str, Any] = {"source": source}
        columns = self._columns(data.get("column_mapping") or {}, method, template)
        if method == "sft":
            ds["format"] = "text" if template == "none" else "chat"
        else:
            ds["format"] = "preference"
        if columns:
            ds["columns"] = columns
        # AutoTrain trains on every row and evaluates nothing; so does this pipeline until
        # an evaluate block is added (then hold out validation/test rows).
        ds["split"] = {"validation": 0.0, "test": 0.0}
        self.out.notes.append(
            "AutoTrain trains on every row: the pipeline holds out nothing (split 0/0); add an "
            "evaluate block and raise dataset.split to compare against baselines"
        )
        return ds

    def _source(self, path: str, train: str, valid: str | None) -> dict:
        base = self.config_dir / os.path.expanduser(path)
        found = {}
        for split in (train, valid):
            if split is None:
                continue
            for ext in ("jsonl", "csv"):  # AutoTrain's own lookup order
                if (base / f"{split}.{ext}").is_file():
                    found[split] = f"{split}.{ext}"
                    break
        looks_local = looks_like_path(path) or base.is_dir()
        if found or looks_local:
            if train not in found:
                self.out.notes.append(
                    f"no {train}.jsonl or {train}.csv under {base}: the pipeline expects {train}.jsonl there"
                )

            def rel(split: str) -> str:
                target = base / found.get(split, f"{split}.jsonl")
                try:
                    return Path(os.path.relpath(target.resolve(), self.out_dir.resolve())).as_posix()
                except ValueError:  # another drive
                    return target.resolve().as_posix()

            if valid:
                return {"type": "local", "path": {"train": rel(train), "validation": rel(valid)}}
            return {"type": "local", "path": rel(train)}
        src: dict[str, Any] = {"type": "hub", "repo": path}
        subset, _, split = train.rpartition(":")
        src["split"] = split
        if subset:
            src["subset"] = subset
        if valid:
            src["splits"] = {"train": split, "validation": valid.rpartition(":")[2]}
        return src

    def _columns(self, mapping: dict, method: str, template: str) -> dict:
        if not isinstance(mapping, dict):
            raise self.fail(("data", "column_mapping"), "column_mapping must be a mapping of keys")
        where = ("data", "column_mapping")
        cols: dict[str, str] = {}
        text = mapping.get("text_column", "text")
        if method == "sft":
            field_name = "text" if template == "none" else "messages"
            if text != field_name:
                cols[field_name] = str(text)
            if "text_column" in mapping:
                self.mapped(where + ("text_column",), f"dataset.columns.{field_name}")
        else:
            for key, fld in (
                ("text_column", "chosen"),
                ("rejected_text_column", "rejected"),
                ("prompt_text_column", "prompt"),
            ):
                if key not in mapping:
                    continue
                if fld == "prompt" and method == "reward":
                    self.unsupported(where + (key,), "AutoTrain's reward trainer reads no prompt column")
                    continue
                if str(mapping[key]) != fld:
                    cols[fld] = str(mapping[key])
                self.mapped(where + (key,), f"dataset.columns.{fld}")
            if method == "reward":
                self.out.notes.append(
                    "ftpipe's preference format reads prompt/chosen/rejected: reward data whose "
                    "chosen and rejected hold whole conversations needs a prompt column too "
                    "(dataset.columns.prompt)"
                )
            elif "prompt_text_column" not in mapping:
                self.out.notes.append(
                    "no prompt_text_column: ftpipe's preference format reads the prompt from a "
                    "'prompt' column (map yours with dataset.columns.prompt); data whose chosen "
                    "conversations carry the prompt need one added"
                )
            elif template != "none":
                self.out.notes.append(
                    "with a chat template AutoTrain takes the prompt from the chosen conversation; "
                    "ftpipe reads it from the prompt column and the reply from the last "
                    "assistant message of chosen/rejected"
                )
        if method == "sft":
            for key in ("rejected_text_column", "prompt_text_column"):
                if key in mapping:
                    self.unsupported(where + (key,), f"{key} applies to dpo, orpo and reward; sft reads text_column")
        for key in mapping:
            if key not in ("text_column", "rejected_text_column", "prompt_text_column"):
                self.unsupported(
                    where + (key,), "not an LLM column (text_column, rejected_text_column, prompt_text_column)"
                )
        for key in data_keys_unknown(self.raw.get("data") or {}):
            self.unsupported(("data", key), "not an AutoTrain data key for LLM tasks")
        return cols

    # -- trainer ------------------------------------------------------------------
    def _trainer(self, method: str, template: str, params: dict) -> dict:
        hp: dict[str, Any] = {}
        trainer: dict[str, Any] = {"backend": "autotrain", "method": method, "chat_template": template}
        for key, value in params.items():
            where = ("params", key)
            if key in HYPER:
                target = HYPER[key]
                if key == "mixed_precision":
                    value = "no" if value in (None, "none", "no") else value
                if key == "block_size" and isinstance(value, list):
                    self.unsupported(where, "a list of block sizes is not supported: give one number")
                    continue
                if key == "dpo_beta" and method != "dpo":
                    self.unsupported(where, f"AutoTrain's {method} trainer ignores dpo_beta")
                    continue
                if key in ("max_prompt_length", "max_completion_length") and method not in ("dpo", "orpo"):
                    self.unsupported(where, f"AutoTrain's {method} trainer ignores {key}")
                    continue
                if value is None and key == "max_completion_length":
                    self.mapped(where, f"trainer.hyperparameters.{target}")
                    continue
                value = env_refs(value)
                hp[target] = (
                    value if key in ("mixed_precision", "optimizer", "scheduler", "padding") else _number(value)
                )
                self.mapped(where, f"trainer.hyperparameters.{target}")
            elif key == "seed":
                trainer["seed"] = value
                self.mapped(where, "trainer.seed")
            elif key == "merge_adapter":
                trainer["merge_adapter"] = bool(value)
                self.mapped(where, "trainer.merge_adapter")
            elif key in PEFT_KEYS or key == "trainer":
                continue  # below; trainer: see _method
            elif key in NOT_EXPOSED:
                self.unsupported(where, NOT_EXPOSED[key])
            elif key in (
                "text_column",
                "rejected_text_column",
                "prompt_text_column",
                "chat_template",
                "project_name",
                "model",
                "data_path",
                "train_split",
                "valid_split",
                "username",
                "token",
                "push_to_hub",
                "log",
            ):
                self.unsupported(
                    where, "belongs in its own block of the AutoTrain config (data, hub, top level), not in params"
                )
            else:
                self.unsupported(where, "not an AutoTrain LLM parameter")
        trainer["peft"] = self._peft(params)
        trainer.setdefault("merge_adapter", False)  # AutoTrain's default (ftpipe's is true)
        if hp:
            trainer["hyperparameters"] = hp
        return trainer

    def _peft(self, params: dict) -> dict:
        given = [k for k in PEFT_KEYS if k in params]
        if not params.get("peft"):
            if "peft" in params:
                self.mapped(("params", "peft"), "trainer.peft.type")
            for key in given:
                if key != "peft":
                    self.unsupported(("params", key), "peft is false: LoRA and quantization settings do not apply")
            return {"type": "none"}
        self.mapped(("params", "peft"), "trainer.peft.type")
        quant = params.get("quantization", "int4")  # AutoTrain's default
        peft: dict[str, Any]
        if quant in (None, "none", "None"):
            peft = {"type": "lora"}
        elif quant in ("int4", "int8"):
            peft = {"type": "qlora", "bits": 4 if quant == "int4" else 8}
        else:
            self.unsupported(("params", "quantization"), f"unknown quantization {quant!r} (int4, int8 or none)")
            peft = {"type": "lora"}
        if "quantization" in params and quant in (None, "none", "None", "int4", "int8"):
            self.mapped(("params", "quantization"), "trainer.peft.type/bits")
        if "quantization" not in params:
            self.out.notes.append(
                "params.quantization is not set: AutoTrain's default int4 becomes peft qlora with 4 bits"
            )
        # AutoTrain's LoRA defaults differ from ftpipe's: write them out
        peft["r"] = params.get("lora_r", 16)
        peft["alpha"] = params.get("lora_alpha", 32)
        peft["dropout"] = params.get("lora_dropout", 0.05)
        for key, to in (("lora_r", "r"), ("lora_alpha", "alpha"), ("lora_dropout", "dropout")):
            if key in params:
                self.mapped(("params", key), f"trainer.peft.{to}")
        modules = params.get("target_modules")
        if "target_modules" in params:
            self.mapped(("params", "target_modules"), "trainer.peft.target_modules")
        if modules and str(modules).strip().lower() != "all-linear":
            peft["target_modules"] = [m.strip() for m in str(modules).split(",") if m.strip()]
        return peft

    # -- hub, executor, log ------------------------------------------------------------
    def _token_ref(self, hub: dict) -> str | None:
        token = hub.get("token")
        if token is None:
            return None
        if _is_ref(token):
            return env_refs(str(token).strip())
        self.out.notes.append(
            "hub.token holds a literal value: it is not copied (secrets are read from the "
            "environment); the pipeline reads ${env:HF_TOKEN}"
        )
        return "${env:HF_TOKEN}"

    def _hub(self, hub: dict, token: str | None) -> list[dict]:
        where = ("hub",)
        for key in hub:
            if key not in ("username", "token", "push_to_hub"):
                self.unsupported(where + (key,), "not an AutoTrain hub key (username, token, push_to_hub)")
        if not hub.get("push_to_hub"):
            if "push_to_hub" in hub:
                self.mapped(where + ("push_to_hub",), "deploy (none)")
            for key in ("username", "token"):
                if key in hub:
                    self.mapped(
                        where + (key,),
                        "not needed without push_to_hub"
                        if not str(self.raw.get("backend", "")).startswith("spaces-")
                        else "executor",
                    )
            return []
        self.mapped(where + ("push_to_hub",), "deploy[0] (hf-hub)")
        user = hub.get("username")
        project = self.raw.get("project_name")
        if not user or not project:
            self.unsupported(
                where + ("push_to_hub",),
                "push_to_hub needs hub.username and project_name to name the repo; add a deploy target by hand",
            )
            return []
        self.mapped(where + ("username",), "deploy[0].repo")
        target: dict[str, Any] = {"type": "hf-hub", "repo": f"{env_refs(str(user))}/{project}", "private": True}
        if token:
            self.mapped(where + ("token",), "deploy[0].token")
            target["token"] = token
        return [target]

    def _executor(self, hub: dict, token: str | None) -> dict:
        backend = self.raw.get("backend")
        if backend is None:
            return {"type": "local"}
        backend = str(backend)
        if backend in LOCAL_BACKENDS:
            self.mapped(("backend",), "executor.type")
            return {"type": "local"}
        if backend.startswith("spaces-"):
            self.mapped(("backend",), "executor (hf-spaces)")
            ex: dict[str, Any] = {"type": "hf-spaces", "hardware": backend.removeprefix("spaces-")}
            if hub.get("username"):
                ex["namespace"] = env_refs(str(hub["username"]))
            if token and token != "${env:HF_TOKEN}":
                ex["token"] = token
            return ex
        self.unsupported(
            ("backend",),
            f"backend {backend!r} (endpoints, NGC, NVCF, DGX) has no ftpipe executor: "
            "the pipeline runs locally (executor hf-spaces or ray run it elsewhere)",
        )
        return {"type": "local"}

    def _log(self) -> None:
        if "log" not in self.raw:
            return
        if str(self.raw["log"]).lower() in ("none", "null"):
            self.mapped(("log",), "(nothing: no tracker)")
        else:
            self.unsupported(
                ("log",),
                f"log {self.raw['log']!r}: the autotrain backend runs AutoTrain without an "
                "experiment tracker; ftpipe records loss and metrics per run (ftpipe runs show)",
            )


def _number(value: Any) -> Any:
    # YAML 1.1 reads 1e-5 (no dot) as text; AutoTrain's pydantic coerces it, so do the same
    if isinstance(value, str):
        try:
            return int(value) if re.fullmatch(r"[+-]?\d+", value) else float(value)
        except ValueError:
            return value
    return value


def schema_modeline(out_dir: Path) -> str:
    """The ``$schema`` modeline for a pipeline written into ``out_dir``: the nearest
    ``schemas/pipeline.schema.json`` walking up (an ftpipe checkout, or a repository that
    committed `ftpipe schema` output), relative to the file; else how to get one."""
    start = out_dir.resolve()
    for d in [start, *start.parents]:
        candidate = d.joinpath(*SCHEMA_FILE)
        if candidate.is_file():
            rel = Path(os.path.relpath(candidate, start)).as_posix()
            return f"# yaml-language-server: $schema={rel}"
    return SCHEMA_HINT


def looks_like_path(value: str) -> bool:
    """A data path rather than a Hub dataset id (``namespace/name`` or ``name``): it is
    relative or absolute by its form, ends with a slash, has more than one slash or a
    backslash, or names a data file. Checked before the folder exists (it may be created
    later), so ``data/`` stays local."""
    return (
        value.startswith(("./", "../", "/", "~", "."))
        or "\\" in value
        or value.count("/") > 1
        or value.endswith(("/", ".jsonl", ".json", ".csv", ".parquet"))
    )


def cuda_warnings(params: dict) -> list[str]:
    """AutoTrain settings that need a CUDA GPU: a CPU run fails with them."""
    out = []
    if params.get("peft") and params.get("quantization", "int4") in ("int4", "int8"):
        quant = params.get("quantization", "int4")
        out.append(
            f"quantization {quant} (QLoRA) needs a CUDA GPU with bitsandbytes: on a CPU set "
            "params.quantization: none (peft lora)"
        )
    if str(params.get("mixed_precision") or "").lower() == "bf16":
        out.append(
            "mixed_precision bf16 needs a GPU with bf16 support (CUDA, Ampere or newer): on a CPU set "
            "trainer.hyperparameters.mixed_precision: 'no'"
        )
    optimizer = str(params.get("optimizer") or "")
    if any(tag in optimizer.lower() for tag in CUDA_OPTIMIZERS):
        out.append(f"optimizer {optimizer} (bitsandbytes) needs a CUDA GPU: on a CPU use adamw_torch")
    return out


def data_keys_unknown(data: dict) -> list[str]:
    return [k for k in data if k not in ("path", "train_split", "valid_split", "chat_template", "column_mapping")]


# --------------------------------------------------------------------------- text


def render(conv: Conversion, *, source: str, output: str | None) -> str:
    """The pipeline as YAML with the modeline, the command that runs it, and what was
    not carried over."""
    run_as = output or "pipeline.yaml"
    lines = [
        schema_modeline(Path(output).parent if output else Path(source).parent),
        f"# Run it:  ftpipe run {run_as}",
        f"# Converted from the AutoTrain config {source} by `ftpipe convert autotrain`.",
    ]
    if conv.unsupported:
        lines.append("# Not carried over (AutoTrain keys with no ftpipe equivalent):")
        lines += [f"#   {source}:{e.line}  {e.key}: {e.reason}" for e in conv.unsupported]
    if conv.warnings:
        lines.append("# Warnings:")
        lines += [f"#   - {w}" for w in conv.warnings]
    if conv.notes:
        lines.append("# Notes:")
        lines += [f"#   - {n}" for n in conv.notes]
    body = yaml.safe_dump(conv.pipeline, sort_keys=False, allow_unicode=True, width=100)
    return "\n".join(lines) + "\n" + body


def convert_text(text: str, *, source: str, config_dir: Path, out_dir: Path) -> Conversion:
    """Convert the AutoTrain config ``text``. Raises ``UsageError`` (exit 2) for a file that
    is not an LLM config."""
    try:
        doc = load_yaml(text)
    except YamlProblem as exc:
        raise UsageError(f"{source}:{exc.line}:{exc.col}  {exc.message}") from None
    if not isinstance(doc.data, dict):
        raise UsageError(f"{source}:1:1  an AutoTrain config is a mapping of keys (task, base_model, data, ...)")
    return _Converter(doc, source, config_dir, out_dir).run()


def convert_file(path: Path, *, output: Path | None = None) -> Conversion:
    """Convert the AutoTrain config at ``path``; relative data paths in the result are
    relative to ``output``'s folder (or the config's, when printing)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no AutoTrain config at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    out_dir = output.parent if output else path.parent
    conv = convert_text(text, source=str(path), config_dir=path.parent, out_dir=out_dir)
    conv.text = render(conv, source=str(path), output=str(output) if output else None)
    return conv
