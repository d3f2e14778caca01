"""Settings from the environment (``BUDGETLOOP_*``), validated at startup.

Nothing reads ``os.environ`` below the process edges: ``serve``, ``worker`` and the CLI build a
:class:`Settings` once and pass what is needed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_VAR_DIR = Path("var")


def default_database_url(var_dir: Path = DEFAULT_VAR_DIR) -> str:
    return f"sqlite:///{(var_dir / 'budgetloop.db').as_posix()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUDGETLOOP_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    slack_signing_secret: str = "dev-signing-secret-change-me"
    slack_bot_token: str = "xoxb-dev-token"
    slack_base_url: str = "https://slack.com/api/"
    slack_channel: str = "#budget-changes"
    policy_file: Path | None = None
    environment: str = "local"
    audit_signing_key: str = "dev-audit-key-change-me"
    log_level: str = "INFO"
    # serve / worker (issue 6): where the ad platforms are, whether this process runs the scheduler,
    # how jobs retry and how the weekly retrain fits.
    sandbox_url: str | None = None
    scheduler: bool = True
    job_max_attempts: int = Field(default=3, ge=1)
    job_retry_backoff_s: float = Field(default=120.0, gt=0)
    fit_method: str = "nuts"
    fit_chains: int = Field(default=2, ge=1)
    fit_warmup: int = Field(default=500, ge=10)
    fit_samples: int = Field(default=500, ge=10)
    fit_baseline: Literal["multiplicative", "additive"] = "multiplicative"
    fit_saturation: Literal["hill", "logistic"] = "hill"

    @model_validator(mode="after")
    def _refuse_dev_secrets_outside_local(self) -> Settings:
        if self.environment != "local":
            for name in ("slack_signing_secret", "audit_signing_key"):
                if getattr(self, name).startswith("dev-"):
                    raise ValueError(
                        f"BUDGETLOOP_{name.upper()} still holds the development placeholder; "
                        "set a real secret before running outside BUDGETLOOP_ENVIRONMENT=local"
                    )
        return self
