"""``BUDGETLOOP_*`` settings are checked when a process starts: a bad one exits 2 naming the variable,
what it holds and what is allowed, before anything runs (no traceback, no job failing later)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from budgetloop.cli.serve import slack_off_reason
from budgetloop.config import DEV_SLACK_SIGNING_SECRET, Settings, load_settings
from budgetloop.errors import InputError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BUDGETLOOP_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("BUDGETLOOP_LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("BUDGETLOOP_FIT_METHOD", "bogus", "'nuts' or 'svi'"),
        ("BUDGETLOOP_FIT_SATURATION", "cubic", "'hill' or 'logistic'"),
        ("BUDGETLOOP_SLACK_BASE_URL", "notaurl", "http(s) URL"),
        ("BUDGETLOOP_SANDBOX_URL", "notaurl", "http(s) URL"),
        ("BUDGETLOOP_SANDBOX_URL", "http://host:99999", "not a URL"),
    ],
)
def test_a_bad_variable_is_named_with_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InputError) as caught:
        load_settings()
    text = str(caught.value)
    assert text.startswith(f"`{variable}`: ") and says in text and repr(value) in text, text
    assert "BUDGETLOOP_:" not in text and "Value error" not in text


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETLOOP_LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"


def test_an_empty_signing_secret_means_slack_is_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETLOOP_SLACK_SIGNING_SECRET", "")
    monkeypatch.setenv("BUDGETLOOP_SLACK_BOT_TOKEN", "")
    settings = load_settings()
    assert settings.slack_signing_secret == DEV_SLACK_SIGNING_SECRET == Settings().slack_signing_secret
    reason = slack_off_reason(settings, receives_clicks=True)
    assert reason is not None and reason.startswith("Slack approvals are disabled")
    assert "BUDGETLOOP_SLACK_BOT_TOKEN" in reason and "BUDGETLOOP_SLACK_SIGNING_SECRET" in reason
    # Outside a local trial an empty secret is refused like the placeholder.
    monkeypatch.setenv("BUDGETLOOP_ENVIRONMENT", "production")
    monkeypatch.setenv("BUDGETLOOP_AUDIT_SIGNING_KEY", "real-key")
    with pytest.raises(InputError, match="BUDGETLOOP_SLACK_SIGNING_SECRET"):
        load_settings()


def test_slack_configured_logs_nothing() -> None:
    settings = Settings(slack_bot_token="xoxb-real", slack_signing_secret="real")
    assert slack_off_reason(settings, receives_clicks=True) is None
    worker_side = Settings(slack_bot_token="xoxb-real")  # the worker never receives the clicks
    assert slack_off_reason(worker_side, receives_clicks=False) is None
    assert "SIGNING_SECRET" in (slack_off_reason(worker_side, receives_clicks=True) or "")


def test_the_production_refusal_names_the_variable_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETLOOP_ENVIRONMENT", "production")
    with pytest.raises(InputError) as caught:
        load_settings()
    text = str(caught.value)
    assert (
        text.startswith("`BUDGETLOOP_SLACK_SIGNING_SECRET`: ") and text.count("BUDGETLOOP_SLACK_SIGNING") == 1
    )
    assert "`environment`" not in text and "Value error" not in text and "BUDGETLOOP_:" not in text


def test_serve_with_a_bad_log_level_exits_2_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUDGETLOOP_")}
    env["BUDGETLOOP_LOG_LEVEL"] = "LOUD"
    env["BUDGETLOOP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    done = subprocess.run(
        [sys.executable, "-c", "from budgetloop.cli import main; main()", "serve", "--port", "8999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "BUDGETLOOP_LOG_LEVEL" in done.stderr
    assert not (tmp_path / "x.db").exists(), "nothing may be created before the settings are checked"


def test_the_slack_line_is_logged_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    from budgetloop.cli.serve import log_slack_state

    with caplog.at_level(logging.WARNING, logger="budgetloop.process"):
        log_slack_state(Settings(), receives_clicks=True)
    assert [r.getMessage()[:30] for r in caplog.records] == ["Slack approvals are disabled: "]


def test_an_empty_policy_file_variable_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reviewer's BUDGETLOOP_POLICY_FILE= was read as the folder `.`."""
    monkeypatch.setenv("BUDGETLOOP_POLICY_FILE", "")
    assert load_settings().policy_file is None
