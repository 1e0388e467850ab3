"""Receivers on loopback: a Slack-style webhook (alerts) and a scripted HTTP server (http jobs)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Webhook:
    """A Slack-style webhook: records each JSON body POSTed to it, answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        self.url = ""


def serve_webhook() -> Iterator[Webhook]:
    """A Webhook listening on loopback while the generator is open (a fixture yields from it)."""
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.bodies.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hook.url = f"http://127.0.0.1:{server.server_port}/slack/hook"
    yield hook
    server.shutdown()
    server.server_close()


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Hook:
    """What the server answers (per path, in order; the last answer repeats) and what it saw."""

    def __init__(self) -> None:
        self.script: dict[str, list[Answer]] = {}
        self.seen: list[Seen] = []
        self.sni: list[str | None] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.port = 0
        self.scheme = "http"

    def on(self, path: str, *answers: Answer) -> None:
        self.script[path] = list(answers)

    def next_answer(self, path: str) -> Answer:
        with self.lock:
            answers = self.script.get(path.split("?", 1)[0], [Answer(404, b"no such hook")])
            return answers.pop(0) if len(answers) > 1 else answers[0]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


class HookHandler(BaseHTTPRequestHandler):
    server: HookServer
    protocol_version = "HTTP/1.1"

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hook = self.server.hook
        with hook.lock:
            hook.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        answer = hook.next_answer(self.path)
        if answer.hang:
            hook.release.wait(answer.hang)
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:
            pass  # the client gave up (timeout test)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def log_message(self, format: str, *args: object) -> None:
        pass


class HookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hook: Hook) -> None:
        super().__init__(("127.0.0.1", 0), HookHandler)
        self.hook = hook


def serve(hook: Hook, tls: ssl.SSLContext | None = None) -> Iterator[Hook]:
    server = HookServer(hook)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        hook.scheme = "https"
    hook.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield hook
    hook.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)
