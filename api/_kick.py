"""Kick on enqueue, HTTP side: a kick an enqueue started (lib/kick.py) has left before the
function may be frozen.

The kick is sent from a thread as soon as the enqueue commits, while the answer is being written.
On a server (gunicorn, the dev server) the response's close runs after the answer went out, so
waiting there for "sent" delays no client; a host that closes the response before handing it
over (as a serverless runtime may) thereby sends the kick before the function can be frozen.
"""

from __future__ import annotations

from contextvars import Token

from flask import Flask, Response, g

from lib.kick import STARTED, Shot


def install(app: Flask) -> None:
    app.before_request(_collect)
    app.after_request(_wait_sent_on_close)
    app.teardown_request(_forget)


def _collect() -> None:
    g.sluice_kicks = STARTED.set([])


def _wait_sent_on_close(response: Response) -> Response:
    shots: list[Shot] = list(STARTED.get() or ())
    if shots:

        def wait_sent() -> None:
            for shot in shots:
                shot.sent()

        response.call_on_close(wait_sent)
    return response


def _forget(_exc: BaseException | None) -> None:
    token: Token[list[Shot] | None] | None = g.pop("sluice_kicks", None)
    if token is not None:
        STARTED.reset(token)
