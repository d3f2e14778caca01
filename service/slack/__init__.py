"""Slack: Block Kit messages for change requests, the interactions endpoint, and a local fake Slack."""
