"""Scheduled jobs: ingest, retrain, plan, execute, monitor, expire. Each reads like a script."""
