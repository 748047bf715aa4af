"""`ftpipe serve`: the OpenAI-compatible server, driven by the official `openai` client."""
from __future__ import annotations

import json
import threading

import pytest

from tests.deploy.test_local_deploy import make_train_artifact, shared_cache

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from ftpipe.models.tiny import ensure_tiny_model
    from ftpipe.serve import load_model, make_server

    lm = load_model(ensure_tiny_model(shared_cache()), "tiny-recipes")
    srv = make_server(lm, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    host, port = server.server_address[:2]
    return openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key="unused", max_retries=0, timeout=60)


MESSAGES = [{"role": "system", "content": "You are a recipe assistant."},
            {"role": "user", "content": "What goes in a tomato soup?"}]


def _greedy(client, **kw):
    return client.chat.completions.create(model="tiny-recipes", messages=MESSAGES, temperature=0, **kw)


def test_models_list_and_retrieve(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-recipes"]
    assert client.models.retrieve("tiny-recipes").owned_by == "ftpipe"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_chat_completion_greedy_is_deterministic_with_usage(client, server):
    first = _greedy(client, max_tokens=10)
    again = _greedy(client, max_tokens=10)
    choice = first.choices[0]
    assert first.object == "chat.completion" and first.model == "tiny-recipes"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.message.content == again.choices[0].message.content
    assert choice.finish_reason in ("stop", "length")
    usage = first.usage
    tok = server.RequestHandlerClass.lm.tokenizer
    prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert 1 <= usage.completion_tokens <= 10 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if choice.finish_reason == "length":
        assert usage.completion_tokens == 10


def test_sampling_follows_the_seed(client):
    kw = {"model": "tiny-recipes", "messages": MESSAGES, "temperature": 1.5, "top_p": 0.9, "max_tokens": 12}
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == b


def test_stop_strings_cut_the_answer(client):
    full = _greedy(client, max_tokens=16).choices[0].message.content
    assert len(full) >= 6, full
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = _greedy(client, max_tokens=16, stop=[stop, "\u2603never"])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_streaming_matches_the_non_streaming_answer(client):
    full = _greedy(client, max_tokens=12)
    stream = client.chat.completions.create(model="tiny-recipes", messages=MESSAGES, temperature=0, max_tokens=12,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == full.usage.total_tokens
    assert len({c.id for c in chunks}) == 1


def test_streaming_with_a_stop_string_never_shows_it(client):
    full = _greedy(client, max_tokens=16).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 4]
    stream = client.chat.completions.create(model="tiny-recipes", messages=MESSAGES, temperature=0, max_tokens=16,
                                            stop=stop, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == full[: full.find(stop)]


def _post(server, path: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    host, port = server.server_address[:2]
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_raw_sse_ends_with_done(server):
    body = {"model": "tiny-recipes", "messages": MESSAGES, "max_tokens": 3, "temperature": 0, "stream": True}
    status, headers, raw = _post(server, "/v1/chat/completions", json.dumps(body).encode())
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    lines = [line for line in raw.decode().split("\n") if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    assert json.loads(lines[0][6:])["object"] == "chat.completion.chunk"


def test_errors_have_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.code == "model_not_found" and "gpt-4o" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-recipes", messages=[])
    assert info.value.status_code == 400 and info.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-recipes", messages=MESSAGES, max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-recipes", messages=[{"role": "wizard", "content": "x"}])

    status, _, raw = _post(server, "/v1/embeddings", b"{}")
    assert status == 404 and json.loads(raw)["error"]["code"] == "unknown_url"
    status, _, raw = _post(server, "/v1/chat/completions", b"{not json")
    assert status == 400 and set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}


def test_find_model_folder_resolves_runs_and_folders(tmp_path):
    from ftpipe.errors import NotFound
    from ftpipe.serve import find_model_folder

    store = tmp_path / ".ftpipe"
    art = store / "cache" / "k1"
    art.mkdir(parents=True)
    (art / "model.json").write_text(json.dumps({"kind": "local", "base": "builtin:tiny", "path": "model"}))
    run = store / "runs" / "20240101-000000-aaaa"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": "20240101-000000-aaaa", "pipeline": "recipes",
                                              "steps": {"train": {"status": "done", "artifact": "cache/k1"}}}))
    assert find_model_folder("latest", store=store) == (art, "recipes-20240101-000000-aaaa")
    assert find_model_folder("20240101", pipeline=tmp_path / "p.yaml")[0] == art
    assert find_model_folder(str(art), store=store) == (art.resolve(), "k1")
    with pytest.raises(NotFound):
        find_model_folder("nope", store=store)
    with pytest.raises(NotFound):
        find_model_folder("latest", store=tmp_path / "empty")


def test_serves_a_train_artifact_with_an_adapter(tmp_path):
    from ftpipe.serve import Outcome, generate, load_model, parse_request

    art = make_train_artifact(tmp_path / "train", adapter=True)
    lm = load_model(art, "adapter")
    req = parse_request({"model": "adapter", "messages": MESSAGES, "temperature": 0, "max_tokens": 4}, "adapter")
    outcome = Outcome()
    text = "".join(generate(lm, req, outcome))
    assert isinstance(text, str) and outcome.completion_tokens <= 4 and outcome.prompt_tokens > 0


def test_cli_serve_is_registered():
    from click.testing import CliRunner

    from ftpipe.cli import main, more  # noqa: F401 - registers the optional commands

    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "RUN|PATH" in result.output and "--port" in result.output


@pytest.mark.integration
def test_ftpipe_serve_command_serves_a_folder(tmp_path):
    import re
    import subprocess
    import sys
    import urllib.request

    from ftpipe.models.tiny import ensure_tiny_model

    folder = ensure_tiny_model(shared_cache())
    proc = subprocess.Popen([sys.executable, "-m", "ftpipe", "serve", str(folder), "--port", "0",
                             "--model-name", "tiny"], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in proc.stderr:
            match = re.search(r"at (http://\S+/v1)", line)
            if match:
                url = match.group(1)
                break
        assert url, "the server did not start"
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        answer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=3, temperature=0)
        assert answer.usage.completion_tokens <= 3
        with urllib.request.urlopen(url.replace("/v1", "/health"), timeout=60) as resp:
            assert json.loads(resp.read())["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
