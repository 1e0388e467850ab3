"""``http``: webhook delivery with the standard library only (cheap cold import).

One attempt = resolve the host once, refuse non-public addresses (unless allowed), connect to the
address that was checked (no second lookup, so DNS rebinding can't redirect it), send the request
with the original Host header and TLS name, and never follow redirects.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import hmac
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import ssrf
from ..config import Settings
from ..context import JobContext
from ..errors import PermanentError, SluiceError, ValidationError
from ..registry import job
from ..retry import Backoff

if TYPE_CHECKING:
    import ssl

    from _typeshed import ReadableBuffer, WriteableBuffer

USER_AGENT = "Sluice/0.1"
RESULT_BODY_CHARS = 1000
ERROR_BODY_CHARS = 200
# Enough bytes for RESULT_BODY_CHARS characters of any UTF-8 text; the rest is never downloaded.
MAX_READ_BYTES = 4 * RESULT_BODY_CHARS
MAX_URL_CHARS = 2048
MAX_HEADERS = 64
MAX_HEADER_VALUE_CHARS = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}
# Set by Sluice or by the connection itself; a payload may not forge or break them.
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB would split or corrupt a header line.
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Characters kept as they are when a path is percent-encoded (existing escapes stay intact).
_PATH_SAFE = "!#$%&'()*+,/:;=?@[]~"

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class DeliveryFailed(SluiceError):
    """A delivery attempt that may succeed later (5xx, 408, 429, timeout, DNS, connection)."""

    code = "delivery_failed"


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # ASCII (IDNA), lower case, no brackets
    port: int
    path: str  # path and query, percent-encoded; never the fragment

    @property
    def origin(self) -> str:
        """scheme://host[:port], for messages: the path and query may carry secrets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}"


def parse_target(url: str) -> Target:
    """The parts of an http(s) URL a request needs; ValueError says what is wrong."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not hold credentials (user:password@); send them in headers")
    host = parts.hostname or ""
    if not host:
        raise ValueError("has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("has a host name that is not a valid internationalised name") from None
    if port == 0:
        raise ValueError("has an invalid port 0")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    return Target(scheme, host, port or DEFAULT_PORTS[scheme], path)


class HttpPayload(BaseModel):
    """The payload of an ``http`` job."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(max_length=MAX_URL_CHARS)
    method: Method = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    # Any JSON value; Any (checked below) is much cheaper to build at import than JsonValue.
    body: Any = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        problem = ssrf.name_problem(parse_target(value).host)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers")
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            lower = name.lower()
            if lower in RESERVED_HEADERS or lower.startswith("sluice-"):
                raise ValueError(
                    f"header {name!r} is not allowed (hop-by-hop, Host, Content-Length and "
                    "Sluice-* headers are set by Sluice)"
                )
            if _BAD_VALUE_CHARS.search(text):
                raise ValueError(f"header {name!r} holds CR, LF or another control character")
            if len(text) > MAX_HEADER_VALUE_CHARS:
                raise ValueError(f"header {name!r} is longer than {MAX_HEADER_VALUE_CHARS} characters")
            try:
                text.encode("latin-1")
            except UnicodeEncodeError:
                raise ValueError(f"header {name!r} holds characters outside Latin-1") from None
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be a JSON value ({exc})") from None
        return value


# -- signing -------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``Sluice-Signature`` value: ``v1=`` + hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes | str,
    header: str,
    tolerance: int | None = 300,
    *,
    now: float | None = None,
) -> bool:
    """For receivers: True when ``header`` (the ``Sluice-Signature`` value) signs ``body`` (the
    exact bytes received) at ``timestamp`` (``Sluice-Timestamp``) and the timestamp is within
    ``tolerance`` seconds of now (None: any age; replays are then up to you)."""
    stamp = str(timestamp).strip()
    try:
        sent = int(stamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if tolerance is not None and abs(current - sent) > tolerance:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = sign(secret, stamp, raw).encode()
    # Several comma-separated values are accepted, so a sender can sign with two secrets while
    # rotating.
    given = (part.strip().encode("utf-8", "replace") for part in header.split(","))
    return any(hmac.compare_digest(expected, value) for value in given)


# -- enqueue check ---------------------------------------------------------------------------


def check_payload(payload: dict[str, Any], settings: Settings) -> None:
    """At enqueue: an IP-literal URL in a refused range is a 422 (names are checked at run time)."""
    target = parse_target(str(payload["url"]))
    reason = ssrf.literal_refusal(target.host, target.port, settings.http_allow_hosts)
    if reason is not None:
        raise ValidationError(
            "payload is not valid for job type 'http'", [{"loc": "payload.url", "msg": reason}]
        )


# -- one attempt -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    headers: dict[str, str]
    body: bytes | None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    location: str | None
    text: str


def attempt_seconds(ctx: JobContext) -> float:
    """The HTTP budget of this attempt: the job's time left, less a small margin so the handler
    reports its own timeout before the drain's watchdog gives up on it."""
    left = ctx.time_left()
    return max(0.0, left - min(0.25, left * 0.1))


def encode_body(body: Any) -> bytes | None:
    if body is None:
        return None
    # Sorted keys: the same bytes whichever database stored the payload (jsonb reorders keys).
    return json.dumps(body, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def request_headers(
    given: dict[str, str], ctx: JobContext, body: bytes | None, secret: str, timestamp: str
) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if body is not None:
        headers["Content-Type"] = "application/json"
    # The payload's own User-Agent or Content-Type wins over the defaults (case-insensitively).
    given_names = {name.lower() for name in given}
    headers = {k: v for k, v in headers.items() if k.lower() not in given_names}
    headers.update(given)
    headers["Sluice-Job-Id"] = ctx.job_id
    headers["Sluice-Attempt"] = str(ctx.attempt)
    headers["Sluice-Timestamp"] = timestamp
    if secret:
        headers["Sluice-Signature"] = sign(secret, timestamp, body or b"")
    return headers


def time_left(deadline: float) -> float:
    """Seconds to the deadline; TimeoutError once it has passed (a 0 timeout means non-blocking)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's time ran out")
    return left


def _arm(sock: socket.socket, deadline: float | None) -> None:
    if deadline is not None:
        sock.settimeout(time_left(deadline))


class DeadlineSocket(socket.socket):
    """A socket whose every send and receive waits only for what is left of the attempt: a
    per-call timeout alone lets a server that drips one byte at a time hold it for ever."""

    deadline: float | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        _arm(self, self.deadline)
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        _arm(self, self.deadline)
        return super().recv(bufsize, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        _arm(self, self.deadline)
        super().sendall(data, flags)


@functools.cache
def _deadline_tls_socket() -> type[ssl.SSLSocket]:
    import ssl  # lazy: plain-http deliveries never pay for ssl's import

    class DeadlineTLSSocket(ssl.SSLSocket):
        """DeadlineSocket for TLS: the record layer reads through these methods too."""

        deadline: float | None = None

        def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
            _arm(self, self.deadline)
            return super().recv_into(buffer, nbytes, flags)

        def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
            _arm(self, self.deadline)
            return super().recv(buflen, flags)

        def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
            _arm(self, self.deadline)
            super().sendall(data, flags)

    return DeadlineTLSSocket


def tls_context() -> ssl.SSLContext:
    import ssl  # lazy: loaded by the first http job, not at cold start

    context = ssl.create_default_context()
    context.sslsocket_class = _deadline_tls_socket()
    return context


def open_socket(
    target: Target, addresses: list[ssrf.Address], deadline: float, tls: ssl.SSLContext | None
) -> socket.socket:
    """A connected (and for https, TLS-wrapped) socket to the first checked address that answers;
    each of its reads and writes ends at ``deadline`` at the latest."""
    error: OSError | None = None
    for address in addresses:
        sock = DeadlineSocket(address.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(time_left(deadline))
            sock.connect(address.sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.deadline = deadline
            if tls is None:
                return sock
            sock.settimeout(time_left(deadline))
            # SNI and certificate checks use the URL's host name, not the address we dialled.
            wrapped = tls.wrap_socket(sock, server_hostname=target.host)
            wrapped.deadline = deadline  # type: ignore[attr-defined]
            return wrapped
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"no address to connect to for {target.host}")


def exchange(target: Target, addresses: list[ssrf.Address], request: Request, deadline: float) -> Response:
    """Send one request over a pinned connection and read the start of the answer."""
    import http.client  # lazy: loaded by the first http job, not at cold start

    tls = tls_context() if target.scheme == "https" else None
    sock = open_socket(target, addresses, deadline, tls)
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection(target.host, target.port)
    else:
        conn = http.client.HTTPSConnection(target.host, target.port, context=tls)
    # A connection that already has a socket never connects (or resolves) by itself.
    conn.sock = sock
    try:
        conn.request(request.method, target.path, body=request.body, headers=request.headers)
        answer = conn.getresponse()
        raw = answer.read(MAX_READ_BYTES)
        text = excerpt(raw, answer.headers.get_content_charset())
        return Response(answer.status, answer.reason, answer.getheader("Location"), text)
    finally:
        conn.close()


def excerpt(raw: bytes, charset: str | None) -> str:
    """The first characters of a body; a character cut at the end of ``raw`` is dropped."""
    try:
        decoder = codecs.getincrementaldecoder(charset or "utf-8")(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(raw)[:RESULT_BODY_CHARS]


def send(
    target: Target, addresses: list[ssrf.Address], request: Request, started: float, deadline: float
) -> Response:
    """``exchange`` with network failures turned into retryable DeliveryFailed errors."""
    import http.client  # lazy: loaded by the first http job, not at cold start

    try:
        return exchange(target, addresses, request, deadline)
    except TimeoutError as exc:
        raise DeliveryFailed(
            f"timed out after {time.monotonic() - started:.1f}s waiting for {target.origin}"
        ) from exc
    except http.client.HTTPException as exc:
        raise DeliveryFailed(f"bad HTTP answer from {target.origin}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise DeliveryFailed(f"connection to {target.origin} failed: {exc}") from exc


def safe_location(location: str | None) -> str:
    """The Location for a message, without its query (which may carry a token)."""
    if not location:
        return "(no Location header)"
    head, sep, _ = location.partition("?")
    return (head + ("?…" if sep else ""))[:300]


def outcome(target: Target, response: Response) -> dict[str, Any]:
    """2xx → the result; 3xx and other 4xx → PermanentError; 408, 429, 5xx → DeliveryFailed."""
    status = response.status
    if 200 <= status < 300:
        return {"status": status, "body": response.text}
    summary = f"HTTP {status} {response.reason} from {target.origin}".rstrip()
    if 300 <= status < 400:
        raise PermanentError(f"redirect not followed: {summary} to {safe_location(response.location)}")
    snippet = " ".join(response.text.split())[:ERROR_BODY_CHARS]
    detail = f"{summary}: {snippet}" if snippet else summary
    if status in (408, 429) or status >= 500:
        raise DeliveryFailed(detail)
    if 400 <= status < 500:
        raise PermanentError(detail)
    raise DeliveryFailed(f"unexpected {detail}")


@job(
    "http",
    payload=HttpPayload,
    max_attempts=5,
    backoff=Backoff("exponential", 30, 3600),
    check=check_payload,
)
def deliver(payload: HttpPayload, ctx: JobContext) -> dict[str, Any]:
    """Deliver one webhook; the result is ``{"status": code, "body": first 1000 characters}``."""
    return _deliver(payload, ctx, {})


class CallbackPayload(BaseModel):
    """A ``sluice.callback`` job (lib/flow.py): the finished job ``body`` POSTed to ``url``."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    url: str = Field(max_length=MAX_URL_CHARS)
    job_id: str = Field(alias="jobId", max_length=64)
    body: dict[str, Any]


@job(
    "sluice.callback",
    payload=CallbackPayload,
    max_attempts=5,
    backoff=Backoff("exponential", 30, 3600),
    check=check_payload,
    internal=True,
)
def deliver_callback(payload: CallbackPayload, ctx: JobContext) -> dict[str, Any]:
    """An ``http`` delivery of a job's callback: signed, SSRF-guarded and retried the same way,
    with ``Sluice-Callback-For`` naming the job that ended."""
    request = HttpPayload(url=payload.url, body=payload.body)
    return _deliver(request, ctx, {"Sluice-Callback-For": payload.job_id})


def _deliver(payload: HttpPayload, ctx: JobContext, extra: dict[str, str]) -> dict[str, Any]:
    settings = ctx.settings
    target = parse_target(payload.url)
    started = time.monotonic()
    deadline = started + attempt_seconds(ctx)
    try:
        addresses = ssrf.checked_addresses(target.host, target.port, settings.http_allow_hosts)
    except socket.gaierror as exc:
        raise DeliveryFailed(f"DNS lookup of {target.host} failed: {exc.strerror or exc}") from exc
    body = encode_body(payload.body)
    timestamp = str(int(time.time()))
    headers = request_headers(payload.headers, ctx, body, settings.jobs_http_signing_secret, timestamp)
    headers.update(extra)
    request = Request(payload.method, headers, body)
    return outcome(target, send(target, addresses, request, started, deadline))
