"""Settings: environment variables only, read once per process and validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite:///.data/sluice.db"


def split_csv(value: str | None) -> tuple[str, ...]:
    """Comma-separated setting → tuple of non-empty, stripped items."""
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    database_url: str = DEFAULT_SQLITE_URL
    jobs_api_keys: str = ""
    job_processor_api_key: str = ""
    jobs_tenant_keys: str = ""
    cron_secret: str = ""
    jobs_http_allow_hosts: str = ""
    jobs_http_signing_secret: str = ""
    jobs_lease_grace_seconds: int = Field(30, ge=0, le=86_400)
    jobs_max_body_bytes: int = Field(262_144, ge=1_024, le=64 * 1024 * 1024)
    jobs_drain_budget_ms: int = Field(25_000, ge=100, le=800_000)
    # Jobs claimed per statement; a drain runs many batches until maxJobs or its budget.
    jobs_batch_size: int = Field(500, ge=1, le=10_000)
    # Extra modules whose import registers the app's own job types.
    jobs_handler_modules: str = ""
    # "small" keeps a couple of connections for a warm function; "null" opens one per use.
    jobs_db_pool: Literal["small", "null"] = "small"
    jobs_cleanup_completed_seconds: int = Field(86_400, ge=0, le=3_153_600_000)
    jobs_cleanup_failed_seconds: int = Field(604_800, ge=0, le=3_153_600_000)
    jobs_cleanup_cancelled_seconds: int = Field(604_800, ge=0, le=3_153_600_000)
    jobs_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        value = value.strip() or DEFAULT_SQLITE_URL
        schemes = ("postgres://", "postgresql://", "postgresql+psycopg://", "sqlite://")
        if not value.startswith(schemes):
            raise ValueError("DATABASE_URL must start with postgres://, postgresql:// or sqlite://")
        return value

    @field_validator("jobs_tenant_keys")
    @classmethod
    def _tenant_pairs(cls, value: str) -> str:
        for pair in split_csv(value):
            tenant, sep, key = pair.partition(":")
            if not sep or not tenant.strip() or not key.strip():
                raise ValueError("JOBS_TENANT_KEYS must be comma-separated tenant:key pairs")
        return value

    @property
    def admin_keys(self) -> tuple[str, ...]:
        return split_csv(self.jobs_api_keys) + split_csv(self.job_processor_api_key)

    @property
    def tenant_keys(self) -> tuple[tuple[str, str], ...]:
        """(tenant, key) pairs."""
        pairs = (pair.partition(":") for pair in split_csv(self.jobs_tenant_keys))
        return tuple((tenant.strip(), key.strip()) for tenant, _, key in pairs)

    @property
    def http_allow_hosts(self) -> frozenset[str]:
        return frozenset(host.lower() for host in split_csv(self.jobs_http_allow_hosts))

    @property
    def handler_modules(self) -> tuple[str, ...]:
        return split_csv(self.jobs_handler_modules)

    @property
    def sqlite_path(self) -> Path | None:
        """The file of an SQLite URL, or None for PostgreSQL and in-memory SQLite."""
        url = self.database_url
        if not url.startswith("sqlite:///") or url in ("sqlite:///", "sqlite:///:memory:"):
            return None
        return Path(url.removeprefix("sqlite:///"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from the environment (cached: read once per process)."""
    return Settings()
