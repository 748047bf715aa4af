"""The openai trainer backend against the loopback double (tests/fakes/openai_server.py),
driven by the official client with strict response validation: whole pipelines through
``ftpipe.engine.execute``, faults, a killed runner, ``ftpipe cancel``, and the pre-upload
data checks."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest

from ftpipe.contracts import ModelRef, StepContext
from ftpipe.engine import RunOutcome, execute
from ftpipe.engine import prepare as prepare_run
from ftpipe.errors import RemoteError, StepError
from ftpipe.progress import Reporter
from ftpipe.spec.models import OpenAITrainer
from ftpipe.trainers import openai_data
from ftpipe.trainers.openai_backend import OpenAIBackend
from tests.fakes.hosted_data import QA
from tests.fakes.openai_server import (
    OpenAIServer,
    openai_client,
    openai_server_fixture,  # noqa: F401
)
from tests.procs import sigint_default

REPO = Path(__file__).resolve().parents[2]
BASE = "gpt-4o-mini-2024-07-18"
JOB_GET = re.compile(r"/v1/fine_tuning/jobs/ftjob-[^/?]+$")


@pytest.fixture(autouse=True)
def strict_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production code builds `openai.OpenAI(...)`; in these tests that client also checks
    every answer against its own types."""
    import openai

    class StrictOpenAI(openai.OpenAI):
        def __init__(self, *args, **kwargs) -> None:
            kwargs["_strict_response_validation"] = True
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(openai, "OpenAI", StrictOpenAI)


def write_pipeline(
    folder: Path,
    server: OpenAIServer,
    *,
    trainer: str = "",
    fmt: str = "chat",
    rows: list[dict] | None = None,
    dataset: str = "",
    interval: float = 0.01,
    hyperparameters: str = "{n_epochs: 2}",
) -> Path:
    if rows is None:
        if fmt == "preference":
            rows = [{"prompt": q, "chosen": a, "rejected": "No idea."} for q, a in QA]
        else:
            rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = f"""\
version: 1
name: oai-test
dataset:
  source: {{type: local, path: data.jsonl}}
  format: {fmt}
  split: {{validation: 0.1, test: 0.1, seed: 1}}
{dataset}model:
  base: {BASE}
trainer:
  backend: openai
  method: {"dpo" if fmt == "preference" else "sft"}
  suffix: recipes
  seed: 7
  hyperparameters: {hyperparameters}
  api_key: ${{env:OPENAI_API_KEY}}
  base_url: {server.url}/v1
  poll: {{interval: {interval}, max_interval: {interval * 5}, timeout_minutes: 2}}
{trainer}"""
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIServer) -> OpenAIServer:
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    return openai_server


def run(path: Path, **kw: Any) -> RunOutcome:
    return execute(path, reporter=Reporter(quiet=True), **kw)


def store_of(path: Path) -> Path:
    return path.parent / ".ftpipe"


def train_dir(path: Path, outcome: RunOutcome) -> Path:
    return store_of(path) / outcome.record["steps"]["train"]["artifact"]


def train_log(path: Path, outcome: RunOutcome) -> str:
    return (store_of(path) / outcome.record["steps"]["train"]["log"]).read_text()


def only_job(server: OpenAIServer) -> dict:
    assert len(server.jobs) == 1, f"expected exactly one job, got {list(server.jobs)}"
    return next(iter(server.jobs.values()))


def requests(server: OpenAIServer, method: str, pattern: str) -> list[str]:
    return [unquote(p) for m, p, _, _ in server.requests if m == method and re.search(pattern, p.split("?")[0])]


def assert_model(path: Path, outcome: RunOutcome, job: dict) -> ModelRef:
    ref = ModelRef.read(train_dir(path, outcome))
    assert ref.kind == "hosted" and ref.provider == "openai" and ref.base == BASE
    assert ref.model_id == job["fine_tuned_model"] and ref.job_id == job["id"]
    return ref


# --------------------------------------------------------------------------- happy path


def test_pipeline_trains_on_the_service_and_records_the_model(tmp_path: Path, env: OpenAIServer) -> None:
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    job = only_job(env)
    assert job["status"] == "succeeded"
    assert_model(path, outcome, job)
    key = outcome.record["steps"]["train"]["key"]
    assert job["metadata"]["ftpipe_key"] == key and job["metadata"]["ftpipe_step"] == "train"
    assert job["metadata"]["ftpipe_run"] == outcome.run_id
    assert job["method"]["type"] == "supervised" and job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert (job["user_provided_suffix"], job["seed"]) == ("recipes", 7)
    # both splits were uploaded, in the service's format
    train = json.loads(env.file_content(job["training_file"]).splitlines()[0])
    assert set(train) == {"messages"} and train["messages"][-1]["role"] == "assistant"
    assert job["validation_file"] in env.files

    metrics = outcome.record["steps"]["train"]["metrics"]
    assert metrics["trained_tokens"] == job["trained_tokens"] and metrics["n_epochs"] == 2
    assert isinstance(metrics["train_loss"], float) and isinstance(metrics["valid_loss"], float)
    assert metrics["checkpoints"] and metrics["checkpoints"][-1]["step"] == metrics["steps"]
    assert json.loads((train_dir(path, outcome) / "loss.json").read_text())[0]["step"] == 1

    log = train_log(path, outcome)  # the service's events, oldest first
    order = [
        log.index(m)
        for m in (
            "Created fine-tuning job",
            "Fine-tuning job started",
            "Step 1/",
            "New fine-tuned model created",
            "The job has successfully completed",
        )
    ]
    assert order == sorted(order)
    assert log.count("Created fine-tuning job") == 1

    # an unchanged pipeline is a cache hit: nothing more is sent to the service
    before = len(env.requests)
    again = run(path)
    assert again.exit_code == 0 and again.record["steps"]["train"]["status"] == "cached"
    assert len(env.requests) == before


def test_dpo_sends_the_preference_format_and_beta(tmp_path: Path, env: OpenAIServer) -> None:
    path = write_pipeline(tmp_path, env, fmt="preference", hyperparameters="{n_epochs: 1, beta: 0.2}")
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    job = only_job(env)
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    line = json.loads(env.file_content(job["training_file"]).splitlines()[0])
    assert set(line) == {"input", "preferred_output", "non_preferred_output"}
    assert line["non_preferred_output"] == [{"role": "assistant", "content": "No idea."}]


# --------------------------------------------------------------------------- faults: never a second job


def test_rate_limits_are_waited_out(tmp_path: Path, env: OpenAIServer) -> None:
    env.inject("POST", r"/files$", 429, times=2)
    env.inject("POST", r"/fine_tuning/jobs$", 429, times=3)
    env.inject("GET", JOB_GET.pattern, 429, times=2)
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    assert_model(path, outcome, only_job(env))
    assert "trying again" in train_log(path, outcome)


@pytest.mark.parametrize("fault", [500, "drop"])
def test_create_that_failed_after_the_job_was_stored_makes_no_duplicate(
    tmp_path: Path, env: OpenAIServer, fault
) -> None:
    env.inject("POST", r"/fine_tuning/jobs$", fault, after_handling=True)
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    assert_model(path, outcome, only_job(env))
    assert "had stored it: re-attached" in train_log(path, outcome)


def test_create_that_failed_before_storing_is_retried(tmp_path: Path, env: OpenAIServer) -> None:
    env.inject("POST", r"/fine_tuning/jobs$", 500, times=2)
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 0
    assert_model(path, outcome, only_job(env))
    assert len(requests(env, "POST", r"/fine_tuning/jobs$")) == 3


def test_dropped_connections_while_polling(tmp_path: Path, env: OpenAIServer) -> None:
    # more drops in a row than the client retries: the poll loop itself carries on
    env.inject("GET", JOB_GET.pattern, "drop", times=4)
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    assert_model(path, outcome, only_job(env))
    assert "(the job is unaffected): attempt 1/" in train_log(path, outcome)


def test_a_job_found_by_its_tags_is_re_attached(tmp_path: Path, env: OpenAIServer) -> None:
    """A run killed between creating the job and recording it: the next run finds the job
    by its metadata instead of submitting another."""
    path = write_pipeline(tmp_path, env)
    key = prepare_run(path).plan.step("train").key
    client = openai_client(env)
    rows = "".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
        for q, a in QA
    )
    file_id = client.files.create(file=("t.jsonl", rows.encode(), "application/jsonl"), purpose="fine-tune").id
    earlier = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=file_id,
        suffix="recipes",
        metadata={"ftpipe_key": key, "ftpipe_step": "train", "ftpipe_run": "x"},
    )
    outcome = run(path)
    assert outcome.exit_code == 0
    job = only_job(env)
    assert job["id"] == earlier.id
    assert_model(path, outcome, job)
    assert "found on the service" in train_log(path, outcome)
    assert requests(env, "POST", r"/v1/files$") == ["/v1/files"]  # only the test's own upload


# --------------------------------------------------------------------------- job outcomes


def test_failed_job_fails_the_step_with_the_service_message(tmp_path: Path, env: OpenAIServer) -> None:
    env.set_job_outcome("failed", code="quota_exceeded", message="Fine-tuning quota exceeded for this organization.")
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 1
    error = outcome.record["steps"]["train"]["error"]
    assert "Fine-tuning quota exceeded for this organization." in error and "quota_exceeded" in error
    assert only_job(env)["id"] in error

    # the next run submits a new job (the failed one is not re-attached)
    again = run(path)
    assert again.exit_code == 0
    assert len(env.jobs) == 2
    succeeded = [j for j in env.jobs.values() if j["status"] == "succeeded"]
    assert len(succeeded) == 1 and ModelRef.read(train_dir(path, again)).model_id == succeeded[0]["fine_tuned_model"]
    assert "ended failed: submitting a new job" in train_log(path, again)


def test_cancelled_job_fails_the_step(tmp_path: Path, env: OpenAIServer) -> None:
    env.set_job_outcome("cancelled")
    path = write_pipeline(tmp_path, env)
    outcome = run(path)
    assert outcome.exit_code == 1
    assert "cancelled" in outcome.record["steps"]["train"]["error"]
    assert only_job(env)["status"] == "cancelled"


def test_poll_timeout_leaves_the_job_running_and_says_how_to_cancel(tmp_path: Path, env: OpenAIServer) -> None:
    env.steps_per_state = 100_000
    path = write_pipeline(tmp_path, env)
    path.write_text(path.read_text().replace("timeout_minutes: 2", "timeout_minutes: 0.002"))
    outcome = run(path)
    assert outcome.exit_code == 1
    error = outcome.record["steps"]["train"]["error"]
    assert "is still validating_files after 0.002 minutes" in error and f"ftpipe cancel {outcome.run_id}" in error
    assert only_job(env)["status"] == "validating_files"


def test_wrong_key_names_status_code_request_and_what_to_do(
    tmp_path: Path, env: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-the-right-key-0123456789")
    path = write_pipeline(tmp_path, env)
    # the preflight check finds it before anything is uploaded (exit 2)...
    from ftpipe.preflight import PreflightFailed

    with pytest.raises(PreflightFailed) as refused:
        run(path)
    assert "status 401" in str(refused.value) and "OPENAI_API_KEY" in str(refused.value)
    assert "sk-not-the-right-key-0123456789" not in str(refused.value) and env.files == {}
    # ...and the train step itself says the same when the checks are skipped
    outcome = run(path, preflight=False)
    assert outcome.exit_code == 1
    error = outcome.record["steps"]["train"]["error"]
    assert "status 401" in error and "invalid_api_key" in error and re.search(r"request req_[0-9a-f]+", error)
    assert "OPENAI_API_KEY" in error  # the hint
    assert "sk-not-the-right-key-0123456789" not in error
    assert env.jobs == {}


def test_secrets_never_reach_the_run_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-ftpipe-secret-7f3a9c1e5b2d4f6a8c0e"
    with OpenAIServer(api_key=key) as server:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        server.set_job_outcome("failed", message="boom")
        path = write_pipeline(tmp_path, server)
        assert run(path).exit_code == 1
        assert run(path).exit_code == 0
    files = [p for p in store_of(path).rglob("*") if p.is_file()]
    assert len(files) > 10
    for f in files:
        assert key.encode() not in f.read_bytes(), f


# --------------------------------------------------------------------------- checks before upload


def _ctx(tmp_path: Path, server: OpenAIServer, prepare: Path, **trainer) -> tuple[StepContext, list[str]]:
    cfg = OpenAITrainer.model_validate(
        {
            "backend": "openai",
            "api_key": server.api_key,
            "base_url": server.url + "/v1",
            "poll": {"interval": 0.01},
            **trainer,
        },
        context={"resolved": True},
    )
    pipeline = SimpleNamespace(name="t", trainer=cfg, model=SimpleNamespace(base=BASE))
    logs: list[str] = []
    for d in ("out", "state", "cache"):
        (tmp_path / d).mkdir(exist_ok=True)
    ctx = StepContext(
        run_id="r1",
        step_id="train",
        pipeline=pipeline,
        pipeline_path=tmp_path / "p.yaml",
        out_dir=tmp_path / "out",
        inputs={"prepare": prepare},
        state_dir=tmp_path / "state",
        cache_dir=tmp_path / "cache",
        log=logs.append,
        progress=lambda *a: None,
        cache_key="k" * 64,
    )
    return ctx, logs


def _prepared(tmp_path: Path, train: list, validation: list = ()) -> Path:
    folder = tmp_path / "prepare"
    folder.mkdir(exist_ok=True)
    for name, rows in (("train", train), ("validation", validation), ("test", [])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def test_data_the_service_would_reject_is_never_uploaded(tmp_path: Path, openai_server: OpenAIServer) -> None:
    good = [_chat(q, a) for q, a in QA[:12]]
    bad = list(good)
    bad[1] = {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    bad[4] = {"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "x"}]}
    bad[6] = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}
    bad[8] = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}
    validation = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]}]
    ctx, _ = _ctx(tmp_path, openai_server, _prepared(tmp_path, bad, validation))
    with pytest.raises(StepError) as err:
        OpenAIBackend().train(ctx)
    msg = str(err.value)
    assert "nothing was uploaded (5 problems)" in msg
    assert "train.jsonl line 2: [unknown role] messages message 1 has role 'robot'" in msg
    assert "train.jsonl line 5: [empty content]" in msg
    assert "train.jsonl line 7: [no assistant turn]" in msg
    assert "train.jsonl line 9: [weight]" in msg
    assert "validation.jsonl line 1: [content not text]" in msg
    assert openai_server.files == {} and openai_server.jobs == {}
    assert not requests(openai_server, "POST", r"/files$")


def test_too_few_examples_through_the_pipeline(tmp_path: Path, env: OpenAIServer) -> None:
    rows = [_chat(q, a) for q, a in QA[:8]]
    path = write_pipeline(tmp_path, env, rows=rows, dataset="  min_examples: 1\n")
    outcome = run(path)
    assert outcome.exit_code == 1
    error = outcome.record["steps"]["train"]["error"]
    assert "train.jsonl: [too few examples]" in error and "at least 10" in error
    assert env.files == {} and env.jobs == {}


def test_long_examples_are_counted_and_warned_about(tmp_path: Path, openai_server: OpenAIServer) -> None:
    rows = [_chat(q, a) for q, a in QA[:12]]
    rows[2] = _chat("word " * 200, "ok")
    rows[5] = _chat("word " * 300, "ok")
    prepare = _prepared(tmp_path, rows)
    data = openai_data.build_service_data(prepare, tmp_path / "up", method="sft", model=BASE, context_length=100)
    assert data.train.too_long == (3, 6)
    assert "2 of 12 train examples are longer than" in data.warnings[0] and "lines 3, 6" in data.warnings[0]
    assert openai_data.context_length_of("ft:gpt-4o-mini-2024-07-18:org:x:abc") == 65_536
    assert openai_data.context_length_of("gpt-35-turbo-0613.ft-abc") == 4_096
    assert openai_data.context_length_of("mystery-model") is None


def test_dpo_conversion() -> None:
    rec = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    line = openai_data.to_service_line(rec, "dpo")
    assert line == {
        "input": {"messages": rec["prompt"]},
        "preferred_output": rec["chosen"],
        "non_preferred_output": rec["rejected"],
    }
    with pytest.raises(openai_data._Problem, match="preference pairs"):
        openai_data.to_service_line(_chat("q", "a"), "dpo")


# --------------------------------------------------------------------------- real processes


def _ftpipe_run(path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ftpipe", "run", str(path)],
        cwd=str(REPO),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        preexec_fn=sigint_default,
    )


def _wait_polling(server: OpenAIServer, proc: subprocess.Popen, polls: int = 3, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while len(requests(server, "GET", JOB_GET.pattern)) < polls:
        assert proc.poll() is None, "ftpipe run ended before polling"
        assert time.monotonic() < end, "ftpipe run never polled a job"
        time.sleep(0.05)


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_runner_killed_while_polling_re_attaches(tmp_path: Path, env: OpenAIServer, sig: int) -> None:
    env.steps_per_state = 100_000  # the job waits for us
    path = write_pipeline(tmp_path, env, interval=0.05)
    err = tmp_path / "stderr.txt"
    proc = _ftpipe_run(path, err)
    try:
        _wait_polling(env, proc)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    job = only_job(env)
    assert job["status"] not in ("cancelled", "failed")  # the job was left running
    if sig == signal.SIGINT:
        assert code == 130
        assert "keeps running" in err.read_text() and "ftpipe cancel" in err.read_text()
    env.steps_per_state = 1
    outcome = run(path)
    assert outcome.exit_code == 0, outcome.record["steps"]["train"]
    assert only_job(env)["id"] == job["id"]
    assert_model(path, outcome, env.jobs[job["id"]])
    assert "re-attached to OpenAI fine-tuning job" in train_log(path, outcome)
    assert len(requests(env, "POST", r"/v1/fine_tuning/jobs$")) == 1
    assert len(requests(env, "POST", r"/v1/files$")) == 2  # train + validation, reused


@pytest.mark.integration
def test_ftpipe_cancel_stops_the_job_of_a_running_run(tmp_path: Path, env: OpenAIServer) -> None:
    from click.testing import CliRunner

    import ftpipe.cli.cancel  # noqa: F401 - registers the command
    from ftpipe.cli import main

    env.steps_per_state = 100_000
    path = write_pipeline(tmp_path, env, interval=0.05)
    proc = _ftpipe_run(path, tmp_path / "stderr.txt")
    try:
        _wait_polling(env, proc)
        result = CliRunner().invoke(main, ["cancel", "latest", "--store", str(store_of(path)), "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        assert out["cancelled"] is True and out["status"] == "cancelled" and out["provider"] == "openai"
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1
    job = only_job(env)
    assert job["status"] == "cancelled" and out["job_id"] == job["id"]
    record = json.loads(next((store_of(path) / "runs").glob("*/run.json")).read_text())
    assert "was cancelled" in record["steps"]["train"]["error"]
    # cancelling again says it has ended
    again = CliRunner().invoke(main, ["cancel", "latest", "--store", str(store_of(path))])
    assert again.exit_code == 0 and "already ended: cancelled" in again.output


def test_cancel_without_a_hosted_job_says_so(tmp_path: Path, env: OpenAIServer) -> None:
    from click.testing import CliRunner

    import ftpipe.cli.cancel  # noqa: F401
    from ftpipe.cli import main

    path = write_pipeline(tmp_path, env, rows=[_chat(q, a) for q, a in QA[:8]], dataset="  min_examples: 1\n")
    assert run(path).exit_code == 1  # failed before any upload: no job
    result = CliRunner().invoke(main, ["cancel", "latest", "--store", str(store_of(path))])
    assert result.exit_code == 2
    assert "no hosted fine-tuning job" in result.output


# --------------------------------------------------------------------------- the example pipeline


@pytest.mark.integration
def test_openai_recipes_example_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipelines/openai-recipes.yaml as committed, pointed at the double by environment."""
    with OpenAIServer(steps_per_state=0) as server:
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        outcome = execute(
            REPO / "pipelines" / "openai-recipes.yaml", store=tmp_path / "store", reporter=Reporter(quiet=True)
        )
        steps = outcome.record["steps"]
        # The gate's verdict is the double's and the evaluator's business (on this data the
        # double's nearest-neighbour "fine-tune" need not beat few-shot prompting); the steps ran.
        assert outcome.exit_code in (0, 3), {k: (v["status"], v.get("error")) for k, v in steps.items()}
        job = only_job(server)
        ref = ModelRef.read(tmp_path / "store" / steps["train"]["artifact"])
        assert ref.model_id == job["fine_tuned_model"] and ref.model_id.startswith(f"ft:{BASE}:")
        assert steps["evaluate"]["status"] == "done" and steps["gate"]["status"] in ("done", "blocked")
        report = json.loads((tmp_path / "store" / steps["evaluate"]["artifact"] / "report.json").read_text())
        assert report["variants"]["finetuned"]["model"] == f"openai:{ref.model_id}"
        assert (
            report["variants"]["finetuned"]["metrics"]["token_f1"] > report["variants"]["base"]["metrics"]["token_f1"]
        )


# --------------------------------------------------------------------------- units


def test_no_second_create_when_the_stored_job_cannot_be_looked_up(tmp_path: Path) -> None:
    import httpx2
    import openai

    from ftpipe.spec.models import Poll
    from ftpipe.trainers.hosted import HostedService, JobRecord, submit
    from ftpipe.trainers.openai_backend import TERMINAL, JobStatus

    req = httpx2.Request("POST", "http://127.0.0.1:9/v1/fine_tuning/jobs")
    creates, finds = [], []

    def create(client, file_ids):
        creates.append(file_ids)
        raise openai.InternalServerError("boom", response=httpx2.Response(500, request=req), body={"message": "boom"})

    def find(record):
        finds.append(record)
        raise openai.APIConnectionError(request=req)

    service = HostedService(
        provider="openai",
        client=SimpleNamespace(with_options=lambda **kw: None),
        address="http://127.0.0.1:9/v1",
        statuses=JobStatus,
        terminal=TERMINAL,
        create=create,
        find=find,
    )
    logs: list[str] = []
    ctx = SimpleNamespace(log=logs.append, pipeline=SimpleNamespace(model=SimpleNamespace(base=BASE)))
    with pytest.raises(RemoteError) as err:
        submit(
            ctx,
            service,
            JobRecord(tmp_path / "job.json", "openai"),
            {"train": "file-1"},
            poll=Poll(interval=0.001, max_interval=0.002),
        )
    assert len(creates) == 1 and len(finds) > 1
    assert err.value.status == 500 and "looking for it failed" in (err.value.hint or "")


@pytest.mark.parametrize(
    "status,provider,needle",
    [
        (401, "openai", "OPENAI_API_KEY"),
        (403, "openai", "permissions"),
        (404, "openai", "fine-tunable"),
        (429, "openai", "re-attached"),
        (503, "openai", "run again later"),
        (401, "azure-openai", "AZURE_OPENAI_API_KEY"),
        (404, "azure-openai", "no dots"),
    ],
)
def test_error_translation_gives_status_code_request_and_hint(status: int, provider: str, needle: str) -> None:
    import httpx2
    import openai

    from ftpipe.remote.openai_errors import translate
    from ftpipe.trainers import azure_backend, openai_backend

    # each backend brings its own hints for the service's answers
    hints = openai_backend.HINTS if provider == "openai" else azure_backend.HINTS
    req = httpx2.Request("GET", "http://127.0.0.1:9/v1/fine_tuning/jobs/ftjob-1")
    headers = {"apim-request-id": "apim-42"} if provider == "azure-openai" else {"x-request-id": "req_42"}
    resp = httpx2.Response(status, request=req, headers=headers)
    exc = openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")._make_status_error(
        "Error code", body={"error": {"message": "nope", "code": "some_code"}}, response=resp
    )
    err = translate(exc, "polling", provider=provider, job_id="ftjob-1", hints=hints)
    assert err.status == status and err.code == "some_code" and err.job_id == "ftjob-1"
    assert err.request_id == ("apim-42" if provider == "azure-openai" else "req_42")
    assert needle in (err.hint or "") and "polling: nope" in str(err)


def test_connection_errors_name_the_address() -> None:
    import httpx2
    import openai

    from ftpipe.remote.openai_errors import translate

    exc = openai.APIConnectionError(request=httpx2.Request("GET", "http://127.0.0.1:9/v1/files"))
    err = translate(exc, "uploading", where="http://127.0.0.1:9/v1")
    assert "cannot reach the service" in str(err) and "http://127.0.0.1:9/v1" in (err.hint or "")
