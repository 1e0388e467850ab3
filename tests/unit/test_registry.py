"""The job type registry: one name, one handler; payloads validated with field names."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from lib import JobContext, Registry, UnknownJobType, ValidationError
from lib.errors import DuplicateJobType
from lib.registry import BUILTIN_HANDLER_MODULES, registry


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zip: str


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    age: int
    address: Address


def context(attempt: int = 1) -> JobContext:
    job_id = uuid.uuid4()
    return JobContext(
        str(job_id), "t", attempt, 3, None, "corr", time.monotonic() + 60, lambda _id, _p: None, job_id
    )


def test_duplicate_registration_raises_and_names_the_first_handler() -> None:
    reg = Registry()

    @reg.job("dup")
    def first(payload: dict[str, Any]) -> None:
        return None

    with pytest.raises(DuplicateJobType) as err:

        @reg.job("dup")
        def second(payload: dict[str, Any]) -> None:
            return None

    assert "dup" in err.value.message
    assert f"{__name__}.{first.__qualname__}" in err.value.message
    assert reg.get("dup").handler is first


def test_the_process_registry_refuses_a_second_noop() -> None:
    registry.load()
    with pytest.raises(DuplicateJobType):
        registry.job("noop")(lambda payload: None)
    assert registry.get("noop").handler.__module__ == "lib.handlers.noop"


def test_load_is_idempotent() -> None:
    registry.load(["tests.jobtypes"])
    registry.load(["tests.jobtypes", *BUILTIN_HANDLER_MODULES])
    assert "test.greet" in registry and "noop" in registry


def test_one_parameter_handler_gets_only_the_payload() -> None:
    reg = Registry()
    calls: list[tuple[Any, ...]] = []

    @reg.job("one")
    def one(payload: dict[str, Any]) -> str:
        calls.append((payload,))
        return "ok"

    @reg.job("two")
    def two(payload: dict[str, Any], ctx: JobContext) -> int:
        calls.append((payload, ctx))
        return ctx.attempt

    assert reg.get("one").run({"a": 1}, context()) == "ok"
    assert calls == [({"a": 1},)]
    assert reg.get("two").run({"b": 2}, context(attempt=2)) == 2
    assert calls[1][0] == {"b": 2} and isinstance(calls[1][1], JobContext)
    assert (reg.get("one").wants_context, reg.get("two").wants_context) == (False, True)
    # The decorator hands the function back unchanged: it stays callable as written.
    assert one({"x": 0}) == "ok"


def test_handler_with_a_model_gets_the_model() -> None:
    reg = Registry()
    seen: list[Any] = []
    reg.job("person", payload=Person)(seen.append)
    reg.get("person").run({"name": "ada", "age": 36, "address": {"zip": "1"}}, context())
    assert seen == [Person(name="ada", age=36, address=Address(zip="1"))]


def test_payload_errors_name_every_bad_field() -> None:
    reg = Registry()
    reg.job("person", payload=Person)(lambda payload: None)
    with pytest.raises(ValidationError) as err:
        reg.get("person").validate_payload({"age": "old", "address": {"zip": 5}, "extra": 1})
    assert "person" in err.value.message
    locs = {detail["loc"] for detail in err.value.details}
    assert locs == {"payload.name", "payload.age", "payload.address.zip", "payload.extra"}
    assert all(detail["msg"] for detail in err.value.details)


def test_valid_payload_is_stored_as_the_models_json() -> None:
    reg = Registry()
    reg.job("person", payload=Person)(lambda payload: None)
    stored = reg.get("person").validate_payload({"name": "ada", "age": 36, "address": {"zip": "1"}})
    assert stored == {"name": "ada", "age": 36, "address": {"zip": "1"}}


def test_check_runs_after_the_model_and_can_refuse() -> None:
    reg = Registry()
    checked: list[dict[str, Any]] = []

    def check(payload: dict[str, Any], settings: object) -> None:
        checked.append(payload)
        if payload["name"] == "root":
            raise ValidationError("no", [{"loc": "payload.name", "msg": "reserved"}])

    reg.job("person", payload=Person, check=check)(lambda payload: None)
    with pytest.raises(ValidationError):
        reg.get("person").validate_payload({"name": 1})  # the model refuses first
    assert checked == []
    with pytest.raises(ValidationError) as err:
        reg.get("person").validate_payload({"name": "root", "age": 1, "address": {"zip": "1"}})
    assert err.value.details == [{"loc": "payload.name", "msg": "reserved"}]


def test_unknown_type_is_its_own_error() -> None:
    with pytest.raises(UnknownJobType) as err:
        Registry().get("missing")
    assert err.value.code == "unknown_job_type"
    assert err.value.details == [{"loc": "type", "msg": "'missing' is not registered"}]
    assert Registry().find("missing") is None


def test_defaults_and_overrides_are_kept() -> None:
    reg = Registry()
    reg.job("plain")(lambda payload: None)
    reg.job("tuned", max_attempts=7, timeout=5)(lambda payload: None)
    assert (reg.get("plain").max_attempts, reg.get("plain").timeout_seconds) == (3, 60)
    assert (reg.get("tuned").max_attempts, reg.get("tuned").timeout_seconds) == (7, 5)
    assert [t.name for t in reg] == ["plain", "tuned"]
