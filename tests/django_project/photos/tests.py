"""A user's own tests of the photos app, written with ``eventbus.testing``.

Run by ``tests/test_testing_integrations.py`` as ``manage.py test photos`` (Django's
test runner, a real SQLite test database). The project's settings point the bus at a
Redis port where nothing listens; these tests swap in a recording bus with
``override_settings`` and never need a server.
"""

from __future__ import annotations

from django.test import TestCase, TransactionTestCase, override_settings

from eventbus.contrib.django import DjangoEventBus, get_bus, reset_bus
from eventbus.testing import RecordingBus
from photos.models import JobRun, Photo

RECORDING = {"URL": "memory://", "BUS_CLASS": "eventbus.testing.RecordingBus"}


def recording_bus() -> RecordingBus:
    """A fresh project bus for one test (what a setUp does)."""
    reset_bus()
    bus = get_bus()
    assert isinstance(bus, RecordingBus), type(bus).__mro__
    return bus


@override_settings(EVENTBUS=RECORDING)
class UploadTests(TestCase):
    """A TestCase never commits: captureOnCommitCallbacks(execute=True) runs the commit
    callbacks, publish_on_commit's among them."""

    def setUp(self) -> None:
        self.bus = recording_bus()

    def test_the_project_bus_is_a_recording_bus_with_the_handlers(self) -> None:
        assert isinstance(self.bus, DjangoEventBus)
        assert not self.bus.is_connected()  # connects on first use, as a real one
        assert self.bus.handling  # HANDLE_IN_PROCESS is implied
        assert sorted(s.pattern for s in self.bus.subscriptions()) == [
            "job.*",
            "photo.uploaded",
            "photo.uploaded",
        ]
        assert self.bus.health_check().transport == "recording://"  # connects
        assert self.bus.is_connected()

    def test_a_committed_upload_is_recorded_after_the_commit(self) -> None:
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            response = self.client.post("/photos/", {"title": "sunset", "owner": "alice"})
            assert response.status_code == 201
            self.bus.assert_not_published("photo.*")  # deferred until the commit
        assert len(callbacks) == 1
        photo_id = response.json()["photoId"]
        event = self.bus.assert_published(
            "photo.uploaded", where={"photoId": photo_id, "title": "sunset"}, count=1
        )
        assert event.source == "testproject"

    def test_a_rolled_back_upload_is_not_recorded(self) -> None:
        with (
            self.captureOnCommitCallbacks(execute=True) as callbacks,
            self.assertRaises(RuntimeError),  # noqa: PT027  # a Django TestCase's idiom
        ):
            self.client.post("/photos/", {"title": "lost", "owner": "bob", "fail": "1"})
        assert callbacks == []
        assert not Photo.objects.exists()
        self.bus.assert_not_published()

    def test_drain_runs_the_declared_handlers_of_every_app(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/photos/", {"title": "dawn", "owner": "alice"})
        photo_id = response.json()["photoId"]
        self.bus.assert_not_published("photo.thumbnail.ready")  # handlers wait for drain()
        assert self.bus.drain() == 2  # photos' and notifications' handlers
        self.bus.assert_published("photo.thumbnail.ready", where={"photoId": photo_id})
        self.bus.assert_published("notification.new", user="alice", count=1)

    def test_a_drained_handler_uses_the_orm_in_the_tests_transaction(self) -> None:
        self.bus.publish("job.run", {"job": 3})
        assert self.bus.drain() == 1
        run = JobRun.objects.get(job=3)
        assert run.state == "done"

    def test_a_view_publishes_at_once(self) -> None:
        response = self.client.get("/ping/")
        event = self.bus.assert_published("site.pinged", where={"path": "/ping/"})
        assert event.id == response.json()["eventId"]


@override_settings(EVENTBUS=RECORDING)
class TransactionalUploadTests(TransactionTestCase):
    """A TransactionTestCase commits for real: publish_on_commit runs at the commit."""

    def setUp(self) -> None:
        self.bus = recording_bus()

    def test_committed_is_recorded_and_rolled_back_is_not(self) -> None:
        ok = self.client.post("/photos/", {"title": "sunset", "owner": "alice"})
        assert ok.status_code == 201
        self.bus.assert_published("photo.uploaded", where={"photoId": ok.json()["photoId"]})
        with self.assertRaises(RuntimeError):  # noqa: PT027
            self.client.post("/photos/", {"title": "lost", "owner": "bob", "fail": "1"})
        self.bus.assert_published("photo.uploaded", count=1)
        self.bus.assert_not_published(where={"title": "lost"})
        assert list(Photo.objects.values_list("title", flat=True)) == ["sunset"]
