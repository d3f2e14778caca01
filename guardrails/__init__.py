"""Guardrails: the policy ops write in YAML, the engine that applies it, the checker that audits it.

Pure: no database, network, environment or wall clock. ``now`` and every input come in as arguments.
"""

from guardrails.checker import Violation, check_executed
from guardrails.engine import evaluate
from guardrails.loading import check_policy_text, load_policy, parse_policy
from guardrails.policy import RULES, Policy, Problem
from guardrails.records import (
    REDISTRIBUTION,
    CampaignState,
    Decision,
    ExecutedChange,
    Forecast,
    Override,
    Verdict,
)

__all__ = [
    "REDISTRIBUTION",
    "RULES",
    "CampaignState",
    "Decision",
    "ExecutedChange",
    "Forecast",
    "Override",
    "Policy",
    "Problem",
    "Verdict",
    "Violation",
    "check_executed",
    "check_policy_text",
    "evaluate",
    "load_policy",
    "parse_policy",
]
