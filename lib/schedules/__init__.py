"""Schedules: cron slots on a time zone's wall clock; every drain enqueues the due ones.

By concern: ``slots`` (cron and DST arithmetic), ``models`` (the wire models), ``declared`` (the
schedules declared in code), ``service`` (the facade's ``queue.schedules`` and the drain's hook);
the SQL is lib/store/schedules.py.
"""

from .declared import Declarations, declarations, declared, schedule, undeclare
from .models import Schedule, ScheduleSpec, check_name, parse_spec
from .service import DueHook, Schedules
from .slots import Slots, check_cron, check_timezone, slot_key, wall_to_instant

__all__ = [
    "Declarations",
    "DueHook",
    "Schedule",
    "ScheduleSpec",
    "Schedules",
    "Slots",
    "check_cron",
    "check_name",
    "check_timezone",
    "declarations",
    "declared",
    "parse_spec",
    "schedule",
    "slot_key",
    "undeclare",
    "wall_to_instant",
]
