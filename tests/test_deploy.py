"""The deployment recipe, checked without a Docker engine: the compose file parses and wires the four
services together, every `budgetloop` command it runs exists with the options it passes, and the
Dockerfile builds from the lock file as a non-root user."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from budgetloop.cli import _register_all, app
from budgetloop.config import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def _cli() -> Any:
    _register_all()
    return typer.main.get_command(app)


def _budgetloop_commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, svc in SERVICES.items():
        cmd = svc.get("command")
        if isinstance(cmd, list) and cmd and cmd[0] == "budgetloop":
            out.append((name, cmd[1:]))
    return out


def test_compose_has_the_four_services_wired_by_health() -> None:
    assert {"postgres", "api", "worker", "sandbox"} <= set(SERVICES)
    for name in ("api", "worker"):
        deps = SERVICES[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["sandbox"]["condition"] == "service_healthy", name
    assert SERVICES["worker"]["depends_on"]["api"]["condition"] == "service_healthy"
    for name, svc in SERVICES.items():
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no healthcheck"


def test_api_and_worker_are_configured_from_known_settings() -> None:
    known = {f"BUDGETLOOP_{f.upper()}" for f in Settings.model_fields}
    for name in ("api", "worker"):
        env = SERVICES[name]["environment"]
        assert {"BUDGETLOOP_DATABASE_URL", "BUDGETLOOP_SANDBOX_URL"} <= set(env), name
        unknown = sorted(k for k in env if k.startswith("BUDGETLOOP_") and k not in known)
        assert unknown == [], f"{name} sets variables Settings does not read: {unknown}"
        assert "@postgres:5432/" in env["BUDGETLOOP_DATABASE_URL"]
        assert env["BUDGETLOOP_SANDBOX_URL"].startswith("http://sandbox:")
    assert SERVICES["api"]["command"][1:3] == ["serve", "--no-scheduler"]
    assert SERVICES["worker"]["command"][1] == "worker"
    assert SERVICES["sandbox"]["command"][1:3] == ["sandbox", "serve"]


def test_files_the_compose_file_names_exist_in_the_repository() -> None:
    for _, args in _budgetloop_commands():
        for arg in args:
            if arg.startswith("/app/"):
                assert (REPO / arg.removeprefix("/app/")).is_file(), arg
    for svc in SERVICES.values():
        for key, value in (svc.get("environment") or {}).items():
            if isinstance(value, str) and value.startswith("/app/") and key.endswith("_FILE"):
                assert (REPO / value.removeprefix("/app/")).is_file(), value


@pytest.mark.parametrize(
    ("service", "args"), _budgetloop_commands(), ids=[n for n, _ in _budgetloop_commands()]
)
def test_every_command_the_compose_file_runs_exists_with_its_options(service: str, args: list[str]) -> None:
    cmd = _cli()
    words = list(args)
    while hasattr(cmd, "commands") and words and not words[0].startswith("-"):
        sub = cmd.commands.get(words[0])
        assert sub is not None, f"{service}: `budgetloop ... {words[0]}` does not exist"
        cmd, words = sub, words[1:]
    options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    named = [w for w in words if w.startswith("--")]
    assert set(named) <= options, f"{service}: unknown options {sorted(set(named) - options)}"
    # And the command answers --help with exit code 0, as a user would call it.
    result = CliRunner().invoke(app, [*args[: len(args) - len(words)], "--help"])
    assert result.exit_code == 0, result.output


def test_dockerfile_installs_the_lock_and_runs_as_a_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install -r requirements.lock" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    for src in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"


@pytest.mark.parametrize("command", [["serve"], ["sandbox", "serve", "--scenario", "examples/scenario.yaml"]])
def test_a_port_in_use_exits_2_naming_the_flag_before_any_work(command: list[str], tmp_path: Path) -> None:
    """An ops reviewer's second `serve` on a taken port exited 3 with uvicorn's log, after migrating."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        db = tmp_path / "never.db"
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from budgetloop.cli import main; main(sys.argv[1:])", *command, "--port", port],
            capture_output=True, text=True, cwd=REPO, timeout=120,
            env={**__import__("os").environ, "BUDGETLOOP_DATABASE_URL": f"sqlite:///{db}"},
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "`--port`" in done.stderr and "in use" in done.stderr and "Traceback" not in done.stderr
    assert not db.exists()  # refused before the database was touched
