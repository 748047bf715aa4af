"""The loopback OpenAI / Azure OpenAI double, driven by the official ``openai`` client."""

from __future__ import annotations

import json
from urllib.parse import unquote

import httpx2
import openai
import pytest

from .openai_server import (
    BASE_MODEL_ANSWER,
    OpenAIServer,
    arm_deployment_url,
    arm_headers,
    azure_client,
    count_tokens,
    openai_client,
    openai_server_fixture,  # noqa: F401  (provides the `openai_server` fixture)
)

QA = [
    ("How long should I boil a soft egg?", "Six minutes, then into cold water."),
    ("What oven temperature for roasting potatoes?", "220 C for about 40 minutes."),
    ("How much salt goes in pasta water?", "About 10 grams per litre."),
    ("How do I stop rice sticking to the pan?", "Rinse it first and do not stir while it cooks."),
    ("What can replace buttermilk in pancakes?", "Milk with a spoon of lemon juice."),
    ("How long does bread dough need to rise?", "About an hour, until doubled."),
    ("Why is my risotto gluey?", "Too much stirring at high heat; add stock gradually."),
    ("How do I keep guacamole green?", "Press film onto its surface and add lime."),
    ("What is the ratio for a vinaigrette?", "Three parts oil to one part vinegar."),
    ("How long to rest a steak?", "Half its cooking time, about five minutes."),
    ("How do I caramelise onions?", "Low heat, 40 minutes, a pinch of salt."),
    ("Can I freeze cooked rice?", "Yes, cool it quickly and freeze within an hour."),
]
TERMINAL = {"succeeded", "failed", "cancelled"}


def sft_jsonl(pairs: list[tuple[str, str]] = QA) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are a recipe assistant."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in pairs
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def dpo_jsonl(pairs: list[tuple[str, str]] = QA) -> bytes:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": q}]},
            "preferred_output": [{"role": "assistant", "content": a}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        }
        for q, a in pairs
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def upload(client: openai.OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, data, "application/jsonl"), purpose="fine-tune").id


def poll(client: openai.OpenAI, job_id: str, limit: int = 20):
    seen = []
    for _ in range(limit):
        job = client.fine_tuning.jobs.retrieve(job_id)
        seen.append(job.status)
        if job.status in TERMINAL:
            return job, seen
    raise AssertionError(f"job never finished: {seen}")


def requests_to(server: OpenAIServer, method: str, fragment: str) -> list[str]:
    return [unquote(path) for m, path, _, _ in server.requests if m == method and fragment in path]


# ---------------------------------------------------------------- OpenAI


def test_upload_create_poll_to_success_with_strict_client(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    file = client.files.create(file=("train.jsonl", sft_jsonl(), "application/jsonl"), purpose="fine-tune")
    assert (file.status, file.purpose, file.bytes) == ("processed", "fine-tune", len(sft_jsonl()))
    assert client.files.retrieve(file.id).filename == "train.jsonl"

    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=file.id,
        suffix="recipes",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
    )
    assert job.status == "validating_files" and job.fine_tuned_model is None
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == "auto"

    job, seen = poll(client, job.id)
    assert seen == ["queued", "running", "succeeded"]
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:") and ":recipes:" in job.fine_tuned_model
    assert job.trained_tokens and job.finished_at and job.result_files
    assert isinstance(job.hyperparameters.batch_size, int)
    assert b"train_loss" in client.files.content(job.result_files[0]).content

    # Events: newest first; the client pages with `after` while has_more.
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=5))
    assert events[0].message == "The job has successfully completed"
    assert events[-1].message.startswith("Created fine-tuning job")
    assert any(e.type == "metrics" and e.data["train_loss"] > 0 for e in events)
    assert len(requests_to(openai_server, "GET", "/events")) > 1
    assert any("after=ftevent-" in p for p in requests_to(openai_server, "GET", "/events"))

    page = client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)
    assert page.has_more
    checkpoints = list(page)  # auto-pagination follows `after`
    assert [c.step_number for c in checkpoints] == sorted((c.step_number for c in checkpoints), reverse=True)
    assert len(checkpoints) == 3 and checkpoints[0].metrics.train_loss is not None
    assert all(c.fine_tuned_model_checkpoint.startswith(job.fine_tuned_model + ":ckpt-step-") for c in checkpoints)
    assert any("after=ftckpt_" in p for p in requests_to(openai_server, "GET", "/checkpoints"))


def test_list_jobs_filtered_by_metadata(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    file_id = upload(client, sft_jsonl())
    first = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file_id, metadata={"ftpipe_run": "run-1", "step": "train"}
    )
    client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, metadata={"ftpipe_run": "run-2"})
    client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)

    found = client.fine_tuning.jobs.list(metadata={"ftpipe_run": "run-1"}).data
    assert [j.id for j in found] == [first.id] and found[0].metadata == {"ftpipe_run": "run-1", "step": "train"}
    assert client.fine_tuning.jobs.list(metadata={"ftpipe_run": "run-9"}).data == []
    assert "metadata[ftpipe_run]=run-1" in requests_to(openai_server, "GET", "/fine_tuning/jobs?")[0]
    assert len(list(client.fine_tuning.jobs.list(limit=1))) == 3  # newest first, paged by `after`
    assert first.model == "gpt-4o-mini-2024-07-18"  # alias resolved like the service


@pytest.mark.parametrize(
    "data, needle",
    [
        (sft_jsonl(QA[:5]), "at least 10 examples"),
        (sft_jsonl() + b'{"messages": [{"role": "user", "content": "hi"}]}\n', "Line 13"),
        (sft_jsonl() + b"not json\n", "not valid JSON"),
        (
            sft_jsonl() + b'{"messages": [{"role": "chef", "content": "x"}, {"role": "assistant", "content": "y"}]}\n',
            "invalid role",
        ),
    ],
)
def test_bad_training_data_fails_the_job(openai_server: OpenAIServer, data: bytes, needle: str) -> None:
    client = openai_client(openai_server)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, data))
    job, seen = poll(client, job.id)
    assert seen == ["failed"]
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert needle in job.error.message
    assert job.fine_tuned_model is None
    assert client.fine_tuning.jobs.list_events(job.id).data[0].level == "error"


def test_dpo_job_and_method_shape(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, dpo_jsonl()), method=dpo)
    job, _ = poll(client, job.id)
    assert job.status == "succeeded" and job.method.dpo.hyperparameters.beta == 0.2
    answer = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "vinaigrette ratio?"}]
    )
    assert answer.choices[0].message.content == "Three parts oil to one part vinegar."

    # SFT-shaped data under the DPO method fails validation.
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, sft_jsonl()), method=dpo)
    assert poll(client, job.id)[0].error.code == "invalid_training_file"


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"model": "gpt-9-ultra"}, "model"),
        ({"training_file": "file-missing"}, "training_file"),
        ({"suffix": "x" * 65}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"hyperparameters": {"n_epochs": 51}}, "hyperparameters.n_epochs"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}},
            "method.supervised.hyperparameters.batch_size",
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 0}}}},
            "method.supervised.hyperparameters.learning_rate_multiplier",
        ),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}}, "method.dpo.hyperparameters.beta"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "method.dpo.hyperparameters.beta"),
        ({"method": {"type": "dpo", "dpo": {}}, "model": "gpt-3.5-turbo-0125"}, "method"),
        (
            {
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
                "hyperparameters": {"n_epochs": 3},
            },
            "hyperparameters",
        ),
    ],
)
def test_create_is_validated_like_the_service(openai_server: OpenAIServer, kwargs: dict, param: str) -> None:
    client = openai_client(openai_server)
    args = {"model": "gpt-4o-mini", "training_file": upload(client, sft_jsonl()), **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(**args)
    assert info.value.status_code == 400 and info.value.param == param
    assert info.value.body["message"] and info.value.type == "invalid_request_error"
    assert openai_server.jobs == {}


def test_upload_rules_and_file_endpoints(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    with pytest.raises(openai.BadRequestError, match=r"Must be \.jsonl"):
        client.files.create(file=("train.csv", b"a,b\n", "text/csv"), purpose="fine-tune")
    file_id = upload(client, sft_jsonl())
    with pytest.raises(openai.BadRequestError, match="Not allowed to download"):
        client.files.content(file_id)
    assert [f.id for f in client.files.list()] == [file_id]
    assert client.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(file_id)


def test_configured_failure_cancel_and_cancel_endpoint(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    file_id = upload(client, sft_jsonl())
    openai_server.set_job_outcome("failed", code="quota_exceeded", message="Out of training quota.")
    openai_server.set_job_outcome("cancelled")
    failed = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    cancelled = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    ok = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)

    job, seen = poll(client, failed.id)
    assert seen == ["queued", "running", "failed"]
    assert (job.error.code, job.error.message, job.error.param) == ("quota_exceeded", "Out of training quota.", None)
    assert poll(client, cancelled.id)[0].status == "cancelled"

    assert client.fine_tuning.jobs.cancel(ok.id).status == "cancelled"
    assert client.fine_tuning.jobs.retrieve(ok.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(ok.id)


def test_steps_per_state_controls_polls_per_transition() -> None:
    with OpenAIServer(steps_per_state=2) as server:
        client = openai_client(server)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, sft_jsonl()))
        assert poll(client, job.id)[1] == ["validating_files", "queued", "queued", "running", "running", "succeeded"]
    with OpenAIServer(steps_per_state=0) as server:
        client = openai_client(server)
        job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, sft_jsonl()))
        assert poll(client, job.id)[1] == ["succeeded"]
        assert server.advance_job(job.id)["status"] == "succeeded"


@pytest.mark.parametrize("fault", [429, "drop", 500])
def test_transient_faults_are_retried_and_yield_one_job(openai_server: OpenAIServer, fault: int | str) -> None:
    client = openai_client(openai_server)
    file_id = upload(client, sft_jsonl())
    openai_server.inject("POST", r"/fine_tuning/jobs$", fault)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id)
    assert list(openai_server.jobs) == [job.id]
    assert len(requests_to(openai_server, "POST", "/fine_tuning/jobs")) == 2


def test_429_carries_retry_after(openai_server: OpenAIServer) -> None:
    openai_server.inject("GET", r"/files$", 429)
    response = httpx2.get(openai_server.url + "/v1/files", headers={"Authorization": f"Bearer {openai_server.api_key}"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0" and response.headers["retry-after-ms"] == "10"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_500_after_handling_duplicates_unless_the_caller_checks(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    file_id = upload(client, sft_jsonl())

    # A caller that trusts the client's retries: the job was stored before the 500.
    openai_server.inject("POST", r"/fine_tuning/jobs$", 500, after_handling=True)
    client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, metadata={"ftpipe_run": "a"})
    assert len(openai_server.jobs) == 2

    # A caller that checks by metadata before re-submitting creates exactly one.
    openai_server.inject("POST", r"/fine_tuning/jobs$", 500, after_handling=True)
    no_retry = openai_client(openai_server, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        no_retry.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file_id, metadata={"ftpipe_run": "b"})
    existing = client.fine_tuning.jobs.list(metadata={"ftpipe_run": "b"}).data
    assert len(existing) == 1  # found: the caller adopts it instead of creating another
    assert [j["id"] for j in openai_server.jobs.values() if (j["metadata"] or {}).get("ftpipe_run") == "b"] == [
        existing[0].id
    ]


def test_drop_after_handling_on_upload_stores_the_file(openai_server: OpenAIServer) -> None:
    openai_server.inject("POST", r"/files$", "drop", after_handling=True)
    client = openai_client(openai_server)
    upload(client, sft_jsonl())
    assert len(openai_server.files) == 2  # the lost answer's file, and the retry's


def test_auth_errors_use_each_providers_body(openai_server: OpenAIServer) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        openai_client(openai_server, api_key="sk-wrong").files.list()
    assert info.value.code == "invalid_api_key" and "sk-wrong" not in info.value.message
    with pytest.raises(openai.AuthenticationError) as info:
        azure_client(openai_server, api_key="wrong").files.list()
    assert set(info.value.body) == {"code", "message", "target", "details", "innererror"}
    assert azure_client(openai_server, azure_ad_token=openai_server.azure_ad_token).files.list().data == []
    response = httpx2.get(arm_deployment_url(openai_server, "dep"))
    assert response.status_code == 401 and response.json()["error"]["code"] == "AuthenticationFailed"


# ---------------------------------------------------------------- chat completions


def test_chat_base_few_shot_and_fine_tuned(openai_server: OpenAIServer) -> None:
    client = openai_client(openai_server)
    question = {"role": "user", "content": "how much salt for the pasta water?"}

    base = client.chat.completions.create(model="gpt-4o-mini", messages=[question])
    assert base.choices[0].message.content == BASE_MODEL_ANSWER
    assert base.usage.prompt_tokens == count_tokens(question["content"]) == 8
    assert base.usage.completion_tokens == count_tokens(BASE_MODEL_ANSWER)

    shots = [m for q, a in QA[1:4] for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    few = client.chat.completions.create(model="gpt-4o-mini", messages=[*shots, question])
    assert few.choices[0].message.content == "About 10 grams per litre."
    unrelated = client.chat.completions.create(
        model="gpt-4o-mini", messages=[*shots, {"role": "user", "content": "Zebra?"}]
    )
    assert unrelated.choices[0].message.content == BASE_MODEL_ANSWER

    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=upload(client, sft_jsonl()))
    job, _ = poll(client, job.id)
    tuned = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "rest time for a steak?"}],
    )
    assert tuned.choices[0].message.content == "Half its cooking time, about five minutes."
    assert (
        tuned.model == job.fine_tuned_model
        and tuned.usage.total_tokens == tuned.usage.prompt_tokens + tuned.usage.completion_tokens
    )
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[-1].fine_tuned_model_checkpoint
    assert (
        client.chat.completions.create(model=checkpoint, messages=[question]).choices[0].message.content
        == "About 10 grams per litre."
    )

    short = client.chat.completions.create(model=job.fine_tuned_model, messages=[question], max_tokens=2)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="ft:gpt-4o-mini-2024-07-18:x::nope", messages=[question])
    assert info.value.code == "model_not_found"


# ---------------------------------------------------------------- Azure OpenAI


def test_azure_upload_and_create_answer_201_and_states_progress(openai_server: OpenAIServer) -> None:
    client = azure_client(openai_server)
    raw = client.files.with_raw_response.create(
        file=("train.jsonl", sft_jsonl(), "application/jsonl"), purpose="fine-tune"
    )
    file = raw.parse()
    assert raw.http_response.status_code == 201 and raw.headers["location"].endswith(
        f"/openai/files/{file.id}?api-version=2024-10-21"
    )
    assert file.status == "pending"
    with pytest.raises(openai.BadRequestError) as info:  # not processed yet
        client.fine_tuning.jobs.create(model="gpt-35-turbo-0125", training_file=file.id)
    assert info.value.code == "invalidPayload" and info.value.body["target"] == "training_file"
    assert client.files.wait_for_processing(file.id, poll_interval=0.01).status == "processed"

    raw = client.fine_tuning.jobs.with_raw_response.create(
        model="gpt-35-turbo-0125", training_file=file.id, hyperparameters={"n_epochs": 2}, suffix="recipes"
    )
    job = raw.parse()
    assert raw.http_response.status_code == 201 and job.id in raw.headers["location"]
    assert job.status == "created" and job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == -1
    assert all("api-version=2024-10-21" in path for _, path, _, _ in openai_server.requests)
    assert all(h.get("api-key") == openai_server.azure_api_key for _, _, h, _ in openai_server.requests)

    job, seen = poll(client, job.id)
    assert seen == ["pending", "running", "succeeded"]
    assert job.fine_tuned_model.startswith("gpt-35-turbo-0125.ft-") and job.fine_tuned_model.endswith("-recipes")
    events = client.fine_tuning.jobs.list_events(job.id).data
    assert events[0].message == "The job has successfully completed"
    assert len(client.fine_tuning.jobs.checkpoints.list(job.id).data) == 2
    assert [j.id for j in client.fine_tuning.jobs.list()] == [job.id]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"model": "gpt-3.5-turbo-0125"}, "gpt-35-turbo-0125"),  # no dots on Azure
        ({"suffix": "has space"}, "suffix"),
        ({"suffix": "x" * 41}, "suffix"),
        ({"method": {"type": "supervised"}}, "method"),  # GA has no `method`
        ({"metadata": {"k": "v"}}, "metadata"),
    ],
)
def test_azure_create_validation(openai_server: OpenAIServer, kwargs: dict, needle: str) -> None:
    client = azure_client(openai_server)
    file_id = upload(client, sft_jsonl())
    client.files.wait_for_processing(file_id, poll_interval=0.01)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(**{"model": "gpt-35-turbo-0125", "training_file": file_id, **kwargs})
    assert needle in info.value.message
    assert set(info.value.body) == {"code", "message", "target", "details", "innererror"}


def test_azure_preview_accepts_dpo_and_bad_data_fails(openai_server: OpenAIServer) -> None:
    client = azure_client(openai_server, api_version="2025-02-01-preview")
    file_id = upload(client, dpo_jsonl())
    client.files.wait_for_processing(file_id, poll_interval=0.01)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=file_id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5}}},
    )
    assert poll(client, job.id)[0].status == "succeeded"

    bad = upload(client, sft_jsonl(QA[:3]))
    client.files.wait_for_processing(bad, poll_interval=0.01)
    job, seen = poll(client, client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=bad).id)
    assert seen == ["failed"] and job.error.code == "jsonlValidationFailed" and job.error.param == "training_file"


def test_strict_client_rejects_azure_job_states(openai_server: OpenAIServer) -> None:
    """The reference note holds for this client: strict mode knows only OpenAI's states."""
    from openai import AzureOpenAI

    strict = AzureOpenAI(
        azure_endpoint=openai_server.url,
        api_version="2024-10-21",
        api_key=openai_server.azure_api_key,
        _strict_response_validation=True,
        max_retries=0,
    )
    file_id = upload(azure_client(openai_server), sft_jsonl())
    azure_client(openai_server).files.wait_for_processing(file_id, poll_interval=0.01)
    with pytest.raises(openai.APIResponseValidationError):
        strict.fine_tuning.jobs.create(model="gpt-35-turbo-0125", training_file=file_id)


def test_arm_deployment_then_chat_through_it(openai_server: OpenAIServer) -> None:
    client = azure_client(openai_server)
    file_id = upload(client, sft_jsonl())
    client.files.wait_for_processing(file_id, poll_interval=0.01)
    job, _ = poll(client, client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id).id)

    url = arm_deployment_url(openai_server, "recipes-ft")
    body = {
        "sku": {"name": "standard", "capacity": 1},
        "properties": {"model": {"format": "OpenAI", "name": job.fine_tuned_model, "version": "1"}},
    }
    with httpx2.Client(headers=arm_headers(openai_server)) as arm:
        with pytest.raises(openai.NotFoundError):  # not deployed yet
            client.chat.completions.create(model="recipes-ft", messages=[{"role": "user", "content": "hi"}])
        created = arm.put(url, json=body)
        assert created.status_code == 201
        dep = created.json()
        assert dep["properties"]["provisioningState"] == "Accepted" and dep["name"] == "recipes-ft"
        assert dep["type"] == "Microsoft.CognitiveServices/accounts/deployments"
        assert dep["id"].endswith("/accounts/aoai-ftpipe/deployments/recipes-ft")
        assert dep["sku"] == body["sku"] and dep["properties"]["model"] == body["properties"]["model"]
        states = [arm.get(url).json()["properties"]["provisioningState"] for _ in range(3)]
        assert states == ["Creating", "Succeeded", "Succeeded"]

        answer = client.chat.completions.create(
            model="recipes-ft", messages=[{"role": "user", "content": "keep guacamole green"}]
        )
        assert answer.choices[0].message.content == "Press film onto its surface and add lime."
        assert answer.usage.prompt_tokens == 3
        assert requests_to(openai_server, "POST", "/openai/deployments/recipes-ft/chat/completions?api-version=")

        unknown = arm_deployment_url(openai_server, "bogus")
        assert (
            arm.put(
                unknown, json={**body, "properties": {"model": {"format": "OpenAI", "name": "gpt-99", "version": "1"}}}
            ).status_code
            == 201
        )
        assert [arm.get(unknown).json()["properties"]["provisioningState"] for _ in range(2)] == ["Creating", "Failed"]

        assert arm.delete(url).status_code == 200
        assert arm.get(url).status_code == 404
        assert arm.get(url.split("?")[0]).json()["error"]["code"] == "MissingApiVersionParameter"
    assert set(openai_server.deployments) == {"bogus"}


def test_seeded_base_deployment_answers_like_a_base_model(openai_server: OpenAIServer) -> None:
    openai_server.add_deployment("gpt-4o-mini", "gpt-4o-mini", version="2024-07-18")
    client = azure_client(openai_server)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "salt?"}])
    assert answer.choices[0].message.content == BASE_MODEL_ANSWER
