"""boto3 clients, made on first use: importing boto3 costs ~0.4 s of cold start, and a new
client ~15 ms, so an app that never archives or e-mails pays nothing and one that does pays once."""

from __future__ import annotations

import functools
import math
from typing import Any

MAX_TIMEOUT_SECONDS = 60


@functools.lru_cache(maxsize=32)
def client(service: str, region: str, timeout: int | None = None) -> Any:
    """A shared client (boto3 clients are thread-safe); region from AWS_REGION or AWS_DEFAULT_REGION.
    With ``timeout`` (whole seconds): connecting and each read give up after it, and a call is
    tried once, so a hanging endpoint costs at most about that long (botocore's defaults: 60 s
    a read, several attempts)."""
    import boto3  # lazy: boto3 takes ~300 ms to import: only archives and SES pay

    if timeout is None:
        return boto3.client(service, region_name=region)  # type: ignore[call-overload]
    from botocore.config import Config  # lazy: boto3 takes ~300 ms to import: only archives and SES pay

    bounded = Config(
        connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1, "mode": "standard"}
    )
    return boto3.client(service, region_name=region, config=bounded)  # type: ignore[call-overload]


def timeout_for(seconds_left: float) -> int:
    """A client ``timeout`` within ``seconds_left`` (whole seconds, so clients are reused)."""
    return max(1, min(MAX_TIMEOUT_SECONDS, math.floor(seconds_left)))


def clear_clients() -> None:
    """Forget cached clients (tests that start and stop AWS mocks)."""
    client.cache_clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
