"""Scenarios the tests run in a fresh process: ``python scenarios.py NAME``.

Django's settings are process-wide, so each scenario sets Django up in a process of
its own and prints what it observed as one ``RESULT {json}`` line; the test asserts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from eventbus import EventBusError  # noqa: E402
from eventbus.contrib.django import (  # noqa: E402
    bus,
    get_bus,
    publish_on_commit,
    publish_to_user_on_commit,
)
from eventbus.contrib.django.signals import publish_failed  # noqa: E402


def _published() -> int:
    return get_bus().get_stats().events_published


def startup() -> dict[str, Any]:
    """What django.setup() did: handlers declared, nothing connected or subscribed."""
    project_bus = get_bus()
    return {
        "connected": project_bus.is_connected(),
        "handling": project_bus.handling,
        "subscriptions": len(project_bus.subscriptions()),
        "declared": [[h.pattern, h.name, h.group] for h in project_bus.declared_handlers],
        "service_name": project_bus.service_name,
        "transport": project_bus.config.transport_url,
        "key_prefix": project_bus.config.key_prefix,
        "proxy_is_bus": bus.client_id == project_bus.client_id,
    }


def views() -> dict[str, Any]:
    """Views publish through the test client: at once, on commit, not after a rollback."""
    setup_test_environment()
    call_command("migrate", run_syncdb=True, verbosity=0)
    client = Client(raise_request_exception=False)
    connected_before = get_bus().is_connected()
    ping = client.get("/ping/")
    ok = client.post("/photos/", {"title": "sunset", "owner": "alice"})
    failed = client.post("/photos/", {"title": "lost", "owner": "bob", "fail": "1"})
    from photos.models import Photo

    titles = sorted(Photo.objects.values_list("title", flat=True))
    bus.publish("test.done", {})
    return {
        "connected_before": connected_before,
        "ping": [ping.status_code, ping.json()],
        "ok": [ok.status_code, ok.json()],
        "failed": failed.status_code,
        "titles": titles,
        "published": _published(),
    }


def on_commit() -> dict[str, Any]:
    """publish_on_commit: after commit, never after a rollback, at once outside atomic."""
    seen: dict[str, Any] = {}
    # Commit: nothing is sent until the outermost block commits.
    with transaction.atomic():
        publish_on_commit("order.committed", {"n": 1})
        with transaction.atomic():
            publish_on_commit("order.committed", {"n": 2})
        seen["inside_atomic"] = _published()
        data = {"n": 3}
        publish_on_commit("order.committed", data)
        data["n"] = 99  # the event carries the value at the call
    seen["after_commit"] = _published()
    # Rollback of the whole transaction.
    try:
        with transaction.atomic():
            publish_on_commit("order.rolledback", {"n": 1})
            publish_to_user_on_commit("alice", "order.rolledback", {"n": 2})
            raise RuntimeError("rollback")
    except RuntimeError:
        pass
    # Rollback of a savepoint only: the outer event is sent, the inner one is not.
    with transaction.atomic():
        publish_on_commit("order.outer", {"n": 1})
        try:
            with transaction.atomic():
                publish_on_commit("order.rolledback", {"n": 3})
                raise RuntimeError("savepoint rollback")
        except RuntimeError:
            pass
    seen["after_rollbacks"] = _published()
    # Outside any atomic block (autocommit): sent before the call returns.
    publish_to_user_on_commit("alice", "order.autocommit", {"n": 1})
    seen["after_autocommit"] = _published()
    # Bad input raises at the call, before anything is deferred.
    errors = []
    for event_type, data in (("bad type!", {}), ("order.bad", {"x": object()})):
        try:
            with transaction.atomic():
                publish_on_commit(event_type, data)
        except EventBusError as exc:
            errors.append(type(exc).__name__)
    seen["errors"] = errors
    seen["after_errors"] = _published()
    bus.publish("test.done", {})
    return seen


def on_commit_failure() -> dict[str, Any]:
    """A publish that fails after the commit is logged and signalled, not raised."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("eventbus.contrib.django").addHandler(Keep(logging.ERROR))
    signalled: list[dict[str, Any]] = []

    def on_failed(sender: Any, **kwargs: Any) -> None:
        signalled.append(
            {
                "sender": sender.__name__,
                "event_type": kwargs["event_type"],
                "data": kwargs["data"],
                "user_id": kwargs["user_id"],
                "error": type(kwargs["error"]).__name__,
            }
        )

    publish_failed.connect(on_failed)
    dead = json.loads(os.environ["TESTPROJECT_DEAD_EVENTBUS"])
    later: list[str] = []
    raised = None
    with override_settings(EVENTBUS=dead):
        try:
            with transaction.atomic():
                publish_to_user_on_commit("alice", "order.lost", {"n": 1})
                transaction.on_commit(lambda: later.append("ran"))
        except Exception as exc:
            raised = repr(exc)
    return {
        "raised": raised,
        "signalled": signalled,
        "logged": [r.getMessage() for r in records],
        "logged_with_traceback": [r.exc_info is not None for r in records],
        "later_callbacks": later,
    }


def in_process() -> dict[str, Any]:
    """With HANDLE_IN_PROCESS the web process runs the declared handlers itself."""
    from photos import events

    project_bus = get_bus()
    before = {"handling": project_bus.handling, "connected": project_bus.is_connected()}
    project_bus.connect()  # what a gunicorn post_fork hook would do
    with transaction.atomic():
        publish_on_commit("photo.uploaded", {"photoId": 5, "title": "x", "owner": "carol"})
    deadline = time.monotonic() + 10
    with events.HANDLED_CHANGED:
        while not events.HANDLED and time.monotonic() < deadline:
            events.HANDLED_CHANGED.wait(0.1)
    return {
        **before,
        "handled": len(events.HANDLED),
        "subscriptions": sorted(s.pattern for s in project_bus.subscriptions()),
    }


def prefork() -> dict[str, Any]:
    """A pre-forking server: the master loaded the app and never publishes; each forked
    worker connects on its own first publish."""
    children = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:  # a worker process
            code = 0
            try:
                bus.publish("worker.hello", {"n": n, "pid": os.getpid(), "client": bus.client_id})
                get_bus().disconnect()
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return {"children": children, "codes": codes, "master_connected": get_bus().is_connected()}


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "startup": startup,
    "views": views,
    "on_commit": on_commit,
    "on_commit_failure": on_commit_failure,
    "in_process": in_process,
    "prefork": prefork,
}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]]()
    print("RESULT " + json.dumps(result), flush=True)
