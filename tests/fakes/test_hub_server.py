"""The fake Hub, driven by the real huggingface_hub / transformers / datasets clients."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.fakes.hub_model import git_blob_sha1
from tests.fakes.hub_server import HubServer, hub_fixture, point_clients_at

__all__ = ["hub_fixture"]  # importing the fixture registers `hub` for this module

pytestmark = pytest.mark.fast


def _wait_for(predicate, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: mit\ntags: [test]\n---\n# A model\n")
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "sub" / "weights.safetensors").write_bytes(bytes(range(256)) * 4)
    return folder


def test_create_repo_private_and_exist_ok(hub):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    url = api.create_repo("tester/private-model", private=True)
    assert url == f"{hub.url}/tester/private-model" and url.repo_id == "tester/private-model"
    assert api.create_repo("tester/private-model", private=True, exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("tester/private-model")
    assert info.value.response.status_code == 409

    assert api.model_info("tester/private-model").private is True
    with pytest.raises(RepositoryNotFoundError) as info:  # anonymous: 401 + RepoNotFound
        HfApi(token=False).model_info("tester/private-model")
    assert info.value.response.status_code == 401
    # A new repo holds the Hub's initial commit with .gitattributes.
    assert [c["title"] for c in hub.commits("tester/private-model")] == ["initial commit"]
    assert set(hub.files("tester/private-model")) == {".gitattributes"}

    space = api.create_repo("tester/a-space", repo_type="space", space_sdk="docker")
    assert space == f"{hub.url}/spaces/tester/a-space"
    api.delete_repo("tester/a-space", repo_type="space")
    assert not hub.repo_exists("tester/a-space", "space")


def test_upload_folder_then_unchanged_reupload_makes_no_commit(hub, tmp_path):
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    api.create_repo("tester/m")
    folder = _folder(tmp_path)
    first = api.upload_folder(repo_id="tester/m", folder_path=folder, commit_message="Add model")
    assert [c["title"] for c in hub.commits("tester/m")] == ["Add model", "initial commit"]
    assert first.oid == hub.commits("tester/m")[0]["oid"]
    assert hub.files("tester/m")["sub/weights.safetensors"] == (folder / "sub" / "weights.safetensors").read_bytes()
    assert any(p == "/api/validate-yaml" for _, p, _ in hub.requests)
    # The binary file went through LFS; the pre-signed upload URL got no token.
    puts = [h for m, p, h in hub.requests if m == "PUT" and p.startswith("/_lfs/upload/")]
    assert len(puts) == 1 and "authorization" not in {k.lower() for k in puts[0]}

    again = api.upload_folder(repo_id="tester/m", folder_path=folder)
    assert again.oid == first.oid
    assert len(hub.commits("tester/m")) == 2

    # Tree oid, ETag and the preupload oid of a regular file are one git blob sha1.
    content = (folder / "config.json").read_bytes()
    tree = {f.path: f for f in api.list_repo_tree("tester/m", recursive=True) if hasattr(f, "blob_id")}
    assert tree["config.json"].blob_id == git_blob_sha1(content)
    assert tree["sub/weights.safetensors"].lfs is not None
    assert get_hf_file_metadata(hf_hub_url("tester/m", "config.json")).etag == git_blob_sha1(content)

    (folder / "config.json").write_text('{"hidden_size": 16}')
    (folder / "README.md").unlink()
    changed = api.upload_folder(repo_id="tester/m", folder_path=folder, delete_patterns=["*.md"])
    assert changed.oid != first.oid
    assert hub.commits("tester/m")[0]["added"] == ["config.json"]
    assert hub.commits("tester/m")[0]["deleted"] == ["README.md"]

    with pytest.raises(HfHubHTTPError) as info:  # stale parent commit
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/m", parent_commit=first.oid)
    assert info.value.response.status_code == 412


def test_hf_hub_download_and_snapshot_download(hub, tmp_path):
    import httpx2
    from huggingface_hub import hf_hub_download, snapshot_download

    sha = hub.seed_repo("tester/d", {"config.json": b'{"a": 1}', "nested/w.bin": b"\x01" * 1000})
    path = hf_hub_download("tester/d", "config.json")
    assert Path(path).read_bytes() == b'{"a": 1}' and sha in path
    snapshot = Path(snapshot_download("tester/d"))
    assert (snapshot / "nested" / "w.bin").read_bytes() == b"\x01" * 1000
    assert sorted(p.name for p in snapshot.rglob("*") if p.is_file()) == [".gitattributes", "config.json", "w.bin"]

    url = f"{hub.url}/tester/d/resolve/main/nested/w.bin"
    head = httpx2.head(url)
    assert head.headers["X-Repo-Commit"] == sha and head.headers["Content-Length"] == "1000"
    part = httpx2.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == b"\x01" * 10
    assert part.headers["Content-Range"] == "bytes 10-19/1000"

    # A 429 on the download GET is retried.
    hub.inject("GET", r"/resolve/.*/config\.json$", 429)
    assert Path(hf_hub_download("tester/d", "config.json", cache_dir=tmp_path / "c2")).read_bytes() == b'{"a": 1}'
    assert hub.faults_fired[-1][2] == 429


def test_transformers_auto_config(hub):
    from transformers import AutoConfig

    config = {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 4,
        "vocab_size": 128,
    }
    hub.seed_repo("tester/tiny", {"config.json": json.dumps(config).encode()})
    loaded = AutoConfig.from_pretrained("tester/tiny")
    assert type(loaded).__name__ == "LlamaConfig" and loaded.hidden_size == 32


def test_datasets_load_dataset_jsonl(hub):
    import datasets

    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(6)]
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    sha = hub.seed_repo("tester/recipes", {"data/train.jsonl": text}, repo_type="dataset", private=True)
    ds = datasets.load_dataset("tester/recipes", split="train")
    assert ds.num_rows == 6 and ds[0] == rows[0]
    pinned = datasets.load_dataset("tester/recipes", split="train", revision=sha)
    assert pinned.num_rows == 6


def test_errors_map_to_typed_client_errors(hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi()
    hub.seed_repo("tester/e", {"a.txt": b"a"})
    with pytest.raises(RepositoryNotFoundError) as info:
        api.model_info("tester/missing")
    assert info.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).create_commit("tester/missing", operations=[], commit_message="x")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/e", "nope.txt")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/e", "a.txt", revision="no-such-branch")
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(token="hf_wrong").model_info("tester/e")
    assert info.value.response.status_code == 401 and not isinstance(info.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(token=False).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="tester/e")
    assert info.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("someone-else/x")
    assert info.value.response.status_code == 403
    hub.seed_repo("other-org/gated", {"a.txt": b"a"}, gated="auto")
    with pytest.raises(GatedRepoError):
        hf_hub_download("other-org/gated", "a.txt")
    assert hub.errors == []


def test_injected_faults_during_upload_lose_and_duplicate_nothing(hub, tmp_path):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    api.create_repo("tester/f")
    folder = _folder(tmp_path)
    hub.inject("POST", r"/preupload/", 429)
    hub.inject("POST", r"/info/lfs/objects/batch$", 500)
    hub.inject("PUT", r"^/_lfs/upload/", "drop")
    api.upload_folder(repo_id="tester/f", folder_path=folder)
    assert [f for _, _, f in hub.faults_fired] == [429, 500, "drop"]
    assert len(hub.commits("tester/f")) == 2
    expected = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert {k: v for k, v in hub.files("tester/f").items() if k != ".gitattributes"} == expected

    # The commit is stored but its answer is lost: the client sees a 500 (commits are not retried)...
    (folder / "config.json").write_text('{"hidden_size": 99}')
    hub.inject("POST", r"/commit/main$", 500, after_handling=True)
    with pytest.raises(HfHubHTTPError):
        api.upload_folder(repo_id="tester/f", folder_path=folder)
    assert len(hub.commits("tester/f")) == 3
    # ...and retrying the upload finds every file unchanged: no duplicate commit.
    retried = api.upload_folder(repo_id="tester/f", folder_path=folder)
    assert retried.oid == hub.commits("tester/f")[0]["oid"] and len(hub.commits("tester/f")) == 3


def test_space_runtime_secrets_and_runner(hub):
    from huggingface_hub import HfApi

    api = HfApi()
    calls: list[tuple] = []
    release = threading.Event()

    def runner(space_id, files, secrets, variables):
        calls.append((space_id, sorted(files), secrets, variables))
        hub.space_log(space_id, "job started")
        if variables.get("FAIL") == "1":
            raise RuntimeError("boom")
        release.wait(120)  # the test releases it; the bound only catches a hang

    hub.space_runner = runner
    api.create_repo(
        "tester/runner",
        repo_type="space",
        space_sdk="docker",
        private=True,
        space_secrets=[{"key": "HF_TOKEN", "value": "s3cret"}],
    )
    assert api.get_space_runtime("tester/runner").stage == "NO_APP_FILE"
    api.add_space_variable("tester/runner", "MODE", "train")
    readme = b"---\nsdk: docker\napp_port: 7860\n---\n"
    api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id="tester/runner", repo_type="space")
    api.upload_file(
        path_or_fileobj=b'FROM python:3.11\nCMD ["true"]\n',
        path_in_repo="Dockerfile",
        repo_id="tester/runner",
        repo_type="space",
    )
    _wait_for(lambda: calls)
    runtime = api.get_space_runtime("tester/runner")
    assert runtime.stage == "RUNNING" and runtime.hardware == "cpu-basic"
    assert calls[0][0] == "tester/runner" and "Dockerfile" in calls[0][1]
    assert calls[0][2] == {"HF_TOKEN": "s3cret"} and calls[0][3] == {"MODE": "train"}
    secrets = api.get_space_secrets("tester/runner")
    assert list(secrets) == ["HF_TOKEN"] and "s3cret" not in json.dumps(hub.space_runtime("tester/runner"))
    assert any("job started" in line for line in api.fetch_space_logs("tester/runner"))

    assert api.pause_space("tester/runner").stage == "PAUSED"
    release.set()
    api.add_space_variable("tester/runner", "FAIL", "1")  # paused: no restart
    assert api.get_space_runtime("tester/runner").stage == "PAUSED" and len(calls) == 1
    api.restart_space("tester/runner")
    assert _wait_for(lambda: api.get_space_runtime("tester/runner").stage == "RUNTIME_ERROR")
    assert "boom" in api.get_space_runtime("tester/runner").raw["errorMessage"]

    api.delete_space_variable("tester/runner", "FAIL")  # restarts an errored Space
    api.request_space_hardware("tester/runner", "t4-small")
    _wait_for(lambda: api.get_space_runtime("tester/runner").hardware == "t4-small")
    assert hub.space_variables("tester/runner") == {"MODE": "train"}


def test_inference_endpoint_create_wait_and_query(hub):
    from huggingface_hub import HfApi

    api = HfApi()
    hub.seed_repo("tester/chat-model", {"config.json": b"{}"}, private=True)
    hub.inference_responder = lambda name, prompt: f"{name} says hi"
    endpoint = api.create_inference_endpoint(
        "chat-ep",
        repository="tester/chat-model",
        framework="pytorch",
        task="text-generation",
        accelerator="cpu",
        vendor="aws",
        region="us-east-1",
        type="authenticated",
        instance_size="x2",
        instance_type="intel-icl",
    )
    assert endpoint.status == "pending" and endpoint.url is None
    endpoint.wait(timeout=120, refresh_every=0.01)
    assert endpoint.status == "running" and endpoint.url.startswith(hub.url)
    assert endpoint.client.text_generation("hello") == "chat-ep says hi"
    chat = endpoint.client.chat_completion([{"role": "user", "content": "hello"}])
    assert chat.choices[0].message.content == "chat-ep says hi"

    assert [e.name for e in api.list_inference_endpoints()] == ["chat-ep"]
    updated = api.update_inference_endpoint("chat-ep", max_replica=2)
    assert updated.status == "updating"
    assert updated.wait(timeout=120, refresh_every=0.01).raw["compute"]["scaling"]["maxReplica"] == 2
    api.delete_inference_endpoint("chat-ep")
    assert api.list_inference_endpoints() == []


def test_tree_pagination_and_second_server_in_one_process(hub, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download

    hub.tree_page_size = 2
    hub.seed_repo("tester/many", {f"dir/f{i}.txt": str(i).encode() for i in range(5)})
    paths = [f.path for f in HfApi().list_repo_tree("tester/many", recursive=True)]
    assert sorted(paths) == [".gitattributes", "dir", *[f"dir/f{i}.txt" for i in range(5)]]
    assert sum("cursor=" in p for _, p, _ in hub.requests) >= 2
    # Module-level helpers and the cached HfFileSystem hold an endpoint taken earlier.
    assert huggingface_hub.whoami()["orgs"] == []
    assert HfFileSystem().cat("tester/many/dir/f1.txt") == b"1"

    with HubServer(token="hf_other", users=("tester", "team")) as other:
        point_clients_at(other, tmp_path / "home2", monkeypatch)
        other.seed_repo("team/only-here", {"x.txt": b"second"})
        assert Path(hf_hub_download("team/only-here", "x.txt")).read_bytes() == b"second"
        assert huggingface_hub.whoami()["orgs"][0]["name"] == "team"
        assert "x.txt" in huggingface_hub.list_repo_files("team/only-here")
        assert HfFileSystem().cat("team/only-here/x.txt") == b"second"
        assert other.errors == []
