"""The FastAPI service: finance REST, Slack interactions, health and metrics."""
