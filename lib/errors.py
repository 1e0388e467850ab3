"""One exception root for everything Sluice raises on purpose.

Each error carries a stable ``code`` (the API's error code); the HTTP layer maps codes to
status codes, so the queue itself never knows about HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic


class SluiceError(Exception):
    """Root of every error Sluice raises deliberately."""

    code = "error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(SluiceError):
    code = "not_configured"


class ValidationError(SluiceError):
    """Input that breaks the contract; ``details`` lists ``{"loc", "msg"}`` items."""

    code = "validation_error"


def invalid(exc: pydantic.ValidationError, message: str) -> ValidationError:
    """A pydantic failure as our ValidationError, details ``[{"loc": "a.b", "msg"}]``."""
    details = [
        {"loc": ".".join(str(part) for part in err["loc"]) or "body", "msg": err["msg"]}
        for err in exc.errors(include_url=False)
    ]
    return ValidationError(message, details)


class UnknownJobType(ValidationError):
    code = "unknown_job_type"


class DuplicateJobType(SluiceError):
    code = "duplicate_job_type"


class NotFound(SluiceError):
    code = "not_found"


class Conflict(SluiceError):
    code = "conflict"


class Unauthorized(SluiceError):
    """Missing or wrong credentials (the API's 401); raised by lib.client."""

    code = "unauthorized"


class Forbidden(SluiceError):
    code = "forbidden"


class RateLimited(SluiceError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retryAfterSeconds": retry_after})
        self.retry_after = retry_after


class Unavailable(SluiceError):
    """The database could not be reached or answered with a connection fault."""

    code = "unavailable"


class PermanentError(SluiceError):
    """Raised by a handler: fail the job now, without retrying."""

    code = "permanent_error"


class RetryLater(SluiceError):
    """Raised by a handler: try again after ``delay_seconds``; the attempt is not counted."""

    code = "retry_later"

    def __init__(self, message: str, delay_seconds: float) -> None:
        super().__init__(message)
        # At most ten years (an enqueue's delaySeconds limit): a larger or infinite delay is no
        # storable time, and its failed write would lose the outcomes of the whole batch.
        self.delay_seconds = min(max(0.0, delay_seconds), 315_360_000.0)


class StepError(PermanentError):
    """A durable step used wrongly (a bad or repeated name, a result that isn't JSON): retrying
    can't help, so the job fails at once."""

    code = "step_error"


class LeaseLost(SluiceError):
    """A step's fenced write was refused: the job's lease ran out and another drain holds it now.
    Raised inside the handler, it ends the attempt with nothing recorded (the job is not ours)."""

    code = "lease_lost"


class Sleeping(SluiceError):
    """Raised by ``ctx.sleep``: end this attempt uncounted, the job due again after
    ``delay_seconds`` with its steps kept (a continuation, not a retry). Don't catch it."""

    code = "sleeping"

    def __init__(self, delay_seconds: float) -> None:
        # At most ten years, like RetryLater: a larger delay is no storable time.
        self.delay_seconds = min(max(0.0, delay_seconds), 315_360_000.0)
        delay = self.delay_seconds
        shown = f"{delay:.0f}" if delay >= 1 or delay == 0 else f"{delay:.2f}"
        super().__init__(f"sleeping {shown} s (ctx.sleep)")
