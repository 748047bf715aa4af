"""Files: upload (multipart), list, retrieve (Azure files are ``pending`` until polled),
content, delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.openai_http import ApiError, Request, Response, page, parse_multipart

if TYPE_CHECKING:  # pragma: no cover - typing only
    from tests.fakes.openai_server import OpenAIServer

FILE_PURPOSES = {"assistants", "batch", "fine-tune", "vision", "user_data"}


def file_upload(srv: OpenAIServer, req: Request) -> Response:
    parts = parse_multipart(req.headers.get("content-type", ""), req.body)
    if "file" not in parts:
        raise ApiError(400, "Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    if "purpose" not in parts:
        raise ApiError(
            400, "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
        )
    filename, data = parts["file"]
    purpose = parts["purpose"][1].decode("utf-8", "replace")
    if purpose not in FILE_PURPOSES:
        raise ApiError(
            400, f"'{purpose}' is not one of {sorted(FILE_PURPOSES)} - 'purpose'", param="purpose", code="invalid_value"
        )
    filename = filename or "upload"
    if purpose == "fine-tune" and not filename.endswith(".jsonl"):
        raise ApiError(
            400, "Invalid file format for Fine-Tuning API. Must be .jsonl", param="file", code="invalid_file_format"
        )
    if not data:
        raise ApiError(400, "File is empty.", param="file", code="invalid_file_format")
    obj = store_file(srv, req.surface, filename, purpose, data)
    return srv.ok(req, obj, created=f"files/{obj['id']}")


def store_file(
    srv: OpenAIServer, provider: str, filename: str, purpose: str, data: bytes, *, processed: bool = False
) -> dict:
    file_id = srv.new_id("file-", provider, 22)
    obj: dict[str, Any] = {
        "id": file_id,
        "object": "file",
        "bytes": len(data),
        "created_at": srv.now(),
        "filename": filename,
        "purpose": purpose,
    }
    if provider == "azure":
        obj["status"] = "processed" if processed else "pending"
    else:
        obj.update(status="processed", expires_at=None, status_details=None)
    srv.files[file_id] = obj
    srv.content[file_id] = data
    srv.file_provider[file_id] = provider
    return obj


def get_file(srv: OpenAIServer, req: Request, file_id: str) -> dict[str, Any]:
    if srv.file_provider.get(file_id) != req.surface:
        if req.surface == "azure":
            raise ApiError(404, f"File with id '{file_id}' not found.", code="notFound")
        raise ApiError(404, f"No such File object: {file_id}", param="id")
    return srv.files[file_id]


def file_retrieve(srv: OpenAIServer, req: Request, file_id: str) -> Response:
    obj = get_file(srv, req, file_id)
    if req.surface == "azure" and obj["status"] == "pending":
        srv.file_polls[file_id] = srv.file_polls.get(file_id, 0) + 1
        if srv.file_polls[file_id] >= max(1, srv.steps_per_state):
            obj["status"] = "processed"
    return Response(200, obj)


def file_list(srv: OpenAIServer, req: Request) -> Response:
    items = [f for fid, f in srv.files.items() if srv.file_provider[fid] == req.surface]
    purpose = req.arg("purpose")
    if purpose:
        items = [f for f in items if f["purpose"] == purpose]
    if req.arg("order", "desc") == "desc":
        items.reverse()
    return Response(200, page(items, req, default_limit=10000, max_limit=10000))


def file_delete(srv: OpenAIServer, req: Request, file_id: str) -> Response:
    get_file(srv, req, file_id)
    del srv.files[file_id], srv.content[file_id], srv.file_provider[file_id]
    return Response(200, {"id": file_id, "object": "file", "deleted": True})


def file_content(srv: OpenAIServer, req: Request, file_id: str) -> Response:
    obj = get_file(srv, req, file_id)
    if req.surface == "openai" and obj["purpose"] == "fine-tune":
        raise ApiError(400, "Not allowed to download files of purpose: fine-tune")
    return Response(200, srv.content[file_id], {"content-type": "application/octet-stream"})
