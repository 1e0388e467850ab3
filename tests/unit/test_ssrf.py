"""Address checks (lib.ssrf) and the ``http`` payload model: pure, no network beyond loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from lib import PermanentError, ValidationError, registry, ssrf
from lib.config import Settings, get_settings
from lib.handlers.http import HttpPayload, check_payload, parse_target

registry.load()


@pytest.fixture(autouse=True)
def no_allow_list() -> Iterator[None]:
    """The enqueue check reads the process settings: make sure no allow list leaks in."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("JOBS_HTTP_ALLOW_HOSTS", raising=False)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("100.127.255.254", "a shared (CGNAT) address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("192.0.2.10", "a private address"),  # documentation range
        ("198.18.0.1", "a private address"),  # benchmarking range
        ("::1", "a loopback address"),
        ("::", "an unspecified address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("ff02::1", "a multicast address"),
        ("2001:db8::1", "a private address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("64:ff9b::7f00:1", "a loopback address"),  # NAT64 of 127.0.0.1
        ("2002:a00:1::", "a private address"),  # 6to4 of 10.0.0.1
        ("::7f00:1", "a reserved address"),  # deprecated IPv4-compatible
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert ssrf.refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert ssrf.refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("127.1", "127.0.0.1"),  # legacy forms the C resolver accepts
        ("0x7f.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("example.com", None),
        ("localhost", None),
    ],
)
def test_parse_ip(host: str, ip: str | None) -> None:
    parsed = ssrf.parse_ip(host)
    assert (str(parsed) if parsed else None) == ip


@pytest.mark.parametrize(
    ("host", "port", "allow", "allowed"),
    [
        ("localhost", 80, {"localhost"}, True),
        ("LOCALHOST.", 80, {"localhost"}, True),
        ("localhost", 8080, {"localhost:8080"}, True),
        ("localhost", 8081, {"localhost:8080"}, False),
        ("10.0.0.5", 443, {"*"}, True),
        ("::1", 9000, {"[::1]:9000"}, True),
        ("::1", 9000, {"::1"}, True),
        ("127.0.0.1", 80, set(), False),
        ("127.0.0.1", 80, {"localhost"}, False),
    ],
)
def test_allow_list_forms(host: str, port: int, allow: set[str], allowed: bool) -> None:
    assert ssrf.is_allowed(host, port, frozenset(allow)) is allowed


def fake_dns(monkeypatch: pytest.MonkeyPatch, *ips: str) -> list[str]:
    """Make every lookup answer ``ips``; returns the list of names looked up."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[ssrf.Address]:
        asked.append(host)
        out = []
        for text in ips:
            ip = ipaddress.ip_address(text)
            if ip.version == 4:
                out.append(ssrf.Address(socket.AF_INET, (text, port), ip))
            else:
                out.append(ssrf.Address(socket.AF_INET6, (text, port, 0, 0), ip))
        return out

    monkeypatch.setattr(ssrf, "resolve", resolve)
    return asked


def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A resolver may hand out either address, so one private answer refuses the name.
    fake_dns(monkeypatch, "93.184.216.34", "10.0.0.7")
    with pytest.raises(
        PermanentError, match=r"refused: hooks\.example resolves to a private address 10\.0\.0\.7"
    ):
        ssrf.checked_addresses("hooks.example", 443, frozenset())


def test_an_allowed_name_keeps_every_resolved_address(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = fake_dns(monkeypatch, "10.0.0.7", "fd00::7")
    got = ssrf.checked_addresses("internal.example", 8443, frozenset({"internal.example:8443"}))
    assert [str(a.ip) for a in got] == ["10.0.0.7", "fd00::7"]
    assert asked == ["internal.example"]


def test_public_name_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, "93.184.216.34")
    assert [a.sockaddr for a in ssrf.checked_addresses("example.com", 80, frozenset())] == [
        ("93.184.216.34", 80)
    ]


def test_real_resolver_on_loopback_names() -> None:
    got = ssrf.resolve("127.0.0.1", 80)
    assert [(a.family, a.sockaddr) for a in got] == [(socket.AF_INET, ("127.0.0.1", 80))]
    with pytest.raises(PermanentError, match="refused: localhost resolves to a loopback address"):
        ssrf.checked_addresses("localhost", 80, frozenset())


# -- payload model ----------------------------------------------------------------------------


def test_payload_defaults_and_normalised_method() -> None:
    model = HttpPayload.model_validate({"url": "https://example.com/hook", "method": "put"})
    assert model.model_dump() == {
        "url": "https://example.com/hook",
        "method": "PUT",
        "headers": {},
        "body": None,
    }
    assert HttpPayload.model_validate({"url": "http://example.com"}).method == "POST"


@pytest.mark.parametrize(
    ("payload", "loc", "fragment"),
    [
        ({"url": "ftp://example.com/x"}, "url", "http:// or https://"),
        ({"url": "file:///etc/passwd"}, "url", "http:// or https://"),
        ({"url": "http://"}, "url", "has no host"),
        ({"url": "http://user:pw@example.com/"}, "url", "credentials"),
        ({"url": "http://example.com:99999/"}, "url", "not a valid URL"),
        ({"url": "http://example.com/a b"}, "url", "spaces or control characters"),
        ({"url": "http://example.com/\r\nX: y"}, "url", "spaces or control characters"),
        ({"url": "http://[::1/"}, "url", "not a valid URL"),
        ({"url": "https://example.com/" + "a" * 2048}, "url", "at most 2048"),
        ({"url": "https://example.com", "method": "HEAD"}, "method", "'GET'"),
        ({"url": "https://example.com", "headers": {"Host": "evil"}}, "headers", "not allowed"),
        ({"url": "https://example.com", "headers": {"content-length": "1"}}, "headers", "not allowed"),
        ({"url": "https://example.com", "headers": {"Transfer-Encoding": "x"}}, "headers", "not allowed"),
        ({"url": "https://example.com", "headers": {"Connection": "close"}}, "headers", "not allowed"),
        ({"url": "https://example.com", "headers": {"Sluice-Signature": "v1=x"}}, "headers", "not allowed"),
        ({"url": "https://example.com", "headers": {"X-A": "a\r\nX-B: b"}}, "headers", "CR, LF"),
        ({"url": "https://example.com", "headers": {"X-A": "a\nb"}}, "headers", "CR, LF"),
        ({"url": "https://example.com", "headers": {"Bad Name": "x"}}, "headers", "not a valid HTTP header"),
        ({"url": "https://example.com", "headers": {"X-A": "☃"}}, "headers", "Latin-1"),
        ({"url": "https://example.com", "headers": {"X-A": 1}}, "headers.X-A", "string"),
        ({"url": "https://example.com", "body": float("nan")}, "body", "JSON value"),
        ({"url": "https://example.com", "extra": 1}, "extra", "Extra inputs"),
        ({}, "url", "Field required"),
    ],
)
def test_bad_payloads_name_the_field(payload: dict[str, object], loc: str, fragment: str) -> None:
    http = registry.get("http")
    with pytest.raises(ValidationError) as err:
        http.validate_payload(payload)  # type: ignore[arg-type]
    details = err.value.details
    assert details[0]["loc"] == f"payload.{loc}", details
    assert fragment in details[0]["msg"], details


def test_any_json_body_and_idn_hosts_are_accepted() -> None:
    http = registry.get("http")
    for body in ({"a": [1, 2.5, None, True]}, [1, 2], "text", 3, None):
        assert http.validate_payload({"url": "https://example.com", "body": body})["body"] == body
    target = parse_target("https://Bücher.example:8443/p/ä?q=ü#frag")
    assert (target.host, target.port, target.path) == ("xn--bcher-kva.example", 8443, "/p/%C3%A4?q=%C3%BC")
    assert target.origin == "https://xn--bcher-kva.example:8443"
    assert parse_target("http://[::1]/").origin == "http://[::1]"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://2130706433/",
    ],
)
def test_check_refuses_ip_literals(url: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_payload({"url": url}, Settings())
    assert err.value.details[0]["loc"] == "payload.url"
    assert err.value.details[0]["msg"].startswith("refused: ")
    assert "JOBS_HTTP_ALLOW_HOSTS" in err.value.details[0]["msg"]


def test_check_lets_names_and_public_literals_through() -> None:
    for url in ("http://localhost/", "https://example.com/", "http://8.8.8.8/", "http://[2606:4700::1]/"):
        check_payload({"url": url}, Settings())
