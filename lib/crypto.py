"""Encryption at rest of a job type's sensitive payload fields (Fernet, with key rotation).

``@job("charge", payload=Charge, sensitive=("card", "token"))``: at enqueue each such top-level
field's value becomes ``{"$enc": "<Fernet token of its JSON text>"}``, which is what the database,
the API, the dashboard and archives hold; only the handler gets the plain value back.

``JOBS_ENCRYPTION_KEYS`` lists Fernet keys newest first: the first one encrypts, every one
decrypts. To rotate: put a new key first, deploy, run ``python -m lib rotate-keys`` (re-encrypts
what is stored with the first key, lib/rotation.py), then drop the old key. Values only: no I/O.

cryptography is imported on first use: an app without sensitive types never loads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import ConfigError
from .jsontext import storable_json

if TYPE_CHECKING:
    from cryptography.fernet import Fernet, MultiFernet

MARKER = "$enc"


def is_sealed(value: Any) -> bool:
    """``{"$enc": "<token>"}``: a value this module encrypted."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARKER), str)


@lru_cache(maxsize=8)
def _keyring(keys: tuple[str, ...]) -> tuple[MultiFernet, Fernet]:
    # lazy: apps without sensitive types never load cryptography
    from cryptography.fernet import Fernet, MultiFernet

    fernets = [Fernet(key.encode("ascii")) for key in keys]
    return MultiFernet(fernets), fernets[0]


def keyring(settings: Settings) -> tuple[MultiFernet, Fernet]:
    """(all keys, the newest key); ConfigError when none is set: never store plaintext silently."""
    keys = settings.encryption_keys
    if not keys:
        raise ConfigError(
            "sensitive payload fields need JOBS_ENCRYPTION_KEYS (Fernet keys, newest first; make one "
            "with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        )
    return _keyring(keys)


def seal(payload: Mapping[str, Any], fields: Iterable[str], settings: Settings) -> dict[str, Any]:
    """The payload with each of ``fields`` present replaced by its encrypted marker.

    Always encrypts, even a value that already looks like a marker: a caller can't smuggle in a
    token copied from elsewhere and have the handler decrypt it."""
    names = [name for name in fields if name in payload]
    if not names:
        return dict(payload)
    multi, _ = keyring(settings)
    sealed = dict(payload)
    for name in names:
        token = multi.encrypt(storable_json(payload[name]).encode("utf-8"))
        sealed[name] = {MARKER: token.decode("ascii")}
    return sealed


def _undecryptable(name: str) -> ConfigError:
    # The message names the field, never its value.
    return ConfigError(f"payload field {name!r} cannot be decrypted: no key in JOBS_ENCRYPTION_KEYS matches")


def unseal(payload: Any, fields: Iterable[str], settings: Settings) -> Any:
    """The payload with each encrypted field of ``fields`` decrypted (for the handler only).
    A field stored before it was marked sensitive passes through as it is."""
    if not isinstance(payload, dict):
        return payload
    names = [name for name in fields if is_sealed(payload.get(name))]
    if not names:
        return payload
    from cryptography.fernet import InvalidToken  # lazy: apps without sensitive types never load cryptography

    multi, _ = keyring(settings)
    opened = dict(payload)
    for name in names:
        try:
            opened[name] = json.loads(multi.decrypt(payload[name][MARKER].encode("ascii")))
        except (InvalidToken, UnicodeEncodeError):
            raise _undecryptable(name) from None
    return opened


def reseal(payload: Any, settings: Settings) -> dict[str, Any] | None:
    """The payload with every encrypted top-level field re-encrypted with the newest key, or None
    when there was nothing to change (all already under the newest key)."""
    if not isinstance(payload, dict):
        return None
    from cryptography.fernet import InvalidToken  # lazy: apps without sensitive types never load cryptography

    multi, newest = keyring(settings)
    changed = dict(payload)
    touched = False
    for name, value in payload.items():
        if not is_sealed(value):
            continue
        token = value[MARKER].encode("ascii")
        try:
            newest.decrypt(token)
            continue  # already under the newest key
        except InvalidToken:
            pass
        try:
            changed[name] = {MARKER: multi.rotate(token).decode("ascii")}
        except InvalidToken:
            raise _undecryptable(name) from None
        touched = True
    return changed if touched else None
