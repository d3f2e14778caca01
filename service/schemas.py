"""Response and request shapes (``*Public`` out, ``*Create`` in): nothing internal leaks into a response."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from budgetloop.db.base import MAX_ROW_ID

# A path id above MAX_ROW_ID is a 422 naming the limit, not an integer SQLite's driver cannot hold
# (its OverflowError was a 500).
ChangeRequestId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the change request's id")]
ScenarioId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the scenario's id")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="the token's id")]

_HASH = "9f2c" + "0" * 60


class AuditEntryPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 42,
                    "seq": 42,
                    "at": "2026-03-02T14:05:11.000000+00:00",
                    "actor": "U0MARKETER1",
                    "action": "approved",
                    "subject_type": "change_request",
                    "subject_id": "7",
                    "channel": None,
                    "payload": '{"event":"approve","from":"pending_approval","to":"approved"}',
                    "prev_hash": _HASH,
                    "hash": _HASH,
                }
            ]
        }
    )

    id: int
    seq: int
    at: str = Field(
        description="when, in UTC: ISO 8601 with microseconds, the text exactly as hashed",
        json_schema_extra={"format": "date-time"},
    )
    actor: str
    action: str
    subject_type: str
    subject_id: str | None
    channel: str | None
    payload: str = Field(description="the canonical JSON text exactly as hashed")
    prev_hash: str
    hash: str


class AuditPagePublic(BaseModel):
    entries: list[AuditEntryPublic]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class ChainReportPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "valid": False,
                    "entries": 1200,
                    "first_bad_id": 1187,
                    "first_bad_seq": 1187,
                    "reason": "content does not match its hash (edited)",
                    "head_hash": _HASH,
                }
            ]
        }
    )

    valid: bool
    entries: int = Field(description="entries walked (up to and including the first bad one)")
    first_bad_id: int | None
    first_bad_seq: int | None
    reason: str | None
    head_hash: str


class DigestPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "number": 3,
                    "at": "2026-03-31T00:00:00.000000+00:00",
                    "head_seq": 1200,
                    "head_hash": _HASH,
                    "entries": 1200,
                    "prev_digest_hash": _HASH,
                    "digest_hash": _HASH,
                    "signature": _HASH,
                    "key_id": "5d41402abc4b2a76",
                }
            ]
        }
    )

    number: int
    at: datetime
    head_seq: int
    head_hash: str
    entries: int
    prev_digest_hash: str
    digest_hash: str
    signature: str
    key_id: str


class DigestReportPublic(BaseModel):
    valid: bool
    digests: int
    first_bad_number: int | None
    reason: str | None


class ItemPublic(BaseModel):
    channel: str
    platform: str
    campaign: str
    before: float
    after: float
    delta: float
    pct: float
    state: str = Field(
        description=(
            "pending (not yet sent); applied (the platform set `after`); failed (refused, or its call "
            "never answered and it did not land); compensated (put back to `before` after the request "
            "failed, or after a call that never answered landed late); unknown (its call never answered "
            "and it had not landed when the request failed: the executor looks again each run, and the "
            "planner waits)"
        )
    )
    applied_at: datetime | None


class ApprovalPublic(BaseModel):
    approver: str
    decision: str
    at: datetime
    source: str
    reason: str | None


class ReadingPublic(BaseModel):
    day: str
    outcome: str
    realised: float | None
    forecast_mean: float | None
    band_low: float | None
    band_high: float | None
    reason: str | None


class ChangeRequestPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "kind": "reallocation",
                    "status": "pending_approval",
                    "created_at": "2026-03-02T09:00:00Z",
                    "requested_by": "planner",
                    "summary": "search +8%, video -8%",
                    "expected_gain": 412.5,
                    "gain_p05": -30.0,
                    "gain_p95": 870.0,
                    "probability_of_improvement": 0.91,
                    "relative_move": 0.06,
                    "decided_by": None,
                    "decided_at": None,
                    "executed_at": None,
                    "status_reason": None,
                    "rolls_back_id": None,
                    "items": [],
                }
            ]
        }
    )

    id: int
    kind: str
    status: str
    created_at: datetime
    requested_by: str
    summary: str
    expected_gain: float = Field(description="expected revenue gain per day, currency units (posterior mean)")
    gain_p05: float
    gain_p95: float
    probability_of_improvement: float
    relative_move: float
    decided_by: str | None
    decided_at: datetime | None
    executed_at: datetime | None
    status_reason: str | None
    rolls_back_id: int | None
    items: list[ItemPublic]


class ChangeRequestDetailPublic(ChangeRequestPublic):
    verdicts: list[Any]
    monitoring_plan: dict[str, Any]
    approvals: list[ApprovalPublic]
    monitoring: list[ReadingPublic]
    history: list[AuditEntryPublic] = Field(description="every audit entry about this request, oldest first")


class DecisionCreate(BaseModel):
    reason: str | None = Field(None, max_length=2000, examples=["within the quarter's plan"])


class DecisionPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "recorded",
                    "change_request_id": 7,
                    "state": "pending_approval",
                    "message": "approval 1 of 2 recorded; a second, different approver is needed",
                    "decided_by": None,
                    "approvals": ["U0MARKETER1"],
                    "approvals_needed": 2,
                }
            ]
        }
    )

    status: Literal["approved", "rejected", "recorded", "refused", "already_decided", "expired", "not_found"]
    change_request_id: int
    state: str | None
    message: str
    decided_by: str | None
    approvals: list[str]
    approvals_needed: int


class DecisionRefusedPublic(DecisionPublic):
    """A decision that was not taken (403 ``refused``, 409 ``already_decided`` or ``expired``): the same
    fields as a decision, and ``detail`` (the reason, as in every other error answer)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": "change request 6 has just expired: no decision was taken before "
                    "2026-02-18T09:00:00+00:00, so it can no longer be approved",
                    "status": "expired",
                    "change_request_id": 6,
                    "state": "expired",
                    "message": "change request 6 has just expired: no decision was taken before "
                    "2026-02-18T09:00:00+00:00, so it can no longer be approved",
                    "decided_by": None,
                    "approvals": [],
                    "approvals_needed": 1,
                }
            ]
        }
    )

    detail: str


class ModelVersionPublic(BaseModel):
    id: int
    created_at: datetime
    data_start: str
    data_end: str
    method: str
    status: str
    healthy: bool
    diagnostics: dict[str, Any]
    summary: dict[str, Any]
    reason: str | None


class PolicyPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": 3,
                    "valid": True,
                    "active": True,
                    "sha256": _HASH,
                    "author": "ops-lead",
                    "source": "rest",
                    "created_at": "2026-03-01T08:00:00Z",
                    "problems": [],
                    "text": "version: 1\nbudget: {total_daily_max: 16000}\n...",
                }
            ]
        }
    )

    version: int
    valid: bool
    active: bool
    sha256: str
    author: str
    source: str
    created_at: datetime
    problems: list[str]
    text: str


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["finance-alice"])
    role: Literal["finance", "approver", "ops", "admin"]
    slack_user_id: str | None = Field(None, examples=["U0MARKETER1"])


class TokenPublic(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    last_used_at: datetime | None
    slack_user_id: str | None


class TokenCreatedPublic(TokenPublic):
    token: str = Field(description="the bearer token; shown this once, only its SHA-256 is stored")


class ReconciliationItemPublic(BaseModel):
    channel: str
    budget_before: float
    budget_after: float
    spend_before: float = Field(description="spend over the window before execution")
    spend_after: float = Field(description="spend over the window after execution (days with data)")


class ReconciliationRowPublic(BaseModel):
    change_request_id: int
    kind: str
    status: str
    executed_at: datetime
    window_days: int
    items: list[ReconciliationItemPublic]
    revenue_before_per_day: float | None
    revenue_after_per_day: float | None
    realised_effect_per_day: float | None = Field(description="revenue per day after minus before (naive)")
    expected_effect_per_day: float
    expected_p05: float
    expected_p95: float
    monitoring: dict[str, int]
    realised_minus_forecast_per_day: float | None = Field(
        description="mean of realised minus forecast over the monitored days (the model's view)"
    )


class ReconciliationPublic(BaseModel):
    quarter: str
    start: str
    end: str
    changes: list[ReconciliationRowPublic]
    spend_before_total: float
    spend_after_total: float
    expected_effect_per_day_total: float
    realised_effect_per_day_total: float | None


class HealthPublic(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    at: datetime | None = Field(
        description="the service's time; null where its clock follows a simulated worker that has not "
        "claimed a job yet"
    )
