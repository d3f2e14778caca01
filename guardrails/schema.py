"""The policy JSON Schema for editors (`budgetloop policy schema`, committed as `policy.schema.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guardrails.policy import Policy

SCHEMA_FILE = Path(__file__).resolve().parent / "policy.schema.json"


def policy_json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def policy_json_schema_text() -> str:
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"
