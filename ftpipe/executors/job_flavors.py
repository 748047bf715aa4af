"""Hugging Face Jobs hardware flavors, as ``huggingface_hub.JobHardware`` lists them.

Kept here so that ``ftpipe validate`` checks ``executor.flavor`` without importing
huggingface_hub; tests/executors/test_jobs_executor.py fails when the installed client's
list differs, and the executor checks the client's own list again before submitting.
"""

from __future__ import annotations

FLAVORS: tuple[str, ...] = (
    "cpu-basic",
    "cpu-upgrade",
    "cpu-performance",
    "cpu-xl",
    "t4-small",
    "t4-medium",
    "l4x1",
    "l4x4",
    "l40sx1",
    "l40sx4",
    "l40sx8",
    "a10g-small",
    "a10g-large",
    "a10g-largex2",
    "a10g-largex4",
    "a100-large",
    "a100x4",
    "a100x8",
    "h200",
    "h200x2",
    "h200x4",
    "h200x8",
    "rtx-pro-6000",
    "rtx-pro-6000x2",
    "rtx-pro-6000x4",
    "rtx-pro-6000x8",
)
