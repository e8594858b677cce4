"""The GroupStore contract (durable groups' stream layer), on memory:// and on real Redis.

Each test starts a transport of each kind and drives the stream operations the way
the bus's group consumers will: route, create, read, ack, claim, dead-letter, replay.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from eventbus import GroupMissingError
from eventbus._core.config import redis_config_from_url
from eventbus._transports.base import LinkEvent, StreamTarget
from eventbus._transports.memory.transport import MemoryTransport

from _servers import redis_version


class _NullSink:
    def on_message(self, key: str, channel: str, payload: bytes) -> None:
        pass

    def on_link(self, event: LinkEvent) -> None:
        pass


@pytest.fixture
def store(transport_url: str) -> Iterator[Any]:
    """The group store of a started transport of the parametrized kind, stopped at
    teardown."""
    if transport_url.startswith("memory://"):
        transport: Any = MemoryTransport.from_url(transport_url)
    else:
        from eventbus._transports.redis.transport import RedisTransport

        tag = uuid.uuid4().hex[:8]
        transport = RedisTransport(
            redis_config_from_url(transport_url),
            client_name=f"test-{tag}",
            control_channel=f"ctl-{tag}",
        )
    transport.start(_NullSink())
    try:
        yield transport.groups
    finally:
        transport.stop(5.0)


@pytest.fixture
def keys() -> tuple[str, str]:
    """A fresh (stream, dead-letter stream) pair sharing a hash tag."""
    tag = uuid.uuid4().hex[:8]
    return f"t:group:{{{tag}}}", f"t:dlq:{{{tag}}}"


def _fill(store: Any, stream: str, count: int, maxlen: int | None = None) -> None:
    target = [StreamTarget(stream=stream, maxlen=maxlen)]
    for n in range(count):
        store.route("t:ev:x", b'{"n":%d}' % n, target, 2.0)


def test_route_publishes_and_appends_and_group_reads_new_entries(
    store: Any, keys: tuple[str, str]
) -> None:
    """A group created at "$" gets what is routed after it, in order, each once."""
    stream, _ = keys
    assert store.group_create(stream, "g", "$", 2.0) is True
    assert store.group_create(stream, "g", "$", 2.0) is False
    _fill(store, stream, 5)
    got = store.group_read(stream, "g", "c1", 10, 0.5)
    assert [e.payload for e in got] == [b'{"n":%d}' % n for n in range(5)]
    assert all(e.deliveries == 1 for e in got)
    assert store.group_read(stream, "g", "c1", 10, 0.05) == []


def test_group_created_from_an_id_delivers_only_later_entries(
    store: Any, keys: tuple[str, str]
) -> None:
    """A group started at "0" gets the whole stream, like Redis."""
    stream, _ = keys
    store.group_create(stream, "early", "$", 2.0)
    _fill(store, stream, 3)
    assert store.group_create(stream, "late", "0", 2.0) is True
    got = store.group_read(stream, "late", "c", 10, 0.5)
    assert len(got) == 3


def test_competing_consumers_never_share_an_entry(store: Any, keys: tuple[str, str]) -> None:
    """Two consumers of one group split 300 entries between them, none twice."""
    stream, _ = keys
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 300)
    seen: dict[str, list[str]] = {"a": [], "b": []}
    while True:
        a = store.group_read(stream, "g", "a", 7, 0.05)
        b = store.group_read(stream, "g", "b", 11, 0.05)
        seen["a"] += [e.id for e in a]
        seen["b"] += [e.id for e in b]
        if not a and not b:
            break
    everything = seen["a"] + seen["b"]
    assert len(everything) == 300
    assert len(set(everything)) == 300
    assert seen["a"]
    assert seen["b"]


def test_ack_clears_pending_and_info_counts(store: Any, keys: tuple[str, str]) -> None:
    """group_info shows length, pending and consumers; ack removes from pending."""
    stream, dlq = keys
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 4)
    got = store.group_read(stream, "g", "c1", 3, 0.5)
    info = store.group_info(stream, "g", dlq, 2.0)
    assert (info.length, info.pending, info.consumers) == (4, 3, 1)
    assert info.lag in (1, None)
    assert info.oldest_pending_age is not None
    assert store.group_ack(stream, "g", [e.id for e in got], 2.0) == 3
    assert store.group_info(stream, "g", dlq, 2.0).pending == 0


def test_idle_entries_of_a_dead_consumer_are_claimed_with_delivery_counts(
    store: Any, keys: tuple[str, str]
) -> None:
    """An entry left pending by one consumer is claimed by another after min_idle; each claim
    counts a delivery."""
    stream, _ = keys
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 2)
    dead = store.group_read(stream, "g", "dead", 10, 0.5)
    assert len(dead) == 2
    claimed, gone = store.group_claim(stream, "g", "alive", 60.0, 10, 2.0)
    assert (claimed, gone) == ([], [])  # not idle long enough yet
    time.sleep(0.25)  # the idle time is the scenario
    claimed, gone = store.group_claim(stream, "g", "alive", 0.2, 10, 2.0)
    assert [e.id for e in claimed] == [e.id for e in dead]
    assert [e.deliveries for e in claimed] == [2, 2]
    assert claimed[0].payload == dead[0].payload
    assert gone == []
    time.sleep(0.25)
    again, _ = store.group_claim(stream, "g", "other", 0.2, 1, 2.0)
    assert [e.deliveries for e in again] == [3]


def test_claim_reports_trimmed_pending_entries(store: Any, keys: tuple[str, str]) -> None:
    """A pending entry that maxlen trimmed away is reported as gone, and leaves pending."""
    stream, dlq = keys
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 3)
    store.group_read(stream, "g", "dead", 1, 0.5)  # pending: the first entry
    # Exact trimming on memory; Redis's "~" trims whole nodes (100 entries by default).
    _fill(store, stream, 250, maxlen=2)
    time.sleep(0.25)
    claimed, gone = store.group_claim(stream, "g", "alive", 0.2, 10, 2.0)
    assert len(gone) == 1
    assert claimed == []
    assert store.group_info(stream, "g", dlq, 2.0).pending == 0


def _read_all(store: Any, stream: str, group: str) -> int:
    count = 0
    while got := store.group_read(stream, group, "c", 100, 0.05):
        count += len(got)
    return count


def _counts_losses(store: Any, transport_url: str, stream: str) -> bool:
    """Whether the server has stream read counters (Redis 7.0+); if not, checks that
    the store says it cannot count (None), as documented."""
    if transport_url.startswith("memory://") or redis_version(transport_url) >= (7, 0):
        return True
    store.group_create(stream, "g", "$", 2.0)
    assert store.group_take_lost(stream, "g", 2.0) is None
    return False


def test_loss_to_retention_is_counted_exactly_once(
    store: Any, keys: tuple[str, str], transport_url: str
) -> None:
    """Three groups and a flood through maxlen 50: one that read some first, one made at
    "$" that never read, one made from an id. For each, what it reads and what it is
    told it lost add up to what was routed after its start, and a loss is taken once;
    the backlog is counted exactly at each step."""
    stream, dlq = keys
    if not _counts_losses(store, transport_url, stream):
        pytest.skip("Redis < 7.0 cannot count losses to retention (documented)")
    store.group_create(stream, "probe", "$", 2.0)
    _fill(store, stream, 10)
    ids = [e.id for e in store.group_read(stream, "probe", "p", 10, 0.5)]
    store.group_create(stream, "reader", "0", 2.0)
    store.group_create(stream, "new", "$", 2.0)
    store.group_create(stream, "late", ids[4], 2.0)
    assert store.group_info(stream, "late", dlq, 2.0).lag == 5
    assert len(store.group_read(stream, "reader", "c", 3, 0.5)) == 3
    assert store.group_take_lost(stream, "reader", 2.0) == 0
    _fill(store, stream, 400, maxlen=50)
    for group, unread in (("reader", 407), ("new", 400), ("late", 405)):
        info = store.group_info(stream, group, dlq, 2.0)
        assert info.lag == info.length, group
        lost = store.group_take_lost(stream, group, 2.0)
        assert lost == info.trimmed_unread == unread - info.length, group
        assert store.group_take_lost(stream, group, 2.0) == 0, group
        assert store.group_info(stream, group, dlq, 2.0).trimmed_unread == 0, group
        assert lost + _read_all(store, stream, group) == unread, group
        assert store.group_info(stream, group, dlq, 2.0).lag == 0, group
        assert store.group_take_lost(stream, group, 2.0) == 0, group


def test_loss_between_reads_is_counted_in_full(
    store: Any, keys: tuple[str, str], transport_url: str
) -> None:
    """Entries trimmed before the group's position while it goes on reading the
    survivors (a loss that is only looked for after the reads) are counted in full."""
    stream, _ = keys
    if not _counts_losses(store, transport_url, stream):
        pytest.skip("Redis < 7.0 cannot count losses to retention (documented)")
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 5)
    handled = len(store.group_read(stream, "g", "c", 5, 0.5))
    _fill(store, stream, 400, maxlen=50)
    handled += len(store.group_read(stream, "g", "c", 20, 0.5))
    lost = store.group_take_lost(stream, "g", 2.0)
    handled += _read_all(store, stream, "g")
    assert lost + handled == 405
    assert lost > 0
    assert store.group_take_lost(stream, "g", 2.0) == 0
    assert store.group_take_lost(stream, "missing", 2.0) == 0


def test_dead_letter_replay_and_purge(store: Any, keys: tuple[str, str]) -> None:
    """dead_letter moves and acks; dead_letters lists it with its error; replay puts it back;
    purge empties the dead-letter stream."""
    stream, dlq = keys
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 2)
    first, second = store.group_read(stream, "g", "c", 10, 0.5)
    store.dead_letter(stream, "g", dlq, first, "c", "RuntimeError('disk full')", 2.0)
    info = store.group_info(stream, "g", dlq, 2.0)
    assert (info.pending, info.dead_letters) == (1, 1)
    (letter,) = store.dead_letters(dlq, 10, 2.0)
    assert letter.source_id == first.id
    assert letter.payload == first.payload
    assert letter.error == "RuntimeError('disk full')"
    assert (letter.deliveries, letter.consumer) == (1, "c")
    assert store.replay(dlq, stream, None, 2.0) == 1
    (back,) = store.group_read(stream, "g", "c", 10, 0.5)
    assert back.payload == first.payload
    store.dead_letter(stream, "g", dlq, second, "c", "boom", 2.0)
    store.dead_letter(stream, "g", dlq, back, "c", "boom again", 2.0)
    assert store.purge(dlq, 2.0) == 2
    assert store.dead_letters(dlq, 10, 2.0) == []


def test_replay_of_chosen_ids(store: Any, keys: tuple[str, str]) -> None:
    """replay with ids moves only those."""
    stream, dlq = keys
    store.group_create(stream, "g", "$", 2.0)
    _fill(store, stream, 3)
    for entry in store.group_read(stream, "g", "c", 10, 0.5):
        store.dead_letter(stream, "g", dlq, entry, "c", "x", 2.0)
    letters = store.dead_letters(dlq, 10, 2.0)
    assert store.replay(dlq, stream, [letters[1].id], 2.0) == 1
    assert [d.id for d in store.dead_letters(dlq, 10, 2.0)] == [letters[0].id, letters[2].id]


def test_read_from_a_missing_group_raises(store: Any, keys: tuple[str, str]) -> None:
    """Reading a group that does not exist raises GroupMissingError naming it."""
    stream, _ = keys
    with pytest.raises(GroupMissingError) as caught:
        store.group_read(stream, "nobody", "c", 1, 0.05)
    assert caught.value.group == "nobody"


def test_blocking_read_wakes_when_an_entry_arrives(store: Any, keys: tuple[str, str]) -> None:
    """A read blocked on an empty group returns the entry routed from another thread."""
    stream, _ = keys
    store.group_create(stream, "g", "$", 2.0)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(store.group_read(stream, "g", "c", 1, 5.0)))
    reader.start()
    time.sleep(0.1)  # let the reader block first: that is the scenario
    started = time.monotonic()
    _fill(store, stream, 1)
    reader.join(6.0)
    assert len(got) == 1
    assert time.monotonic() - started < 2.0


def test_registry(store: Any) -> None:
    """registry_set / registry_all keep each group's spec."""
    key = f"t:groups:{uuid.uuid4().hex[:6]}"
    store.registry_set(key, "thumbs", b'{"pattern":"photo.*"}', 2.0)
    store.registry_set(key, "audit", b'{"pattern":"*"}', 2.0)
    assert store.registry_all(key, 2.0) == {
        "thumbs": b'{"pattern":"photo.*"}',
        "audit": b'{"pattern":"*"}',
    }
