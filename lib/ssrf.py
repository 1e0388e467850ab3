"""Address checks for outbound requests (SSRF): only public addresses, unless a host is allowed.

Pure functions plus one resolver. Callers resolve once, check every address, then connect to an
address they checked (never to the name again), so DNS rebinding can't swap the target.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass

from .errors import PermanentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HINT = " (list the host in JOBS_HTTP_ALLOW_HOSTS to allow it)"
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# Well-known NAT64 prefix: the last 32 bits are an IPv4 address a gateway will reach.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class Address:
    """One resolved address: what socket.connect needs, and the parsed IP to check."""

    family: int
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    ip: IPAddress


def parse_ip(host: str) -> IPAddress | None:
    """The IP of an IP-literal host (also the legacy forms 127.1, 0x7f.0.0.1, 2130706433 that
    the C resolver accepts), or None for a DNS name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c.isalnum() or c == "." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def name_problem(host: str) -> str | None:
    """What makes ``host`` (an ASCII host of a URL) unusable as a DNS name, or None. Each dot-
    separated label is 1..63 characters, the whole at most 253 (one trailing dot allowed): the
    resolver's own IDNA step refuses anything else, on every attempt, as a UnicodeError."""
    name = host.strip("[]")
    if parse_ip(name) is not None:
        return None
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name) > 253:
        return "has a host name longer than 253 characters" if name else "has no host"
    if any(not 1 <= len(label) <= 63 for label in name.split(".")):
        return "has a host name with an empty label or one longer than 63 characters (e.g. a..b)"
    try:
        name.encode("idna")
    except UnicodeError:
        return "has a host name that is not a valid (IDNA) name"
    return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be reached ("a loopback address", ...), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return refusal(inner)
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "a non-public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def normalise_host(host: str) -> str:
    """Lower case, no brackets, no trailing dot: the form allow lists are matched against."""
    return host.strip("[]").rstrip(".").lower()


def is_allowed(host: str, port: int, allow: Collection[str]) -> bool:
    """True when ``host`` or ``host:port`` (or ``*``) is in the allow list."""
    if not allow:
        return False
    name = normalise_host(host)
    forms = {"*", name, f"{name}:{port}", f"[{name}]", f"[{name}]:{port}"}
    return any(form in allow for form in forms)


def literal_refusal(host: str, port: int, allow: Collection[str]) -> str | None:
    """For an IP-literal host in a refused range (and not allowed): the reason; else None.
    DNS names are only checked once resolved, at run time."""
    name = normalise_host(host)
    ip = parse_ip(name)
    if ip is None or is_allowed(host, port, allow):
        return None
    reason = refusal(ip)
    return None if reason is None else f"refused: {name} is {reason}{HINT}"


def resolve(host: str, port: int) -> list[Address]:
    """Every TCP address of ``host`` (raises socket.gaierror when the name does not resolve)."""
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0])
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if all(a.sockaddr != sockaddr for a in addresses):
            addresses.append(Address(family, sockaddr, ip))  # type: ignore[arg-type]
    return addresses


def checked_addresses(host: str, port: int, allow: Collection[str]) -> list[Address]:
    """Resolve ``host`` once and return its addresses, or PermanentError when any of them is
    non-public (one bad address is enough: a resolver may hand out any of them)."""
    addresses = resolve(host, port)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"no IPv4 or IPv6 address for {host}")
    if is_allowed(host, port, allow):
        return addresses
    for address in addresses:
        reason = refusal(address.ip)
        if reason is not None:
            shown = normalise_host(host)
            if parse_ip(shown) is not None:
                raise PermanentError(f"refused: {shown} is {reason}{HINT}")
            raise PermanentError(f"refused: {shown} resolves to {reason} {address.ip}{HINT}")
    return addresses
