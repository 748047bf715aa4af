"""`ftpipe serve` on transformers' serving engine, driven by the official `openai` client.

One real `ftpipe serve` process (module fixture) serves a LoRA train artifact of a run of the
pipeline "recipes", so the tests also cover: the model is named after the pipeline, the
adapter is served merged, an API key from the environment is enforced.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.test_local_deploy import make_train_artifact, shared_cache

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

KEY = "test-key-0123456789"
MESSAGES = [
    {"role": "system", "content": "You are a recipe assistant."},
    {"role": "user", "content": "What goes in a tomato soup?"},
]


def _store_with_a_run(root: Path) -> Path:
    store = root / ".ftpipe"
    art = make_train_artifact(store / "cache" / "k1", adapter=True)
    (art / "model.json").write_text(
        json.dumps({"kind": "local", "base": "builtin:tiny", "path": "model", "adapter": True})
    )
    run = store / "runs" / "20240101-000000-aaaa"
    run.mkdir(parents=True)
    (run / "run.json").write_text(
        json.dumps(
            {
                "run_id": "20240101-000000-aaaa",
                "pipeline": "recipes",
                "steps": {"train": {"status": "done", "artifact": "cache/k1"}},
            }
        )
    )
    return store


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FTPIPE_API_KEY", "OPENAI_API_KEY")}
    env.update(FTPIPE_CACHE=str(shared_cache()), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("serve")
    store = _store_with_a_run(root)
    log = (root / "stderr.txt").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftpipe", "serve", "latest", "--store", str(store), "--port", "0"],
        stderr=log,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(FTPIPE_API_KEY=KEY),
    )
    url = None
    try:
        import time

        deadline = time.monotonic() + 600  # loading on a busy machine: only catches a hang
        while url is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            log.seek(0)
            match = re.search(r"at (http://\S+/v1)", log.read())
            url = match.group(1) if match else None
        log.seek(0)
        assert url, f"the server did not start: {log.read()}"
        yield {"url": url, "store": store, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture
def client(served: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=served["url"], api_key=KEY, max_retries=0, timeout=120)


def _greedy(client: openai.OpenAI, **kw: object) -> object:
    return client.chat.completions.create(model="recipes", messages=MESSAGES, temperature=0, **kw)


@pytest.mark.integration
def test_model_is_named_after_the_pipeline(client):
    assert [m.id for m in client.models.list().data] == ["recipes"]
    assert client.models.retrieve("recipes").owned_by == "ftpipe"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("recipes-20240101-000000-aaaa")


@pytest.mark.integration
def test_non_streaming_greedy_equals_offline_generation_of_the_merged_adapter(client, served):
    from ftpipe.evaluation.generate import generate_local
    from ftpipe.serve import load_model

    first = _greedy(client, max_tokens=10)
    again = _greedy(client, max_tokens=10)
    choice = first.choices[0]
    assert first.object == "chat.completion" and first.model == "recipes"
    assert choice.message.role == "assistant" and choice.message.content == again.choices[0].message.content
    assert choice.finish_reason in ("stop", "length")
    # the same weights and prompt offline (the adapter merged by ftpipe's loader): the same answer
    lm = load_model(served["store"] / "cache" / "k1", "x")
    offline = generate_local(lm.model, lm.tokenizer, [MESSAGES], max_new_tokens=10, batch_size=1)[0]
    assert choice.message.content.strip() == offline.text
    usage = first.usage
    assert usage.prompt_tokens == offline.prompt_tokens
    assert 1 <= usage.completion_tokens <= 10 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.integration
def test_streaming_matches_the_non_streaming_answer(client):
    full = _greedy(client, max_tokens=12)
    stream = client.chat.completions.create(
        model="recipes",
        messages=MESSAGES,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    assert len({c.id for c in chunks}) == 1 and {c.model for c in chunks} == {"recipes"}


@pytest.mark.integration
def test_concurrent_greedy_requests_get_the_answer_a_lone_request_gets(client):
    from concurrent.futures import ThreadPoolExecutor

    prompts = [
        [{"role": "user", "content": f"What goes in {dish}?"}]
        for dish in ("a tomato soup", "bread", "pancakes", "a salad with eggs", "rice", "a stew")
    ]

    def ask(messages: list[dict]) -> str:
        resp = client.chat.completions.create(model="recipes", messages=messages, temperature=0, max_tokens=8)
        return resp.choices[0].message.content

    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    assert together == alone


@pytest.mark.integration
def test_sampling_follows_temperature_and_seed(client):
    kw = {"model": "recipes", "messages": MESSAGES, "temperature": 1.5, "top_p": 0.95, "max_tokens": 12}
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == client.chat.completions.create(seed=7, **kw).choices[0].message.content
    others = {client.chat.completions.create(seed=s, **kw).choices[0].message.content for s in range(1, 5)}
    assert len(others | {a}) > 1  # sampling really samples (a greedy engine would give one answer)


@pytest.mark.integration
def test_stop_strings_cut_the_answer_streamed_or_not(client):
    full = _greedy(client, max_tokens=16).choices[0].message.content
    assert len(full) >= 6, full
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = _greedy(client, max_tokens=16, stop=[stop, "\u2603never"])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(
        model="recipes", messages=MESSAGES, temperature=0, max_tokens=16, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == full[: full.find(stop)]


def _request(served: dict, path: str, data: bytes | None = None, key: str | None = KEY) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        served["url"].replace("/v1", "") + path,
        data=data,
        headers=headers,
        method="POST" if data is not None else "GET",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.integration
def test_raw_sse_ends_with_done(served):
    body = {"model": "recipes", "messages": MESSAGES, "max_tokens": 3, "temperature": 0, "stream": True}
    status, headers, raw = _request(served, "/v1/chat/completions", json.dumps(body).encode())
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    lines = [line for line in raw.decode().split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


@pytest.mark.integration
def test_errors_have_openai_shape(client, served):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.code == "model_not_found" and "gpt-4o" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="recipes", messages=[])
    assert info.value.status_code == 400 and info.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="recipes", messages=MESSAGES, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="recipes", messages=[{"role": "wizard", "content": "x"}])
    status, _, raw = _request(served, "/v1/embeddings", b"{}")
    assert status == 404 and json.loads(raw)["error"]["code"] == "unknown_url"
    status, _, raw = _request(served, "/v1/chat/completions", b"{not json")
    assert status == 400 and set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}


@pytest.mark.integration
def test_the_api_key_is_required(served):
    wrong = openai.OpenAI(base_url=served["url"], api_key="wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.models.list()
    assert info.value.code == "invalid_api_key"
    status, _, _ = _request(served, "/v1/models", key=None)
    assert status == 401
    status, _, raw = _request(served, "/health", key=None)  # liveness needs no key
    assert status == 200 and json.loads(raw) == {"status": "ok", "model": "recipes"}


@pytest.mark.integration
def test_first_requests_leave_no_library_warnings(client, served):
    _greedy(client, max_tokens=2)
    client.chat.completions.create(model="recipes", messages=MESSAGES, temperature=0.7, max_tokens=2)
    served["log"].seek(0)
    lines = [line for line in served["log"].read().splitlines() if line.strip()]
    assert lines and all(line.startswith(("loading ", "merging ", "serving model ")) for line in lines), lines
    assert KEY not in "\n".join(lines)


def test_serving_beyond_loopback_needs_an_api_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ftpipe", "serve", str(tmp_path), "--host", "0.0.0.0"],
        check=False,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "FTPIPE_API_KEY" in proc.stderr and "Traceback" not in proc.stderr and "--host 127.0.0.1" in proc.stderr


def test_loopback_detection_and_key_rule(monkeypatch):
    from ftpipe.errors import UsageError
    from ftpipe.serving import api_key_for, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("my-host.example")
    monkeypatch.delenv("MY_KEY", raising=False)
    assert api_key_for("127.0.0.1", "MY_KEY") is None
    with pytest.raises(UsageError):
        api_key_for("0.0.0.0", "MY_KEY")
    monkeypatch.setenv("MY_KEY", "k")
    assert api_key_for("0.0.0.0", "MY_KEY") == "k"


def test_find_model_folder_names_models_after_the_pipeline(tmp_path):
    from ftpipe.errors import NotFound
    from ftpipe.serve import find_model_folder

    store = tmp_path / ".ftpipe"
    art = store / "cache" / "k1"
    art.mkdir(parents=True)
    (art / "model.json").write_text(json.dumps({"kind": "local", "base": "builtin:tiny", "path": "model"}))
    for run_id in ("20240101-000000-aaaa", "20240102-000000-bbbb"):  # a cached rerun: same model, same name
        run = store / "runs" / run_id
        run.mkdir(parents=True)
        (run / "run.json").write_text(
            json.dumps(
                {
                    "run_id": run_id,
                    "pipeline": "recipes",
                    "steps": {"train": {"status": "done", "artifact": "cache/k1"}},
                }
            )
        )
    assert find_model_folder("latest", store=store) == (art, "recipes")
    assert find_model_folder("20240101", pipeline=tmp_path / "p.yaml") == (art, "recipes")
    assert find_model_folder(str(art), store=store) == (art.resolve(), "k1")
    deployed = tmp_path / "out"
    deployed.mkdir()
    (deployed / "ftpipe.json").write_text(json.dumps({"base": "builtin:tiny", "pipeline": "recipes"}))
    assert find_model_folder(str(deployed))[1] == "recipes"
    with pytest.raises(NotFound):
        find_model_folder("nope", store=store)
    with pytest.raises(NotFound):
        find_model_folder("latest", store=tmp_path / "empty")


def test_cli_serve_is_registered():
    from click.testing import CliRunner

    from ftpipe.cli import main, more  # noqa: F401 - registers the optional commands

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "RUN|PATH" in result.output and "--engine" in result.output
