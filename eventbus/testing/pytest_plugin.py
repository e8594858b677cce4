"""The pytest plugin of ``eventbus``: a :class:`~eventbus.testing.RecordingBus` per test.

Installed with the package, pytest loads it by itself (entry point ``eventbus`` in
the ``pytest11`` group); without that, enable it with ``-p eventbus.testing.pytest_plugin``
or ``pytest_plugins = ["eventbus.testing.pytest_plugin"]`` in a top-level
``conftest.py``.

Fixtures:

``event_bus``
    A connected :class:`~eventbus.testing.RecordingBus`, new for each test and
    disconnected after it. ``@pytest.mark.event_bus(service_name=..., eager=True)``
    sets its options.
``event_bus_factory``
    ``event_bus_factory(service_name="other", eager=False)`` makes more connected
    recording buses (each one is independent: a publish on one never reaches
    another); all are disconnected after the test.

Example::

    def test_upload_publishes(event_bus):
        upload_photo(event_bus, "123")
        event_bus.assert_published("photo.uploaded", where={"photoId": "123"})
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventbus.testing import RecordingBus

__all__ = ["event_bus", "event_bus_factory"]

_MARKER = "event_bus"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``event_bus`` marker (so ``--strict-markers`` accepts it)."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**options): options of the event_bus fixture's RecordingBus "
        "(service_name=..., eager=True, config=...)",
    )


@pytest.fixture
def event_bus_factory() -> Iterator[Callable[..., RecordingBus]]:
    """Make connected :class:`RecordingBus` instances; all are disconnected at teardown.

    Keyword arguments are those of :class:`RecordingBus`.
    """
    buses: list[RecordingBus] = []

    def make(**options: Any) -> RecordingBus:
        bus = RecordingBus(**options)
        bus.connect()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.disconnect()


@pytest.fixture
def event_bus(
    request: pytest.FixtureRequest, event_bus_factory: Callable[..., RecordingBus]
) -> RecordingBus:
    """A connected :class:`RecordingBus` for this test, disconnected after it.

    Options come from the closest ``@pytest.mark.event_bus(...)`` marker.
    """
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None and marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER} takes keyword arguments only (service_name=..., "
            f"eager=...), got {marker.args!r}"
        )
    return event_bus_factory(**(marker.kwargs if marker is not None else {}))
