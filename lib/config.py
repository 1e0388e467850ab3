"""Settings: environment variables only, read once per process and validated at start."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .models import TENANT_ID, TENANT_ID_RULE
from .rates import Rate, parse_rate, parse_rates

DEFAULT_SQLITE_URL = "sqlite:///.data/sluice.db"
# An on/off setting; empty means "not set" (the feature decides its default).
SWITCH: dict[str, bool | None] = {
    "": None, "on": True, "true": True, "1": True, "off": False, "false": False, "0": False
}  # fmt: skip


def split_csv(value: str | None) -> tuple[str, ...]:
    """Comma-separated setting → tuple of non-empty, stripped items."""
    return tuple(item.strip() for item in (value or "").split(",") if item.strip())


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting's error must not print the secrets it holds.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True, hide_input_in_errors=True)

    database_url: str = DEFAULT_SQLITE_URL
    jobs_api_keys: str = ""
    job_processor_api_key: str = ""
    jobs_tenant_keys: str = ""
    cron_secret: str = ""
    jobs_http_allow_hosts: str = ""
    jobs_http_signing_secret: str = ""
    # Fernet keys, newest first: the first encrypts sensitive payload fields, all decrypt (lib/crypto.py).
    jobs_encryption_keys: str = ""
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
    # Where this app calls itself (fan-out drains), e.g. https://app.example.com; on Vercel the default
    # is the deployment's own URL (lib/deployment.py), never a host named by a request.
    jobs_public_url: str = ""
    # maxJobs of a drain called with CRON_SECRET and no maxJobs: its time budget bounds a tick, not 10.
    jobs_cron_max_jobs: int = Field(1000, ge=1, le=10_000)
    # Set by Vercel on every deployment: its own host name (no scheme), e.g. sluice-abc123.vercel.app.
    vercel_url: str = ""
    # Set by Vercel when the project has "Protection Bypass for Automation": lets it call itself.
    vercel_automation_bypass_secret: str = ""
    # Kick on enqueue (lib/kick.py): on, off, or unset = on wherever this app's own URL is known.
    jobs_kick: str = ""
    # At most one kick per this many ms per process (a burst of enqueues makes one drain).
    jobs_kick_min_interval_ms: int = Field(1000, ge=0, le=3_600_000)
    # Retention archive (lib/retention.py): rows are written to S3 before they are deleted.
    jobs_archive_s3_bucket: str = ""
    jobs_archive_s3_prefix: str = "sluice/archive"
    # Dead-letter alerts (lib/alerts.py): a Slack-compatible webhook and/or e-mail through SES.
    jobs_alert_webhook_url: str = ""
    jobs_alert_email_to: str = ""
    jobs_alert_email_from: str = ""
    # Failures within this many seconds of the first one share one digest.
    jobs_alert_digest_seconds: int = Field(60, ge=0, le=86_400)
    # Sender of the built-in email.ses type when a payload names none.
    jobs_email_from: str = ""
    # "type=50/hour,..." run limits for types declared elsewhere (lib/ratelimit.py).
    jobs_rate_limits: str = ""
    # "1000/hour": jobs one tenant may enqueue per window (RateLimited, the API's 429, past it).
    jobs_tenant_enqueue_limit: str = ""
    aws_region: str = ""
    aws_default_region: str = ""

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
            if not TENANT_ID.fullmatch(tenant.strip()):
                # Neither the id nor the key is echoed: a mistyped pair may hold the key first.
                raise ValueError(f"JOBS_TENANT_KEYS: a tenant id is {TENANT_ID_RULE}")
        return value

    @field_validator("jobs_encryption_keys")
    @classmethod
    def _fernet_keys(cls, value: str) -> str:
        # Checked without importing cryptography (cold start): 32 bytes, URL-safe base64.
        for key in split_csv(value):
            try:
                raw = base64.urlsafe_b64decode(key.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raw = b""
            if len(raw) != 32:
                raise ValueError("JOBS_ENCRYPTION_KEYS must be comma-separated Fernet keys (newest first)")
        return value

    @field_validator("jobs_rate_limits", "jobs_tenant_enqueue_limit")
    @classmethod
    def _rates(cls, value: str, info: ValidationInfo) -> str:
        name = (info.field_name or "").upper()
        try:
            if info.field_name == "jobs_rate_limits":
                parse_rates(value)
            elif value.strip():
                parse_rate(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        return value.strip()

    @field_validator("jobs_alert_webhook_url")
    @classmethod
    def _webhook(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("JOBS_ALERT_WEBHOOK_URL must be an http(s) URL")
        return value

    @field_validator("jobs_public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("JOBS_PUBLIC_URL must be an http(s) URL, e.g. https://app.example.com")
        return value

    @field_validator("jobs_kick")
    @classmethod
    def _switch(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in SWITCH:
            raise ValueError("JOBS_KICK must be on, off, true, false, 1 or 0 (unset: on if a URL is known)")
        return value

    @field_validator("jobs_archive_s3_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return value.strip().strip("/")

    @property
    def kick_enabled(self) -> bool | None:
        """JOBS_KICK as a switch; None when unset (lib/kick.py decides by what it knows)."""
        return SWITCH[self.jobs_kick]

    @property
    def archive_bucket(self) -> str | None:
        return self.jobs_archive_s3_bucket.strip() or None

    @property
    def alert_email_to(self) -> tuple[str, ...]:
        return split_csv(self.jobs_alert_email_to)

    @property
    def alerts_configured(self) -> bool:
        return bool(self.jobs_alert_webhook_url or (self.alert_email_to and self.jobs_alert_email_from))

    @property
    def rate_limits(self) -> dict[str, Rate]:
        """{type: Rate} from JOBS_RATE_LIMITS."""
        return dict(parse_rates(self.jobs_rate_limits))

    @property
    def tenant_enqueue_rate(self) -> Rate | None:
        """The Rate of JOBS_TENANT_ENQUEUE_LIMIT, or None."""
        return parse_rate(self.jobs_tenant_enqueue_limit) if self.jobs_tenant_enqueue_limit else None

    @property
    def aws_region_name(self) -> str:
        return self.aws_region.strip() or self.aws_default_region.strip() or "us-east-1"

    @property
    def admin_keys(self) -> tuple[str, ...]:
        return split_csv(self.jobs_api_keys) + split_csv(self.job_processor_api_key)

    @property
    def tenant_keys(self) -> tuple[tuple[str, str], ...]:
        """(tenant, key) pairs."""
        pairs = (pair.partition(":") for pair in split_csv(self.jobs_tenant_keys))
        return tuple((tenant.strip(), key.strip()) for tenant, _, key in pairs)

    @property
    def encryption_keys(self) -> tuple[str, ...]:
        return split_csv(self.jobs_encryption_keys)

    @property
    def http_allow_hosts(self) -> frozenset[str]:
        return frozenset(host.lower() for host in split_csv(self.jobs_http_allow_hosts))

    @property
    def handler_modules(self) -> tuple[str, ...]:
        return split_csv(self.jobs_handler_modules)


def settings_problem(exc: ValidationError) -> str:
    """A refused setting in one line that names it (the value is never repeated: it may be a secret)."""
    problems = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        name = ".".join(str(part) for part in err["loc"]).upper() or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        problems.append(msg if msg.startswith(name) else f"{name}: {msg}")
    return "; ".join(problems) or str(exc).splitlines()[0]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from the environment (cached: read once per process)."""
    return Settings()
