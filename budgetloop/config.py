"""Settings from the environment (``BUDGETLOOP_*``), validated at startup.

Nothing reads ``os.environ`` below the process edges: ``serve``, ``worker`` and the CLI build a
:class:`Settings` once and pass what is needed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")
DEV_SLACK_SIGNING_SECRET = "dev-signing-secret-change-me"
DEV_SLACK_BOT_TOKEN = "xoxb-dev-token"
DEFAULT_SLACK_BASE_URL = "https://slack.com/api/"
# what an empty variable stands for: the same as leaving it unset
_UNSET_DEFAULTS: dict[str, str | None] = {
    "slack_signing_secret": DEV_SLACK_SIGNING_SECRET,
    "slack_bot_token": DEV_SLACK_BOT_TOKEN,
    "slack_base_url": DEFAULT_SLACK_BASE_URL,
    "sandbox_url": None,
    "policy_file": None,
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FIT_METHODS = ("nuts", "svi")


class SettingError(ValueError):
    """One ``BUDGETLOOP_*`` variable's problem, worded for the user (``variable``: which one)."""

    def __init__(self, variable: str, message: str, fix: str | None = None) -> None:
        self.variable = variable
        self.message = message
        self.fix = fix
        super().__init__(f"{variable}: {message}")


def http_url_problem(value: str, example: str = "http://127.0.0.1:8765") -> str | None:
    """Why ``value`` is not an http(s) URL with a host, or None when it is one."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a non-numeric or out-of-range port)
    except ValueError as exc:
        return f"{value!r} is not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} is not an http(s) URL with a host (e.g. {example})"
    return None


def default_database_url(var_dir: Path = DEFAULT_VAR_DIR) -> str:
    return f"sqlite:///{(var_dir / 'budgetloop.db').as_posix()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUDGETLOOP_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    # Empty counts as unset: Slack is then not configured (the development placeholders).
    slack_signing_secret: str = DEV_SLACK_SIGNING_SECRET
    slack_bot_token: str = DEV_SLACK_BOT_TOKEN
    slack_base_url: str = DEFAULT_SLACK_BASE_URL
    slack_channel: str = "#budget-changes"
    policy_file: Path | None = None
    environment: str = "local"
    audit_signing_key: str = "dev-audit-key-change-me"
    log_level: str = "INFO"  # one of LOG_LEVELS, any case; stored upper-case
    # serve / worker (issue 6): where the ad platforms are, whether this process runs the scheduler,
    # how jobs retry and how the weekly retrain fits.
    sandbox_url: str | None = None
    scheduler: bool = True
    job_max_attempts: int = Field(default=3, ge=1)
    job_retry_backoff_s: float = Field(default=120.0, gt=0)
    fit_method: Literal["nuts", "svi"] = "nuts"
    fit_chains: int = Field(default=2, ge=1)
    fit_warmup: int = Field(default=500, ge=10)
    fit_samples: int = Field(default=500, ge=10)
    fit_baseline: Literal["multiplicative", "additive"] = "multiplicative"
    fit_saturation: Literal["hill", "logistic"] = "hill"

    @field_validator(
        "slack_signing_secret",
        "slack_bot_token",
        "slack_base_url",
        "sandbox_url",
        "policy_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """An empty variable (``BUDGETLOOP_SLACK_BOT_TOKEN=``) means the same as an unset one."""
        if isinstance(value, str) and not value.strip():
            return _UNSET_DEFAULTS[str(info.field_name)]
        return value

    @field_validator("slack_base_url", "sandbox_url")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        example = DEFAULT_SLACK_BASE_URL if info.field_name == "slack_base_url" else "http://sandbox:8765"
        problem = None if value is None else http_url_problem(value, example=example)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_log_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            level = value.strip().upper()
            if level not in LOG_LEVELS:
                raise ValueError(f"{value!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")
            return level
        return value

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_local(self) -> Settings:
        if self.environment != "local":
            for name in ("slack_signing_secret", "audit_signing_key"):
                if getattr(self, name).startswith("dev-"):
                    variable = f"BUDGETLOOP_{name.upper()}"
                    raise SettingError(
                        variable,
                        "is unset or still holds the development placeholder, which is refused "
                        f"outside a local trial (BUDGETLOOP_ENVIRONMENT={self.environment})",
                        fix="set a real secret, or BUDGETLOOP_ENVIRONMENT=local for a trial",
                    )
        return self


def load_settings(**overrides: Any) -> Settings:
    """:class:`Settings` from the environment; a bad variable is an :class:`InputError` (exit 2) that
    names each variable once, what it holds and what to change."""
    from pydantic import ValidationError

    from budgetloop.errors import InputError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        variables: list[str] = []
        problems: list[str] = []
        fix: str | None = None
        for e in exc.errors():
            cause = (e.get("ctx") or {}).get("error")
            if isinstance(cause, SettingError):
                variable, message, fix = cause.variable, cause.message, cause.fix
            else:
                variable = "BUDGETLOOP_" + "_".join(map(str, e["loc"])).upper()
                message = str(e["msg"]).removeprefix("Value error, ")
                if e["type"] == "literal_error":
                    message = f"{e['input']!r}: {message[0].lower()}{message[1:]}"
            variables.append(variable)
            problems.append(message if len(exc.errors()) == 1 else f"{variable}: {message}")
        raise InputError(
            "; ".join(problems),
            key=", ".join(dict.fromkeys(variables)),
            fix=fix
            if fix and len(variables) == 1
            else "change " + ("that variable" if len(variables) == 1 else "those variables"),
        ) from None
