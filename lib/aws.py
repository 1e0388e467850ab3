"""boto3 clients, made on first use: importing boto3 costs ~0.4 s of cold start, and a new
client ~15 ms, so an app that never archives or e-mails pays nothing and one that does pays once."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=8)
def client(service: str, region: str) -> Any:
    """A shared client (boto3 clients are thread-safe); region from AWS_REGION or AWS_DEFAULT_REGION."""
    import boto3

    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


def clear_clients() -> None:
    """Forget cached clients (tests that start and stop AWS mocks)."""
    client.cache_clear()


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
