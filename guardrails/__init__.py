"""The guardrail policy (YAML, validated) and the engine that clips or blocks proposals. Pure."""
