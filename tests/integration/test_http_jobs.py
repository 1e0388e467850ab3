"""The built-in ``http`` job type against a real HTTP(S) server on 127.0.0.1, on both databases."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib import Job, Queue, ValidationError, ssrf
from lib.config import get_settings
from lib.drain import abandoned_threads
from lib.handlers.http import USER_AGENT, verify_signature
from tests.support.db import count
from tests.support.webhook import Answer, Hook, serve

SECRET = "whsec_integration"
NO_DELAY = {"strategy": "fixed", "delaySeconds": 0}


@pytest.fixture
def hook() -> Iterator[Hook]:
    yield from serve(Hook())


Configure = Callable[..., None]


@pytest.fixture
def http_env(queue: Queue) -> Iterator[Configure]:
    """Set the allow list and signing secret on the queue's settings (handlers get them as
    ctx.settings, enqueue checks as their second argument)."""

    def configure(allow: str = "", secret: str = "") -> None:
        update = {"jobs_http_allow_hosts": allow, "jobs_http_signing_secret": secret}
        queue.settings = queue.settings.model_copy(update=update)
        queue.drainer.settings = queue.settings

    configure()
    yield configure
    get_settings.cache_clear()


def fake_dns(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> list[str]:
    """Resolve the given names to loopback addresses (every other name fails); returns the names
    looked up, in order."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[ssrf.Address]:
        asked.append(host)
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        ip = ipaddress.ip_address(names[host])
        return [ssrf.Address(socket.AF_INET, (str(ip), port), ip)]

    monkeypatch.setattr(ssrf, "resolve", resolve)
    return asked


def enqueue(queue: Queue, payload: dict[str, object], **options: object) -> Job:
    return queue.enqueue("http", payload, **options)


def drained(queue: Queue, job: Job, max_jobs: int = 10) -> Job:
    queue.drain(max_jobs=max_jobs)
    return queue.get(job.id)


# -- delivery outcomes -------------------------------------------------------------------------


def test_2xx_completes_with_result_and_signed_headers(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow="127.0.0.1", secret=SECRET)
    hook.on("/ok", Answer(200, b'{"received": true}' + b"x" * 2000, {"Content-Type": "application/json"}))
    job = enqueue(
        queue,
        {"url": hook.url("/ok?id=7"), "headers": {"X-Custom": "yes"}, "body": {"event": "paid", "n": 1}},
    )
    assert job.max_attempts == 5

    summary = queue.drain()
    assert (summary.processed, summary.succeeded, summary.failed) == (1, 1, 0)
    done = queue.get(job.id)
    assert (done.status, done.attempts, done.last_error) == ("completed", 1, None)
    assert done.result == {"status": 200, "body": ('{"received": true}' + "x" * 2000)[:1000]}
    assert count(queue, "status = 'completed'") == 1

    [seen] = hook.seen
    assert (seen.method, seen.path) == ("POST", "/ok?id=7")
    assert seen.body == b'{"event":"paid","n":1}'
    headers = {k.lower(): v for k, v in seen.headers.items()}
    assert headers["host"] == f"127.0.0.1:{hook.port}"
    assert headers["sluice-job-id"] == job.id
    assert headers["sluice-attempt"] == "1"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert headers["x-custom"] == "yes"
    assert verify_signature(SECRET, headers["sluice-timestamp"], seen.body, headers["sluice-signature"])
    assert not verify_signature("wrong", headers["sluice-timestamp"], seen.body, headers["sluice-signature"])


def test_get_without_body_or_secret_is_unsigned(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow=f"127.0.0.1:{hook.port}")
    hook.on("/ping", Answer(204))
    job = enqueue(queue, {"url": hook.url("/ping"), "method": "GET"})
    done = drained(queue, job)
    assert (done.status, done.result) == ("completed", {"status": 204, "body": ""})
    [seen] = hook.seen
    headers = {k.lower() for k in seen.headers}
    assert seen.method == "GET" and seen.body == b""
    assert "sluice-signature" not in headers and "content-type" not in headers
    assert {"sluice-job-id", "sluice-attempt", "sluice-timestamp"} <= headers


def test_5xx_then_200_is_retried_then_completes(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow="127.0.0.1", secret=SECRET)
    hook.on("/flaky", Answer(500, b"database down"), Answer(200, b"ok"))
    job = enqueue(queue, {"url": hook.url("/flaky"), "body": [1]}, backoff=NO_DELAY)

    first = drained(queue, job, max_jobs=1)
    assert (first.status, first.attempts) == ("pending", 1)
    assert (
        first.last_error
        == f"DeliveryFailed: HTTP 500 Internal Server Error from {hook.url('')}: database down"
    )

    done = drained(queue, job)
    assert (done.status, done.attempts, done.result) == ("completed", 2, {"status": 200, "body": "ok"})
    assert [s.headers["Sluice-Attempt"] for s in hook.seen] == ["1", "2"]
    assert {s.headers["Sluice-Job-Id"] for s in hook.seen} == {job.id}
    assert count(queue, "status = 'completed' AND attempts = 2") == 1


def test_404_fails_at_once(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow="127.0.0.1")
    hook.on("/gone", Answer(404, b"not here"))
    job = enqueue(queue, {"url": hook.url("/gone")})
    summary = queue.drain()
    assert (summary.processed, summary.failed) == (1, 1)
    dead = queue.get(job.id)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert dead.last_error == f"PermanentError: HTTP 404 Not Found from {hook.url('')}: not here"
    assert len(hook.seen) == 1
    assert count(queue, "status = 'failed'") == 1


def test_redirect_is_not_followed(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow="127.0.0.1")
    hook.on("/moved", Answer(301, headers={"Location": hook.url("/elsewhere?token=s3cr3t")}))
    hook.on("/elsewhere", Answer(200))
    job = enqueue(queue, {"url": hook.url("/moved")})
    dead = drained(queue, job)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert dead.last_error is not None
    assert dead.last_error.startswith("PermanentError: redirect not followed: HTTP 301")
    assert f"to {hook.url('/elsewhere')}?…" in dead.last_error
    assert "s3cr3t" not in dead.last_error
    assert [s.path for s in hook.seen] == ["/moved"]


@pytest.mark.parametrize("status", [408, 429, 503])
def test_retryable_statuses_count_an_attempt(
    queue: Queue, hook: Hook, http_env: Configure, status: int
) -> None:
    http_env(allow="127.0.0.1")
    hook.on("/busy", Answer(status, b"slow down", {"Retry-After": "1"}))
    job = enqueue(queue, {"url": hook.url("/busy")})
    summary = queue.drain(max_jobs=1)
    assert (summary.processed, summary.retried, summary.failed) == (1, 1, 0)
    got = queue.get(job.id)
    assert (got.status, got.attempts) == ("pending", 1)
    assert got.last_error is not None
    assert got.last_error.startswith(f"DeliveryFailed: HTTP {status} ")
    assert count(queue, "status = 'pending' AND attempts = 1") == 1


def test_last_attempt_of_a_5xx_dead_letters(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow="127.0.0.1")
    hook.on("/down", Answer(502))
    job = enqueue(queue, {"url": hook.url("/down")}, max_attempts=2, backoff=NO_DELAY)
    dead = drained(queue, job)
    assert (dead.status, dead.attempts) == ("failed", 2)
    assert dead.last_error == f"DeliveryFailed: HTTP 502 Bad Gateway from {hook.url('')}"
    assert len(hook.seen) == 2


def test_a_hanging_server_times_out_and_is_retried(queue: Queue, hook: Hook, http_env: Configure) -> None:
    http_env(allow="127.0.0.1")
    hook.on("/slow", Answer(200, b"too late", hang=10))
    job = enqueue(queue, {"url": hook.url("/slow")}, timeout_seconds=1)
    summary = queue.drain(max_jobs=1)
    assert (summary.processed, summary.retried) == (1, 1)
    assert summary.duration_ms < 3000
    got = queue.get(job.id)
    assert (got.status, got.attempts) == ("pending", 1)
    assert got.last_error is not None and "timed out" in got.last_error
    assert count(queue, "status = 'pending' AND attempts = 1") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried(queue: Queue, http_env: Configure) -> None:
    http_env(allow="127.0.0.1")
    port = free_port()
    job = enqueue(queue, {"url": f"http://127.0.0.1:{port}/hook"})
    got = drained(queue, job, max_jobs=1)
    assert (got.status, got.attempts) == ("pending", 1)
    assert got.last_error is not None
    assert got.last_error.startswith(f"DeliveryFailed: connection to http://127.0.0.1:{port} failed:")
    assert "refused" in got.last_error.lower()


def test_dns_failure_is_retried(queue: Queue, http_env: Configure, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {})
    job = enqueue(queue, {"url": "https://hooks.example.test/x"})
    got = drained(queue, job, max_jobs=1)
    assert (got.status, got.attempts) == ("pending", 1)
    assert (
        got.last_error == "DeliveryFailed: DNS lookup of hooks.example.test failed: Name or service not known"
    )


# -- SSRF ------------------------------------------------------------------------------------


REFUSED = [
    ("http://127.0.0.1:9/x", "refused: 127.0.0.1 is a loopback address"),
    ("http://10.20.30.40/x", "refused: 10.20.30.40 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local address"),
    ("http://[::1]:9/x", "refused: ::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:9/x", "refused: ::ffff:127.0.0.1 is a loopback address"),
    ("http://100.64.1.1/x", "refused: 100.64.1.1 is a shared (CGNAT) address"),
]


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_ip_literal_refused_at_enqueue(queue: Queue, http_env: Configure, url: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        enqueue(queue, {"url": url})
    [detail] = err.value.details
    assert detail["loc"] == "payload.url"
    assert detail["msg"].startswith(message)
    assert count(queue) == 0


@pytest.mark.parametrize(("url", "message"), REFUSED)
def test_refused_at_run_time_with_a_clear_error(
    queue: Queue, http_env: Configure, url: str, message: str
) -> None:
    # Enqueued while allowed, run after the allow list changed: the run-time check still holds.
    http_env(allow="*")
    job = enqueue(queue, {"url": url})
    http_env(allow="")
    summary = queue.drain()
    assert (summary.processed, summary.failed) == (1, 1)
    dead = queue.get(job.id)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert dead.last_error is not None
    assert dead.last_error.startswith(f"PermanentError: {message} (list the host in JOBS_HTTP_ALLOW_HOSTS")


def test_a_name_resolving_to_loopback_is_refused(queue: Queue, hook: Hook, http_env: Configure) -> None:
    hook.on("/x", Answer(200))
    job = enqueue(queue, {"url": hook.url("/x", host="localhost")})
    dead = drained(queue, job)
    assert (dead.status, dead.attempts) == ("failed", 1)
    assert dead.last_error is not None
    assert dead.last_error.startswith(
        "PermanentError: refused: localhost resolves to a loopback address 127.0.0.1"
    )
    assert hook.seen == []


def test_allow_list_by_name_and_port(queue: Queue, hook: Hook, http_env: Configure) -> None:
    hook.on("/x", Answer(200, b"hi"))
    http_env(allow=f"localhost:{hook.port}")
    job = enqueue(queue, {"url": hook.url("/x", host="localhost")})
    done = drained(queue, job)
    assert (done.status, done.result) == ("completed", {"status": 200, "body": "hi"})
    assert hook.seen[0].headers["Host"] == f"localhost:{hook.port}"
    # Another port of the same host is not covered by a host:port entry.
    with pytest.raises(ValidationError):
        enqueue(queue, {"url": f"http://127.0.0.1:{hook.port + 1}/"})


def test_connects_to_the_checked_address_without_a_second_lookup(
    queue: Queue, hook: Hook, http_env: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name exists only in our fake resolver: reaching the server proves the request went to
    # the address that was checked, with the original Host header.
    asked = fake_dns(monkeypatch, {"hooks.example.test": "127.0.0.1"})
    http_env(allow="hooks.example.test")
    hook.on("/pinned", Answer(200, b"pinned"))
    job = enqueue(queue, {"url": hook.url("/pinned", host="hooks.example.test")})
    done = drained(queue, job)
    assert (done.status, done.result) == ("completed", {"status": 200, "body": "pinned"})
    assert asked == ["hooks.example.test"]
    assert hook.seen[0].headers["Host"] == f"hooks.example.test:{hook.port}"


# -- HTTPS: SNI and certificate checks use the host name, not the pinned address -------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluice test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.example.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.example.test")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, server)


@pytest.fixture
def tls_hook(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hook]:
    # The client's default context trusts the test CA through SSL_CERT_FILE (read per context).
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    hook = Hook()

    def remember_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> None:
        hook.sni.append(name)

    pki.server.sni_callback = remember_sni
    yield from serve(hook, pki.server)


def test_https_verifies_the_host_name_over_the_pinned_address(
    queue: Queue, tls_hook: Hook, http_env: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"hooks.example.test": "127.0.0.1", "other.example.test": "127.0.0.1"})
    http_env(allow="hooks.example.test,other.example.test", secret=SECRET)
    tls_hook.on("/secure", Answer(200, b"over tls"))

    good = enqueue(queue, {"url": tls_hook.url("/secure", host="hooks.example.test"), "body": {"a": 1}})
    done = drained(queue, good)
    assert (done.status, done.result) == ("completed", {"status": 200, "body": "over tls"})
    assert tls_hook.sni == ["hooks.example.test"]
    [seen] = tls_hook.seen
    assert seen.headers["Host"] == f"hooks.example.test:{tls_hook.port}"
    sent = seen.headers
    assert verify_signature(SECRET, sent["Sluice-Timestamp"], seen.body, sent["Sluice-Signature"])

    # Same address, a name the certificate does not cover: the handshake fails and is retried.
    bad = enqueue(queue, {"url": tls_hook.url("/secure", host="other.example.test")})
    got = drained(queue, bad, max_jobs=1)
    assert (got.status, got.attempts) == ("pending", 1)
    assert got.last_error is not None
    assert got.last_error.startswith(
        f"DeliveryFailed: connection to https://other.example.test:{tls_hook.port}"
    )
    assert "CERTIFICATE_VERIFY_FAILED" in got.last_error
    assert len(tls_hook.seen) == 1
    assert json.loads(seen.body) == {"a": 1}


class Drip:
    """A server that answers one byte every ``every`` seconds (in the status line, or in the body
    after quick headers) and notes how long after accepting the client hung up."""

    def __init__(self, where: str, every: float = 0.4) -> None:
        self.where, self.every = where, every
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.hung_up_after: float | None = None
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        accepted = time.monotonic()
        with conn:
            conn.recv(65536)
            if self.where == "status":
                drip = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
                drip = b"x" * 100
            for byte in drip:
                readable, _, _ = select.select([conn], [], [], self.every)
                if readable and conn.recv(1) == b"":
                    self.hung_up_after = time.monotonic() - accepted
                    return
                conn.sendall(bytes([byte]))

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("where", ["status", "body"])
def test_a_dripping_server_is_cut_off_at_the_attempts_timeout(
    queue: Queue, http_env: Configure, where: str
) -> None:
    """A byte every 0.4 s resets a per-read socket timeout for ever; the attempt as a whole ends
    at its timeout, in the handler itself (no thread is left behind for the watchdog)."""
    http_env(allow="127.0.0.1")
    drip = Drip(where)
    job = enqueue(queue, {"url": f"http://127.0.0.1:{drip.port}/drip"}, timeout_seconds=1)
    abandoned = abandoned_threads.count
    try:
        started = time.monotonic()
        summary = queue.drain(max_jobs=1)
        took = time.monotonic() - started
        drip.thread.join(5)
    finally:
        drip.close()
    assert (summary.processed, summary.retried) == (1, 1)
    assert took < 1.5, f"the attempt took {took:.1f}s"
    got = queue.get(job.id)
    assert (got.status, got.attempts) == ("pending", 1)
    origin = f"http://127.0.0.1:{drip.port}"
    assert got.last_error == f"DeliveryFailed: timed out after 0.9s waiting for {origin}"
    assert abandoned_threads.count == abandoned
    assert drip.hung_up_after is not None and drip.hung_up_after < 1.5
