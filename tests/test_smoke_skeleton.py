"""The skeleton holds: the CLI answers, stubs refuse honestly, migrations run on both engines."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, inspect

from budgetloop.clock import SimulatedClock


def test_simulated_clock_moves_only_forward() -> None:
    clock = SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(timedelta(days=1))
    assert clock.today().isoformat() == "2026-01-02"
    with pytest.raises(ValueError, match="cannot go backwards"):
        clock.set(datetime(2025, 12, 31, tzinfo=UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedClock(datetime(2026, 1, 1))


def test_cli_help_lists_the_contract_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from budgetloop.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("demo", "fit", "optimize", "policy", "serve"):
        assert command in out


def test_migrations_reach_head(migrated_engine: Engine) -> None:
    assert "alembic_version" in inspect(migrated_engine).get_table_names()
