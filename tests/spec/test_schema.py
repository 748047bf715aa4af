from __future__ import annotations

import json
from pathlib import Path

from ftpipe.schema import schema_json

REPO = Path(__file__).resolve().parents[2]


def test_committed_schema_is_current() -> None:
    committed = (REPO / "schemas" / "pipeline.schema.json").read_text()
    assert committed == schema_json(), (
        "schemas/pipeline.schema.json is stale: run `ftpipe schema -o schemas/pipeline.schema.json`"
    )


def test_schema_marks_secrets_and_covers_every_backend() -> None:
    schema = json.loads(schema_json())
    text = json.dumps(schema)
    for name in ("TrlTrainer", "AutoTrainTrainer", "OpenAITrainer", "AzureOpenAITrainer", "HubTarget", "RayExecutor"):
        assert name in schema["$defs"]
    assert '"x-secret": true' in text
    assert schema["$defs"]["TrlHyperparameters"]["additionalProperties"] is False
