"""The loopback Hub's Jobs and scheduled-Jobs routes, driven by the official client."""

from __future__ import annotations

import sys

import pytest

from tests.fakes.hub_server import HubServer, hub_fixture  # noqa: F401 - registers the `hub` fixture


def test_jobs_run_log_finish_and_are_found_by_label(hub: HubServer) -> None:
    from huggingface_hub import HfApi, JobStage

    api = HfApi()
    assert "cpu-basic" in [h.name for h in api.list_jobs_hardware()]
    hub.jobs.job_env = {"PATH": "/usr/bin:/bin"}
    job = api.run_job(
        image="python:3.12",
        command=[sys.executable, "-c", "import os; print('hi', os.environ['X'])"],
        env={"A": "1"},
        secrets={"X": "s3cret"},
        flavor="cpu-basic",
        timeout="5m",
        labels={"who": "me"},
    )
    assert job.status.stage == JobStage.SCHEDULING and job.owner.name == "tester"
    done = api.wait_for_job(job.id, timeout=60, poll_interval=0.05)
    assert done.status.stage == JobStage.COMPLETED and done.started_at and done.finished_at
    assert list(api.fetch_job_logs(job_id=job.id)) == ["hi s3cret"]  # the "Job started" line is dropped
    info = api.inspect_job(job_id=job.id)
    assert info.environment == {"A": "1"} and set(info.secrets or {}) == {"X"} and "s3cret" not in str(info)
    assert info.labels == {"who": "me", "name": info.labels["name"]} and info.flavor == "cpu-basic"
    assert [j.id for j in api.list_jobs(labels={"who": "me"})] == [job.id]
    assert list(api.list_jobs(labels={"who": "you"})) == []
    assert [j.id for j in api.list_jobs(status="COMPLETED")] == [job.id]


def test_a_failing_job_errors_and_a_running_one_can_be_cancelled(hub: HubServer) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    hub.jobs.job_env = {"PATH": "/usr/bin:/bin"}
    bad = api.run_job(image="python:3.12", command=[sys.executable, "-c", "raise SystemExit(3)"])
    assert api.wait_for_job(bad.id, timeout=60, poll_interval=0.05).status.stage == "ERROR"
    slow = api.run_job(image="python:3.12", command=[sys.executable, "-c", "import time; time.sleep(30)"])
    api.wait_for_job(slow.id, stages=["RUNNING"], timeout=60, poll_interval=0.05)
    api.cancel_job(job_id=slow.id)
    assert api.wait_for_job(slow.id, timeout=30, poll_interval=0.05).status.stage == "CANCELED"


def test_scheduled_jobs_crud(hub: HubServer) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    sj = api.create_scheduled_job(
        image="python:3.12", command=["true"], schedule="@daily", secrets={"T": "v"}, labels={"p": "x"}
    )
    assert sj.schedule == "@daily" and sj.suspend is False and set(sj.job_spec.secrets or {}) == {"T"}
    assert [s.id for s in api.list_scheduled_jobs(labels={"p": "x"})] == [sj.id]
    assert api.update_scheduled_job_schedule(scheduled_job_id=sj.id, schedule="0 1 * * *").schedule == "0 1 * * *"
    api.suspend_scheduled_job(scheduled_job_id=sj.id)
    assert api.inspect_scheduled_job(scheduled_job_id=sj.id).suspend is True
    api.resume_scheduled_job(scheduled_job_id=sj.id)
    api.delete_scheduled_job(scheduled_job_id=sj.id)
    assert api.list_scheduled_jobs() == []
    with pytest.raises(HfHubHTTPError):
        api.inspect_scheduled_job(scheduled_job_id=sj.id)
