"""The policy schema: defaults, every problem at once with its YAML path and line, the JSON Schema file."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner, Result

from budgetloop.cli import app
from budgetloop.errors import PolicyError
from guardrails import Policy, check_policy_text, load_policy, parse_policy
from guardrails.schema import SCHEMA_FILE, policy_json_schema_text

MINIMAL = """
budget: {total_daily_max: 1000}
channels:
  search: {min_daily: 100, max_daily: 800}
"""


def problems_of(text: str) -> list[tuple[str, int | None]]:
    policy, problems = check_policy_text(textwrap.dedent(text))
    assert policy is None
    return [(p.path, p.line) for p in problems]


def test_example_policy_loads_with_its_values(example_policy: Policy) -> None:
    p = example_policy
    assert p.timezone == "America/New_York"
    assert p.budget.total_daily_max == 16000 and p.budget.total_monthly_max == 480000
    assert p.change.max_swing_per_change == 0.20 and p.change.min_days_between_changes == 3
    assert p.level("min_days_between_changes") == "soft" and p.level("min_expected_gain") == "advisory"
    assert p.level("max_swing_per_change") == "hard"
    assert p.freeze_windows[1].start == date(2026, 11, 23) and p.freeze_windows[1].reason == "Black Friday"
    assert p.channels["video"].locked is False and p.owners == ["U0OPSLEAD"]
    assert p.approval.approvers == ["U0MARKETER1", "U0MARKETER2"] and p.approval.two_approvers_above == 0.15


def test_minimal_policy_takes_the_documented_defaults() -> None:
    p = parse_policy(MINIMAL)
    assert p.timezone == "UTC" and p.autonomy == "approval" and p.kill_switch is False
    assert p.objective.metric == "revenue"
    assert p.change.max_swing_per_change == 0.20 and p.change.max_swing_per_week == 0.30
    assert p.change.min_probability_of_improvement == 0.80
    assert p.learning_phase.protect is True and p.freeze_windows == []
    assert all(p.level(rule) == "hard" for rule in ("bounds", "freeze_window", "total_daily_max"))
    # As the example has it: a hard 1% gain floor would block every step of one swing (a reviewer's
    # policy of only the required keys never moved a budget).
    assert p.level("min_expected_gain") == "advisory"
    listed = parse_policy(MINIMAL + "enforcement: {bounds: soft}\nowners: [U0OPS]\n")
    assert listed.level("min_expected_gain") == "advisory" and listed.level("bounds") == "soft"
    asked = parse_policy(MINIMAL + "enforcement: {min_expected_gain: hard}\n")
    assert asked.level("min_expected_gain") == "hard"
    assert (p.experiments.min_detectable_effect, p.experiments.days, p.experiments.max_holdout_share) == (
        0.04,
        14,
        0.10,
    )
    assert p.monitoring.require_approval_for_rollback is False and p.approval.expire_after_hours == 48


def test_every_problem_is_reported_at_once_with_path_and_line() -> None:
    found = problems_of(
        """\
        timezone: Mars/Olympus
        objective: {metric: profit}
        budget:
          total_daily_max: 1000
          curency: USD
        change:
          max_swing_per_change: 1.5
          min_days_between_changes: soon
        freeze_windows:
          - {start: 2026-03-16, end: 2026-03-10}
          - {start: 2026-11-23, end: 2026-12-01}
          - {start: 2026-11-30, end: 2026-12-03}
        channels:
          search: {min_daily: 900, max_daily: 800}
          social: {min_daily: 600}
          social: {min_daily: 700}
        enforcement:
          bogus_rule: hard
        approval:
          required: true
          approvers: []
        """
    )
    assert found == [
        ("timezone", 1),
        ("objective", 2),
        ("budget.curency", 5),
        ("change.max_swing_per_change", 7),
        ("change.min_days_between_changes", 8),
        ("freeze_windows[0]", 10),
        ("freeze_windows[2]", 12),
        ("channels.search", 14),
        ("channels.social", 16),
        ("enforcement.bogus_rule", 18),
        ("approval.approvers", 21),
    ]


def test_messages_say_what_is_wrong_and_what_to_change() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(MINIMAL + "chanels: {}\nchange: {max_swing_per_week: 0}\n", source="ops/policy.yaml")
    text = str(caught.value)
    assert text.startswith("ops/policy.yaml: 2 problems in the guardrail policy")
    assert "chanels (line 5): unknown key `chanels` — did you mean `channels`?" in text
    assert "change.max_swing_per_week (line 6): input should be greater than 0 (got 0)" in text


CHANNELS = "channels:\n  search: {min_daily: 100, max_daily: 800}\n"
BUDGET = "budget: {total_daily_max: 1000}\n"


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("budget: {total_daily_max: 50}\n" + CHANNELS, "budget.total_daily_max", "below the sum of the"),
        (
            "budget: {total_daily_max: 1000, total_monthly_max: 2000}\n" + CHANNELS,
            "budget.total_monthly_max",
            "below the expected monthly spend",
        ),
        (MINIMAL + "autonomy: autonomous_below", "approval.autonomous_below", "no size is given"),
        (
            MINIMAL + "approval: {approvers: [U1], two_approvers_above: 0.1}",
            "approval.two_approvers_above",
            "only one",
        ),
        (
            MINIMAL + "enforcement: {kill_switch: soft}\nowners: [U1]",
            "enforcement.kill_switch",
            "always hard",
        ),
        (MINIMAL + "enforcement: {locked: soft}", "owners", "no owner may override"),
        (MINIMAL + "campaigns: {brand: {channel: tv}}", "campaigns.brand.channel", "unknown channel 'tv'"),
        (
            MINIMAL + "freeze_windows: [{start: 2026-01-01, end: 2026-01-02, channels: [radio]}]",
            "freeze_windows[0].channels",
            "unknown channel 'radio'",
        ),
        (MINIMAL + "objective: {metric: target_roas}", "objective", "needs `target`"),
        (BUDGET + "channels: {}", "channels", "at least 1 item"),
        (BUDGET, "channels", "required key is missing"),
    ],
)
def test_cross_section_problems(text: str, path: str, words: str) -> None:
    _policy, problems = check_policy_text(text + "\n")
    matching = [p for p in problems if p.path == path]
    assert matching and words in matching[0].message, problems
    assert matching[0].line is not None


def test_duplicate_keys_and_yaml_syntax_errors_name_their_line() -> None:
    assert problems_of("budget: {total_daily_max: 5}\nbudget: {total_daily_max: 6}\nchannels: {a: {}}\n") == [
        ("budget", 2)
    ]
    assert problems_of("budget: [1, 2\nchannels: {}\n")[0][1] == 2
    assert problems_of("") == [("", None)]
    assert problems_of("- just\n- a list\n") == [("", 1)]


def test_windows_that_touch_do_not_overlap_and_channel_windows_only_clash_on_shared_channels() -> None:
    ok = MINIMAL + textwrap.dedent(
        """\
        freeze_windows:
          - {start: 2026-03-16, end: 2026-03-22}
          - {start: 2026-03-23, end: 2026-03-24}
          - {start: "2026-04-01T09:00", end: "2026-04-01T17:00", channels: [search]}
        """
    )
    parse_policy(ok)
    clash = MINIMAL + textwrap.dedent(
        """\
        freeze_windows:
          - {start: 2026-03-16, end: 2026-03-22}
          - {start: "2026-03-22T23:59", end: 2026-03-25, channels: [search]}
        """
    )
    assert problems_of(clash) == [("freeze_windows[1]", 7)]  # MINIMAL starts with an empty line


def test_a_date_window_covers_its_whole_last_day_in_the_policy_time_zone() -> None:
    p = parse_policy(
        "timezone: America/New_York\n" + MINIMAL + "freeze_windows: [{start: 2026-03-08, end: 2026-03-08}]\n"
    )
    start, end = p.freeze_windows[0].interval(p.zone)
    assert start == datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # midnight EST
    assert end == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # next midnight is EDT: a 23-hour day


def test_policy_built_in_code_runs_the_cross_checks() -> None:
    doc: dict[str, Any] = {"budget": {"total_daily_max": 10}, "channels": {"a": {"min_daily": 20}}}
    with pytest.raises(ValidationError, match="below the sum of the channels' min_daily"):
        Policy.model_validate(doc)
    with pytest.raises(ValidationError, match="extra"):
        Policy.model_validate({**doc, "budget": {"total_daily_max": 100, "cap": 1}})


def test_load_policy_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yaml")


def test_committed_json_schema_is_current() -> None:
    assert SCHEMA_FILE.read_text() == policy_json_schema_text(), (
        "guardrails/policy.schema.json is stale: "
        "run `budgetloop policy schema --out guardrails/policy.schema.json`"
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"budget", "channels"}


def _cli(*args: str) -> Result:
    import budgetloop.cli.policy  # noqa: F401  (registers `policy` on the app)

    return CliRunner().invoke(app, list(args))


def test_cli_validate_exit_codes(tmp_path: Path, example_policy: Policy) -> None:
    good = _cli("policy", "validate", "examples/policy.yaml")
    assert good.exit_code == 0 and good.stdout.startswith("ok: examples/policy.yaml: policy v1: 4 channels")
    assert len(good.stdout.strip().splitlines()) == 1
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(MINIMAL + "kill_switch: maybe\nchange: {max_swing_per_change: 2}\n")
    bad = _cli("policy", "validate", str(bad_file))
    assert (bad.exit_code == 2 and bad.exception is None) or isinstance(bad.exception, SystemExit)
    lines = bad.stderr.strip().splitlines()
    assert lines[1].strip().startswith("kill_switch (line 5): input should be a valid boolean")
    assert (
        lines[2]
        .strip()
        .startswith("change.max_swing_per_change (line 6): input should be less than or equal to 1")
    )


def test_cli_schema_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    done = _cli("policy", "schema", "--out", str(out))
    assert done.exit_code == 0 and out.read_text() == policy_json_schema_text()


def test_aliases_cannot_blow_up_or_loop_the_loader() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    bomb = MINIMAL + "bombs:\n" + "\n".join("  " + line for line in levels) + "\nowners: *a11\n"
    found = problems_of(bomb)  # 9^12 strings if expanded
    assert ("bombs", 5) in found and ("owners[0]", 18) in found
    assert problems_of(MINIMAL + "owners: &loop [*loop]\n")[0][0].startswith("owners")


# ---- review round 2: impossible dates, unreadable files, names, amounts, hints, warnings


def test_impossible_calendar_dates_are_problems_with_path_and_line_not_exceptions() -> None:
    policy, problems = check_policy_text(
        textwrap.dedent(
            """\
            budget: {total_daily_max: 10000}
            freeze_windows:
              - {start: 2026-02-30, end: 2026-03-01}
              - {start: 2026-13-01, end: 2026-12-01}
              - {start: 2026-03-01T10:00:00, end: 2026-03-01T25:00:00}
              - {start: "2026-02-30", end: 2026-03-05, reason: 2026-04-31}
            owners: [2026-02-29]
            channels:
              a: {max_daily: 5000}
            """
        )
    )
    assert policy is None
    found = [(p.path, p.line, p.message.split(" (")[0], p.fix) for p in problems]
    date_fix = "write a date that exists as YYYY-MM-DD (e.g. 2026-03-16)"
    time_fix = "write a date that exists and a time of day as YYYY-MM-DDTHH:MM (e.g. 2026-03-16T09:00)"
    assert found == [
        ("freeze_windows[0].start", 3, "not a calendar date: 2026-02-30", date_fix),
        ("freeze_windows[1].start", 4, "not a calendar date: 2026-13-01", date_fix),
        ("freeze_windows[2].end", 5, "not a valid date and time: 2026-03-01T25:00:00", time_fix),
        ("freeze_windows[3].reason", 6, "not a calendar date: 2026-04-31", date_fix),
        ("freeze_windows[3].start", 6, "not a calendar date: 2026-02-30", date_fix),
        ("owners[0]", 7, "not a calendar date: 2026-02-29", date_fix),
    ]
    assert "(day is out of range for month)" in problems[0].message
    with pytest.raises(PolicyError, match=r"freeze_windows\[0\]\.start \(line 5\): not a calendar date"):
        parse_policy(MINIMAL + "freeze_windows: [{start: 2026-02-30, end: 2026-03-01}]\n")


def test_scalars_yaml_cannot_build_are_problems_and_the_rest_is_still_checked() -> None:
    found = problems_of(
        MINIMAL
        + "version: !!int abc\ntimezone: !shout UTC\nkill_switch: !!bool maybe\nexploration_share: 9\n"
        + "owners: !!python/object:os.system {}\n"
    )
    assert found == [
        ("version", 5),
        ("timezone", 6),
        ("kill_switch", 7),
        ("exploration_share", 8),
        ("owners", 9),
    ]
    _policy, problems = check_policy_text(MINIMAL + "owners: !!omap [x]\n")
    assert [(p.path, p.line) for p in problems] == [("owners[0]", 5)]
    assert problems[0].message.startswith("cannot read the YAML: expected a mapping")


def test_cli_validate_reports_an_impossible_date_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "feb30.yaml"
    bad.write_text(
        "budget: {total_daily_max: 10000}\nfreeze_windows:\n  - {start: 2026-02-30, end: 2026-03-01}\n"
        "channels:\n  a: {max_daily: 5000}\n"
    )
    done = _cli("policy", "validate", str(bad))
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit), done.exception
    assert "freeze_windows[0].start (line 3): not a calendar date: 2026-02-30" in done.stderr


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("nope.yaml", None, "cannot read the policy file: it does not exist — check the path"),
        ("folder", "dir", "cannot read the policy file: it is a folder, not a file"),
        (
            "latin.yaml",
            b"# caf\xe9\nbudget: {total_daily_max: 1}\n",
            "cannot read the policy file: it is not UTF-8 text (byte 6 of the file, on line 1, is 0xe9)"
            " — save the file as UTF-8",
        ),
        ("first.yaml", b"\xff\xfebudget", "is not UTF-8 text (byte 1 of the file, on line 1, is 0xff)"),
    ],
)
def test_cli_validate_says_why_a_file_cannot_be_read(
    tmp_path: Path, name: str, content: bytes | str | None, reason: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(PolicyError, match="cannot read the policy file") as caught:
        load_policy(path)
    assert reason in str(caught.value) and caught.value.problems == []
    done = _cli("policy", "validate", str(path))
    assert done.exit_code == 2 and isinstance(done.exception, SystemExit), done.exception
    assert done.stderr.strip() == f"error: {path}: " + str(caught.value).split(f"{path}: ", 1)[1]
    assert reason in done.stderr and "0 problem" not in done.stderr


def test_shared_reader_drops_a_byte_order_mark_and_counts_lines(tmp_path: Path) -> None:
    from budgetloop.errors import InputError
    from budgetloop.fileio import read_user_text

    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert read_user_text(bom) == MINIMAL and list(load_policy(bom).channels) == ["search"]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n1,2\n3,\x80\n")
    with pytest.raises(InputError) as caught:
        read_user_text(bad, what="the table")
    assert caught.value.message == (
        "cannot read the table: it is not UTF-8 text (byte 11 of the file, on line 3, is 0x80)"
    )
    assert caught.value.file == str(bad) and caught.value.fix == "save the file as UTF-8"


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        (BUDGET + 'channels:\n  "": {max_daily: 5000}\n  ok: {}\n', 'channels[""]', "the name is empty"),
        (
            BUDGET + 'channels:\n  "search ": {max_daily: 5000}\n',
            'channels["search "]',
            "starts or ends with spaces",
        ),
        (MINIMAL + 'campaigns:\n  " brand": {channel: search}\n', 'campaigns[" brand"]', "spaces"),
        ("budget: {total_daily_max: .inf}\n" + CHANNELS, "budget.total_daily_max", "finite number (got inf)"),
        ("budget: {total_daily_max: 1e400}\n" + CHANNELS, "budget.total_daily_max", "finite number"),
        (
            "budget: {total_daily_max: 1000, total_monthly_max: .nan}\n" + CHANNELS,
            "budget.total_monthly_max",
            "finite number (got nan)",
        ),
        (BUDGET + "channels:\n  a: {max_daily: .inf}\n", "channels.a.max_daily", "finite number"),
        (MINIMAL + "exploration_share: -.inf\n", "exploration_share", "finite number"),
        (BUDGET + "channels:\n  a: {max_daily: true}\n", "channels.a.max_daily", "got a boolean (true)"),
        (BUDGET + "channels:\n  a: {min_daily: no}\n", "channels.a.min_daily", "got a boolean (false)"),
        ("budget: {total_daily_max: yes}\n" + CHANNELS, "budget.total_daily_max", "got a boolean"),
        (MINIMAL + "experiments: {days: true}\n", "experiments.days", "got a boolean"),
    ],
)
def test_names_amounts_and_booleans_that_were_let_through(text: str, path: str, words: str) -> None:
    policy, problems = check_policy_text(text)
    assert policy is None
    matching = [p for p in problems if p.path == path]
    assert matching and words in matching[0].message, problems
    assert matching[0].line is not None and matching[0].fix, matching[0]


def test_unknown_channel_hint_lists_every_declared_channel_even_broken_ones() -> None:
    _policy, problems = check_policy_text(
        textwrap.dedent(
            """\
            budget: {total_daily_max: 10000}
            channels:
              a: {max_daily: 5000, locked: maybe}
              "": {max_daily: 1}
              7: {max_daily: 1}
            campaigns:
              c1: {channel: nosuch, max_daily: 1}
              c2: {channel: a, max_daily: 1}
            freeze_windows:
              - {start: 2026-03-01, end: 2026-03-02, channels: [a, radio]}
            """
        )
    )
    by_path = {p.path: p for p in problems}
    assert by_path["campaigns.c1.channel"].fix == "use one of ['', '7', 'a'] or add it under `channels`"
    assert by_path["freeze_windows[0].channels"].message == "unknown channel 'radio'"
    assert by_path["freeze_windows[0].channels"].fix == "use one of ['', '7', 'a']"
    assert "campaigns.c2.channel" not in by_path  # `a` is declared, though its entry is broken
    assert by_path["channels[7]"].line == 5 and by_path['channels[""]'].line == 4


def test_no_approvers_is_valid_but_warned(tmp_path: Path) -> None:
    policy = parse_policy(MINIMAL)
    assert [str(w) for w in policy.warnings()] == [
        "approval.approvers: no approver is listed, so no change request can be approved and budgets "
        "will not move — list the Slack user ids allowed to approve under `approval.approvers`"
    ]
    assert parse_policy(MINIMAL + "autonomy: shadow\n").warnings() == []
    assert parse_policy(MINIMAL + "approval: {required: false}\n").warnings() == []
    assert parse_policy(MINIMAL + "approval: {approvers: [U1]}\n").warnings() == []
    assert problems_of(MINIMAL + "approval: {approvers: []}\n") == [
        ("approval.approvers", 5)
    ]  # written: an error
    file = tmp_path / "policy.yaml"
    file.write_text(MINIMAL)
    done = _cli("policy", "validate", str(file))
    assert done.exit_code == 0
    assert done.stdout.startswith(f"ok: {file}: policy v1") and len(done.stdout.splitlines()) == 1
    assert done.stderr.splitlines() == [f"warning: {policy.warnings()[0]}"]
    quiet = _cli("policy", "validate", "examples/policy.yaml")
    assert quiet.exit_code == 0 and quiet.stderr == ""
