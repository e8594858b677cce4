"""The upload API (service ``photo-api``): a Flask app that publishes ``photo.uploaded``.

Routes:

* ``POST /photos``: a multipart upload, field ``photo``; the user in the header
  ``X-User-Id`` (stands in for real authentication). An optional form field
  ``photo_id`` lets the client choose the id, so that it can join the room
  ``photo:<id>`` *before* uploading and miss no progress event. Stores the file and
  a record, publishes ``photo.uploaded``, answers ``202`` with the photo id.
* ``GET /photos/<id>``: the photo's record (status, progress, thumbnail or error), for
  clients that (re)join late.
* ``GET /healthz``: the bus's health check (and connects the bus at start).

The web process only publishes: it does not know that Celery exists. Run it with
``python -m examples.photo_service.web --port 5000`` (what the launcher does: a
threaded werkzeug server that stops cleanly on SIGTERM), or for development with
``flask --app examples.photo_service.web run``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import uuid
from types import FrameType
from typing import Any

from flask import Flask, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from eventbus import TransportError
from eventbus.contrib.flask import EventBusExtension, current_bus
from examples.photo_service.photos import (
    ID_RE,
    PHOTO_UPLOADED,
    PhotoStore,
    bus_url,
    media_dir,
    photo_room,
)

events = EventBusExtension()  # no handlers here: this service only publishes

log = logging.getLogger("photo_service.web")


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The Flask app (an app factory, as ``flask --app`` and the tests expect)."""
    app = Flask(__name__)
    app.config.update(
        EVENTBUS_URL=bus_url(),
        EVENTBUS_SERVICE_NAME="photo-api",
        PHOTO_STORE_URL=bus_url(),  # the photo records: the bus's Redis database
        MAX_CONTENT_LENGTH=20 * 1024 * 1024,
    )
    app.config.update(test_config or {})
    events.init_app(app)  # checks the EVENTBUS_* config; connects on first use
    app.extensions["photo_store"] = PhotoStore.from_url(app.config["PHOTO_STORE_URL"])

    @app.errorhandler(HTTPException)
    def error_as_json(error: HTTPException) -> Any:
        return jsonify({"error": error.name, "message": error.description}), error.code

    @app.post("/photos")
    def upload() -> Any:
        user_id = request.headers.get("X-User-Id", "")
        if not ID_RE.fullmatch(user_id):
            abort(401, "send your user id in the X-User-Id header ([A-Za-z0-9_-], 1-64)")
        photo = request.files.get("photo")
        if photo is None or not photo.filename:
            abort(400, "send the image as the multipart field 'photo'")
        photo_id = request.form.get("photo_id") or uuid.uuid4().hex
        if not ID_RE.fullmatch(photo_id):
            abort(400, "photo_id: 1-64 characters of A-Z a-z 0-9 _ -")

        store: PhotoStore = current_app.extensions["photo_store"]
        path = media_dir() / photo_id
        data = photo.read()
        upload: dict[str, str | int] = {
            "photoId": photo_id,
            "userId": user_id,
            "filename": photo.filename,
            "size": len(data),
            "mimeType": photo.mimetype or "application/octet-stream",
        }
        if not store.create(photo_id, **upload):
            abort(409, f"photo {photo_id} exists")
        path.write_bytes(data)
        try:
            # The fact, for whoever cares: here the Celery worker's processing group.
            result = current_bus.publish(PHOTO_UPLOADED, upload)
        except TransportError:
            # Nobody will ever process it: do not keep a record that says "uploaded".
            store.delete(photo_id)
            path.unlink(missing_ok=True)
            log.exception("could not publish %s for photo %s", PHOTO_UPLOADED, photo_id)
            abort(503, "the event bus is unavailable; try again")
        body = {
            "photoId": photo_id,
            "status": "uploaded",
            "room": photo_room(photo_id),
            "statusUrl": f"/photos/{photo_id}",
            "eventId": result.event_id,
        }
        return jsonify(body), 202

    @app.get("/photos/<photo_id>")
    def show(photo_id: str) -> Any:
        store: PhotoStore = current_app.extensions["photo_store"]
        record = store.get(photo_id) if ID_RE.fullmatch(photo_id) else None
        if record is None:
            abort(404, f"no photo {photo_id}")
        return jsonify(record)

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            health = current_bus.health_check()  # the first call connects the bus
        except TransportError as exc:
            return jsonify({"status": "unhealthy", "error": str(exc)}), 503
        code = 503 if health.status == "unhealthy" else 200
        return jsonify({"status": health.status, "clientId": current_bus.client_id}), code

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the app with werkzeug's threaded server until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    app = create_app()
    server = make_server(args.host, args.port, app, threaded=True)

    def stop(signum: int, _frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return: ask from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("photo-api listening on http://%s:%d", args.host, server.server_port)
    server.serve_forever()
    server.server_close()
    events.close(app)  # flush, then leave the bus cleanly
    app.extensions["photo_store"].close()
    log.info("photo-api stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
