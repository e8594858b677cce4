"""Durable groups on Redis Streams: ``RedisGroupStore`` against a real redis-server.

Also pins the Redis behaviours the implementation relies on: XCLAIM with trimmed
entries, NOGROUP / UNBLOCKED when a stream or group vanishes, XINFO GROUPS' lag; on
7.0, and on 6.2 where those differ (no read counters; DEL does not unblock a read).
Delivery is awaited on a condition, never with a sleep; the only sleeps are where an
entry's idle time is the scenario (claim after ``min_idle``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import redis

from eventbus._core.config import redis_config_from_url
from eventbus._core.keyspace import Keyspace
from eventbus._errors import (
    BusStateError,
    GroupMissingError,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
)
from eventbus._transports.base import GroupStore, LinkEvent, StreamEntry, StreamTarget
from eventbus._transports.redis.transport import RedisTransport

from _helpers import wait_for
from _servers import RedisServer, redis_version

WAIT = 10.0  # generous: these machines change speed 3-5x with their load
T = 2.0  # the deadline of ordinary commands
IDLE = 0.2  # min_idle of the claim tests


class Sink:
    """Records the payloads the listener delivers."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def on_message(self, key: str, channel: str, payload: bytes) -> None:
        self.payloads.append(payload)

    def on_link(self, event: LinkEvent) -> None:
        pass


Factory = Callable[..., RedisTransport]


@pytest.fixture
def make_transport() -> Iterator[Factory]:
    """``make_transport(url, start=False, **config_overrides)``; all stopped at teardown."""
    made: list[RedisTransport] = []

    def make(url: str, *, sink: Sink | None = None, **overrides: Any) -> RedisTransport:
        config = attrs.evolve(redis_config_from_url(url), **overrides)
        tag = uuid.uuid4().hex[:8]
        transport = RedisTransport(
            config, client_name=f"test:{tag}", control_channel=f"test:ctl:{tag}"
        )
        made.append(transport)
        if sink is not None:
            transport.start(sink)
        return transport

    yield make
    for transport in made:
        transport.stop(5.0)


@attrs.frozen
class Group:
    """One group's names under a prefix of its own."""

    name: str
    stream: str
    dlq: str
    keyspace: Keyspace


@pytest.fixture
def group() -> Group:
    keyspace = Keyspace(prefix=f"t{uuid.uuid4().hex[:8]}:")
    name = "thumbnailer"
    return Group(
        name=name,
        stream=keyspace.group_stream(name),
        dlq=keyspace.dead_letter_stream(name),
        keyspace=keyspace,
    )


def fill(transport: RedisTransport, group: Group, count: int, *, maxlen: int | None = None) -> None:
    """Route ``count`` events (payloads ``p0``, ``p1``...) into the group's stream."""
    target = [StreamTarget(stream=group.stream, maxlen=maxlen)]
    transport.groups.route_many([("nobody", b"p%d" % i, target) for i in range(count)], T)


def read_all(transport: RedisTransport, group: Group, consumer: str) -> list[StreamEntry]:
    """Everything still undelivered, read by ``consumer`` without waiting."""
    entries: list[StreamEntry] = []
    while batch := transport.groups.group_read(group.stream, group.name, consumer, 100, block=0):
        entries += batch
    return entries


def pending(client: redis.Redis, group: Group) -> list[tuple[str, str, int]]:
    """(id, owner, deliveries) of every pending entry, from XPENDING itself."""
    rows = client.xpending_range(group.stream, group.name, "-", "+", 1000)
    return [(r["message_id"].decode(), r["consumer"].decode(), r["times_delivered"]) for r in rows]


def test_the_redis_transport_has_every_group_store_method(
    redis_url: str, make_transport: Factory
) -> None:
    wanted = {n for n in vars(GroupStore) if not n.startswith("_")}
    assert wanted
    groups = make_transport(redis_url).groups
    assert {n for n in wanted if callable(getattr(groups, n, None))} == wanted


# -- routing ------------------------------------------------------------------------------


def test_route_publishes_and_appends_to_every_target_stream(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    sink = Sink()
    transport = make_transport(redis_url, sink=sink)
    channel = group.keyspace.event_channel("photo.uploaded")
    transport.subscribe([channel], T)
    other = group.keyspace.group_stream("indexer")
    targets = [StreamTarget(stream=group.stream), StreamTarget(stream=other)]
    assert transport.groups.route(channel, b"env-1", targets, T) == 1
    wait_for(lambda: sink.payloads == [b"env-1"], WAIT, "the PUBLISH")
    for stream in (group.stream, other):
        assert [f for _, f in redis_client.xrange(stream)] == [{b"e": b"env-1"}]
    # several messages, each with its own targets, in order; receivers per message
    counts = transport.groups.route_many(
        [(channel, b"env-2", targets), ("elsewhere", b"env-3", targets[:1]), (channel, b"4", [])],
        T,
    )
    assert counts == [1, 0, 1]
    assert [f[b"e"] for _, f in redis_client.xrange(group.stream)] == [b"env-1", b"env-2", b"env-3"]
    assert [f[b"e"] for _, f in redis_client.xrange(other)] == [b"env-1", b"env-2"]
    wait_for(lambda: sink.payloads == [b"env-1", b"env-2", b"4"], WAIT, "both PUBLISHes")
    assert transport.groups.route_many([], T) == []


def test_route_trims_a_stream_with_maxlen_approximately(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    fill(transport, group, 1000, maxlen=10)
    # MAXLEN ~ drops whole nodes (100 entries each by default): about 10, never fewer.
    assert 10 <= redis_client.xlen(group.stream) <= 200
    assert redis_client.xrevrange(group.stream, count=1)[0][1] == {b"e": b"p999"}


def test_route_refused_by_redis_raises_after_carrying_out_the_rest(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    redis_client.set(group.dlq, b"not a stream")
    good, bad = StreamTarget(stream=group.stream), StreamTarget(stream=group.dlq)
    with pytest.raises(TransportError, match="WRONGTYPE") as info:
        transport.groups.route("c", b"x", [bad, good], T)
    assert isinstance(info.value.__cause__, redis.ResponseError)
    assert redis_client.xlen(group.stream) == 1


# -- groups: create, read, ack ------------------------------------------------------------


def test_group_create_makes_the_stream_and_is_idempotent(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    assert transport.groups.group_create(group.stream, group.name, "$", T) is True
    assert redis_client.type(group.stream) == b"stream"
    assert transport.groups.group_create(group.stream, group.name, "$", T) is False
    fill(transport, group, 2)
    # start "0": a group created after entries arrived gets them too
    assert transport.groups.group_create(group.stream, "late", "0", T) is True
    assert [e.payload for e in read_all(transport, attrs.evolve(group, name="late"), "c")] == [
        b"p0",
        b"p1",
    ]
    with pytest.raises(TransportError, match="ID"):
        transport.groups.group_create(group.stream, "bad", "not-an-id", T)


def test_read_returns_new_entries_once_each_with_one_delivery(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 3)
    first = transport.groups.group_read(group.stream, group.name, "c1", 2, block=0)
    assert [(e.payload, e.deliveries) for e in first] == [(b"p0", 1), (b"p1", 1)]
    assert [e.id for e in first] == [i.decode() for i, _ in redis_client.xrange(group.stream)][:2]
    rest = transport.groups.group_read(group.stream, group.name, "c1", 10, block=0.05)
    assert [e.payload for e in rest] == [b"p2"]
    assert transport.groups.group_read(group.stream, group.name, "c1", 10, block=0) == []


def test_competing_consumers_never_get_the_same_entry(
    redis_url: str, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 1000)
    got: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)

    def consume(consumer: str) -> None:
        start.wait()
        while batch := transport.groups.group_read(group.stream, group.name, consumer, 7, block=0):
            got[consumer] += [e.id for e in batch]
            transport.groups.group_ack(group.stream, group.name, [e.id for e in batch], T)

    threads = [threading.Thread(target=consume, args=(c,)) for c in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert got["a"], "both consumers should have competed"
    assert got["b"], "both consumers should have competed"
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == 1000
    assert len(set(got["a"]) | set(got["b"])) == 1000


def test_ack_removes_entries_from_pending(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 3)
    ids = [e.id for e in read_all(transport, group, "c1")]
    assert len(pending(redis_client, group)) == 3
    assert transport.groups.group_ack(group.stream, group.name, ids[:2], T) == 2
    assert pending(redis_client, group) == [(ids[2], "c1", 1)]
    assert transport.groups.group_ack(group.stream, group.name, ids[:2], T) == 0  # not pending now
    assert transport.groups.group_ack(group.stream, group.name, [], T) == 0


def test_entries_without_an_envelope_are_acknowledged_and_logged(
    redis_url: str,
    redis_client: redis.Redis,
    make_transport: Factory,
    group: Group,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    foreign = redis_client.xadd(group.stream, {b"other": b"x"}).decode()
    fill(transport, group, 1)
    with caplog.at_level(logging.WARNING, logger="eventbus.transport"):
        entries = transport.groups.group_read(group.stream, group.name, "c1", 10, block=0)
    assert [e.payload for e in entries] == [b"p0"]
    assert foreign in caplog.text
    assert [p[0] for p in pending(redis_client, group)] == [entries[0].id]


def test_registry_set_and_all(redis_url: str, make_transport: Factory, group: Group) -> None:
    transport = make_transport(redis_url)
    key = group.keyspace.groups_registry
    assert transport.groups.registry_all(key, T) == {}
    transport.groups.registry_set(key, "thumbnailer", b'{"pattern":"photo.*"}', T)
    transport.groups.registry_set(key, "indexer", b'{"pattern":"#"}', T)
    transport.groups.registry_set(key, "indexer", b'{"pattern":"doc.*"}', T)
    assert transport.groups.registry_all(key, T) == {
        "thumbnailer": b'{"pattern":"photo.*"}',
        "indexer": b'{"pattern":"doc.*"}',
    }


# -- claiming ----------------------------------------------------------------------------


def test_a_dead_consumers_entry_is_claimed_after_min_idle_counting_deliveries(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 2)
    held = read_all(transport, group, "dead")
    claim = transport.groups.group_claim
    assert claim(group.stream, group.name, "live", IDLE, 10, T) == ([], [])  # not idle yet
    time.sleep(IDLE)  # the idle time is the scenario
    entries, gone = claim(group.stream, group.name, "live", IDLE, 1, T)  # count respected
    assert gone == []
    assert entries == [attrs.evolve(held[0], deliveries=2)]
    assert pending(redis_client, group) == [(held[0].id, "live", 2), (held[1].id, "dead", 1)]
    time.sleep(IDLE)
    entries, _ = claim(group.stream, group.name, "other", IDLE, 10, T)
    assert [(e.id, e.payload, e.deliveries) for e in entries] == [
        (held[0].id, b"p0", 3),
        (held[1].id, b"p1", 2),
    ]
    assert pending(redis_client, group) == [(held[0].id, "other", 3), (held[1].id, "other", 2)]


def test_claim_leaves_excluded_entries_alone_and_they_do_not_use_up_the_count(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 3)
    held = read_all(transport, group, "me")
    time.sleep(IDLE)
    running = [held[0].id, held[1].id]  # still being handled by "me": slow, not dead
    entries, gone = transport.groups.group_claim(
        group.stream, group.name, "me", IDLE, 1, T, running
    )
    assert (entries, gone) == ([attrs.evolve(held[2], deliveries=2)], [])
    assert pending(redis_client, group) == [
        (held[0].id, "me", 1),
        (held[1].id, "me", 1),
        (held[2].id, "me", 2),
    ]


def test_claim_reports_and_acknowledges_pending_entries_whose_data_was_trimmed(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    """Redis 7.0: XCLAIM returns only the entries that still exist and drops the
    others from the pending list; group_claim names those others."""
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 4)
    held = read_all(transport, group, "dead")
    redis_client.xdel(group.stream, held[1].id)
    redis_client.xtrim(group.stream, minid=held[3].id, approximate=False)  # held[0], held[2]
    time.sleep(IDLE)
    entries, gone = transport.groups.group_claim(group.stream, group.name, "live", IDLE, 10, T)
    assert entries == [attrs.evolve(held[3], deliveries=2)]
    assert gone == [held[0].id, held[1].id, held[2].id]
    assert pending(redis_client, group) == [(held[3].id, "live", 2)]
    # reported once: they are no longer pending
    time.sleep(IDLE)
    assert transport.groups.group_claim(group.stream, group.name, "x", IDLE, 10, T)[1] == []


def test_claim_on_a_missing_group_raises_group_missing(
    redis_url: str, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    with pytest.raises(GroupMissingError):
        transport.groups.group_claim(group.stream, group.name, "c", IDLE, 10, T)


# -- dead letters ------------------------------------------------------------------------


def test_dead_letter_moves_and_acknowledges_then_replay_and_purge(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 3)
    held = read_all(transport, group, "c1")
    bad = attrs.evolve(held[1], deliveries=5)
    transport.groups.dead_letter(
        group.stream, group.name, group.dlq, bad, "c1", "ValueError: boom", T
    )
    assert [p[0] for p in pending(redis_client, group)] == [held[0].id, held[2].id]
    assert redis_client.xlen(group.stream) == 3  # kept, acknowledged, trimmed later
    (letter,) = transport.groups.dead_letters(group.dlq, 10, T)
    assert (letter.source_id, letter.payload, letter.error) == (
        held[1].id,
        b"p1",
        "ValueError: boom",
    )
    assert (letter.deliveries, letter.consumer) == (5, "c1")
    assert redis_client.xrange(group.dlq)[0][1][b"g"] == group.name.encode()
    # replay: appended as a new entry, read again, gone from the dead letters
    assert transport.groups.replay(group.dlq, group.stream, None, T) == 1
    assert transport.groups.dead_letters(group.dlq, 10, T) == []
    (again,) = transport.groups.group_read(group.stream, group.name, "c2", 10, block=0)
    assert (again.payload, again.deliveries) == (b"p1", 1)
    assert again.id > held[2].id
    # replay of chosen ids only, skipping unknown ones; then purge
    for entry in (held[0], held[2]):
        transport.groups.dead_letter(group.stream, group.name, group.dlq, entry, "c1", "err", T)
    first, second = transport.groups.dead_letters(group.dlq, 10, T)
    assert transport.groups.dead_letters(group.dlq, 1, T) == [first]
    assert transport.groups.replay(group.dlq, group.stream, [second.id, "1-1"], T) == 1
    with pytest.raises(TransportError, match="Invalid stream ID"):
        transport.groups.replay(group.dlq, group.stream, ["not-an-id"], T)
    assert transport.groups.dead_letters(group.dlq, 10, T) == [first]
    assert transport.groups.purge(group.dlq, T) == 1
    assert redis_client.exists(group.dlq) == 0
    assert transport.groups.purge(group.dlq, T) == 0
    assert pending(redis_client, group) == [(again.id, "c2", 1)]


def test_replay_of_all_moves_every_dead_letter_in_chunks(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    redis_client.xadd(group.dlq, {b"other": b"no envelope"})  # left in place, not counted
    for i in range(1203):
        redis_client.xadd(group.dlq, {b"e": b"d%d" % i, b"src": b"1-1", b"err": b"e"})
    assert transport.groups.replay(group.dlq, group.stream, None, T) == 1203
    assert redis_client.xlen(group.dlq) == 1
    payloads = [f[b"e"] for _, f in redis_client.xrange(group.stream)]
    assert payloads == [b"d%d" % i for i in range(1203)]
    assert transport.groups.replay(group.dlq, group.stream, None, T) == 0
    assert transport.groups.replay(group.dlq + "x", group.stream, None, T) == 0


def test_dead_letter_of_an_entry_another_consumer_claimed_is_skipped(
    redis_url: str,
    redis_client: redis.Redis,
    make_transport: Factory,
    group: Group,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 1)
    (entry,) = read_all(transport, group, "slow")
    (claimed,), _ = transport.groups.group_claim(group.stream, group.name, "fast", 0, 10, T)
    with caplog.at_level(logging.WARNING, logger="eventbus.transport"):
        transport.groups.dead_letter(group.stream, group.name, group.dlq, entry, "slow", "late", T)
    assert "no longer pending for 'slow'" in caplog.text
    assert redis_client.exists(group.dlq) == 0
    assert pending(redis_client, group) == [(entry.id, "fast", 2)]
    transport.groups.dead_letter(group.stream, group.name, group.dlq, claimed, "fast", "e", T)
    assert redis_client.xlen(group.dlq) == 1
    assert pending(redis_client, group) == []


def test_dead_letter_after_the_group_vanished_still_keeps_the_event(
    redis_url: str,
    redis_client: redis.Redis,
    make_transport: Factory,
    group: Group,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 1)
    (entry,) = read_all(transport, group, "c1")
    redis_client.flushall()
    with caplog.at_level(logging.WARNING, logger="eventbus.transport"):
        transport.groups.dead_letter(group.stream, group.name, group.dlq, entry, "c1", "boom", T)
    assert "no longer exists" in caplog.text
    assert [letter.payload for letter in transport.groups.dead_letters(group.dlq, 10, T)] == [b"p0"]


# -- vanished streams and groups ---------------------------------------------------------


@pytest.mark.parametrize("vanish", ["del", "flushall", "destroy"])
def test_read_from_a_vanished_stream_or_group_raises_group_missing(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group, vanish: str
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 1)
    if vanish == "del":
        redis_client.delete(group.stream)
    elif vanish == "flushall":
        redis_client.flushall()
    else:
        redis_client.xgroup_destroy(group.stream, group.name)
    with pytest.raises(GroupMissingError) as info:
        transport.groups.group_read(group.stream, group.name, "c1", 10, block=0.05)
    assert (info.value.stream, info.value.group) == (group.stream, group.name)
    assert isinstance(info.value.__cause__, redis.ResponseError)
    # a publisher routing meanwhile recreates the stream, not the group
    transport.groups.route("c", b"after", [StreamTarget(stream=group.stream)], T)
    with pytest.raises(GroupMissingError):
        transport.groups.group_read(group.stream, group.name, "c1", 10, block=0)
    assert transport.groups.group_create(group.stream, group.name, "0", T) is True
    kept = [b"p0"] if vanish == "destroy" else []
    assert [e.payload for e in read_all(transport, group, "c1")] == [*kept, b"after"]


@pytest.mark.parametrize("vanish", ["del", "destroy"])
def test_a_blocked_read_raises_group_missing_when_its_stream_or_group_vanishes(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group, vanish: str
) -> None:
    """Redis 7.0 unblocks the read with UNBLOCKED (key deleted) or NOGROUP (group).
    Before 7.0 a DEL leaves the read blocked until its block time, with nothing; the
    next read then finds the group missing (or at once if the stream is recreated)."""
    unblocks = vanish == "destroy" or redis_version(redis_url) >= (7, 0)
    block = WAIT if unblocks else 1.0
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    outcome: list[BaseException | list[StreamEntry]] = []
    reader = threading.Thread(
        target=lambda: outcome.append(_attempt(transport, group, block=block)), daemon=True
    )
    reader.start()
    wait_for(lambda: _blocked(redis_client) == 1, WAIT, "the read to block")
    began = time.monotonic()
    if vanish == "del":
        redis_client.delete(group.stream)
    else:
        redis_client.xgroup_destroy(group.stream, group.name)
    reader.join(WAIT)
    assert not reader.is_alive()
    if unblocks:
        assert time.monotonic() - began < 2.0
        assert isinstance(outcome[0], GroupMissingError), outcome
        return
    assert outcome == [[]], "Redis < 7.0: the read ends at its block time, with nothing"
    with pytest.raises(GroupMissingError) as info:
        transport.groups.group_read(group.stream, group.name, "c1", 10, block=block)
    assert (info.value.stream, info.value.group) == (group.stream, group.name)


def test_a_read_unblocked_by_client_unblock_is_a_plain_transport_error(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    """UNBLOCKED also answers CLIENT UNBLOCK ... ERROR: that is no lost group."""
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    outcome: list[Any] = []
    reader = threading.Thread(
        target=lambda: outcome.append(_attempt(transport, group, block=WAIT)), daemon=True
    )
    reader.start()
    wait_for(lambda: _blocked(redis_client) == 1, WAIT, "the read to block")
    (blocked,) = [c for c in redis_client.client_list() if c["cmd"] == "xreadgroup"]
    redis_client.client_unblock(int(blocked["id"]), error=True)
    reader.join(WAIT)
    assert isinstance(outcome[0], TransportError), outcome
    assert not isinstance(outcome[0], GroupMissingError)
    assert "UNBLOCKED" in str(outcome[0])


def _attempt(transport: RedisTransport, group: Group, block: float) -> Any:
    try:
        return transport.groups.group_read(group.stream, group.name, "c1", 10, block=block)
    except Exception as exc:
        return exc


def _blocked(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


# -- blocking reads ------------------------------------------------------------------------


def test_a_blocking_read_returns_after_its_block_time_when_nothing_arrives(
    redis_url: str, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url, socket_timeout=0.5)
    transport.groups.group_create(group.stream, group.name, "$", T)
    began = time.monotonic()
    # longer than the socket timeout: the read pool's own timeout covers the block
    assert transport.groups.group_read(group.stream, group.name, "c1", 10, block=0.8) == []
    assert 0.7 <= time.monotonic() - began < 2.0


def test_a_blocking_read_wakes_when_an_entry_is_added_from_another_connection(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    outcome: list[Any] = []
    reader = threading.Thread(
        target=lambda: outcome.append(_attempt(transport, group, block=WAIT)), daemon=True
    )
    reader.start()
    wait_for(lambda: _blocked(redis_client) == 1, WAIT, "the read to block")
    began = time.monotonic()
    redis_client.xadd(group.stream, {b"e": b"wake"})
    reader.join(WAIT)
    assert time.monotonic() - began < 1.0
    assert [(e.payload, e.deliveries) for e in outcome[0]] == [(b"wake", 1)]


def test_stop_ends_a_blocked_read_and_later_reads_are_refused(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    outcome: list[Any] = []
    reader = threading.Thread(
        target=lambda: outcome.append(_attempt(transport, group, block=WAIT)), daemon=True
    )
    reader.start()
    wait_for(lambda: _blocked(redis_client) == 1, WAIT, "the read to block")
    transport.stop(2.0)
    reader.join(WAIT)
    assert isinstance(outcome[0], TransportConnectionError), outcome
    with pytest.raises(BusStateError):
        transport.groups.group_read(group.stream, group.name, "c1", 10, block=0.1)
    with pytest.raises(BusStateError):
        transport.groups.group_ack(group.stream, group.name, ["1-1"], T)


# -- group_info ----------------------------------------------------------------------------


def test_group_info_of_a_known_scenario(
    redis_url: str, make_transport: Factory, group: Group
) -> None:
    transport = make_transport(redis_url)
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.length, info.pending, info.consumers, info.dead_letters) == (0, 0, 0, 0)
    assert (info.lag, info.oldest_pending_age) == (0, None)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 6)
    one = transport.groups.group_read(group.stream, group.name, "c1", 3, block=0)
    transport.groups.group_ack(group.stream, group.name, [one[0].id], T)
    (two,) = transport.groups.group_read(group.stream, group.name, "c2", 1, block=0)
    transport.groups.dead_letter(group.stream, group.name, group.dlq, two, "c2", "boom", T)
    time.sleep(0.1)  # the age of the oldest pending entry is what is measured
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.length, info.pending, info.consumers, info.lag, info.dead_letters) == (
        6,
        2,
        2,
        2,
        1,
    )
    assert info.oldest_pending_age is not None
    assert 0.1 <= info.oldest_pending_age < WAIT
    # a stream without this group: nothing pending, lag unknown
    info = transport.groups.group_info(group.stream, "other", group.dlq, T)
    assert (info.length, info.pending, info.consumers, info.lag) == (6, 0, 0, None)


def test_group_info_counts_the_backlog_when_entries_were_deleted(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, group: Group
) -> None:
    """Deleting an entry the group has not read leaves Redis 7.0's lag unknowable (nil);
    the backlog is counted instead, and the deleted entry counts as lost, once. Before
    7.0 (no read counters) the backlog is counted all the same, and a loss never is."""
    counts = redis_version(redis_url) >= (7, 0)

    def lost(n: int | None) -> int | None:
        """What is reported lost: ``n`` on 7.0+, nothing (None) before."""
        return n if counts else None

    transport = make_transport(redis_url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    fill(transport, group, 3)
    (first,) = transport.groups.group_read(group.stream, group.name, "c1", 1, block=0)
    redis_client.xdel(group.stream, first.id)
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.lag, info.trimmed_unread) == (2, lost(0))
    redis_client.xdel(group.stream, redis_client.xrevrange(group.stream, count=1)[0][0])
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.lag, info.trimmed_unread) == (1, lost(1))
    assert transport.groups.group_take_lost(group.stream, group.name, T) == lost(1)
    assert transport.groups.group_take_lost(group.stream, group.name, T) == lost(0)
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.lag, info.trimmed_unread) == (1, lost(0))
    # Reading past a deleted entry leaves the read counter nil (Redis 7.0): the loss
    # cannot be counted until a take sets the counter again.
    assert len(transport.groups.group_read(group.stream, group.name, "c1", 5, block=0)) == 1
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.lag, info.trimmed_unread) == (0, None)
    assert transport.groups.group_take_lost(group.stream, group.name, T) is None
    info = transport.groups.group_info(group.stream, group.name, group.dlq, T)
    assert (info.lag, info.trimmed_unread) == (0, lost(0))


# -- failures --------------------------------------------------------------------------------


def test_a_paused_server_gives_typed_timeouts(
    redis_server_factory: Callable[..., RedisServer], make_transport: Factory, group: Group
) -> None:
    server = redis_server_factory()
    transport = make_transport(server.url, socket_timeout=0.3)
    transport.groups.group_create(group.stream, group.name, "$", 0.5)  # a pooled connection exists
    target = [StreamTarget(stream=group.stream)]
    server.pause()
    try:
        began = time.monotonic()
        with pytest.raises(PublishTimeoutError) as info:
            transport.groups.route("c", b"x", target, 0.5)
        assert info.value.timeout == 0.5
        assert isinstance(info.value.__cause__, redis.TimeoutError)
        with pytest.raises(PublishTimeoutError):
            transport.groups.route_many([("c", b"x", target)], 0.5)
        with pytest.raises(TransportError, match="no answer") as other:
            transport.groups.group_ack(group.stream, group.name, ["1-1"], 0.5)
        assert not isinstance(other.value, PublishTimeoutError | TransportConnectionError)
        with pytest.raises(TransportError, match="no answer"):
            transport.groups.group_read(group.stream, group.name, "c1", 10, block=0.2)
        assert time.monotonic() - began < 4 * 0.5 + 0.5 + 2.0
    finally:
        server.resume()
    assert transport.groups.route("c", b"x", target, 0.5) == 0


def test_a_stopped_server_gives_connection_errors(
    redis_server_factory: Callable[..., RedisServer], make_transport: Factory, group: Group
) -> None:
    server = redis_server_factory()
    transport = make_transport(server.url)
    transport.groups.group_create(group.stream, group.name, "$", T)
    server.stop()
    with pytest.raises(TransportConnectionError) as info:
        transport.groups.route("c", b"x", [StreamTarget(stream=group.stream)], T)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(TransportConnectionError):
        transport.groups.group_read(group.stream, group.name, "c1", 10, block=0.1)
    with pytest.raises(TransportConnectionError):
        transport.groups.group_claim(group.stream, group.name, "c1", IDLE, 10, T)
    with pytest.raises(TransportConnectionError):
        transport.groups.group_info(group.stream, group.name, group.dlq, T)
