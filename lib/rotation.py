"""Key rotation, a service the facade owns (``queue.rotation``): re-encrypt what is stored under
the newest of JOBS_ENCRYPTION_KEYS (the sealing itself is lib/crypto.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core import Service
from .crypto import keyring, reseal
from .db import guarded
from .errors import ConfigError
from .store import payloads as store

ROTATE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Rotated:
    """Rows whose payload was re-encrypted."""

    jobs: int
    schedules: int

    def to_wire(self) -> dict[str, int]:
        return {"jobs": self.jobs, "schedules": self.schedules}


class KeyRotation(Service):
    """The facade's ``rotation``: re-encryption of stored sensitive fields with the newest key."""

    def rotate_keys(self, *, batch_size: int = ROTATE_BATCH) -> Rotated:
        """Re-encrypt the stored sensitive fields of every job and schedule of a sensitive type with
        the newest key, one short transaction per batch. Safe to run again (and alongside drains:
        the payload column is written only at insert and here)."""
        core = self.core
        types = sorted(t.name for t in core.registry if t.sensitive)
        keyring(core.settings)  # no keys: ConfigError before touching anything

        @guarded
        def rotate_table(table: store.Kind) -> int:
            done = 0
            after: Any = None
            while types:
                with core.engine.begin() as conn:
                    rows = store.payloads_of_types(conn, table, types, after, batch_size)
                    updates: list[tuple[Any, dict[str, Any]]] = []
                    for key, payload in rows:
                        try:
                            new = reseal(payload, core.settings)
                        except ConfigError as exc:
                            raise ConfigError(f"{table} {key}: {exc.message}") from None
                        if new is not None:
                            updates.append((key, new))
                    store.write_payloads(conn, table, updates)
                done += len(updates)
                if len(rows) < batch_size:
                    break
                after = rows[-1][0]
            return done

        return Rotated(jobs=rotate_table("jobs"), schedules=rotate_table("schedules"))
