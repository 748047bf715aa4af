"""Repo routes of the loopback Hub: info, tree, paths-info, refs, commits, preupload, commit,
branches, tags, settings (``/api/{models|datasets|spaces}/{id}/...``)."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from tests.fakes.hub_model import (
    _PLURAL,
    _Blob,
    _Commit,
    _front_matter,
    _HttpError,
    _json,
    _Repo,
    _Response,
    git_blob_sha1,
)

if TYPE_CHECKING:
    from tests.fakes.hub_server import HubServer
from tests.fakes.hub_spaces import _SpaceApi, runtime_dict


class _RepoApi:
    """Routes under /api/{models|datasets|spaces}/{repo_id}/..."""

    def __init__(self, hub: HubServer, repo_type: str, repo_id: str, user: str | None, params: dict, headers: Any):
        self.hub, self.repo_type, self.repo_id, self.user = hub, repo_type, repo_id, user
        self.params, self.headers = params, headers

    def _param(self, name: str, default: str = "") -> str:
        values = self.params.get(name)
        return values[0] if values else default

    def _flag(self, name: str) -> bool:
        return self._param(name).lower() in ("1", "true", "yes")

    def handle(self, method: str, tail: list[str], body: bytes) -> _Response:
        action = tail[0] if tail else ""
        hub = self.hub
        if method == "GET" and action in ("", "revision"):
            repo = hub._read_repo(self.repo_type, self.repo_id, self.user)
            revision = tail[1] if action == "revision" and len(tail) > 1 else "main"
            return self._info(repo, hub._revision(repo, revision))
        if method == "GET" and action == "tree" and len(tail) >= 2:
            return self._tree(tail[1], "/".join(tail[2:]))
        if method == "POST" and action == "paths-info" and len(tail) == 2:
            return self._paths_info(tail[1], body)
        if method == "POST" and action == "preupload" and len(tail) == 2:
            return self._preupload(tail[1], json.loads(body or b"{}"))
        if method == "POST" and action == "commit" and len(tail) == 2:
            return self._commit(tail[1], body)
        if method == "GET" and action == "refs":
            return self._refs()
        if method == "GET" and action == "commits" and len(tail) == 2:
            return self._commits(tail[1])
        if action == "branch" and len(tail) == 2 and method in ("POST", "DELETE"):
            return self._branch(method, tail[1], json.loads(body or b"{}"))
        if action == "tag" and len(tail) == 2 and method in ("POST", "DELETE"):
            return self._tag(method, tail[1], json.loads(body or b"{}"))
        if method == "PUT" and action == "settings":
            return self._settings(json.loads(body or b"{}"))
        if method == "GET" and action == "auth-check":
            if tail[1:] == ["write"]:
                hub._write_repo(self.repo_type, self.repo_id, self.user)
            else:
                hub._read_repo(self.repo_type, self.repo_id, self.user)
            return _json({})
        if self.repo_type == "space":
            return _SpaceApi(self).handle(method, action, tail[1:], body)
        raise _HttpError(404, f"Not found: {method} {action}")

    # -- read -------------------------------------------------------------------------------

    def _info(self, repo: _Repo, commit: _Commit) -> _Response:
        blobs = self._flag("blobs")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                blob = commit.files[path]
                sibling.update({"size": len(blob.content), "blobId": blob.oid})
                if blob.lfs:
                    size, pointer_size = len(blob.content), len(blob.pointer)
                    sibling["lfs"] = {"size": size, "sha256": blob.sha256, "pointerSize": pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        readme = commit.files.get("README.md")
        card = _front_matter(readme.content.decode(errors="replace")) if readme else None
        if card:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        if repo.space is not None:
            info.update(
                {
                    "sdk": repo.space.sdk,
                    "runtime": runtime_dict(repo),
                    "subdomain": repo.repo_id.replace("/", "-").lower(),
                    "host": f"https://{repo.repo_id.replace('/', '-').lower()}.hf.space",
                }
            )
        return _json(info)

    def _last_commit(self, repo: _Repo, head: _Commit, path: str) -> dict:
        found = head
        for commit in self.hub._history(repo, head.oid):
            current = {p: b for p, b in commit.files.items() if p == path or p.startswith(path + "/")}
            if commit.parent is None:
                found = commit
                break
            parent = repo.commits[commit.parent].files
            before = {p: b for p, b in parent.items() if p == path or p.startswith(path + "/")}
            found = commit
            if current != before:
                break
        return {"id": found.oid, "title": found.title, "date": found.date}

    def _entry(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict | None:
        blob = commit.files.get(path)
        if blob is not None:
            entry: dict[str, Any] = {"type": "file", "oid": blob.oid, "size": len(blob.content), "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": len(blob.content), "pointerSize": len(blob.pointer)}
        else:
            children = sorted((p, b.oid) for p, b in commit.files.items() if p.startswith(path + "/"))
            if not children:
                return None
            oid = hashlib.sha1(json.dumps(children).encode()).hexdigest()
            entry = {"type": "directory", "oid": oid, "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = self._last_commit(repo, commit, path)
            if entry["type"] == "file":
                entry["securityFileStatus"] = {"status": "safe", "avScan": {}, "pickleImportScan": {}}
        return entry

    def _tree(self, revision: str, path: str) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)
        commit = self.hub._revision(repo, revision)
        path = path.strip("/")
        recursive, expand = self._flag("recursive"), self._flag("expand")
        prefix = path + "/" if path else ""
        if path and (path in commit.files or not any(p.startswith(prefix) for p in commit.files)):
            message = f"{path} does not exist on {revision}"
            raise _HttpError(404, message, "EntryNotFound", {"X-Repo-Commit": commit.oid})
        names: set[str] = set()
        for file_path in commit.files:
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                names.add(prefix + "/".join(parts[:depth]))
        ordered = sorted(names)
        offset = int(self._param("cursor") or 0)
        page_size = self.hub.tree_page_size if not expand else min(self.hub.tree_page_size, 50)
        page = ordered[offset : offset + page_size]
        headers = {}
        if offset + page_size < len(ordered):
            flags = {"recursive": str(recursive).lower(), "expand": str(expand).lower()}
            query = urlencode({**flags, "cursor": offset + page_size})
            base = f"{self.hub.url}/api/{self.repo_type}s/{self.repo_id}/tree/{quote(revision, safe='')}"
            next_url = base + (f"/{quote(path, safe='')}" if path else "") + "?" + query
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json([self._entry(repo, commit, p, expand) for p in page], headers=headers)

    def _paths_info(self, revision: str, body: bytes) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)
        commit = self.hub._revision(repo, revision)
        content_type = self.headers.get("Content-Type") or ""
        if "json" in content_type:
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand") or ["false"])[0].lower() == "true"
        entries = [self._entry(repo, commit, p.strip("/"), expand) for p in paths]
        return _json([e for e in entries if e is not None])

    def _refs(self) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)

        def ref(name: str, full: str, oid: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": oid}

        branches = [ref(n, f"refs/heads/{n}", o) for n, o in repo.branches.items() if not n.startswith("refs/")]
        prs = [ref(n, n, o) for n, o in repo.branches.items() if n.startswith("refs/pr/")]
        tags = [ref(n, f"refs/tags/{n}", o) for n, o in repo.tags.items()]
        data = {"branches": branches, "converts": [], "tags": tags}
        if self._param("include_prs"):
            data["pullRequests"] = prs
        return _json(data)

    def _commits(self, revision: str) -> _Response:
        repo = self.hub._read_repo(self.repo_type, self.repo_id, self.user)
        commit = self.hub._revision(repo, revision)
        items = [
            {
                "id": c.oid,
                "title": c.title,
                "message": c.message,
                "date": c.date,
                "authors": [{"user": c.author, "avatar": None}],
                "parents": [c.parent] if c.parent else [],
            }
            for c in self.hub._history(repo, commit.oid)
        ]
        return _json(items)

    # -- write ------------------------------------------------------------------------------

    def _branch_for_write(self, revision: str) -> tuple[_Repo, str]:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
        if branch not in repo.branches:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, branch

    def _preupload(self, revision: str, payload: dict) -> _Response:
        repo, branch = self._branch_for_write(revision)
        files = repo.head(branch).files
        ignore = payload.get("gitIgnore")
        if ignore is None and ".gitignore" in files:
            ignore = files[".gitignore"].content.decode(errors="replace")
        patterns = [ln.strip() for ln in (ignore or "").splitlines() if ln.strip() and not ln.startswith(("#", "!"))]
        answer = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size") or 0)
            lfs = size > 0 and self.hub._wants_lfs(files, self.repo_type, path, size)
            entry: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": any(
                    fnmatch.fnmatchcase(path, p.strip("/")) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], p)
                    for p in patterns
                ),
            }
            existing = files.get(path)
            if existing is not None:
                # The client compares this with its own oid (sha256 for lfs, git sha1 otherwise)
                # and leaves unchanged files out of the commit.
                entry["oid"] = existing.sha256 if existing.lfs else git_blob_sha1(existing.content)
            answer.append(entry)
        return _json({"files": answer, "commitOid": repo.branches[branch]})

    def _commit(self, revision: str, body: bytes) -> _Response:
        repo, branch = self._branch_for_write(revision)
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError:
            raise _HttpError(400, "Invalid NDJSON body") from None
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        summary = (header.get("summary") or "").strip()
        if not summary:
            raise _HttpError(400, "A commit needs a summary")
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.branches[branch]:
            raise _HttpError(412, "A commit has happened since. Please refresh and try again.")
        create_pr = self._param("create_pr") in ("1", "true")
        base = repo.head(branch).files
        files = dict(base)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = (value.get("path") or "").strip("/")
            if not path:
                raise _HttpError(400, "Every operation needs a path")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HttpError(400, f"Unsupported encoding {value.get('encoding')!r}")
                try:
                    content = base64.b64decode(value["content"], validate=True)
                except (KeyError, ValueError):
                    raise _HttpError(400, f"Invalid base64 content for {path}") from None
                lfs = self.hub._wants_lfs(base, self.repo_type, path, len(content)) and len(content) > 0
                files[path] = _Blob(content, lfs)
            elif key == "lfsFile":
                content = self.hub._lfs.get(value.get("oid", ""))
                if content is None:
                    message = f"Your push was rejected because an LFS pointer ({path}) points to a missing file"
                    raise _HttpError(422, message)
                files[path] = _Blob(content, True)
            elif key == "deletedFile":
                if path not in files:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise _HttpError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            else:
                raise _HttpError(400, f"Unknown commit operation {key!r}")
        pr_url = None
        if create_pr:
            number = repo.next_pr
            repo.next_pr += 1
            target = f"refs/pr/{number}"
            repo.branches[target] = repo.branches[branch]
            branch = target
            pr_url = f"{self.hub._repo_url(repo)}/discussions/{number}"
        commit = self.hub._add_commit(repo, branch, files, summary, header.get("description") or "", self.user)
        self.hub._after_commit(repo, branch)
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub._repo_url(repo)}/commit/{commit.oid}",
                "pullRequestUrl": pr_url,
                "hookOutput": "",
            }
        )

    def _branch(self, method: str, branch: str, payload: dict) -> _Response:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        if method == "DELETE":
            if branch not in repo.branches or branch == "main":
                raise _HttpError(404 if branch != "main" else 403, f"Cannot delete branch {branch}", "RevisionNotFound")
            del repo.branches[branch]
            return _json({})
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: {branch}")
        start = self.hub._revision(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return _json({})

    def _tag(self, method: str, name: str, payload: dict) -> _Response:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        if method == "DELETE":
            if repo.tags.pop(name, None) is None:
                raise _HttpError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            return _json({})
        tag = payload.get("tag") or ""
        if tag in repo.tags:
            raise _HttpError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = self.hub._revision(repo, name).oid
        return _json({})

    def _settings(self, payload: dict) -> _Response:
        repo = self.hub._write_repo(self.repo_type, self.repo_id, self.user)
        if "private" in payload:
            repo.private = bool(payload["private"])
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        if "gated" in payload:
            repo.gated = payload["gated"]
        return _json({})


# -- resolve (file download) and git-LFS basic transfer ------------------------------------------


def resolve(hub: HubServer, method: str, segs: list[str], headers: Any, user: str | None) -> _Response:
    if method not in ("GET", "HEAD"):
        raise _HttpError(405, "Method not allowed")
    idx = segs.index("resolve", 1)
    prefix = segs[:idx]
    repo_type = "model"
    if prefix[0] in ("datasets", "spaces") and len(prefix) >= 2:
        repo_type, prefix = _PLURAL[prefix[0]], prefix[1:]
    if len(segs) < idx + 3:
        raise _HttpError(404, "Not found")
    repo = hub._read_repo(repo_type, "/".join(prefix), user)
    commit = hub._revision(repo, segs[idx + 1])
    if repo.gated and not hub._can_write_namespace(user, repo.namespace):
        message = f"Access to {repo_type} {repo.repo_id} is restricted. You must have access to it."
        raise _HttpError(401 if user is None else 403, message, "GatedRepo", {"X-Repo-Commit": commit.oid})
    path = "/".join(segs[idx + 2 :])
    blob = commit.files.get(path)
    if blob is None:
        raise _HttpError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
    size = len(blob.content)
    out = {
        "X-Repo-Commit": commit.oid,
        "ETag": f'"{blob.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
    }
    if blob.lfs:
        out.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(size)})
    start, end, status = 0, size - 1, 200
    range_header = headers.get("Range")
    if range_header:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
        if match is None or match.groups() == ("", ""):
            raise _HttpError(416, "Invalid range", headers={"Content-Range": f"bytes */{size}"})
        first, last = match.groups()
        if first == "":
            start, end = max(size - int(last), 0), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
        if start >= size or start > end:
            raise _HttpError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
        status = 206
        out["Content-Range"] = f"bytes {start}-{end}/{size}"
    data = blob.content[start : end + 1]
    return _Response(status, data, out, content_length=len(data))


# -- git-LFS basic transfer --------------------------------------------------------------


def lfs_batch(hub: HubServer, raw_path: str, user: str | None, body: bytes) -> _Response:
    path = unquote(raw_path[1 : -len(".git/info/lfs/objects/batch")])
    repo_type = "model"
    for plural in ("datasets", "spaces"):
        if path.startswith(plural + "/"):
            repo_type, path = _PLURAL[plural], path[len(plural) + 1 :]
    payload = json.loads(body or b"{}")
    if payload.get("operation") == "upload":
        hub._write_repo(repo_type, path, user)
    else:
        hub._read_repo(repo_type, path, user)
    objects = []
    for obj in payload.get("objects", []):
        oid, size = obj["oid"], int(obj["size"])
        entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if payload.get("operation") == "upload" and oid not in hub._lfs:
            entry["actions"] = {
                "upload": {"href": f"{hub.url}/_lfs/upload/{hub._lfs_signature}/{oid}/{size}", "header": {}},
                "verify": {"href": f"{hub.url}/_lfs/verify", "header": {}},
            }
        elif payload.get("operation") == "download":
            if oid not in hub._lfs:
                entry = {"oid": oid, "size": size, "error": {"code": 404, "message": "Object does not exist"}}
            else:
                entry["actions"] = {"download": {"href": f"{hub.url}/_lfs/download/{oid}", "header": {}}}
        objects.append(entry)
    body = json.dumps({"transfer": "basic", "objects": objects}).encode()
    return _Response(200, body, {"Content-Type": "application/vnd.git-lfs+json"})


def lfs_object(hub: HubServer, method: str, segs: list[str], user: str | None, body: bytes) -> _Response:
    if segs[:1] == ["upload"] and method == "PUT" and len(segs) == 4:
        # A pre-signed storage URL: no Authorization header comes with it, the signature is the check.
        signature, oid, size = segs[1], segs[2], int(segs[3])
        if signature != hub._lfs_signature:
            raise _HttpError(403, "Invalid signature")
        if hashlib.sha256(body).hexdigest() != oid or len(body) != size:
            raise _HttpError(400, "Uploaded content does not match its oid/size")
        hub._lfs[oid] = body
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
    if segs[:1] == ["verify"] and method == "POST":
        if user is None:
            raise _HttpError(401, "You must be authenticated to verify an upload")
        payload = json.loads(body or b"{}")
        content = hub._lfs.get(payload.get("oid", ""))
        if content is None or len(content) != payload.get("size"):
            raise _HttpError(404, "Object not found")
        return _json({})
    if segs[:1] == ["download"] and method == "GET" and len(segs) == 2 and segs[1] in hub._lfs:
        return _Response(200, hub._lfs[segs[1]], {"Content-Type": "application/octet-stream"})
    raise _HttpError(404, "Not found")
