"""Block Kit for one change request. Pure: a described request in, a list of blocks out.

While the request is pending the message ends with Approve / Reject / Details buttons; once decided the
buttons are replaced by who decided and when, so a stale message cannot be clicked into a decision (and
a click that still arrives is answered by the compare-and-set anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

APPROVE = "approve"
REJECT = "reject"
DETAILS = "details"

_STATUS_WORDS = {
    "pending_approval": ":hourglass: awaiting approval",
    "approved": ":white_check_mark: approved",
    "rejected": ":no_entry: rejected",
    "expired": ":zzz: expired",
    "cancelled": ":heavy_multiplication_x: cancelled",
    "executing": ":gear: executing",
    "executed": ":rocket: executed",
    "monitoring": ":eyes: monitoring",
    "confirmed": ":tada: confirmed",
    "rolled_back": ":rewind: rolled back",
    "failed": ":x: failed",
}


def _money(x: float) -> str:
    return f"{x:,.2f}"


def diff_table(items: Sequence[Mapping[str, Any]]) -> str:
    """Per campaign: before -> after, delta and percent, as a monospaced table."""
    header = f"{'campaign':<22} {'before':>11} {'after':>11} {'Δ':>10} {'%':>7}"
    lines = [header, "-" * len(header)]
    for i in items:
        pct = float(i.get("pct", 0.0)) * 100
        lines.append(
            f"{str(i['channel'])[:22]:<22} {_money(i['before']):>11} {_money(i['after']):>11} "
            f"{float(i['delta']):>+10,.2f} {pct:>+6.1f}%"
        )
    return "```" + "\n".join(lines) + "```"


def change_request_blocks(
    described: Mapping[str, Any],
    *,
    status: str,
    approvals: Sequence[str] = (),
    approvals_needed: int = 1,
    decided_by: str | None = None,
    status_reason: str | None = None,
    details_url: str | None = None,
) -> list[dict[str, Any]]:
    cr_id = described["id"]
    verdicts = described.get("verdicts") or []
    applied = [
        f"• {v.get('rule', '?')}: {v.get('message') or v.get('detail') or v.get('outcome', '')}".rstrip(": ")
        for v in verdicts
        if isinstance(v, Mapping)
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"Budget change #{cr_id} ({described['kind']})"},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": str(described.get("summary") or "")}},
        {"type": "section", "text": {"type": "mrkdwn", "text": diff_table(described.get("items", []))}},
        {
            "type": "section",
            "fields": [
                {
                    "type": "mrkdwn",
                    "text": f"*Expected effect*\n{_money(described['expected_gain_per_day'])} / day "
                    f"(90% band {_money(described['gain_p05'])} to {_money(described['gain_p95'])})",
                },
                {
                    "type": "mrkdwn",
                    "text": f"*P(improvement)*\n{float(described['probability_of_improvement']):.0%}",
                },
                {
                    "type": "mrkdwn",
                    "text": f"*Size*\n{float(described['relative_move']):.1%} of the moved budgets",
                },
                {"type": "mrkdwn", "text": f"*Status*\n{_STATUS_WORDS.get(status, status)}"},
            ],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "*Guardrails applied*\n" + ("\n".join(applied) if applied else "none"),
                }
            ],
        },
    ]
    if status == "pending_approval":
        if approvals:
            blocks.append(
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"Approved so far by {', '.join(f'<@{a}>' for a in approvals)} "
                            f"({len(approvals)} of {approvals_needed})",
                        }
                    ],
                }
            )
        details: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Details"},
            "action_id": DETAILS,
            "value": str(cr_id),
        }
        if details_url:
            details["url"] = details_url
        blocks.append(
            {
                "type": "actions",
                "block_id": f"decision-{cr_id}",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "action_id": APPROVE,
                        "value": str(cr_id),
                    },
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Reject"},
                        "style": "danger",
                        "action_id": REJECT,
                        "value": str(cr_id),
                    },
                    details,
                ],
            }
        )
    else:
        who = f" by {decided_by}" if decided_by else ""
        why = f": {status_reason}" if status_reason else ""
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"{_STATUS_WORDS.get(status, status)}{who}{why}"}],
            }
        )
    return blocks


def fallback_text(described: Mapping[str, Any], status: str) -> str:
    return f"Budget change #{described['id']}: {described.get('summary', '')} [{status}]"
