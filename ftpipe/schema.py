"""The JSON Schema of the pipeline format (what `ftpipe schema` prints)."""

from __future__ import annotations

import json


def schema_dict() -> dict:
    from ftpipe.registry import pipeline_model

    schema = pipeline_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ftpipe pipeline"
    schema["description"] = "A fine-tuning pipeline for ftpipe (version 1). See README.md."
    return schema


def schema_json() -> str:
    return json.dumps(schema_dict(), indent=2, sort_keys=True) + "\n"
