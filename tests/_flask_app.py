"""A small Flask app for tests/test_contrib_flask.py, built with the app factory pattern.

In-process: ``create_app({"EVENTBUS_URL": ...})``. As a subprocess:
``FLASK_EVENTBUS_URL=redis://... flask --app _flask_app:create_app eventbus listen``
(``from_prefixed_env`` reads ``FLASK_*`` variables).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app, request

from eventbus import Event
from eventbus.contrib.flask import EventBusExtension, current_bus

events = EventBusExtension()


@events.on("app.ping")
def answer_ping(event: Event) -> None:
    """Reply with ``app.pong``: proves handlers run in the app context with current_bus."""
    current_bus.publish(
        "app.pong",
        {"app": current_app.name, "pid": os.getpid(), "ping": event.data},
    )


def create_app(config: dict[str, Any] | None = None, *, name: str = "flask-test") -> Flask:
    """The app factory: ``config`` overrides ``FLASK_*`` environment variables."""
    app = Flask(name)
    app.config["EVENTBUS_SERVICE_NAME"] = "flask-test"
    app.config.from_prefixed_env()
    app.config.update(config or {})
    events.init_app(app)

    @app.post("/publish/<event_type>")
    def publish(event_type: str) -> dict[str, Any]:
        result = current_bus.publish(event_type, request.get_json(silent=True))
        return {"id": result.event_id, "pid": os.getpid(), "client_id": current_bus.client_id}

    return app
