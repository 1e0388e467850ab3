"""Where this deployment calls itself (fan-out drains; anything else that must reach this very app).

Never a host named by a request: ``Host`` and ``X-Forwarded-Host`` are whatever the client sent, and
the calls carry the caller's credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Settings

# Vercel's header for "Protection Bypass for Automation" (Deployment Protection covers deployment URLs).
BYPASS_HEADER = "x-vercel-protection-bypass"


@dataclass(frozen=True)
class OwnDeployment:
    base_url: str  # scheme://host[:port][/prefix], no trailing slash
    headers: dict[str, str] = field(default_factory=dict)  # to add to every call of base_url


def own_deployment(settings: Settings) -> OwnDeployment | None:
    """``JOBS_PUBLIC_URL`` when set; else, on Vercel, ``https://$VERCEL_URL``: the URL of this very
    deployment, so a preview calls itself and never production (``VERCEL_PROJECT_PRODUCTION_URL``
    would); else None. Vercel's bypass secret, when the project has one, goes to its own URL only."""
    if settings.jobs_public_url:
        return OwnDeployment(settings.jobs_public_url.rstrip("/"))
    host = settings.vercel_url.strip().removeprefix("https://").strip("/")
    if not host:
        return None
    secret = settings.vercel_automation_bypass_secret.strip()
    return OwnDeployment(f"https://{host}", {BYPASS_HEADER: secret} if secret else {})
