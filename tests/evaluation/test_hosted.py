"""The hosted path: OpenAI and Azure OpenAI fine-tunes scored through the official client
against the loopback double (tests/fakes/openai_server.py)."""

from __future__ import annotations

import json

import pytest

from ftpipe.contracts import ModelRef
from ftpipe.errors import RemoteError
from ftpipe.evaluation.gate import run_gate
from ftpipe.evaluation.generate import generate_hosted, make_openai_client
from ftpipe.evaluation.step import run_evaluate
from tests.fakes.openai_server import (
    BASE_MODEL_ANSWER,
    OpenAIServer,
    azure_client,
    count_tokens,
    openai_client,
    openai_server_fixture,  # noqa: F401  (the openai_server fixture)
)

pytestmark = pytest.mark.integration

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
TEST = [
    ("how much salt for pasta water", "About 10 grams per litre."),
    ("how long should a steak rest", "Half its cooking time, about five minutes."),
    ("keep my guacamole green?", "Press film onto its surface and add lime."),
]


@pytest.fixture
def hosted_prepare(tmp_path, helpers):
    folder = tmp_path / "prepare"
    folder.mkdir()
    helpers.write_jsonl(folder / "train.jsonl", [helpers.chat_record(q, a) for q, a in QA])
    helpers.write_jsonl(folder / "test.jsonl", [helpers.chat_record(q, a) for q, a in TEST])
    return folder


def _fine_tune(client, prepare) -> str:
    file_id = client.files.create(
        file=("train.jsonl", (prepare / "train.jsonl").read_bytes(), "application/jsonl"), purpose="fine-tune"
    ).id
    if hasattr(client, "_azure_ad_token_provider") or "openai/" in str(client.base_url):
        client.files.wait_for_processing(file_id, poll_interval=0.01)
    base = "gpt-4o-mini-2024-07-18" if "/v1" in str(client.base_url) else "gpt-35-turbo-0125"
    job = client.fine_tuning.jobs.create(model=base, training_file=file_id)
    for _ in range(10):
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status == "succeeded":
            return job.fine_tuned_model
    raise AssertionError(f"job did not finish: {job.status}")


def _openai_trainer(server: OpenAIServer):
    from ftpipe.spec.models import OpenAITrainer

    return OpenAITrainer.model_validate(
        {"backend": "openai", "api_key": server.api_key, "base_url": server.url + "/v1"}, context={"resolved": True}
    )


def test_openai_fine_tune_against_base_and_few_shot(
    tmp_path, helpers, hosted_prepare, recorder, openai_server: OpenAIServer
) -> None:
    model_id = _fine_tune(openai_client(openai_server), hosted_prepare)
    train = helpers.write_train_artifact(
        tmp_path, ModelRef(kind="hosted", base="gpt-4o-mini-2024-07-18", provider="openai", model_id=model_id)
    )
    cfg = helpers.evaluate_block(
        metrics=["exact_match", "token_f1", "loss"],
        prices={"finetuned": {"input": 0.3, "output": 1.2}, "base": {"input": 0.15, "output": 0.6}},
        gate={"metric": "token_f1", "must_beat": ["base", "few_shot"], "min_delta": 0.0},
        generation={"max_new_tokens": 4, "batch_size": 3, "seed": 7},
    )
    ctx = helpers.make_ctx(
        tmp_path,
        evaluate=cfg,
        inputs={"prepare": hosted_prepare, "train": train},
        trainer=_openai_trainer(openai_server),
        base="gpt-4o-mini-2024-07-18",
        recorder=recorder,
    )
    before = len(openai_server.requests)
    run_evaluate(ctx)

    chats = [r for r in openai_server.requests[before:] if r[1].endswith("/chat/completions")]
    assert len(chats) == 3 * len(TEST)
    bodies = [json.loads(r[3]) for r in chats]
    assert all(b["temperature"] == 0 and b["seed"] == 7 and b["max_tokens"] == 4 for b in bodies)  # generation.seed
    assert {b["model"] for b in bodies} == {model_id, "gpt-4o-mini-2024-07-18"}

    report = json.loads((ctx.out_dir / "report.json").read_text())
    ft, base, few = (report["variants"][n] for n in ("finetuned", "base", "few_shot"))
    assert ft["kind"] == "hosted" and ft["model"] == f"openai:{model_id}"
    assert ft["metrics"]["loss"] is None  # no likelihoods from a chat API
    assert any("loss not available for a hosted model" in line for line in recorder.logs)
    # max_new_tokens 4 truncates the answers; the fake counts its own tokens
    preds = [json.loads(line) for line in (ctx.out_dir / "predictions.jsonl").read_text().splitlines()]
    ft_preds = [p for p in preds if p["variant"] == "finetuned"]
    assert [p["prediction"] for p in ft_preds] == ["About 10 grams per", "Half its cooking time", "Press film onto its"]
    assert base["metrics"]["exact_match"] == 0.0
    prompt_tokens = [count_tokens(helpers.SYSTEM) + count_tokens(q) for q, _ in TEST]
    assert ft["tokens"]["prompt_mean"] == pytest.approx(sum(prompt_tokens) / len(TEST))
    assert ft["tokens"]["completion_mean"] == 4.0
    assert few["tokens"]["prompt_mean"] > ft["tokens"]["prompt_mean"]
    assert ft["cost_per_1k_requests"] == pytest.approx(1000 * (ft["tokens"]["prompt_mean"] * 0.3 + 4 * 1.2) / 1e6)
    assert ft["metrics"]["token_f1"] > base["metrics"]["token_f1"]
    # Retrieval finds the right example, so few-shot answers as well as the fine-tune.
    assert few["metrics"]["token_f1"] == ft["metrics"]["token_f1"]
    comp = {c["baseline"]: c for c in report["comparisons"]}
    assert comp["few_shot"]["tokens_saved_per_request"]["prompt"] > 0

    gate = run_gate(helpers.make_ctx(tmp_path, evaluate=cfg, inputs={"evaluate": ctx.out_dir}, step_id="gate"))
    assert gate.outcome == "blocked"
    f1 = f"{ft['metrics']['token_f1']:.4g}"
    few_cost, ft_cost = few["cost_per_1k_requests"], ft["cost_per_1k_requests"]
    # 3 test rows: the report says so rather than calling a winner
    assert gate.summary == (
        f"token_f1 {f1} did not beat few_shot {f1} (a tie is not a win). Recommendation: "
        f"inconclusive: {len(TEST)} test examples are too few to call a winner (on these numbers: "
        f"do not fine-tune: few_shot is as good (token_f1 {f1} vs fine-tuned {f1}) "
        f"and costs ${few_cost:.4f} per 1k requests (fine-tuned: ${ft_cost:.4f}))"
    )
    # the report says the same on its first line, and that so few examples decide nothing
    assert report["recommendation"]["line"] in (ctx.out_dir / "report.md").read_text()
    assert comp["base"]["intervals"]["token_f1"]["verdict"] == "inconclusive"
    assert f"only {len(TEST)} paired examples" in comp["base"]["intervals"]["token_f1"]["why"]


def test_retries_lose_and_duplicate_nothing(openai_server: OpenAIServer) -> None:
    client = make_openai_client("openai", _openai_trainer(openai_server))
    openai_server.inject("POST", r"/chat/completions$", 429, times=2)
    openai_server.inject("POST", r"/chat/completions$", 500, times=1)
    prompts = [[{"role": "user", "content": f"question {i}?"}] for i in range(5)]
    done: list[int] = []
    gens = generate_hosted(
        client, "gpt-4o-mini", prompts, max_new_tokens=50, concurrency=2, on_batch=done.append, report_every=2
    )
    assert [g.text for g in gens] == [BASE_MODEL_ANSWER] * 5
    assert [g.prompt_tokens for g in gens] == [count_tokens(p[0]["content"]) for p in prompts]
    assert done == [2, 4, 5]
    chats = [r for r in openai_server.requests if r[1].endswith("/chat/completions")]
    assert len(chats) == 5 + 3


def test_provider_errors_are_translated(openai_server: OpenAIServer) -> None:
    client = make_openai_client("openai", _openai_trainer(openai_server))
    with pytest.raises(RemoteError) as err:
        generate_hosted(
            client,
            "ft:gpt-4o-mini-2024-07-18:x::nope",
            [[{"role": "user", "content": "hi"}]],
            max_new_tokens=5,
            service="openai",
        )
    msg = str(err.value)
    assert err.value.status == 404 and err.value.service == "OpenAI"
    assert "ft:gpt-4o-mini-2024-07-18:x::nope" in msg and "does not exist" in msg
    assert openai_server.api_key not in msg


def test_azure_fine_tune_through_a_deployment(
    tmp_path, helpers, hosted_prepare, recorder, openai_server: OpenAIServer
) -> None:
    from ftpipe.spec.models import AzureDeployTarget, AzureOpenAITrainer

    model_id = _fine_tune(azure_client(openai_server), hosted_prepare)
    openai_server.add_deployment("gpt-35-turbo-0125", "gpt-35-turbo-0125")  # the base, named after itself
    target = AzureDeployTarget.model_validate(
        {
            "type": "azure-openai",
            "subscription_id": "sub",
            "resource_group": "rg",
            "account": "acct",
            "deployment": "recipes",
            "management_endpoint": openai_server.url,
            "management_token": openai_server.arm_token,
        },
        context={"resolved": True},
    )
    trainer = AzureOpenAITrainer.model_validate(
        {"backend": "azure-openai", "endpoint": openai_server.url, "api_key": openai_server.azure_api_key},
        context={"resolved": True},
    )
    train = helpers.write_train_artifact(
        tmp_path, ModelRef(kind="hosted", base="gpt-35-turbo-0125", provider="azure-openai", model_id=model_id)
    )
    cfg = helpers.evaluate_block(
        metrics=["exact_match"],
        baselines=["base"],
        generation={"max_new_tokens": 64, "batch_size": 2},
        gate={"metric": "exact_match", "must_beat": ["base"], "min_delta": 0.5},
    )
    ctx = helpers.make_ctx(
        tmp_path,
        evaluate=cfg,
        inputs={"prepare": hosted_prepare, "train": train},
        trainer=trainer,
        base="gpt-35-turbo-0125",
        recorder=recorder,
        deploy=[target],
    )
    run_evaluate(ctx)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert report["variants"]["finetuned"]["metrics"]["exact_match"] == 1.0
    assert report["variants"]["base"]["metrics"]["exact_match"] == 0.0
    paths = [r[1] for r in openai_server.requests if "/chat/completions" in r[1]]
    assert all("api-version=2024-10-21" in p for p in paths)
    # the fine-tune is scored through a temporary deployment, removed afterwards
    assert any("/openai/deployments/recipes-eval/chat/completions" in p for p in paths)
    assert "recipes-eval" not in openai_server.deployments
    assert report["variants"]["finetuned"]["model"] == f"azure-openai:{model_id}"
    gate = run_gate(helpers.make_ctx(tmp_path, evaluate=cfg, inputs={"evaluate": ctx.out_dir}, step_id="gate"))
    assert gate.outcome == "ok" and gate.summary.startswith(
        "exact_match 1 beat base 0 by 1 (min_delta 0.5). Recommendation: inconclusive: "
    )


def test_azure_undeployed_model_gets_a_hint(openai_server: OpenAIServer) -> None:
    from ftpipe.spec.models import AzureOpenAITrainer

    trainer = AzureOpenAITrainer.model_validate(
        {"backend": "azure-openai", "endpoint": openai_server.url, "api_key": openai_server.azure_api_key},
        context={"resolved": True},
    )
    client = make_openai_client("azure-openai", trainer)
    with pytest.raises(RemoteError) as err:
        generate_hosted(
            client,
            "gpt-35-turbo-0125.ft-x",
            [[{"role": "user", "content": "hi"}]],
            max_new_tokens=5,
            service="azure-openai",
        )
    assert err.value.status == 404 and "deployment" in (err.value.hint or "")


def test_openai_baseline_beside_a_local_fine_tune_uses_the_environment(
    monkeypatch, openai_server: OpenAIServer
) -> None:
    from types import SimpleNamespace

    from ftpipe.errors import StepError

    trl = SimpleNamespace(backend="trl")
    with pytest.raises(StepError, match="OPENAI_API_KEY"):
        make_openai_client("openai", trl)
    monkeypatch.setenv("OPENAI_API_KEY", openai_server.api_key)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url + "/v1")
    client = make_openai_client("openai", trl)
    [gen] = generate_hosted(client, "gpt-4o-mini", [[{"role": "user", "content": "hi"}]], max_new_tokens=50)
    assert gen.text == BASE_MODEL_ANSWER


def test_judge_metric_grades_every_answer_and_caches_the_scores(
    tmp_path, helpers, hosted_prepare, recorder, openai_server: OpenAIServer
) -> None:
    model_id = _fine_tune(openai_client(openai_server), hosted_prepare)
    train = helpers.write_train_artifact(
        tmp_path, ModelRef(kind="hosted", base="gpt-4o-mini-2024-07-18", provider="openai", model_id=model_id)
    )
    judge = {
        "model": "judge-1",
        "base_url": openai_server.url + "/v1",
        "api_key": openai_server.api_key,
        "rubric": "Full marks when the answer says what the reference says.",
        "scale": [1, 5],
    }
    from ftpipe.spec.models import Evaluate

    cfg = Evaluate.model_validate(
        {"metrics": ["token_f1", "judge"], "baselines": ["base"], "judge": judge, "generation": {"max_new_tokens": 16}},
        context={"resolved": True},
    )

    def run(step_id: str) -> tuple[dict, list]:
        ctx = helpers.make_ctx(
            tmp_path,
            evaluate=cfg,
            inputs={"prepare": hosted_prepare, "train": train},
            trainer=_openai_trainer(openai_server),
            base="gpt-4o-mini-2024-07-18",
            recorder=recorder,
            step_id=step_id,
            cache_dir=tmp_path / "cache",
        )
        before = len(openai_server.requests)
        run_evaluate(ctx)
        bodies = [json.loads(r[3]) for r in openai_server.requests[before:] if r[1].endswith("/chat/completions")]
        return json.loads((ctx.out_dir / "report.json").read_text()), [b for b in bodies if b["model"] == "judge-1"]

    report, judged = run("evaluate-1")
    assert len(judged) == 2 * len(TEST)  # every answer of both variants, once
    assert all(
        "Rubric:\nFull marks when the answer says what the reference says." in b["messages"][0]["content"]
        for b in judged
    )
    ft, base = report["variants"]["finetuned"], report["variants"]["base"]
    # the fine-tune answers with the reference (judge double: 5 of 5 -> 1.0); the base model apologises
    assert ft["metrics"]["judge"] == 1.0
    assert base["metrics"]["judge"] == 0.0
    assert report["comparisons"][0]["intervals"]["judge"]["wins"] == len(TEST)
    # the same answers again: every score comes from the cache
    again, judged = run("evaluate-2")
    assert judged == [] and again["variants"]["finetuned"]["metrics"]["judge"] == 1.0
    assert any("judge judge-1: 3 cached, 0 to grade" in line for line in recorder.logs)
