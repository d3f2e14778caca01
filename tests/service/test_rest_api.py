"""The finance REST API over HTTP: audit (filters, cursor, CSV, verify, digests, export), change requests
with their history, approvals through REST, the policy, tokens, models and the quarter's reconciliation."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy import Engine

from budgetloop.clock import SimulatedClock
from budgetloop.db.loop import ModelVersion, MonitoringReading
from budgetloop.db.metrics import DailyMetric, DailyRevenue, IngestBatch, RawMetric
from budgetloop.db.session import session_scope
from budgetloop.lifecycle import Event
from budgetloop.store import audit
from budgetloop.store import change_requests as crs
from budgetloop.store.metrics import upsert_campaign
from service.slack import notify
from tests.service.conftest import AUDIT_KEY, POLICY_TEXT, Service, auth, make_pending


def test_audit_pages_filters_and_csv(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    for _ in range(3):
        make_pending(engine, clock, channels=(f"c{clock.now().minute}", f"d{clock.now().minute}"))
        clock.advance(timedelta(minutes=1))
    h = auth(role_tokens["finance"])
    seqs: list[int] = []
    cursor = None
    while True:
        params = {"subject_type": "change_request", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/audit", params=params, headers=h).json()
        seqs += [e["seq"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seqs) == 6 and seqs == sorted(seqs)  # proposed + submitted for each of 3 requests
    submitted = api.get("/api/v1/audit", params={"action": "submitted", "order": "desc"}, headers=h).json()
    assert [e["subject_id"] for e in submitted["entries"]] == ["3", "2", "1"]
    since = (clock.now() - timedelta(minutes=2)).isoformat()
    recent = api.get("/api/v1/audit", params={"from": since, "action": "proposed"}, headers=h).json()
    assert [e["subject_id"] for e in recent["entries"]] == ["2", "3"]
    naive = api.get("/api/v1/audit", params={"from": "2026-01-05T09:00:00"}, headers=h)
    assert naive.status_code == 400 and "plain date" in naive.json()["detail"]
    assert api.get("/api/v1/audit", params={"cursor": "zz"}, headers=h).status_code == 400

    response = api.get("/api/v1/audit", params={"actor": "planner"}, headers={**h, "Accept": "text/csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 6 and {r["actor"] for r in rows} == {"planner"}
    assert rows[0]["hash"] and rows[1]["prev_hash"] == rows[0]["hash"]


def test_verify_digests_and_export(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    make_pending(engine, clock)
    finance, admin = auth(role_tokens["finance"]), auth(role_tokens["admin"])
    report = api.get("/api/v1/audit/verify", headers=finance).json()
    assert report["valid"] is True and report["first_bad_id"] is None and report["entries"] >= 3
    assert api.post("/api/v1/audit/digests", headers=finance).status_code == 403
    made = api.post("/api/v1/audit/digests", headers=admin)
    assert made.status_code == 201 and made.json()["number"] == 1
    assert api.get("/api/v1/audit/digests/verify", headers=finance).json()["valid"] is True
    document = api.get("/api/v1/audit/digests/export", headers=finance).json()
    assert audit.verify_export(document, key=AUDIT_KEY).valid
    assert not audit.verify_export(document, key="some other key").valid
    assert [d["number"] for d in api.get("/api/v1/audit/digests", headers=finance).json()] == [1]


def test_change_request_detail_and_rest_approval(
    service: Service, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    cr_id = make_pending(engine, clock)
    with httpx.Client(base_url=service.url) as client:
        listed = client.get(
            "/api/v1/change-requests",
            params={"status": "pending_approval"},
            headers=auth(role_tokens["finance"]),
        ).json()
        assert [c["id"] for c in listed] == [cr_id]
        assert listed[0]["items"][0]["after"] == 1100.0
        refused = client.post(
            f"/api/v1/change-requests/{cr_id}/approve", headers=auth(role_tokens["outsider"])
        )
        assert refused.status_code == 403  # a script checking the code must not read success
        assert refused.json()["status"] == "refused" and refused.json()["state"] == "pending_approval"
        assert "not an approver" in refused.json()["detail"]
        assert refused.json()["detail"] == refused.json()["message"]
        approved = client.post(
            f"/api/v1/change-requests/{cr_id}/approve",
            json={"reason": "fits the plan"},
            headers=auth(role_tokens["approver"]),
        )
        assert approved.json()["status"] == "approved" and approved.json()["decided_by"] == "U0MARKETER1"
        assert approved.status_code == 200
        late = client.post(f"/api/v1/change-requests/{cr_id}/reject", headers=auth(role_tokens["approver2"]))
        assert late.status_code == 409
        assert late.json()["status"] == "already_decided" and "U0MARKETER1" in late.json()["message"]
        assert late.json()["decided_by"] == "U0MARKETER1" and late.json()["approvals"] == ["U0MARKETER1"]
        assert "already approved by U0MARKETER1" in late.json()["detail"]
        assert (
            client.post(
                "/api/v1/change-requests/999/approve", headers=auth(role_tokens["approver"])
            ).status_code
            == 404
        )
        detail = client.get(f"/api/v1/change-requests/{cr_id}", headers=auth(role_tokens["finance"])).json()
    assert service.approved == [cr_id]
    assert detail["status"] == "approved"
    assert [a["approver"] for a in detail["approvals"]] == ["U0MARKETER1"]
    assert detail["approvals"][0]["reason"] == "fits the plan" and detail["approvals"][0]["source"] == "rest"
    assert [e["action"] for e in detail["history"]] == [
        "proposed",
        "submitted",
        "approval_refused",
        "approved",
    ]


def test_policy_is_read_validated_and_versioned(api: httpx.Client, role_tokens: dict[str, str]) -> None:
    ops, finance = auth(role_tokens["ops"]), auth(role_tokens["finance"])
    assert api.get("/api/v1/policy", headers=finance).json()["version"] == 1
    changed = POLICY_TEXT.replace("total_daily_max: 16000", "total_daily_max: 17000")
    assert api.put("/api/v1/policy", content=changed, headers=finance).status_code == 403
    ok = api.put("/api/v1/policy", content=changed, headers={**ops, "Content-Type": "application/yaml"})
    assert ok.status_code == 200 and ok.json()["version"] == 2 and ok.json()["active"] is True
    bad = api.put("/api/v1/policy", content="budget: {total_daily_max: -5}\nchannels: {}\n", headers=ops)
    assert bad.status_code == 422
    assert bad.json()["version"] == 3 and bad.json()["problems"]
    active = api.get("/api/v1/policy", headers=finance).json()
    assert active["version"] == 2 and "17000" in active["text"]
    assert [v["version"] for v in api.get("/api/v1/policy/versions", headers=finance).json()] == [3, 2, 1]
    # A reviewer stored a 20 MB policy and a form post as versions: both are refused, nothing stored.
    huge = api.put("/api/v1/policy", content=changed + "#" * (1 << 20), headers=ops)
    assert huge.status_code == 413 and "1,048,576" in huge.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body is cut off at the limit
        yield changed.encode()
        for _ in range(20):
            yield b"#" * (1 << 16)

    streamed = api.put("/api/v1/policy", content=chunks(), headers={**ops, "Content-Type": "text/yaml"})
    assert streamed.status_code == 413 and "at most 1,048,576 bytes" in streamed.text
    form = api.put(
        "/api/v1/policy",
        content=changed,
        headers={**ops, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415 and "application/yaml" in form.text
    assert [v["version"] for v in api.get("/api/v1/policy/versions", headers=finance).json()] == [3, 2, 1]
    as_json = api.put("/api/v1/policy", json={"budget": {"total_daily_max": 17000}}, headers=ops)
    assert as_json.status_code == 422  # JSON is YAML: read, and found lacking `channels`


def test_admin_manages_tokens_over_rest(api: httpx.Client, role_tokens: dict[str, str]) -> None:
    admin = auth(role_tokens["admin"])
    created = api.post("/api/v1/tokens", json={"name": "finance-carol", "role": "finance"}, headers=admin)
    assert created.status_code == 201
    secret, token_id = created.json()["token"], created.json()["id"]
    assert api.get("/api/v1/audit/verify", headers=auth(secret)).status_code == 200
    listed = api.get("/api/v1/tokens", headers=admin).json()
    assert "finance-carol" in [t["name"] for t in listed] and all("token" not in t for t in listed)
    assert (
        api.post(
            "/api/v1/tokens", json={"name": "finance-carol", "role": "finance"}, headers=admin
        ).status_code
        == 409
    )
    assert api.delete(f"/api/v1/tokens/{token_id}", headers=admin).json()["revoked_at"] is not None
    assert api.get("/api/v1/audit/verify", headers=auth(secret)).status_code == 401


def _metrics(engine: Engine, clock: SimulatedClock, start: date, days: int) -> None:
    now = clock.now()
    with session_scope(engine) as s:
        batch = IngestBatch(
            source="test",
            requested_start=start,
            requested_end=start + timedelta(days=days),
            started_at=now,
            status="done",
            errors=[],
            missing_days={},
        )
        s.add(batch)
        s.flush()
        raw = RawMetric(
            batch_id=batch.id,
            source="test",
            received_at=now,
            natural_key="k",
            day=None,
            payload={},
            payload_hash="0" * 64,
            version=1,
        )
        s.add(raw)
        s.flush()
        campaigns = {
            c: upsert_campaign(
                s,
                platform="google_ads",
                account_external_id="acc",
                external_id=f"cmp-{c}",
                name=c,
                channel=c,
                currency="USD",
                now=now,
            )[0]
            for c in ("search", "video")
        }
        for d in range(days):
            day = start + timedelta(days=d)
            after = d >= days // 2
            for c, campaign in campaigns.items():
                spend = 1000 * (1.1 if c == "search" else 0.9) if after else 1000
                s.add(
                    DailyMetric(
                        campaign_id=campaign.id,
                        day=day,
                        spend=Decimal(str(spend)),
                        impressions=1,
                        clicks=1,
                        attributed_revenue=None,
                        currency="USD",
                        raw_metric_id=raw.id,
                        version=1,
                        updated_at=now,
                    )
                )
            s.add(
                DailyRevenue(
                    day=day,
                    revenue=Decimal(10150 if after else 10000),
                    currency="USD",
                    source="test",
                    raw_metric_id=raw.id,
                    version=1,
                    updated_at=now,
                )
            )


def test_reconciliation_and_models(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    _metrics(engine, clock, date(2026, 1, 1), 14)  # execution on Jan 8: 7 days either side
    cr_id = make_pending(engine, clock)
    clock.set(datetime(2026, 1, 8, 6, 0, tzinfo=clock.now().tzinfo))
    with session_scope(engine) as s:
        for event in (Event.APPROVE, Event.START_EXECUTION, Event.FINISH_EXECUTION, Event.START_MONITORING):
            crs.transition(s, change_request_id=cr_id, event=event, actor="U0MARKETER1", now=clock.now())
        for d, outcome, realised in [(8, "pass", 10160.0), (9, "fail", 9000.0), (10, "inconclusive", None)]:
            s.add(
                MonitoringReading(
                    change_request_id=cr_id,
                    day=date(2026, 1, d),
                    outcome=outcome,
                    realised=realised,
                    forecast_mean=10120.0,
                    band_low=9800.0,
                    band_high=10400.0,
                    reason=None,
                    recorded_at=clock.now(),
                )
            )
        s.add(
            ModelVersion(
                created_at=clock.now(),
                data_start=date(2025, 1, 1),
                data_end=date(2025, 12, 31),
                method="nuts",
                status="promoted",
                healthy=True,
                fingerprint="f" * 64,
                diagnostics={"r_hat_max": 1.01, "divergences": 0},
                summary={},
                reason="first",
                artifact=b"x",
            )
        )
    h = auth(role_tokens["finance"])
    body = api.get("/api/v1/reconciliation", params={"quarter": "2026Q1"}, headers=h).json()
    (row,) = body["changes"]
    assert row["change_request_id"] == cr_id and row["window_days"] == 7
    spend = {i["channel"]: (i["spend_before"], i["spend_after"]) for i in row["items"]}
    assert spend == {"search": (7000.0, 7700.0), "video": (7000.0, 6300.0)}
    assert row["revenue_before_per_day"] == 10000.0 and row["revenue_after_per_day"] == 10150.0
    assert row["realised_effect_per_day"] == 150.0 and row["expected_effect_per_day"] == 120.0
    assert row["monitoring"] == {"pass": 1, "fail": 1, "inconclusive": 1}
    assert row["realised_minus_forecast_per_day"] == -540.0
    assert body["spend_before_total"] == 14000.0 and body["spend_after_total"] == 14000.0
    assert api.get("/api/v1/reconciliation", params={"quarter": "2026Q2"}, headers=h).json()["changes"] == []
    assert api.get("/api/v1/reconciliation", params={"quarter": "2026Q5"}, headers=h).status_code == 422
    models = api.get("/api/v1/models", headers=h).json()
    assert models[0]["status"] == "promoted" and models[0]["diagnostics"]["r_hat_max"] == 1.01
    assert "artifact" not in models[0]


def test_scenarios_refuse_what_cannot_be_answered(api: httpx.Client, role_tokens: dict[str, str]) -> None:
    h = auth(role_tokens["finance"])
    assert (
        api.post("/api/v1/scenarios", json={"moves": ["social->retail:0.10"]}, headers=h).status_code == 409
    )
    bad = api.post("/api/v1/scenarios", json={"moves": ["social to retail"]}, headers=h)
    assert bad.status_code == 422, bad.text
    detail = bad.json()["detail"][0]
    assert detail["loc"] == ["body", "moves"] and "SOURCE->TARGET:SHARE" in detail["msg"]
    assert api.post("/api/v1/scenarios", json={}, headers=h).status_code == 400
    assert api.get("/api/v1/scenarios/7", headers=h).status_code == 404


def test_an_overdue_request_cannot_be_decided_over_rest(
    service: Service, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    """The expire job has not run: the deadline alone (by the service's clock) refuses the decision."""
    deadline = clock.now() + timedelta(days=1)
    cr_id = make_pending(engine, clock, expires_at=deadline)
    with session_scope(engine) as s:
        ts = notify.post_change_request(
            s, service.client, change_request_id=cr_id, channel="#budget-changes", now=clock.now()
        )
    clock.advance(timedelta(days=2))
    with httpx.Client(base_url=service.url) as client:
        for decision in ("approve", "reject"):
            answer = client.post(
                f"/api/v1/change-requests/{cr_id}/{decision}", headers=auth(role_tokens["approver"])
            )
            assert answer.status_code == 409, answer.text
            body = answer.json()
            assert (body["status"], body["state"], body["decided_by"]) == ("expired", "expired", None)
            assert deadline.isoformat() in body["detail"] and "can no longer be" in body["detail"]
        detail = client.get(f"/api/v1/change-requests/{cr_id}", headers=auth(role_tokens["finance"])).json()
    assert detail["status"] == "expired" and detail["approvals"] == []
    assert [(e["action"], e["actor"]) for e in detail["history"]][-1] == ("expired", "expirer")
    assert [e["action"] for e in detail["history"]].count("expired") == 1
    assert service.approved == []
    deadline_at = time.monotonic() + 10
    while service.slack.messages[ts].buttons:  # the refused answer still refreshes the message
        assert time.monotonic() < deadline_at, "the Slack message kept its buttons"
        time.sleep(0.01)


def test_decision_refusals_are_documented(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    for decision in ("approve", "reject"):
        responses = spec["paths"][f"/api/v1/change-requests/{{change_request_id}}/{decision}"]["post"][
            "responses"
        ]
        for code in ("403", "409"):
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/DecisionRefusedPublic"}, (decision, code)
        assert "refused" in responses["403"]["description"]
        assert "expired" in responses["409"]["description"]
    refused = spec["components"]["schemas"]["DecisionRefusedPublic"]
    assert {"detail", "status", "decided_by", "approvals"} <= set(refused["required"])


def test_an_unknown_status_filter_is_refused_naming_the_states(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    h = auth(role_tokens["finance"])
    cr_id = make_pending(engine, clock)
    bogus = api.get("/api/v1/change-requests", params={"status": "bogus"}, headers=h)
    assert bogus.status_code == 422
    assert "pending_approval" in bogus.text and "rolled_back" in bogus.text
    both = api.get(
        "/api/v1/change-requests", params=[("status", "approved"), ("status", "pending_approval")], headers=h
    )
    assert both.status_code == 200 and [c["id"] for c in both.json()] == [cr_id]


def test_a_plain_date_bounds_the_audit_at_midnight_utc(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    h = auth(role_tokens["finance"])
    clock.set(datetime(2026, 1, 11, 23, 59, tzinfo=UTC))
    make_pending(engine, clock, channels=("a", "b"))
    clock.set(datetime(2026, 1, 12, 0, 0, tzinfo=UTC))
    second = make_pending(engine, clock, channels=("c", "d"))
    clock.set(datetime(2026, 1, 13, 0, 0, tzinfo=UTC))
    third = make_pending(engine, clock, channels=("e", "f"))
    params = {"from": "2026-01-12", "action": "proposed"}
    since = api.get("/api/v1/audit", params=params, headers=h)
    assert since.status_code == 200, since.text
    assert [e["subject_id"] for e in since.json()["entries"]] == [str(second), str(third)]
    day = api.get("/api/v1/audit", params={**params, "to": "2026-01-13"}, headers=h).json()
    assert [e["subject_id"] for e in day["entries"]] == [str(second)]
    assert api.get("/api/v1/audit", params={"from": "2026-02-30"}, headers=h).status_code == 422
    spec = api.get("/openapi.json").json()["paths"]["/api/v1/audit"]["get"]["parameters"]
    assert "plain date" in next(p for p in spec if p["name"] == "from")["description"]


def test_policy_audit_names_the_stored_version(api: httpx.Client, role_tokens: dict[str, str]) -> None:
    """The example file says `version: 1`; stored as version 2 its audit entry must say version 2."""
    ops, finance = auth(role_tokens["ops"]), auth(role_tokens["finance"])
    changed = POLICY_TEXT.replace("total_daily_max: 16000", "total_daily_max: 17000")
    assert api.put("/api/v1/policy", content=changed, headers=ops).json()["version"] == 2
    entries = api.get("/api/v1/audit", params={"action": "policy_changed"}, headers=finance).json()["entries"]
    latest = json.loads(entries[-1]["payload"])
    assert latest["version"] == 2 and latest["file_version"] == 1
    assert latest["summary"].startswith("policy version 2 (the file says `version: 1`): ")
    assert "policy v1" not in latest["summary"]
    first = json.loads(entries[0]["payload"])
    assert first["summary"].startswith("policy version 1: ")


def test_ids_and_cursors_too_large_for_a_row_are_a_4xx_not_a_crash(
    api: httpx.Client, role_tokens: dict[str, str]
) -> None:
    """A reviewer's 99999999999999999999 reached SQLite's driver, whose OverflowError became a 500 or
    a reset connection; the ids are now bounded where they enter and the cursor parsed as a row's."""
    huge = "99999999999999999999"
    for role, method, path in [
        ("finance", "GET", f"/api/v1/change-requests/{huge}"),
        ("approver", "POST", "/api/v1/change-requests/9223372036854775808/reject"),
        ("admin", "DELETE", f"/api/v1/tokens/{huge}"),
        ("finance", "GET", f"/api/v1/scenarios/{huge}"),
    ]:
        r = api.request(method, path, headers=auth(role_tokens[role]))
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert "9223372036854775807" in r.text, r.text
    h = auth(role_tokens["finance"])
    for cursor in ("9223372036854775808", huge, "x" * 5000):
        r = api.get("/api/v1/audit", params={"cursor": cursor}, headers=h)
        assert r.status_code == 400 and "not one this API issued" in r.text, r.text
        assert len(r.text) < 1000  # the cursor is not echoed back whole
    assert api.get("/api/v1/audit", params={"cursor": "9223372036854775807"}, headers=h).status_code == 200


def test_audit_content_negotiation_bounds_and_one_timestamp_text(
    api: httpx.Client, role_tokens: dict[str, str], engine: Engine, clock: SimulatedClock
) -> None:
    """A reviewer's `Accept: TEXT/CSV` got JSON and `application/json, text/csv` got CSV; `from`
    after `to` answered an empty page; CSV and JSON wrote one instant two ways."""
    make_pending(engine, clock)
    h = auth(role_tokens["finance"])

    def kind(accept: str) -> str:
        return api.get("/api/v1/audit", headers={**h, "Accept": accept}).headers["content-type"].split(";")[0]

    assert kind("TEXT/CSV") == "text/csv"
    assert kind("text/csv;q=0.9, application/json") == "application/json"
    assert kind("application/json, text/csv") == "application/json"  # a tie goes to the default
    assert kind("text/csv, */*;q=0.1") == "text/csv"
    assert kind("application/json;q=0.1, */*") == "text/csv"  # the most specific range decides
    assert kind("text/csv;q=2, application/json") == "application/json"  # q is at most 1
    backwards = api.get("/api/v1/audit", params={"from": "2026-01-12", "to": "2026-01-10"}, headers=h)
    assert backwards.status_code == 400 and "swap them" in backwards.text
    first = api.get("/api/v1/audit", params={"limit": 1}, headers=h).json()["entries"][0]
    rows = list(
        csv.DictReader(io.StringIO(api.get("/api/v1/audit", headers={**h, "Accept": "text/csv"}).text))
    )
    assert rows[0]["at"] == first["at"] and first["at"].endswith("+00:00") and "." in first["at"]
    spec = api.get("/openapi.json").json()["paths"]
    assert "400" in spec["/api/v1/audit"]["get"]["responses"]
    assert "404" in spec["/api/v1/change-requests/{change_request_id}"]["get"]["responses"]
