"""``/audit``: the hash-chained log, its verification, and the signed digests (finance's evidence)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BeforeValidator

from budgetloop.db.session import session_scope
from budgetloop.errors import InputError
from budgetloop.store import audit
from service.deps import READERS, ContextDep, CurrentToken, SessionDep, allow
from service.schemas import AuditPagePublic, ChainReportPublic, DigestPublic, DigestReportPublic

router = APIRouter(prefix="/audit", tags=["audit"])

CSV_COLUMNS = [
    "id",
    "seq",
    "at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "channel",
    "payload",
    "prev_hash",
    "hash",
]


def _bad_request(exc: InputError) -> HTTPException:
    return HTTPException(400, str(exc))


_PLAIN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_is_utc_midnight(value: object) -> object:
    """A plain date (``2026-01-12``) means midnight UTC of that day; anything else is parsed as given."""
    if isinstance(value, str) and _PLAIN_DATE.fullmatch(value.strip()):
        try:
            return datetime.fromisoformat(value.strip()).replace(tzinfo=UTC)
        except ValueError:
            return value  # not a calendar day (2026-02-30): the datetime parser names the problem
    return value


_ZONE_OR_DATE = (
    "ISO 8601 with a zone (2026-01-12T00:00:00Z), or a plain date (2026-01-12) meaning midnight UTC"
)
Bound = Annotated[datetime | None, BeforeValidator(_date_is_utc_midnight)]


@router.get(
    "",
    response_model=AuditPagePublic,
    summary="Audit entries, filtered, oldest first, cursor-paginated (CSV with `Accept: text/csv`)",
    description=(
        "Filters combine with AND; `from` is inclusive, `to` exclusive. JSON answers one page and a "
        "`next_cursor`. With `Accept: text/csv` the answer is every matching entry from `cursor` on, "
        "streamed as CSV (columns: " + ", ".join(CSV_COLUMNS) + ")."
    ),
    **allow(
        *READERS,
        responses={
            200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
            400: {
                "description": "a cursor this API did not issue, a bound without a time zone, or `from` after `to`"
            },
        },
    ),
)
def list_audit(
    ctx: ContextDep,
    session: SessionDep,
    from_: Annotated[Bound, Query(alias="from", description=f"inclusive: {_ZONE_OR_DATE}")] = None,
    to: Annotated[Bound, Query(description=f"exclusive: {_ZONE_OR_DATE}")] = None,
    channel: str | None = None,
    actor: str | None = None,
    action: Annotated[str | None, Query(examples=["approved"])] = None,
    subject_type: Annotated[str | None, Query(examples=["change_request"])] = None,
    subject_id: str | None = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` from the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Literal["asc", "desc"] = "asc",
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    filters: dict[str, Any] = {
        "from_": from_,
        "to": to,
        "channel": channel,
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "descending": order == "desc",
    }
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(
                400,
                f"`{name}` must carry a time zone (e.g. 2026-01-01T09:00:00Z) "
                "or be a plain date (2026-01-01, midnight UTC)",
            )
    if from_ is not None and to is not None and from_ > to:
        raise HTTPException(400, f"`from` ({from_.isoformat()}) is after `to` ({to.isoformat()}): swap them")
    if _wants_csv(accept):
        try:
            audit.parse_cursor(cursor)
        except InputError as exc:
            raise _bad_request(exc) from None
        return StreamingResponse(
            _csv_rows(ctx, filters, cursor),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    try:
        page = audit.query(session, cursor=cursor, limit=limit, **filters)
    except InputError as exc:
        raise _bad_request(exc) from None
    return {"entries": page.entries, "next_cursor": page.next_cursor}


def _wants_csv(accept: str | None) -> bool:
    """Whether the client prefers CSV to JSON (RFC 9110): media ranges compared case-insensitively,
    each type taking the q-value of the most specific range that matches it (`text/csv` over
    `text/*` over `*/*`, q clamped to 0..1); JSON, the default, wins a tie."""
    if not accept:
        return False
    ranges: dict[str, float] = {}
    for item in accept.split(","):
        kind, *params = (part.strip().lower() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if kind:
            ranges[kind] = max(ranges.get(kind, 0.0), q)

    def quality(exact: str, family: str) -> float:
        for candidate in (exact, family, "*/*"):
            if candidate in ranges:
                return ranges[candidate]
        return 0.0

    return quality("text/csv", "text/*") > quality("application/json", "application/*")


def _csv_rows(ctx: ContextDep, filters: dict[str, Any], cursor: str | None) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    yield buffer.getvalue()
    while True:
        with session_scope(ctx.sessions) as session:
            page = audit.query(session, cursor=cursor, limit=5000, **filters)
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(page.entries)
        yield buffer.getvalue()
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


@router.get(
    "/verify",
    response_model=ChainReportPublic,
    summary="Walk the whole hash chain; name the first entry that was edited, removed or inserted",
    **allow(*READERS),
)
def verify(session: SessionDep) -> Any:
    return audit.verify_chain(session)


@router.get(
    "/digests", response_model=list[DigestPublic], summary="Signed digests, newest first", **allow(*READERS)
)
def list_digests(session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
    return list(audit.list_digests(session, limit=limit))


@router.post(
    "/digests",
    response_model=DigestPublic,
    status_code=201,
    summary="Sign the log's current head now, chained to the previous digest",
    **allow("admin", "ops"),
)
def make_digest(ctx: ContextDep, session: SessionDep, token: CurrentToken) -> Any:
    digest = audit.make_digest(session, key=ctx.settings.audit_signing_key, now=ctx.now())
    session.commit()
    return digest


@router.get(
    "/digests/verify",
    response_model=DigestReportPublic,
    summary="Check every digest: chain, signature, and that the log still has the heads they stated",
    **allow(*READERS),
)
def verify_digests(ctx: ContextDep, session: SessionDep) -> Any:
    return audit.verify_digests(session, key=ctx.settings.audit_signing_key)


@router.get(
    "/digests/export",
    summary="Everything an outside party needs to re-check the log later: entries, digests, hash definition",
    description="Check it offline with `budgetloop.store.audit.verify_export(document, key=...)` or any "
    "implementation of `hash_definition`.",
    **allow(*READERS),
)
def export(
    session: SessionDep,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    upto_seq: Annotated[int | None, Query(ge=0)] = None,
) -> dict[str, Any]:
    return audit.export(session, after_seq=after_seq, upto_seq=upto_seq)
