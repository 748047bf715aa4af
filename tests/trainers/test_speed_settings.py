"""The trl backend's machine-dependent defaults (ftpipe.trainers.trl_args.speed_settings),
decided from a capabilities description so that the GPU choices are checked on any machine,
and the TRL config they produce (the installed TRL must accept every argument chosen)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ftpipe.trainers.trl_args import Capabilities, SpeedSettings, speed_settings, training_config

_spec = importlib.util.spec_from_file_location("trl_fakes", Path(__file__).with_name("trl_fakes.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]

HP = {"mixed_precision": "auto", "packing": False, "max_seq_length": 256}
EVERYTHING = Capabilities(cuda=True, bf16=True, flash_attn=True, liger_kernel=True)


def test_cpu_changes_nothing() -> None:
    for caps in (Capabilities(), Capabilities(flash_attn=True, liger_kernel=True)):
        assert speed_settings(caps, method="sft", hyperparameters=HP, longest_row=10) == SpeedSettings(
            {"fp16": False, "bf16": False}, None
        )


def test_gpu_with_every_package() -> None:
    chosen = speed_settings(EVERYTHING, method="sft", hyperparameters=HP, longest_row=200)
    assert chosen.attn_implementation == "flash_attention_2"
    assert chosen.config == {
        "fp16": False,
        "bf16": True,
        "use_liger_kernel": True,
        "padding_free": True,
        "max_length": None,  # padding-free batches are not truncated: every row fits
    }


def test_plain_gpu_gets_sdpa_and_fp16_without_bf16() -> None:
    chosen = speed_settings(Capabilities(cuda=True), method="sft", hyperparameters=HP, longest_row=10)
    assert chosen == SpeedSettings({"fp16": True, "bf16": False}, "sdpa")


def test_padding_free_only_when_it_cannot_change_what_is_trained() -> None:
    # a row that TRL would truncate (or nearly): padded batches keep max_length
    for longest in (None, 250, 256, 400):
        chosen = speed_settings(EVERYTHING, method="sft", hyperparameters=HP, longest_row=longest)
        assert "padding_free" not in chosen.config and "max_length" not in chosen.config, longest
    # packing: TRL packs padding-free itself; other methods: no padding-free collator
    chosen = speed_settings(EVERYTHING, method="sft", hyperparameters=HP | {"packing": True}, longest_row=10)
    assert "padding_free" not in chosen.config
    chosen = speed_settings(EVERYTHING, method="dpo", hyperparameters=HP, longest_row=10)
    assert "padding_free" not in chosen.config and chosen.config["use_liger_kernel"] is True
    # full precision asked for: flash attention (16-bit only) and padding-free stay off
    chosen = speed_settings(EVERYTHING, method="sft", hyperparameters=HP | {"mixed_precision": "no"}, longest_row=10)
    assert chosen == SpeedSettings({"fp16": False, "bf16": False, "use_liger_kernel": True}, "sdpa")


def test_the_users_explicit_settings_win() -> None:
    explicit = {"padding_free", "use_liger_kernel"}
    chosen = speed_settings(EVERYTHING, method="sft", hyperparameters=HP, explicit=explicit, longest_row=10)
    assert chosen.config == {"fp16": False, "bf16": True}
    chosen = speed_settings(EVERYTHING, method="sft", hyperparameters=HP | {"mixed_precision": "fp16"}, longest_row=10)
    assert (chosen.config["fp16"], chosen.config["bf16"]) == (True, False)


def test_the_installed_trl_takes_the_chosen_arguments(tmp_path: Path) -> None:
    from ftpipe.trainers.trl_backend import build_job

    ctx = fakes.make_ctx(tmp_path, peft={"type": "none"}, hyperparameters={"max_seq_length": 256})
    job = build_job(ctx)
    assert "max_seq_length" in job.explicit and "padding_free" not in job.explicit
    assert job.longest_row is None  # the test's prepared folder has no stats.json
    hp = job.hyperparameters | {"mixed_precision": "auto"}
    speed = speed_settings(EVERYTHING, method="sft", hyperparameters=hp, longest_row=100)
    assert speed.config["bf16"] is True
    cfg, _ = training_config(job, fp16=False, bf16=False, speed=speed.config)  # bf16 itself needs a GPU here
    assert (cfg.padding_free, cfg.max_length, cfg.use_liger_kernel) == (True, None, True)
    cfg, _ = training_config(job, fp16=False, bf16=False)
    assert (cfg.padding_free, cfg.max_length, cfg.use_liger_kernel) == (False, 256, False)
