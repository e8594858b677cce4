"""The gateway's one reconnecting subscribe loop (``eventbus.gateway._redis.Subscriber``,
shared by the relay, the dashboard's tail and the ``/service`` namespace) on the real
test Redis: it delivers in order, and a lost connection or a failing callback is
counted, reported and followed by a renewed subscription."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("socketio")
pytest.importorskip("jwt")

import redis

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.config import redis_config_from_url
from eventbus._core.stats import Counters
from eventbus.gateway._redis import Message, Subscriber, command_client

FAST = ReconnectPolicy(first=0.01, cap=0.05)


async def _until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class _Recorder:
    """The callbacks of one Subscriber, and what they saw."""

    def __init__(self, fail_first: int = 0) -> None:
        self.payloads: list[bytes] = []
        self.confirmed: list[tuple[str, str]] = []
        self.ups: list[bool] = []
        self.downs: list[Exception] = []
        self._fail = fail_first

    async def on_message(self, message: Message) -> None:
        if self._fail:
            self._fail -= 1
            raise RuntimeError("a handler bug")
        self.payloads.append(message["data"])

    def on_confirm(self, kind: str, name: str) -> None:
        self.confirmed.append((kind, name))

    async def on_up(self, renewed: bool) -> None:
        self.ups.append(renewed)

    async def on_down(self, error: Exception) -> None:
        self.downs.append(error)


def _run(
    redis_url: str,
    recorder: _Recorder,
    scenario: Callable[[Subscriber, Counters, Any], Awaitable[None]],
) -> Counters:
    config = redis_config_from_url(redis_url)
    counters = Counters()

    async def main() -> None:
        subscriber = Subscriber(
            config,
            name="test subscriber",
            client_name="gateway-subscriber-test",
            counters=counters,
            lost_counter="test_lost",
            policy=FAST,
            names=lambda: (["t:chan", "t:chan"], ["t:pat:*"]),
            on_message=recorder.on_message,
            on_confirm=recorder.on_confirm,
            on_up=recorder.on_up,
            on_down=recorder.on_down,
            log=logging.getLogger("tests.gateway.subscriber"),
        )
        publisher = command_client(config, client_name="gateway-subscriber-test-publisher")
        subscriber.start()
        try:
            await asyncio.wait_for(subscriber.ready.wait(), 10)
            await scenario(subscriber, counters, publisher)
        finally:
            await subscriber.stop()
            await publisher.aclose()
        assert not subscriber.ready.is_set()

    asyncio.run(main())
    return counters


def test_it_subscribes_each_name_once_and_delivers_in_order(redis_url: str) -> None:
    """Both kinds of names are confirmed (a repeated one once), messages arrive in
    order, and the first confirmation is not a renewal."""
    recorder = _Recorder()

    async def scenario(subscriber: Subscriber, counters: Counters, publisher: Any) -> None:
        for n in range(5):
            await publisher.publish("t:chan" if n % 2 else "t:pat:x", str(n).encode())
        await _until(lambda: len(recorder.payloads) == 5)

    counters = _run(redis_url, recorder, scenario)
    assert recorder.payloads == [b"0", b"1", b"2", b"3", b"4"]
    assert sorted(recorder.confirmed) == [("psubscribe", "t:pat:*"), ("subscribe", "t:chan")]
    assert recorder.ups == [False]
    assert recorder.downs == []
    assert counters.snapshot().get("test_lost", 0) == 0


def test_a_killed_connection_is_counted_reported_and_renewed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """CLIENT KILL of the subscribed connection: one loss counted and reported, then a
    renewed subscription that delivers again."""
    recorder = _Recorder()

    async def scenario(subscriber: Subscriber, counters: Counters, publisher: Any) -> None:
        [connection] = [
            c for c in redis_client.client_list() if c["name"] == "gateway-subscriber-test"
        ]
        redis_client.client_kill_filter(_id=connection["id"])
        await _until(lambda: recorder.ups == [False, True])
        await publisher.publish("t:chan", b"after")
        await _until(lambda: recorder.payloads == [b"after"])

    counters = _run(redis_url, recorder, scenario)
    assert counters.snapshot()["test_lost"] == 1
    assert "errors" not in counters.snapshot()
    assert len(recorder.downs) == 1
    assert isinstance(recorder.downs[0], redis.exceptions.ConnectionError | OSError)


def test_a_failing_callback_is_counted_as_an_error_and_the_loop_goes_on(
    redis_url: str,
) -> None:
    """A message handler that raises ends the connection like a loss, counted as
    `errors` too, and the renewed subscription delivers what comes next."""
    recorder = _Recorder(fail_first=1)

    async def scenario(subscriber: Subscriber, counters: Counters, publisher: Any) -> None:
        await publisher.publish("t:chan", b"boom")
        await _until(lambda: recorder.ups == [False, True])
        await publisher.publish("t:chan", b"fine")
        await _until(lambda: recorder.payloads == [b"fine"])

    counters = _run(redis_url, recorder, scenario)
    assert counters.snapshot()["test_lost"] == 1
    assert counters.snapshot()["errors"] == 1
    assert [type(e) for e in recorder.downs] == [RuntimeError]
